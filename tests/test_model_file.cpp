// model_file_open: HF directory (single and sharded), lone .safetensors file, GGUF demo model; canonical
// names; shape checks against the config; missing tensors; things that are not models.
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "loader/error.h"
#include "loader/model_file.h"
#include "tests/safetensors_test_util.h"
#include "tests/test_util.h"

using llm_test::TempDir;

namespace {

std::string open_error(const std::string& path) {
  try {
    llm::model_file_open(path);
  } catch (const llm::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("model file: HF directory from gen_model, canonical names, sharded == single") {
  TempDir dir("mf_dir");
  REQUIRE(llm_test::run_gen_model(dir / "one") == 0);
  REQUIRE(llm_test::run_gen_model(dir / "two", "--shards 2") == 0);
  llm::ModelFile a = llm::model_file_open(dir / "one");
  llm::ModelFile b = llm::model_file_open(dir / "two");
  CHECK(a.format == llm::ModelFile::Format::safetensors);
  CHECK(a.directory == dir / "one");
  CHECK(a.shards.size() == 1);
  CHECK(b.shards.size() == 2);
  CHECK(a.config.n_layers == 2);
  CHECK(a.config.rope_layout == llm::RopeLayout::half_split);
  CHECK(a.tensors.size() == 21);
  const llm::TensorView& q = a.get("blk.1.attn_q.weight", {64, 64});
  CHECK(q.type == llm::GGMLType::BF16);
  CHECK(a.get("blk.0.attn_k.weight", {32, 64}).nbytes == 32 * 64 * 2);
  a.get("token_embd.weight", {256, 64});
  a.get("output.weight", {256, 64});
  a.get("output_norm.weight", {64});
  a.get("blk.1.ffn_down.weight", {64, 128});
  CHECK(a.find("model.layers.0.self_attn.q_proj.weight") == nullptr);  // only canonical names
  for (const auto& [name, t] : a.tensors) {
    const llm::TensorView* u = b.find(name);
    REQUIRE(u);
    CHECK(std::memcmp(u->data, t.data, t.nbytes) == 0);
  }
  // a lone .safetensors file takes config.json from beside it
  llm::ModelFile c = llm::model_file_open(dir / "one/model.safetensors");
  CHECK(c.tensors.size() == 21);
  CHECK(c.config.dim == 64);
}

TEST_CASE("model file: get() prints expected vs actual, and missing tensors by name") {
  TempDir dir("mf_get");
  REQUIRE(llm_test::run_gen_model(dir / "m") == 0);
  llm::ModelFile m = llm::model_file_open(dir / "m");
  CHECK_THROWS_WITH_AS(m.get("blk.0.attn_q.weight", {64, 32}),
                       doctest::Contains("has shape [64, 64], expected [64, 32]"), llm::Error);
  CHECK_THROWS_WITH_AS(m.get("blk.7.attn_q.weight", {64, 64}),
                       doctest::Contains(("missing tensor blk.7.attn_q.weight in " + (dir / "m")).c_str()), llm::Error);
}

TEST_CASE("model file: weights that do not match config.json fail at open, naming the tensor") {
  TempDir dir("mf_mismatch");
  REQUIRE(llm_test::run_gen_model(dir / "m") == 0);
  const std::string cfg = dir / "m/config.json";
  auto j = nlohmann::json::parse(llm_test::read_bytes(cfg));
  j["intermediate_size"] = 96;
  llm_test::write_bytes(cfg, j.dump());
  std::string e = open_error(dir / "m");
  CHECK(e.find("ffn_gate.weight has shape [128, 64], expected [96, 64]") != std::string::npos);

  // tied embeddings in the config but the file has lm_head: fine (extra tensor); untied without lm_head: missing
  j["intermediate_size"] = 128;
  j["num_hidden_layers"] = 3;
  llm_test::write_bytes(cfg, j.dump());
  e = open_error(dir / "m");
  CHECK(e.find("missing tensor blk.2.attn_norm.weight in") != std::string::npos);
}

TEST_CASE("model file: not a model") {
  TempDir dir("mf_not");
  llm_test::write_bytes(dir / "notes.txt", "hello");
  std::string e = open_error(dir / "notes.txt");
  CHECK(e.find("notes.txt") != std::string::npos);
  CHECK(e.find("not a model: expected a .gguf file, a .safetensors file or a Hugging Face directory") != std::string::npos);
  e = open_error(dir.path.string());  // an empty directory
  CHECK(e.find("no config.json") != std::string::npos);
  CHECK(open_error(dir / "missing.gguf").find("no such file or directory") != std::string::npos);
  llm_test::write_bytes(dir / "w.safetensors", std::string("\x02\0\0\0\0\0\0\0{}", 10));
  CHECK(open_error(dir / "w.safetensors").find("config.json: missing") != std::string::npos);
  std::filesystem::create_directories(dir.path / "d");
  std::filesystem::copy(llm_test::data_path("models/tiny/config.json"), dir.path / "d/config.json");
  CHECK(open_error(dir / "d").find("no model.safetensors or model.safetensors.index.json") != std::string::npos);
}

TEST_CASE("model file: GGUF demo model under canonical names") {
  if (!llm_test::have_demo_model()) return;
  llm::ModelFile m = llm::model_file_open(llm_test::demo_model_path());
  CHECK(m.format == llm::ModelFile::Format::gguf);
  CHECK(m.config.rope_layout == llm::RopeLayout::interleaved);
  CHECK(m.config.tie_embeddings);
  CHECK(m.tensors.size() == 272);  // 2 + 30 x 9, no output.weight (tied)
  CHECK(m.get("token_embd.weight", {49152, 576}).type == llm::GGMLType::Q8_0);
  CHECK(m.get("blk.29.attn_k.weight", {192, 576}).type == llm::GGMLType::Q4_1);
  CHECK(m.get("blk.0.ffn_down.weight", {576, 1536}).type == llm::GGMLType::Q4_1);
  CHECK(m.get("output_norm.weight", {576}).type == llm::GGMLType::F32);
  CHECK(m.find("output.weight") == nullptr);
}
