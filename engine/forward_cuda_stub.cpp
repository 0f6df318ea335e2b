// The CUDA backend's host API (engine/forward_cuda.h, engine/bench_cuda.h) in a build without CUDA: there is no
// device, so every entry point says how to get one. With LLM_HAVE_CUDA the real definitions are in
// engine/forward_cuda.cu and engine/bench_cuda.cu and this file is empty.
#if !LLM_HAVE_CUDA
#include "engine/bench_cuda.h"
#include "engine/forward_cuda.h"
#include "loader/error.h"

namespace llm {

namespace {
[[noreturn]] void no_cuda() {
  fail("device cuda: this build has no CUDA backend (configure with -DLLM_CUDA=ON on a machine with the CUDA "
       "Toolkit); use --device cpu");
}
}  // namespace

void CudaModelDeleter::operator()(CudaModel*) const {}  // never allocated in this build
void CudaSessionDeleter::operator()(CudaSession*) const {}
int cuda_device_count() { return 0; }
CudaModelPtr cuda_model_upload(const Config&, const Weights&, DType) { no_cuda(); }
DType cuda_model_dtype(const CudaModel&) { no_cuda(); }
size_t cuda_model_device_bytes(const CudaModel&) { no_cuda(); }
void cuda_model_add_lowrank(CudaModel&, const KVLowRankModel&) { no_cuda(); }
bool cuda_model_has_lowrank(const CudaModel&) { no_cuda(); }
void cuda_session_enable_prefill(CudaSession&, const KVPrefillSpec&) { no_cuda(); }
CudaSessionPtr cuda_session_create(const CudaModel&, int, int) { no_cuda(); }
size_t cuda_session_device_bytes(const CudaSession&) { no_cuda(); }
size_t cuda_session_kv_bytes(const CudaSession&) { no_cuda(); }
void cuda_session_set_token_scores(CudaSession&, std::vector<float>) { no_cuda(); }
void cuda_session_reset(CudaSession&) { no_cuda(); }
int cuda_session_n(const CudaSession&) { no_cuda(); }
void forward_cuda(CudaSession&, const int*, int, LogitsMode, float*) { no_cuda(); }
void bench_cuda(const CudaBenchOptions&) { no_cuda(); }

}  // namespace llm
#endif
