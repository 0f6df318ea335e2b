// GGUF parser and config: the demo model against the gguf Python package (tests/data/demo_dequant/samples.json,
// made by tools/make_demo_dequant_samples.py), synthetic files from tests/gguf_builder.h, seeds written by gguf-py
// (fuzz/corpus/gguf/, made by tools/make_gguf_fuzz_seeds.py), and bad input: every error must name the file and
// the problem, and nothing may crash.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "loader/error.h"
#include "loader/ggml_quants.h"
#include "loader/gguf.h"
#include "loader/model_file.h"
#include "tests/gguf_builder.h"
#include "tests/test_util.h"

using llm::GGMLType;
using llm_test::GGUFBuilder;

namespace {

// Parse and return the error message ("" when it parsed).
std::string parse_error(const std::vector<uint8_t>& b, const std::string& name = "bad.gguf") {
  try {
    llm::gguf_parse(b.data(), b.size(), name);
  } catch (const llm::Error& e) {
    return e.what();
  }
  return "";
}

#define CHECK_ERROR_HAS(msg, ...)                                                 \
  do {                                                                            \
    const std::string m_ = (msg);                                                 \
    CHECK_MESSAGE(!m_.empty(), "expected an error");                              \
    for (const char* part : {__VA_ARGS__}) CHECK_MESSAGE(m_.find(part) != std::string::npos, "'" << std::string(part) << "' not in: " << m_); \
  } while (0)

GGUFBuilder small_model() {
  GGUFBuilder b;
  b.add_str("general.architecture", "llama");
  b.add_u32("llama.block_count", 2);
  b.add_u32("llama.embedding_length", 64);
  b.add_u32("llama.attention.head_count", 4);
  b.add_u32("llama.attention.head_count_kv", 2);
  b.add_u32("llama.feed_forward_length", 128);
  b.add_u32("llama.context_length", 256);
  b.add_f32("llama.attention.layer_norm_rms_epsilon", 1e-6f);
  b.add_str_array("tokenizer.ggml.tokens", {"a", "b", "c", "d"});
  b.add_u32("tokenizer.ggml.bos_token_id", 1);
  b.add_u32("tokenizer.ggml.eos_token_id", 2);
  b.add_u32("tokenizer.ggml.eot_token_id", 3);
  b.add_tensor("token_embd.weight", {64, 4}, GGMLType::Q8_0);
  b.add_tensor("output_norm.weight", {64}, GGMLType::F32);
  return b;
}

}  // namespace

TEST_CASE("gguf: demo model tensors, types and dequantisation match gguf-py") {
  if (!llm_test::have_demo_model()) return;
  llm::GGUFFile f = llm::gguf_open(llm_test::demo_model_path());
  std::ifstream in(llm_test::data_path("demo_dequant/samples.json"));
  REQUIRE(in.good());
  nlohmann::json s = nlohmann::json::parse(in);

  CHECK(f.version == 3);
  CHECK(f.alignment == 32);
  CHECK(f.data_offset == s["data_offset"].get<size_t>());
  CHECK(f.metadata.size() == s["n_kv"].get<size_t>());
  REQUIRE(f.tensors.size() == s["tensors"].size());
  REQUIRE(f.tensors.size() == 272);

  std::map<std::string, int> type_count;
  std::vector<float> buf;
  for (size_t k = 0; k < f.tensors.size(); ++k) {
    const llm::TensorView& t = f.tensors[k];
    const auto& e = s["tensors"][k];
    CAPTURE(t.name);
    REQUIRE(t.name == e["name"].get<std::string>());
    CHECK(llm::ggml_type_name(t.type) == e["type"].get<std::string>());
    CHECK(t.shape == e["shape"].get<std::vector<int64_t>>());
    CHECK(size_t(t.data - f.map.data) == e["offset"].get<size_t>());
    CHECK(t.nbytes == e["nbytes"].get<size_t>());
    ++type_count[llm::ggml_type_name(t.type)];

    buf.resize(size_t(t.numel()));
    llm::tensor_to_f32(t, buf.data());
    for (const auto& row : e["rows"]) {
      int64_t r = row["row"].get<int64_t>();
      std::vector<float> want = row["values"].get<std::vector<float>>();
      for (size_t i = 0; i < want.size(); ++i) {
        float got = buf[size_t(r * t.cols()) + i];
        if (got != want[i]) {
          FAIL_CHECK(t.name << " row " << r << " [" << i << "]: got " << got << " want " << want[i]);
          break;
        }
      }
    }
    double sum = 0, abs_sum = 0;
    for (float v : buf) {
      sum += v;
      abs_sum += std::fabs(v);
    }
    // Whole-tensor float64 sums: numpy sums pairwise, we sum in order, so allow summation-order error only.
    const double tol = 1e-9 * e["abs_sum"].get<double>() + 1e-12;
    CHECK(std::fabs(sum - e["sum"].get<double>()) <= tol);
    CHECK(std::fabs(abs_sum - e["abs_sum"].get<double>()) <= tol);
  }
  // What the demo file really holds: Q8_0 token embeddings, Q4_1 layer matrices, F32 norms.
  CHECK(type_count == std::map<std::string, int>{{"F32", 61}, {"Q4_1", 210}, {"Q8_0", 1}});
  CHECK(f.find_tensor("token_embd.weight")->type == GGMLType::Q8_0);
  CHECK(f.find_tensor("token_embd.weight")->shape == std::vector<int64_t>{49152, 576});
  CHECK(f.find_tensor("blk.0.attn_k.weight")->shape == std::vector<int64_t>{192, 576});
  CHECK(f.find_tensor("blk.29.ffn_down.weight")->shape == std::vector<int64_t>{576, 1536});
  CHECK(f.find_tensor("blk.3.ffn_norm.weight")->type == GGMLType::F32);
}

