// Emulated CUB subset for emu/cuda_emu.h (shadows the toolkit's cub in the emulated build only):
// cub::BlockScan<T, N>::InclusiveSum(input, output, block_aggregate) and
// cub::DeviceRadixSort::SortPairsDescending (a stable sort on the host; the temp-storage query protocol is kept:
// a null temp pointer only sets the size, a too-small buffer is an error as on the GPU).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>

namespace cub {

template <class T, int BLOCK_THREADS>
class BlockScan {
 public:
  struct TempStorage {
    T in[BLOCK_THREADS];
    T prefix[BLOCK_THREADS];
  };
  explicit BlockScan(TempStorage& ts) : ts_(ts) {}
  // Block-wide collective: every thread of the block must call it (it contains barriers, as CUB's does). The
  // caller must __syncthreads() before reusing the storage, as with CUB.
  void InclusiveSum(T input, T& output, T& block_aggregate) {
    const int t = int(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
    ts_.in[t] = input;
    __syncthreads();
    if (t == 0) {
      T s = T(0);
      for (int i = 0; i < BLOCK_THREADS; ++i) ts_.prefix[i] = s = s + ts_.in[i];
    }
    __syncthreads();
    output = ts_.prefix[t];
    block_aggregate = ts_.prefix[BLOCK_THREADS - 1];
  }

 private:
  TempStorage& ts_;
};

namespace emu_detail {
// Host-side implementation in emu/cuda_emu.cpp (float keys, int values).
cudaError_t sort_pairs_descending(void* temp, size_t& temp_bytes, const float* keys_in, float* keys_out,
                                  const int* values_in, int* values_out, int n, int begin_bit, int end_bit,
                                  cudaStream_t stream);
}  // namespace emu_detail

struct DeviceRadixSort {
  static cudaError_t SortPairsDescending(void* temp, size_t& temp_bytes, const float* keys_in, float* keys_out,
                                         const int* values_in, int* values_out, int num_items, int begin_bit = 0,
                                         int end_bit = int(sizeof(float) * 8), cudaStream_t stream = nullptr) {
    return emu_detail::sort_pairs_descending(temp, temp_bytes, keys_in, keys_out, values_in, values_out, num_items,
                                             begin_bit, end_bit, stream);
  }
};

}  // namespace cub
