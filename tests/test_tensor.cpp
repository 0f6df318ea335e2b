#include <doctest/doctest.h>

#include "loader/error.h"
#include "loader/tensor.h"

TEST_CASE("ggml type traits: block sizes of the quantised types") {
  CHECK(llm::ggml_row_bytes(llm::GGMLType::Q4_1, 64) == 40);
  CHECK(llm::ggml_row_bytes(llm::GGMLType::Q6_K, 512) == 420);
  CHECK(llm::ggml_row_bytes(llm::GGMLType::F32, 3) == 12);
  CHECK_THROWS_AS(llm::ggml_row_bytes(llm::GGMLType::Q4_K, 100), llm::Error);
  CHECK(llm::shape_str({576, 49152}) == "[576, 49152]");
}
