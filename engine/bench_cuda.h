// `llm bench --device cuda`: prefill and decode speed of the CUDA backend at a given context, with the numbers
// needed to judge them (bytes per decoded token, achieved GB/s against a device-to-device copy measured in the
// same run, peak device memory, time per op family). Host-safe header; defined in engine/bench_cuda.cu.
#pragma once
#include <cstdint>
#include <string>

#include "engine/llm.h"

namespace llm {

struct CudaBenchOptions {
  std::string model_path;        // a model file/directory (-m), or
  std::string synthetic_config;  // an HF config.json (--synthetic): random weights made on the device
  DType dtype = DType::bf16;     // --dtype: weights, activations and KV cache in bf16 or f16 (2 bytes either way)
  int n_prompt = 512;            // -p: prefill tokens (one block, from an empty cache)
  int n_gen = 128;               // -n: decoded tokens
  int ctx = 0;                   // -c: context reached at the end of decoding (0: n_prompt + n_gen)
  int reps = 3;                  // -r: timed repetitions, best kept
  bool json = false;             // one JSON object on stdout instead of the text report
  std::string kv = "full";       // --kv: full, svd:... (issue 6: the low-rank cache, policy seed|uniform, sinks=N), or
                                 // quant:/evict:/imp: parts on the full cache (issue 7, the mixed-precision cache)
  std::string kv_profile;        // --kv-profile with -m (default: a weights profile built at load)
  std::string lowrank_kernel = "auto";  // --lowrank-kernel auto|generic|tensor: LowRankKernel (prefill and
                                        // decode attention) for --kv svd
  uint64_t seed = 1234;
};

// Runs the benchmark on device 0 and prints the report to stdout. Throws llm::Error on bad options or no device.
// Decode runs with the cache already holding ctx - n_gen tokens of random keys/values of the dtype (a 32K prefill
// would only take time; attention cost depends on the number of cached tokens, not their values), the greedy decode
// step replayed as a CUDA graph n_gen times back to back with no host synchronisation in between.
// --kv svd:...: the same with the compressed cache (random c_k/c_v under the policy's value ranks for the first
// ctx - n_gen tokens, every decode position's rank placed on the device before the replays); --synthetic models
// get random low-rank weights (orthonormal bases), -m models the folded weights of kv_lowrank_model_create.
// --kv quant:...: the prefill also computes the importance accumulators; then the packed cache of the first
// ctx - n_gen random tokens is built from random importance scores (selection and classes as for a real prompt),
// decode appends at 16 bits and slides the window in the graph. Reported: bytes per cached token as stored, and
// the bytes the attention reads per decoded token (rows + offsets + widths).
// --kv ...+keep:<1 (selective propagation): the timed prefill drops tokens layer by layer (its host-side selection
// included) and the report adds the mean tokens a layer computed; the decode part is as above (all ctx - n_gen
// random tokens in every layer: the packed cache's size, not keep's, sets the decode cost there).
void bench_cuda(const CudaBenchOptions& o);

}  // namespace llm
