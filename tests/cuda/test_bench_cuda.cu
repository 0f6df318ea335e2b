// `llm bench --device cuda --synthetic` end to end on a tiny config, for both --dtype values (issue 5): it runs
// (prefill, graph decode, profiling, GEMV vs cuBLASLt), its JSON names the dtype, and the byte counts use the
// element size (2 bytes for bf16 and f16 alike: the figures must be equal). Small enough for the CPU emulator.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "cuda_test_util.cuh"
#include "engine/bench_cuda.h"

using namespace llm;
using namespace llm_cuda_test;

namespace {
// stdout of f() (bench_cuda prints its report there)
template <class F>
std::string capture_stdout(const std::string& path, F f) {
  std::fflush(stdout);
  const int fd = dup(fileno(stdout));
  REQUIRE(std::freopen(path.c_str(), "w", stdout) != nullptr);
  struct Restore {  // also when f throws, so doctest's report reaches the terminal
    int saved;
    ~Restore() {
      std::fflush(stdout);
      dup2(saved, fileno(stdout));
      close(saved);
    }
  };
  {
    Restore r{fd};
    f();
  }
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
// The number after "key": in a one-line JSON object (enough for the bench's flat fields).
double json_number(const std::string& j, const std::string& key) {
  const size_t at = j.find("\"" + key + "\": ");
  REQUIRE(at != std::string::npos);
  return std::stod(j.substr(at + key.size() + 4));
}
}  // namespace

TEST_CASE("llm bench --device cuda --synthetic runs in bf16 and f16, same byte counts") {
  if (!have_cuda()) return;
  const std::string dir = LLM_BINARY_DIR;
  const std::string cfg = dir + "/bench_cuda_test_config.json";
  {
    std::ofstream f(cfg);
    f << R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 512, "vocab_size": 512, "max_position_embeddings": 256, "rms_norm_eps": 1e-5,
             "rope_theta": 10000.0, "tie_word_embeddings": false})";
  }
  std::string json[2];
  for (int i = 0; i < 2; ++i) {
    CudaBenchOptions o;
    o.synthetic_config = cfg;
    o.dtype = i == 0 ? DType::bf16 : DType::f16;
    o.n_prompt = 8;
    o.n_gen = 3;
    o.ctx = 40;
    o.reps = 1;
    o.json = true;
    json[i] = capture_stdout(dir + "/bench_cuda_test_out.json", [&] { bench_cuda(o); });
    INFO(json[i]);
    CHECK(json[i].find(std::string("\"dtype\": \"") + dtype_name(o.dtype) + "\"") != std::string::npos);
    const double last = json_number(json[i], "last_token");
    CHECK(last >= 0);
    CHECK(last < 512);
  }
  for (const char* key : {"decode_weight_bytes", "weight_device_bytes", "kv_bytes_per_token", "kv_full_bytes_per_token",
                          "bytes_per_decoded_token"}) {
    CAPTURE(key);
    CHECK(json_number(json[0], key) == json_number(json[1], key));
  }
  // 2 layers x 2 KV heads x 64 x (K + V) x 2 bytes
  CHECK(json_number(json[1], "kv_full_bytes_per_token") == 2.0 * 2 * 64 * 2 * 2);
  // --dtype f16 with a compressed cache is refused before anything is allocated
  CudaBenchOptions bad;
  bad.synthetic_config = cfg;
  bad.dtype = DType::f16;
  bad.kv = "svd:k=16,v=16";
  CHECK_THROWS_WITH_AS(bench_cuda(bad), doctest::Contains("--dtype bf16"), Error);
}
