// safetensors reader and writer: round trips (single file, streamed, 2 shards via gen_model) and every rule of
// the format broken once, each error naming the file and the problem.
#include <doctest/doctest.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "loader/error.h"
#include "loader/ggml_quants.h"
#include "loader/safetensors.h"
#include "tests/safetensors_test_util.h"
#include "tests/test_util.h"

using llm::GGMLType;
using llm_test::safetensors_bytes;
using llm_test::TempDir;
using llm_test::write_bytes;

namespace {

// Opening `path` must throw llm::Error whose message contains the file name and every one of `parts`.
void check_open_fails(const std::string& path, std::initializer_list<const char*> parts) {
  std::string msg;
  try {
    llm::safetensors_open(path);
  } catch (const llm::Error& e) {
    msg = e.what();
  }
  INFO("message: ", msg);
  REQUIRE_FALSE(msg.empty());
  CHECK(msg.find(path) != std::string::npos);
  for (const char* p : parts) CHECK(msg.find(p) != std::string::npos);
}

std::string floats(std::initializer_list<float> v) {
  std::string s(v.size() * 4, '\0');
  std::memcpy(s.data(), v.begin(), s.size());
  return s;
}

}  // namespace

TEST_CASE("safetensors: write then read F32, F16, BF16 with metadata") {
  TempDir dir("st_rt");
  const std::vector<float> a = {1.0f, -2.5f, 3.25f, 0.0f, 1e-3f, 65504.0f};
  std::vector<uint16_t> b(6), c(4);
  for (size_t i = 0; i < b.size(); ++i) b[i] = llm::f32_to_fp16(a[i]);
  for (size_t i = 0; i < c.size(); ++i) c[i] = llm::f32_to_bf16(a[i] * 3.0f);
  const std::string path = dir / "x.safetensors";
  llm::safetensors_write(path,
                         {{"zeta.f32", GGMLType::F32, {2, 3}, a.data()},
                          {"alpha.f16", GGMLType::F16, {3, 2}, b.data()},
                          {"mid.bf16", GGMLType::BF16, {4}, c.data()},
                          {"empty", GGMLType::F32, {0, 5}, nullptr}},
                         {{"format", "pt"}});
  llm::SafetensorsFile f = llm::safetensors_open(path);
  CHECK(f.metadata.at("format") == "pt");
  REQUIRE(f.tensors.size() == 4);
  // data-offset order = write order (the zero-size tensor sorts at its offset, the end)
  CHECK(f.tensors[0].name == "zeta.f32");
  CHECK(f.tensors[1].name == "alpha.f16");
  CHECK(f.tensors[2].name == "mid.bf16");
  CHECK(f.tensors[3].name == "empty");
  const llm::TensorView* t = f.find("zeta.f32");
  REQUIRE(t);
  CHECK(t->type == GGMLType::F32);
  CHECK(t->shape == std::vector<int64_t>{2, 3});
  CHECK(t->nbytes == 24);
  CHECK(std::memcmp(t->data, a.data(), 24) == 0);
  // our writer pads the header so the buffer is 8-byte aligned inside the file
  CHECK((t->data - f.map.data) % 8 == 0);
  t = f.find("alpha.f16");
  REQUIRE(t);
  CHECK(t->type == GGMLType::F16);
  std::vector<float> back(6);
  llm::tensor_to_f32(*t, back.data());
  for (size_t i = 0; i < 6; ++i) CHECK(back[i] == doctest::Approx(a[i]).epsilon(1e-3));
  t = f.find("mid.bf16");
  REQUIRE(t);
  CHECK(t->type == GGMLType::BF16);
  CHECK(std::memcmp(t->data, c.data(), 8) == 0);
  CHECK(f.find("empty")->nbytes == 0);
  CHECK(f.find("nope") == nullptr);

  // The header is plain JSON a third party can read: check it independently of our parser.
  const std::string bytes = llm_test::read_bytes(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[static_cast<size_t>(i)]);
  auto h = nlohmann::json::parse(bytes.substr(8, n));
  CHECK(h["alpha.f16"]["dtype"] == "F16");
  CHECK(h["alpha.f16"]["data_offsets"] == nlohmann::json::array({24, 36}));
  CHECK(h["__metadata__"]["format"] == "pt");
}

