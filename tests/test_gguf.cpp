#include <doctest/doctest.h>

#include "loader/error.h"
#include "loader/gguf.h"
#include "loader/model_file.h"
#include "tests/test_util.h"

TEST_CASE("gguf: demo model header and config") {
  if (!llm_test::have_demo_model()) return;
  llm::GGUFFile f = llm::gguf_open(llm_test::demo_model_path());
  CHECK(f.version == 3);
  llm::Config c = llm::config_from_gguf(f);
  CHECK(c.n_layers == 30);
  CHECK(c.n_heads == 9);
  CHECK(c.n_kv_heads == 3);
  CHECK(c.head_dim == 64);
  CHECK(c.vocab_size == 49152);
  CHECK(c.dim == 576);
  CHECK(c.ffn_dim == 1536);
  CHECK(c.tie_embeddings);
  CHECK(c.rope_theta == 100000.0f);
  CHECK(c.rope_layout == llm::RopeLayout::interleaved);
}
