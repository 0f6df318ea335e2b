// CPU twin of gather_rows_cuda (kernels/gather_cuda.h): for every block b < blocks and a < m,
// dst[b * dst_block + a * width .. +width) = src[b * src_block + idx[a] * width .. +width). T: any trivially
// copyable element (float; uint16_t for bf16 bits).
#pragma once
#include <cstdint>
#include <cstring>

namespace llm {

template <class T>
void gather_rows_cpu(T* dst, const T* src, const int* idx, int m, int width, int blocks, int64_t src_block,
                     int64_t dst_block) {
  for (int b = 0; b < blocks; ++b)
    for (int a = 0; a < m; ++a)
      std::memcpy(dst + b * dst_block + int64_t(a) * width, src + b * src_block + int64_t(idx[a]) * width,
                  size_t(width) * sizeof(T));
}

}  // namespace llm