TEST_CASE("gguf: demo model metadata and config") {
  if (!llm_test::have_demo_model()) return;
  llm::GGUFFile f = llm::gguf_open(llm_test::demo_model_path());
  CHECK(f.get_string("general.architecture") == "llama");
  CHECK(f.get_int("llama.block_count") == 30);
  CHECK(f.get_float("llama.rope.freq_base") == 100000.0);
  CHECK(f.get_bool("tokenizer.ggml.add_bos_token") == false);
  CHECK(f.get_string_array("tokenizer.ggml.tokens").size() == 49152);
  CHECK(f.get_string_array("general.languages") == std::vector<std::string>{"en"});
  CHECK_THROWS_WITH_AS(f.get_int("general.architecture"), doctest::Contains("has type string"), llm::Error);
  CHECK_THROWS_WITH_AS(f.get_string("no.such.key"), doctest::Contains("no.such.key"), llm::Error);

  llm::Config c = llm::config_from_gguf(f);
  CHECK(c.arch == "llama");
  CHECK(c.n_layers == 30);
  CHECK(c.n_heads == 9);
  CHECK(c.n_kv_heads == 3);
  CHECK(c.head_dim == 64);
  CHECK(c.vocab_size == 49152);
  CHECK(c.dim == 576);
  CHECK(c.ffn_dim == 1536);
  CHECK(c.max_seq_len == 8192);
  CHECK(c.rope_theta == 100000.0f);
  CHECK(c.rms_eps == doctest::Approx(1e-5));
  CHECK(c.tie_embeddings);
  CHECK(c.rope_layout == llm::RopeLayout::interleaved);
  CHECK(c.rope_scaling.type == llm::RopeScaling::Type::none);
  CHECK(c.bos_id == 1);
  CHECK(c.eos_ids == std::vector<int>{2});
}

