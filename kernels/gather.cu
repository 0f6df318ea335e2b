// Row gather (kernels/gather_cuda.h). Block (row a, block b), threads over the row's elements: a plain copy, one
// read and one write per element (napkin math, Llama-3-8B, a 4096-token prompt kept to 2048: the residual rows are
// 32 MB and a layer's K and V rows 8 MB, ~15 us at 3 TB/s per dropping layer, against ~10 ms of its GEMMs).
#include "kernels/gather_cuda.h"

namespace llm {

namespace {
template <class T>
__global__ void gather_rows_kernel(T* dst, const T* src, const int* idx, int width, int64_t src_block,
                                   int64_t dst_block) {
  const int a = blockIdx.x, b = blockIdx.y;
  const T* s = src + b * src_block + int64_t(idx[a]) * width;
  T* d = dst + b * dst_block + int64_t(a) * width;
  for (int j = threadIdx.x; j < width; j += blockDim.x) d[j] = s[j];
}

template <class T>
void launch(T* dst, const T* src, const int* idx, int m, int width, int blocks, int64_t src_block, int64_t dst_block,
            cudaStream_t st) {
  if (m < 0 || width <= 0 || blocks <= 0 || blocks > 65535)
    fail("gather_rows_cuda: m ", m, ", width ", width, ", blocks ", blocks, " (blocks must be in [1, 65535])");
  if (m == 0) return;
  gather_rows_kernel<T><<<dim3(m, blocks), 128, 0, st>>>(dst, src, idx, width, src_block, dst_block);
  CUDA_CHECK_LAUNCH();
}
}  // namespace

void gather_rows_cuda(float* dst, const float* src, const int* idx, int m, int width, int blocks, int64_t src_block,
                      int64_t dst_block, cudaStream_t st) {
  launch(dst, src, idx, m, width, blocks, src_block, dst_block, st);
}
void gather_rows_cuda(bf16* dst, const bf16* src, const int* idx, int m, int width, int blocks, int64_t src_block,
                      int64_t dst_block, cudaStream_t st) {
  launch(dst, src, idx, m, width, blocks, src_block, dst_block, st);
}
void gather_rows_cuda(__half* dst, const __half* src, const int* idx, int m, int width, int blocks,
                      int64_t src_block, int64_t dst_block, cudaStream_t st) {
  launch(dst, src, idx, m, width, blocks, src_block, dst_block, st);
}

}  // namespace llm