TEST_CASE("safetensors: streaming writer in odd chunks gives the same file as safetensors_write") {
  TempDir dir("st_stream");
  std::vector<float> x(37), y(11);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i) * 0.5f;
  for (size_t i = 0; i < y.size(); ++i) y[i] = -static_cast<float>(i);
  std::vector<llm::SafetensorsWriteTensor> ts = {{"x", GGMLType::F32, {37}, x.data()}, {"y", GGMLType::F32, {11}, y.data()}};
  llm::safetensors_write(dir / "a.safetensors", ts);
  {
    llm::SafetensorsWriter w(dir / "b.safetensors", ts);
    std::string all(reinterpret_cast<const char*>(x.data()), 37 * 4);
    all.append(reinterpret_cast<const char*>(y.data()), 11 * 4);
    for (size_t i = 0; i < all.size(); i += 7) w.append(all.data() + i, std::min<size_t>(7, all.size() - i));
    w.close();
  }
  CHECK(llm_test::read_bytes(dir / "a.safetensors") == llm_test::read_bytes(dir / "b.safetensors"));
  // too few bytes: close() says so
  llm::SafetensorsWriter w(dir / "c.safetensors", ts);
  w.append(x.data(), 4);
  CHECK_THROWS_WITH_AS(w.close(), doctest::Contains("of 2 tensors"), llm::Error);
}

TEST_CASE("safetensors: gen_model round trip, one file and two shards, deterministic by seed") {
  TempDir dir("st_gen");
  REQUIRE(llm_test::run_gen_model(dir / "one", "--seed 7") == 0);
  REQUIRE(llm_test::run_gen_model(dir / "two", "--seed 7 --shards 2") == 0);
  REQUIRE(llm_test::run_gen_model(dir / "again", "--seed 7") == 0);
  REQUIRE(llm_test::run_gen_model(dir / "other", "--seed 8") == 0);
  CHECK(llm_test::read_bytes(dir / "one/model.safetensors") == llm_test::read_bytes(dir / "again/model.safetensors"));
  CHECK(llm_test::read_bytes(dir / "one/model.safetensors") != llm_test::read_bytes(dir / "other/model.safetensors"));

  llm::SafetensorsFile one = llm::safetensors_open(dir / "one/model.safetensors");
  CHECK(one.tensors.size() == 21);  // embed + 2 x 9 + norm + lm_head
  std::vector<llm::SafetensorsFile> two = llm::safetensors_open_index(dir / "two/model.safetensors.index.json");
  REQUIRE(two.size() == 2);
  CHECK(two[0].path.find("model-00001-of-00002.safetensors") != std::string::npos);
  size_t n = 0;
  for (const auto& shard : two) {
    CHECK(!shard.tensors.empty());
    for (const auto& t : shard.tensors) {
      ++n;
      const llm::TensorView* u = one.find(t.name);
      REQUIRE(u);
      CHECK(u->type == GGMLType::BF16);
      CHECK(u->shape == t.shape);
      CHECK(std::memcmp(u->data, t.data, t.nbytes) == 0);  // same seed -> same values whatever the sharding
    }
  }
  CHECK(n == one.tensors.size());
  const llm::TensorView* q = one.find("model.layers.1.self_attn.q_proj.weight");
  REQUIRE(q);
  CHECK(q->shape == std::vector<int64_t>{64, 64});
  // ~N(0, 1/64): the sample std of 4096 values is within a few percent of 1/8
  std::vector<float> v(static_cast<size_t>(q->numel()));
  llm::tensor_to_f32(*q, v.data());
  double s2 = 0;
  for (float x : v) s2 += double(x) * x;
  CHECK(std::sqrt(s2 / v.size()) == doctest::Approx(0.125).epsilon(0.05));
  const llm::TensorView* norm = one.find("model.norm.weight");
  REQUIRE(norm);
  std::vector<float> nv(64);
  llm::tensor_to_f32(*norm, nv.data());
  for (float x : nv) CHECK(std::abs(x - 1.0f) < 0.15f);
}

TEST_CASE("safetensors: index errors name the index and the tensor") {
  TempDir dir("st_index");
  REQUIRE(llm_test::run_gen_model(dir / "m", "--shards 2") == 0);
  const std::string index = dir / "m/model.safetensors.index.json";
  auto j = nlohmann::json::parse(llm_test::read_bytes(index));
  j["weight_map"]["model.norm.weight"] = "model-00001-of-00002.safetensors";
  j["weight_map"]["model.layers.0.input_layernorm.weight"] = "model-00002-of-00002.safetensors";
  write_bytes(index, j.dump());
  // whichever of the two moved tensors is checked first, the message names the index and "does not contain"
  CHECK_THROWS_WITH_AS(llm::safetensors_open_index(index), doctest::Contains("does not contain"), llm::Error);
  j["weight_map"] = {{"x", "../escape.safetensors"}};
  write_bytes(index, j.dump());
  CHECK_THROWS_WITH_AS(llm::safetensors_open_index(index), doctest::Contains("not a file name"), llm::Error);
  write_bytes(index, "{}");
  CHECK_THROWS_WITH_AS(llm::safetensors_open_index(index), doctest::Contains("weight_map"), llm::Error);
}