TEST_CASE("gguf: synthetic file, v2, custom alignment, every value type, nested arrays") {
  GGUFBuilder b = small_model();
  b.version = 2;
  b.alignment = 64;
  b.write_alignment = true;
  // Every scalar type.
  b.key("t.u8", 0); GGUFBuilder::put<uint8_t>(b.kv, 200);
  b.key("t.i8", 1); GGUFBuilder::put<int8_t>(b.kv, -5);
  b.key("t.u16", 2); GGUFBuilder::put<uint16_t>(b.kv, 60000);
  b.key("t.i16", 3); GGUFBuilder::put<int16_t>(b.kv, -30000);
  b.add_i32("t.i32", -7);
  b.key("t.bool", 7); GGUFBuilder::put<uint8_t>(b.kv, 1);
  b.key("t.u64", 10); GGUFBuilder::put<uint64_t>(b.kv, 1ull << 40);
  b.key("t.i64", 11); GGUFBuilder::put<int64_t>(b.kv, -(1ll << 40));
  b.key("t.f64", 12); GGUFBuilder::put<double>(b.kv, 0.125);
  // Array of arrays of int32: [[1, 2], [3]].
  b.key("t.nested", 9);
  GGUFBuilder::put<uint32_t>(b.kv, 9);
  GGUFBuilder::put<uint64_t>(b.kv, 2);
  GGUFBuilder::put<uint32_t>(b.kv, 5); GGUFBuilder::put<uint64_t>(b.kv, 2);
  GGUFBuilder::put<int32_t>(b.kv, 1); GGUFBuilder::put<int32_t>(b.kv, 2);
  GGUFBuilder::put<uint32_t>(b.kv, 5); GGUFBuilder::put<uint64_t>(b.kv, 1);
  GGUFBuilder::put<int32_t>(b.kv, 3);
  b.add_tensor("t3", {32, 2, 3}, GGMLType::Q4_0);
  b.add_tensor("t4", {2, 3, 4, 5}, GGMLType::F16);
  b.add_tensor("iq", {256, 2}, GGMLType::IQ2_XXS);  // known but unsupported: parses, dequantising throws
  std::vector<uint8_t> bytes = b.build();
  llm::GGUFFile f = llm::gguf_parse(bytes.data(), bytes.size(), "synthetic.gguf");
  CHECK(f.version == 2);
  CHECK(f.alignment == 64);
  CHECK(f.data_offset % 64 == 0);
  CHECK(f.get_int("t.u8") == 200);
  CHECK(f.get_int("t.i8") == -5);
  CHECK(f.get_int("t.u16") == 60000);
  CHECK(f.get_int("t.i16") == -30000);
  CHECK(f.get_int("t.i32") == -7);
  CHECK(f.get_bool("t.bool"));
  CHECK(f.get_int("t.u64") == (1ll << 40));
  CHECK(f.get_int("t.i64") == -(1ll << 40));
  CHECK(f.get_float("t.f64") == 0.125);
  CHECK(f.get_float("t.i32") == -7.0);
  const llm::GGUFValue* n = f.find("t.nested");
  REQUIRE(n);
  REQUIRE(n->arr.size() == 2);
  CHECK(n->elem_type == llm::GGUFValueType::ARRAY);
  CHECK(n->arr[0].arr.size() == 2);
  CHECK(n->arr[0].arr[1].i == 2);
  CHECK(n->arr[1].arr[0].i == 3);
  CHECK_THROWS_AS(f.get_int_array("t.nested"), llm::Error);
  REQUIRE(f.tensors.size() == 5);
  CHECK(f.tensors[0].shape == std::vector<int64_t>{4, 64});
  CHECK(f.tensors[1].shape == std::vector<int64_t>{64});
  CHECK(f.tensors[2].shape == std::vector<int64_t>{3, 2, 32});
  CHECK(f.tensors[3].shape == std::vector<int64_t>{5, 4, 3, 2});
  CHECK(f.tensors[3].nbytes == 2 * 120);
  for (const auto& t : f.tensors) CHECK((t.data - bytes.data() - f.data_offset) % 64 == 0);
  std::vector<float> out(512);
  CHECK_THROWS_WITH_AS(llm::tensor_to_f32(f.tensors[4], out.data()), doctest::Contains("IQ2_XXS"), llm::Error);

  llm::Config c = llm::config_from_gguf(f);
  CHECK(c.vocab_size == 4);  // from the tokens array: no llama.vocab_size
  CHECK(c.head_dim == 16);   // dim / heads
  CHECK(c.rope_theta == 10000.0f);
  CHECK(c.eos_ids == std::vector<int>{2, 3});
  CHECK(c.tie_embeddings);
}

