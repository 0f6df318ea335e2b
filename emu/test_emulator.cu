// Tests of the CUDA emulator itself (built only into llm_cuda_emu_tests; ctest entry cuda_emu_emulator): that it
// catches what it claims to catch (missing __syncwarp, deadlocks, divergent barriers, bad launches, synchronous
// calls during capture) and that its collectives compute what CUDA's do. Written in plain CUDA: it would also
// compile with nvcc, where the death tests are not meaningful, so it is emulator-only.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <vector>

#include <cusolverDn.h>

#include "kernels/common.cuh"

namespace {

__global__ void butterfly_kernel(float* out) {
  float v = float(threadIdx.x & 31);
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const float down = __shfl_down_sync(0xffffffffu, float(threadIdx.x & 31), 1);
  const float bcast = __shfl_sync(0xffffffffu, float(threadIdx.x), 3);
  out[threadIdx.x * 3] = v;
  out[threadIdx.x * 3 + 1] = down;
  out[threadIdx.x * 3 + 2] = bcast;
}

// Each lane writes its slot and reads its neighbour's: correct only with the __syncwarp in between.
__global__ void neighbour_kernel(int* out, bool sync, int salt) {
  __shared__ int s[32];
  s[threadIdx.x] = int(threadIdx.x) * 10 + salt;
  if (sync) __syncwarp();
  out[threadIdx.x] = s[(threadIdx.x + 1) & 31];
}

__global__ void block_reduce_kernel(float* out) {
  __shared__ float scratch[32];
  const float t = llm::block_sum(float(threadIdx.x), scratch);
  if (threadIdx.x == 0) out[blockIdx.x] = t;
}

__global__ void deadlock_kernel() {
  if (threadIdx.x == 0) return;
  __syncthreads();  // fine: thread 0 has exited and counts as gone
  if (threadIdx.x < 32) __syncwarp();  // warp 0's live lanes only: fine
  // Lane 8 of warp 1 waits for its warp, whose other lanes wait at the barrier for it: a deadlock.
  if (threadIdx.x == 40) __shfl_xor_sync(0xffffffffu, 1, 1);
  __syncthreads();
}

__global__ void divergent_kernel(int* out) {
  if (threadIdx.x < 16) {
    __syncthreads();
    out[0] = 1;
  } else {
    __syncthreads();
    out[1] = 1;
  }
}

__global__ void smem_kernel(float* out) {
  extern __shared__ float dyn[];
  dyn[threadIdx.x] = float(threadIdx.x);
  __syncthreads();
  out[threadIdx.x] = dyn[blockDim.x - 1 - threadIdx.x];
}

// Runs `f` in a child process; true when it died of SIGABRT (the emulator's report).
template <class F>
bool aborts(F f) {
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    std::signal(SIGABRT, SIG_DFL);  // die of the signal, without doctest's crash report in the child
    std::fprintf(stderr, "(expected: the emulator's report for a broken kernel follows)\n");
    f();
    cudaDeviceSynchronize();
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

}  // namespace

TEST_CASE("emulator: warp shuffles and block_sum compute what CUDA's do") {
  llm::DeviceBuffer d(64 * 3 * sizeof(float));
  butterfly_kernel<<<1, 64>>>(d.as<float>());
  CUDA_CHECK_LAUNCH();
  std::vector<float> h(64 * 3);
  CUDA_CHECK(cudaMemcpy(h.data(), d.ptr, h.size() * 4, cudaMemcpyDeviceToHost));
  for (int t = 0; t < 64; ++t) {
    CHECK(h[size_t(t) * 3] == 496.0f);                                          // sum of 0..31 in every lane
    CHECK(h[size_t(t) * 3 + 1] == float((t & 31) == 31 ? 31 : (t & 31) + 1));  // the last lane keeps its own
    CHECK(h[size_t(t) * 3 + 2] == float((t & ~31) + 3));                        // lane 3 of the same warp
  }
  llm::DeviceBuffer r(3 * sizeof(float));
  block_reduce_kernel<<<3, 256>>>(r.as<float>());
  CUDA_CHECK_LAUNCH();
  std::vector<float> hr(3);
  CUDA_CHECK(cudaMemcpy(hr.data(), r.ptr, 12, cudaMemcpyDeviceToHost));
  for (float x : hr) CHECK(x == 255.0f * 256.0f / 2.0f);
}

TEST_CASE("emulator: a missing __syncwarp shows up as a wrong result") {
  llm::DeviceBuffer d(32 * sizeof(int));
  std::vector<int> h(32);
  int salt = 0;
  for (bool sync : {true, false, true}) {
    ++salt;  // shared memory keeps the previous launch's values here: a stale read must not look right
    neighbour_kernel<<<1, 32>>>(d.as<int>(), sync, salt);
    CUDA_CHECK_LAUNCH();
    CUDA_CHECK(cudaMemcpy(h.data(), d.ptr, 128, cudaMemcpyDeviceToHost));
    int right = 0;
    for (int i = 0; i < 32; ++i) right += h[size_t(i)] == ((i + 1) & 31) * 10 + salt;
    CAPTURE(sync);
    if (sync)
      CHECK(right == 32);
    else
      CHECK(right < 32);  // lanes run one after another between collectives: the neighbour has not written yet
  }
}

TEST_CASE("emulator: launch limits set cudaGetLastError as on an H100") {
  llm::DeviceBuffer d(1024 * sizeof(float));
  cudaGetLastError();
  smem_kernel<<<1, 2048, 0>>>(d.as<float>());
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  smem_kernel<<<1, 256, 64 * 1024>>>(d.as<float>());  // above the 48 KB default
  CHECK(cudaGetLastError() != cudaSuccess);
  CHECK(cudaFuncSetAttribute(smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024) == cudaSuccess);
  smem_kernel<<<1, 256, 64 * 1024>>>(d.as<float>());
  CHECK(cudaGetLastError() == cudaSuccess);
  CHECK(cudaFuncSetAttribute(smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 300 * 1024) != cudaSuccess);
  std::vector<float> h(256);
  CUDA_CHECK(cudaMemcpy(h.data(), d.ptr, 1024, cudaMemcpyDeviceToHost));
  for (int i = 0; i < 256; ++i) CHECK(h[size_t(i)] == float(255 - i));
}

TEST_CASE("emulator: deadlocks and divergent barriers abort with a report") {
  CHECK(aborts([] { deadlock_kernel<<<1, 64>>>(); }));
  CHECK(aborts([] {
    llm::DeviceBuffer d(8);
    divergent_kernel<<<1, 32>>>(d.as<int>());
  }));
}

TEST_CASE("emulator: a synchronous copy during stream capture invalidates the capture") {
  cudaStream_t st;
  CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  llm::DeviceBuffer d(32 * sizeof(int));
  int host[32] = {};
  CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
  CHECK(cudaMemcpy(d.ptr, host, sizeof host, cudaMemcpyHostToDevice) != cudaSuccess);
  cudaGraph_t g = nullptr;
  CHECK(cudaStreamEndCapture(st, &g) == cudaErrorStreamCaptureInvalidated);
  CHECK(g == nullptr);
  cudaGetLastError();
  // A valid capture replays its work on every launch, not at capture time.
  CUDA_CHECK(cudaMemset(d.ptr, 0, 128));
  CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
  neighbour_kernel<<<1, 32, 0, st>>>(d.as<int>(), true, 0);
  CUDA_CHECK(cudaStreamEndCapture(st, &g));
  CUDA_CHECK(cudaMemcpy(host, d.ptr, sizeof host, cudaMemcpyDeviceToHost));
  CHECK(host[0] == 0);  // not run yet
  cudaGraphExec_t exec;
  CUDA_CHECK(cudaGraphInstantiate(&exec, g, 0));
  CUDA_CHECK(cudaGraphDestroy(g));
  CUDA_CHECK(cudaGraphLaunch(exec, st));
  CUDA_CHECK(cudaStreamSynchronize(st));
  CUDA_CHECK(cudaMemcpy(host, d.ptr, sizeof host, cudaMemcpyDeviceToHost));
  CHECK(host[0] == 10);
  CUDA_CHECK(cudaGraphExecDestroy(exec));
  CUDA_CHECK(cudaStreamDestroy(st));
}

TEST_CASE("emulator: cuSOLVER Dsyevd and XsyevBatched give A v = lambda v, eigenvalues ascending") {
  // Two 4x4 symmetric matrices, column-major; only the lower triangle is meant to be read (upper: garbage).
  const int n = 4;
  std::vector<double> a = {4, 1, -2, 2, 99, 2, 0, 1, 99, 99, 3, -2, 99, 99, 99, -1,
                           2, 0, 0, 0, 99, -1, 0, 0, 99, 99, 5, 0, 99, 99, 99, 0.5};
  auto full = [&](int b, int i, int j) { return i >= j ? a[size_t(b * 16 + i + j * n)] : a[size_t(b * 16 + j + i * n)]; };
  cusolverDnHandle_t h;
  REQUIRE(cusolverDnCreate(&h) == CUSOLVER_STATUS_SUCCESS);
  cusolverDnParams_t params;
  REQUIRE(cusolverDnCreateParams(&params) == CUSOLVER_STATUS_SUCCESS);
  for (bool batched : {false, true}) {
    CAPTURE(batched);
    llm::DeviceBuffer dA(a.size() * 8), dW(8 * 8), dInfo(2 * 4);
    CUDA_CHECK(cudaMemcpy(dA.ptr, a.data(), a.size() * 8, cudaMemcpyHostToDevice));
    if (batched) {
      size_t dev = 0, host = 0;
      REQUIRE(cusolverDnXsyevBatched_bufferSize(h, params, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n, CUDA_R_64F,
                                                dA.ptr, n, CUDA_R_64F, dW.ptr, CUDA_R_64F, &dev, &host, 2) ==
              CUSOLVER_STATUS_SUCCESS);
      llm::DeviceBuffer work(dev);
      REQUIRE(cusolverDnXsyevBatched(h, params, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n, CUDA_R_64F, dA.ptr,
                                     n, CUDA_R_64F, dW.ptr, CUDA_R_64F, work.ptr, dev, nullptr, 0, dInfo.as<int>(),
                                     2) == CUSOLVER_STATUS_SUCCESS);
    } else {
      int lwork = 0;
      REQUIRE(cusolverDnDsyevd_bufferSize(h, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n, dA.as<double>(), n,
                                          dW.as<double>(), &lwork) == CUSOLVER_STATUS_SUCCESS);
      llm::DeviceBuffer work(size_t(lwork) * 8);
      for (int b = 0; b < 2; ++b)
        REQUIRE(cusolverDnDsyevd(h, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n, dA.as<double>() + b * 16, n,
                                 dW.as<double>() + b * 4, work.as<double>(), lwork, dInfo.as<int>() + b) ==
                CUSOLVER_STATUS_SUCCESS);
    }
    std::vector<double> v(a.size()), w(8);
    std::vector<int> info(2);
    CUDA_CHECK(cudaMemcpy(v.data(), dA.ptr, v.size() * 8, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(w.data(), dW.ptr, 64, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(info.data(), dInfo.ptr, 8, cudaMemcpyDeviceToHost));
    for (int b = 0; b < 2; ++b) {
      CHECK(info[size_t(b)] == 0);
      for (int k = 0; k < n; ++k) {
        if (k) CHECK(w[size_t(b * 4 + k)] >= w[size_t(b * 4 + k - 1)]);
        for (int i = 0; i < n; ++i) {
          double av = 0;
          for (int j = 0; j < n; ++j) av += full(b, i, j) * v[size_t(b * 16 + j + k * n)];
          CHECK(av == doctest::Approx(w[size_t(b * 4 + k)] * v[size_t(b * 16 + i + k * n)]).epsilon(1e-9));
        }
      }
    }
    CHECK(w[4] == doctest::Approx(-1.0));  // second matrix: eigenvalues -1, 0.5, 2, 5 (block diagonal)
    CHECK(w[7] == doctest::Approx(5.0));
  }
  cusolverDnDestroyParams(params);
  cusolverDnDestroy(h);
}