TEST_CASE("safetensors: malformed files fail with the file name and the problem") {
  TempDir dir("st_bad");
  const std::string ok_header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
  const std::string buf = floats({1, 2, 3});
  const std::string good = dir / "good.safetensors";
  write_bytes(good, safetensors_bytes(ok_header, buf));
  REQUIRE(llm::safetensors_open(good).tensors.size() == 2);

  auto bad = [&](const std::string& name, const std::string& bytes, std::initializer_list<const char*> parts) {
    const std::string p = dir / name;
    write_bytes(p, bytes);
    check_open_fails(p, parts);
  };
  const std::string full = safetensors_bytes(ok_header, buf);
  bad("empty.safetensors", "", {"truncated", "8-byte"});
  bad("short.safetensors", full.substr(0, 5), {"truncated"});
  bad("truncated.safetensors", full.substr(0, full.size() - 2), {"'b'", "out of range", "truncated"});
  bad("len_past_end.safetensors", safetensors_bytes(ok_header, buf, ok_header.size() + 100), {"runs past the end"});
  bad("len_huge.safetensors", safetensors_bytes(ok_header, buf, 200'000'000), {"exceeds", "100000000"});
  bad("not_json.safetensors", safetensors_bytes("{not json}", ""), {"not valid JSON"});
  bad("not_object.safetensors", safetensors_bytes("[1,2]    ", ""), {"does not start with '{'"});
  bad("overlap.safetensors",
      safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", buf),
      {"overlap", "'a'", "'b'"});
  bad("out_of_range.safetensors",
      safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,16]}})", buf),
      {"'b'", "out of range", "12 bytes"});
  bad("hole.safetensors",
      safetensors_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})", buf),
      {"hole", "[4, 8)"});
  bad("trailing.safetensors", safetensors_bytes(ok_header, buf + "xxxx"), {"hole", "after the last tensor"});
  bad("dtype_i64.safetensors",
      safetensors_bytes(R"({"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})", buf),
      {"'a'", "I64", "supported: F32, F16, BF16"});
  bad("dtype_f8.safetensors",
      safetensors_bytes(R"({"a":{"dtype":"F8_E4M3","shape":[12],"data_offsets":[0,12]}})", buf), {"F8_E4M3", "not supported"});
  bad("span.safetensors",
      safetensors_bytes(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})", buf),
      {"'a'", "[3]", "byte span of 8"});
  bad("span_overflow.safetensors",
      safetensors_bytes(R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,12]}})", buf), {"byte span"});
  bad("negative_shape.safetensors",
      safetensors_bytes(R"({"a":{"dtype":"F32","shape":[-3],"data_offsets":[0,12]}})", buf), {"shape", "non-negative"});
  bad("reversed.safetensors",
      safetensors_bytes(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[12,0]}})", buf), {"end before they begin"});
  bad("no_offsets.safetensors", safetensors_bytes(R"({"a":{"dtype":"F32","shape":[3]}})", buf), {"data_offsets"});
  bad("meta_not_string.safetensors",
      safetensors_bytes(R"({"__metadata__":{"k":1},"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})", buf),
      {"__metadata__", "not a string"});
}

TEST_CASE("safetensors: a header padded with spaces and an empty file of tensors are valid") {
  TempDir dir("st_edge");
  write_bytes(dir / "pad.safetensors",
              safetensors_bytes(R"({"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}      )", "abcd"));
  CHECK(llm::safetensors_open(dir / "pad.safetensors").tensors.size() == 1);
  write_bytes(dir / "none.safetensors", safetensors_bytes("{}", ""));
  CHECK(llm::safetensors_open(dir / "none.safetensors").tensors.empty());
  CHECK_THROWS_WITH_AS(llm::safetensors_open(dir / "missing.safetensors"), doctest::Contains("cannot open"), llm::Error);
}

TEST_CASE("safetensors: files written by the Python safetensors package (fuzz seeds) parse") {
  // fuzz/corpus/safetensors/ was written by tools/make_safetensors_fuzz_seeds.py with safetensors.numpy.save.
  const std::string dir = llm_test::source_path("fuzz/corpus/safetensors/");
  llm::SafetensorsFile a = llm::safetensors_open(dir + "f32_two.safetensors");
  REQUIRE(a.tensors.size() == 2);
  CHECK(a.find("a")->shape == std::vector<int64_t>{2, 3});
  CHECK(a.find("b")->shape == std::vector<int64_t>{4});
  llm::SafetensorsFile b = llm::safetensors_open(dir + "f16_meta.safetensors");
  CHECK(b.metadata.at("note") == "seed");
  CHECK(b.find("w")->type == GGMLType::F16);
  llm::SafetensorsFile c = llm::safetensors_open(dir + "llama_names.safetensors");
  CHECK(c.tensors.size() == 5);
  CHECK(c.find("empty")->nbytes == 0);
  CHECK(llm::safetensors_open(dir + "bf16.safetensors").find("x.bf16")->type == GGMLType::BF16);
  CHECK(llm::safetensors_open(dir + "empty.safetensors").tensors.empty());
  CHECK_THROWS_WITH_AS(llm::safetensors_open(dir + "config_like.safetensors"),
                       doctest::Contains("'architectures': entry is not an object"), llm::Error);
}