TEST_CASE("gguf config: errors name the file and the key") {
  {
    GGUFBuilder b;
    b.add_str("general.architecture", "gpt2");
    std::vector<uint8_t> bytes = b.build();
    auto f = llm::gguf_parse(bytes.data(), bytes.size(), "gpt2.gguf");
    CHECK_THROWS_WITH_AS(llm::config_from_gguf(f), doctest::Contains("gpt2.gguf: architecture 'gpt2'"), llm::Error);
  }
  {
    GGUFBuilder b;
    b.add_str("general.architecture", "llama");
    b.add_u32("llama.block_count", 2);
    std::vector<uint8_t> bytes = b.build();
    auto f = llm::gguf_parse(bytes.data(), bytes.size(), "partial.gguf");
    CHECK_THROWS_WITH_AS(llm::config_from_gguf(f), doctest::Contains("partial.gguf: missing GGUF metadata key 'llama.embedding_length'"),
                         llm::Error);
  }
  {
    GGUFBuilder b = small_model();
    b.add_str("llama.rope.scaling.type", "yarn");
    std::vector<uint8_t> bytes = b.build();
    auto f = llm::gguf_parse(bytes.data(), bytes.size(), "yarn.gguf");
    CHECK_THROWS_WITH_AS(llm::config_from_gguf(f), doctest::Contains("'yarn'"), llm::Error);
  }
  {
    GGUFBuilder b = small_model();
    b.add_str("llama.rope.scaling.type", "llama3");
    b.add_f32("llama.rope.scaling.factor", 8.0f);
    b.add_tensor("output.weight", {64, 4}, GGMLType::Q8_0);
    std::vector<uint8_t> bytes = b.build();
    auto f = llm::gguf_parse(bytes.data(), bytes.size(), "l3.gguf");
    llm::Config c = llm::config_from_gguf(f);
    CHECK(c.rope_scaling.type == llm::RopeScaling::Type::llama3);
    CHECK(c.rope_scaling.factor == 8.0f);
    CHECK_FALSE(c.tie_embeddings);
  }
}

TEST_CASE("gguf config: a Llama-3.1 rope_freqs tensor becomes llama3 scaling, a foreign table is refused") {
  // head_dim 16 -> 8 pairs. Build the table the llama3 rule gives for theta 500000, factor 8 (as llama.cpp's
  // converter writes it), then a corrupted one.
  for (bool corrupt : {false, true}) {
    GGUFBuilder b = small_model();
    b.add_f32("llama.rope.freq_base", 500000.0f);
    b.add_tensor("rope_freqs.weight", {8}, GGMLType::F32);
    std::vector<uint8_t> bytes = b.build();
    llm::GGUFFile f = llm::gguf_parse(bytes.data(), bytes.size(), "l31.gguf");
    const llm::TensorView* rf = f.find_tensor("rope_freqs.weight");
    REQUIRE(rf);
    float table[8];
    for (int j = 0; j < 8; ++j) {
      double freq = std::pow(500000.0, -2.0 * j / 16), wl = 2 * 3.14159265358979323846 / freq;
      double smooth = (8192.0 / wl - 1.0) / 3.0;
      table[j] = wl < 8192.0 / 4 ? 1.0f : wl > 8192.0 ? 8.0f : float(1.0 / ((1 - smooth) / 8 + smooth));
    }
    if (corrupt) table[7] = 3.0f;
    std::memcpy(const_cast<uint8_t*>(rf->data), table, sizeof table);
    if (!corrupt) {
      llm::Config c = llm::config_from_gguf(f);
      CHECK(c.rope_scaling.type == llm::RopeScaling::Type::llama3);
      CHECK(c.rope_scaling.factor == 8.0f);
      CHECK(c.rope_scaling.original_max_position == 8192);
    } else {
      CHECK_THROWS_WITH_AS(llm::config_from_gguf(f), doctest::Contains("rope_freqs.weight[7]"), llm::Error);
    }
  }
}

TEST_CASE("gguf bad input: truncated demo model at many cut points never crashes") {
  if (!llm_test::have_demo_model()) return;
  llm::MappedFile m(llm_test::demo_model_path());
  for (size_t cut : {size_t(0), size_t(3), size_t(4), size_t(7), size_t(15), size_t(23), size_t(100), size_t(5000),
                     size_t(1000000), size_t(1785600), size_t(1785664), size_t(1785664 + 1000), m.size - 1}) {
    CAPTURE(cut);
    // Copy small prefixes so that a read past `cut` would be caught by ASan.
    std::vector<uint8_t> copy;
    const uint8_t* p = m.data;
    if (cut < 2000000) {
      copy.assign(m.data, m.data + cut);
      p = copy.data();
    }
    std::string msg;
    try {
      llm::gguf_parse(p, cut, "cut.gguf");
    } catch (const llm::Error& e) {
      msg = e.what();
    }
    if (cut < 4) {
      CHECK_ERROR_HAS(msg, "cut.gguf", "not a GGUF file");
    } else {
      CHECK_ERROR_HAS(msg, "cut.gguf", "truncated");
    }
  }
}

