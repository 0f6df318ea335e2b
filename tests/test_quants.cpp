// Dequantisation against the `gguf` Python package (fixtures: tests/data/quants/, made by
// tools/make_quant_fixtures.py). Comparison is bit-exact: our block decoders evaluate (d*scale)*q - (dmin*min)
// in the same order as gguf-py's numpy float32 code, and each step is one correctly rounded IEEE operation, so
// there is no rounding-order freedom to excuse. (Were the compiler ever to contract a*b-c into an FMA, these
// tests would catch it; the fix would be -ffp-contract=off, not a tolerance.)
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "loader/error.h"
#include "loader/ggml_quants.h"
#include "tests/test_util.h"

namespace {

std::vector<uint8_t> read_bytes(const std::string& rel) {
  std::ifstream in(llm_test::data_path(rel), std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "missing fixture " << rel);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

template <class T>
std::vector<T> read_array(const std::string& rel) {
  std::vector<uint8_t> b = read_bytes(rel);
  REQUIRE(b.size() % sizeof(T) == 0);
  std::vector<T> v(b.size() / sizeof(T));
  std::memcpy(v.data(), b.data(), b.size());
  return v;
}

bool same_bits(float a, float b) {
  uint32_t x, y;
  std::memcpy(&x, &a, 4);
  std::memcpy(&y, &b, 4);
  return x == y;
}

void check_type(llm::GGMLType type) {
  const std::string name = llm::ggml_type_name(type);
  CAPTURE(name);
  std::vector<uint8_t> raw = read_bytes("quants/" + name + ".bin");
  std::vector<float> want = read_array<float>("quants/" + name + ".f32");
  auto tr = llm::ggml_type_traits(type);
  REQUIRE(raw.size() == want.size() / size_t(tr.block_elems) * size_t(tr.block_bytes));
  const int64_t n = int64_t(want.size());

  std::vector<float> got(want.size(), -12345.0f);
  llm::dequantize_row(type, raw.data(), got.data(), n);
  int bad = 0;
  for (size_t i = 0; i < want.size(); ++i)
    if (!same_bits(got[i], want[i]) && bad++ < 5) FAIL_CHECK(name << "[" << i << "]: got " << got[i] << " want " << want[i]);
  CHECK(bad == 0);

  // bf16 path: the same values rounded to nearest even.
  std::vector<uint16_t> got16(want.size());
  llm::dequantize_row_bf16(type, raw.data(), got16.data(), n);
  bad = 0;
  for (size_t i = 0; i < want.size(); ++i) bad += got16[i] != llm::f32_to_bf16(want[i]);
  CHECK(bad == 0);

  // A row that is not a whole number of blocks is refused.
  if (tr.block_elems > 1) CHECK_THROWS_AS(llm::dequantize_row(type, raw.data(), got.data(), n - 1), llm::Error);
}

}  // namespace

TEST_CASE("quants: every supported type dequantises exactly like gguf-py") {
  using T = llm::GGMLType;
  for (T t : {T::F32, T::F16, T::BF16, T::Q4_0, T::Q4_1, T::Q5_0, T::Q5_1, T::Q8_0, T::Q2_K, T::Q3_K, T::Q4_K,
              T::Q5_K, T::Q6_K}) {
    CHECK(llm::ggml_type_supported(t));
    check_type(t);
  }
}

TEST_CASE("quants: f32 -> bf16 and f32 -> f16 round to nearest even") {
  std::vector<float> x = read_array<float>("quants/f32_to_bf16.f32");
  std::vector<uint16_t> want = read_array<uint16_t>("quants/f32_to_bf16.u16");
  REQUIRE(x.size() == want.size());
  for (size_t i = 0; i < x.size(); ++i) CHECK_MESSAGE(llm::f32_to_bf16(x[i]) == want[i], "bf16 of " << x[i] << " i=" << i);
  std::vector<uint16_t> want16 = read_array<uint16_t>("quants/f32_to_f16.u16");
  REQUIRE(x.size() == want16.size());
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isnan(x[i])) {
      CHECK(std::isnan(llm::fp16_to_f32(llm::f32_to_fp16(x[i]))));
      continue;
    }
    CHECK_MESSAGE(llm::f32_to_fp16(x[i]) == want16[i], "f16 of " << x[i] << " i=" << i);
    CHECK(same_bits(llm::fp16_to_f32(want16[i]), float(llm::fp16_to_f32(want16[i]))));
  }
  // Every finite f16 survives f16 -> f32 -> f16 (covers all subnormals).
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue;  // NaN payloads need not round-trip
    if (llm::f32_to_fp16(llm::fp16_to_f32(uint16_t(h))) != h) {
      FAIL_CHECK("f16 round trip of 0x" << std::hex << h);
      break;
    }
  }
  CHECK(std::isnan(llm::bf16_to_f32(llm::f32_to_bf16(std::nanf("")))));
}

TEST_CASE("quants: unsupported types throw naming the type and the supported list") {
  using T = llm::GGMLType;
  std::vector<uint8_t> raw(1024, 0);
  std::vector<float> out(256);
  std::vector<uint16_t> out16(256);
  for (T t : {T::IQ2_XXS, T::IQ4_NL, T::Q8_K, T::Q8_1, T::TQ1_0, T::I32, T::F64, T::MXFP4}) {
    const std::string name = llm::ggml_type_name(t);
    int64_t n = llm::ggml_type_traits(t).block_elems;
    try {
      llm::dequantize_row(t, raw.data(), out.data(), n);
      FAIL("no error for " << name);
    } catch (const llm::Error& e) {
      std::string msg = e.what();
      CHECK_MESSAGE(msg.find(name) != std::string::npos, msg);
      CHECK_MESSAGE(msg.find("Q4_K") != std::string::npos, msg);  // the supported list
    }
    CHECK_THROWS_AS(llm::dequantize_row_bf16(t, raw.data(), out16.data(), n), llm::Error);
  }
  CHECK_FALSE(llm::ggml_type_supported(T::IQ2_XXS));
}