TEST_CASE("gguf bad input: every problem is named") {
  const std::vector<uint8_t> good = small_model().build();
  REQUIRE(parse_error(good) == "");

  SUBCASE("truncated synthetic file at every byte of the header") {
    for (size_t cut = 0; cut < good.size(); ++cut) {
      std::vector<uint8_t> b(good.begin(), good.begin() + long(cut));
      std::string msg = parse_error(b);
      CAPTURE(cut);
      CHECK_ERROR_HAS(msg, "bad.gguf");
    }
  }
  SUBCASE("wrong magic") {
    std::vector<uint8_t> b = good;
    b[0] = 'G', b[1] = 'G', b[2] = 'M', b[3] = 'L';
    CHECK_ERROR_HAS(parse_error(b), "bad.gguf", "not a GGUF file", "GGML");
  }
  SUBCASE("unsupported versions") {
    for (uint32_t v : {1u, 4u, 0u}) {
      GGUFBuilder g = small_model();
      g.version = v;
      const std::string vs = "version " + std::to_string(v);
      CHECK_ERROR_HAS(parse_error(g.build()), "bad.gguf", "unsupported GGUF", vs.c_str(), "supported: 2, 3");
    }
  }
  SUBCASE("tensor offset out of range") {
    GGUFBuilder g = small_model();
    g.add_tensor("far", {32}, GGMLType::F32, 1 << 20);
    g.max_data = 1024;  // the data section ends long before offset 1 MiB
    CHECK_ERROR_HAS(parse_error(g.build()), "bad.gguf", "tensor 'far'", "out of range");
  }
  SUBCASE("tensor data past the end of the file") {
    std::vector<uint8_t> b = good;
    b.resize(b.size() - 1);
    CHECK_ERROR_HAS(parse_error(b), "bad.gguf", "output_norm.weight", "out of range");
  }
  SUBCASE("misaligned tensor offset") {
    GGUFBuilder g = small_model();
    g.add_tensor("odd", {8}, GGMLType::F32, 4004);
    CHECK_ERROR_HAS(parse_error(g.build()), "bad.gguf", "tensor 'odd'", "not a multiple of the alignment 32");
  }
  SUBCASE("overlapping tensors") {
    GGUFBuilder g = small_model();
    g.add_tensor("overlap", {64}, GGMLType::F32, 256);  // token_embd.weight sits at [0, 272)
    CHECK_ERROR_HAS(parse_error(g.build()), "bad.gguf", "'overlap' [256, 512)", "token_embd.weight", "overlap in");
  }
  SUBCASE("unknown tensor type") {
    GGUFBuilder g = small_model();
    g.add_tensor("weird", {32}, static_cast<GGMLType>(77));
    CHECK_ERROR_HAS(parse_error(g.build()), "bad.gguf", "tensor 'weird'", "unknown GGML tensor type id 77",
                    "Q4_K", "Q8_0");
  }
  SUBCASE("metadata string length past the end") {
    GGUFBuilder g;
    g.key("k", 8);
    GGUFBuilder::put<uint64_t>(g.kv, 1ull << 40);
    g.kv.push_back('x');
    CHECK_ERROR_HAS(parse_error(g.build()), "bad.gguf", "metadata key 'k'", "string length 1099511627776",
                    "past the end");
  }
  SUBCASE("huge array count does not allocate") {
    GGUFBuilder g;
    g.key("arr", 9);
    GGUFBuilder::put<uint32_t>(g.kv, 10);
    GGUFBuilder::put<uint64_t>(g.kv, ~0ull);
    CHECK_ERROR_HAS(parse_error(g.build()), "bad.gguf", "metadata key 'arr'", "cannot fit");
  }
  SUBCASE("more metadata array elements than any real model") {
    GGUFBuilder g;
    g.key("big", 9);
    GGUFBuilder::put<uint32_t>(g.kv, 0);  // uint8 elements: 1 byte each, so the file really holds them
    GGUFBuilder::put<uint64_t>(g.kv, (1ull << 23) + 1);
    g.kv.resize(g.kv.size() + (1u << 23) + 1, 0);
    CHECK_ERROR_HAS(parse_error(g.build()), "bad.gguf", "metadata key 'big'", "more than 8388608");
  }
  SUBCASE("huge tensor and kv counts") {
    std::vector<uint8_t> b = good;
    uint64_t big = ~0ull >> 1;
    std::memcpy(b.data() + 8, &big, 8);
    CHECK_ERROR_HAS(parse_error(b), "bad.gguf", "tensors", "truncated or corrupt");
    b = good;
    std::memcpy(b.data() + 16, &big, 8);
    CHECK_ERROR_HAS(parse_error(b), "bad.gguf", "metadata entries");
  }
  SUBCASE("n_dims > 4 and zero dims") {
    GGUFBuilder g = small_model();
    g.add_tensor("five", {32, 1, 1, 1, 1}, GGMLType::F32);
    CHECK_ERROR_HAS(parse_error(g.build()), "bad.gguf", "tensor 'five'", "n_dims = 5");
    GGUFBuilder z = small_model();
    z.add_tensor("zero", {32, 0}, GGMLType::F32);
    CHECK_ERROR_HAS(parse_error(z.build()), "bad.gguf", "tensor 'zero'", "dimension 1 = 0");
  }
  SUBCASE("row not a whole number of blocks") {
    GGUFBuilder g = small_model();
    g.add_tensor("ragged", {40, 2}, GGMLType::Q4_0);
    CHECK_ERROR_HAS(parse_error(g.build()), "bad.gguf", "tensor 'ragged'", "block size 32");
  }
  SUBCASE("alignment not a power of two") {
    GGUFBuilder g = small_model();
    g.alignment = 48;
    g.write_alignment = true;
    CHECK_ERROR_HAS(parse_error(g.build()), "bad.gguf", "general.alignment = 48", "power of two");
  }
  SUBCASE("unknown metadata value type") {
    GGUFBuilder g;
    g.key("k", 13);
    GGUFBuilder::put<uint32_t>(g.kv, 0);
    CHECK_ERROR_HAS(parse_error(g.build()), "bad.gguf", "metadata key 'k'", "unknown value type id 13");
  }
  SUBCASE("deeply nested arrays") {
    GGUFBuilder g;
    g.key("deep", 9);
    for (int i = 0; i < 100; ++i) {
      GGUFBuilder::put<uint32_t>(g.kv, 9);
      GGUFBuilder::put<uint64_t>(g.kv, 1);
    }
    CHECK_ERROR_HAS(parse_error(g.build()), "bad.gguf", "nested deeper");
  }
  SUBCASE("duplicate tensor name") {
    GGUFBuilder g = small_model();
    g.add_tensor("output_norm.weight", {64}, GGMLType::F32);
    CHECK_ERROR_HAS(parse_error(g.build()), "bad.gguf", "'output_norm.weight' appears twice");
  }
  SUBCASE("gguf_open on a missing file names it") {
    CHECK_THROWS_WITH_AS(llm::gguf_open("/nonexistent/x.gguf"), doctest::Contains("/nonexistent/x.gguf"), llm::Error);
  }
}

TEST_CASE("gguf: seed corpus written by gguf-py parses") {
  for (const char* name : {"tiny_llama_v3.gguf", "tiny_llama_v2.gguf", "all_types.gguf"}) {
    CAPTURE(name);
    std::string path = llm_test::source_path(std::string("fuzz/corpus/gguf/") + name);
    llm::GGUFFile f = llm::gguf_open(path);
    CHECK(!f.metadata.empty());
    for (const auto& t : f.tensors) {
      if (!llm::ggml_type_supported(t.type)) continue;
      std::vector<float> out(size_t(t.numel()));
      llm::tensor_to_f32(t, out.data());
    }
    if (std::string(name) == "all_types.gguf") {
      CHECK(f.alignment == 64);
      CHECK(f.get_int("t.u32") == 4000000000);
      CHECK(f.get_int("t.i16") == -30000);
      CHECK(f.get_float("t.f32") == 0.5);
      CHECK(f.get_string("t.str") == "h\xc3\xa9llo");
      CHECK(f.get_int_array("t.arr_i32") == std::vector<int64_t>{1, 2, 3});
      CHECK(f.get_string_array("t.arr_str") == std::vector<std::string>{"a", "bc"});
      CHECK(f.find("t.nested")->arr[1].arr[0].i == 3);
      CHECK(f.find_tensor("k.Q6_K")->shape == std::vector<int64_t>{1, 256});
      CHECK(f.find_tensor("f32.4d")->shape == std::vector<int64_t>{2, 3, 2, 2});
    } else {
      llm::Config c = llm::config_from_gguf(f);
      CHECK(c.n_layers == 1);
      CHECK(c.dim == 32);
    }
  }
}
