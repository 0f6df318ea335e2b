// Batched symmetric eigen-decomposition on the GPU (cuSOLVER) for the KV profiles (issue 6): every (layer, KV
// head) of `llm compress --device cuda` is one head_dim x head_dim matrix of a batch. Safe to include without the
// CUDA toolkit; the definition lives in kernels/linalg.cu (a build without CUDA gets kernels/linalg_cuda_host.cpp's
// stub, which throws llm::Error saying so).
//
// Which cuSOLVER call, and why: cusolverDnXsyevBatched (64-bit generic API, QR-type syev, fp64), one call per
// batch. cusolverDn<t>syevjBatched is limited to n <= 32, and head_dim is 64 (SmolLM2) or 128 (Llama-3), so it
// cannot serve. Toolkits older than cuSOLVER 11.7.1 (no XsyevBatched) fall back to one cusolverDnDsyevd per matrix
// on one stream (same results, more launches). fp64 because the CPU twin (eigh_jacobi_cpu) is fp64: profiles made
// on either device agree to rounding except inside (near-)degenerate eigenspaces, where any orthonormal basis is
// equally right.
#pragma once
#include <cstdint>

namespace llm {

// a:     (batch, n, n) symmetric matrices, row-major (read only; copied to the device)
// evals: (batch, n)    eigenvalues of each matrix, sorted DESCENDING
// evecs: (batch, n, n) row-major; COLUMN j of matrix b is the unit eigenvector of evals[b*n + j]
// The same conventions as eigh_jacobi_cpu (kernels/lowrank_cpu.h), so the two are interchangeable: descending
// order (ties keep cuSOLVER's order), and the sign rule "the largest-magnitude component of each eigenvector is
// positive" (the first such component on exact ties), which makes profiles deterministic and comparable.
// Throws llm::Error when a matrix is not symmetric (|a_ij - a_ji| > 1e-9 max|a|) or holds a NaN/Inf (checked on
// the host before anything touches the device), when there is no CUDA device or no CUDA backend in this build,
// and when cuSOLVER fails or does not converge (naming the matrix).
void eigh_batched_cuda(const double* a, int n, int batch, double* evals, double* evecs);

// Whether eigh_batched_cuda can run here: this build has CUDA and a device is present. The ONE gate for the GPU
// eigensolver (llm compress's default and its --device cuda check, the tests' skips): a device that cannot run
// cuSOLVER (e.g. a CPU emulator of CUDA) belongs here too. Never throws.
bool eigh_cuda_available();

// The host half of eigh_batched_cuda, separate so that it is tested without a GPU: one LAPACK-convention result
// (w ascending; v (n, n) COLUMN-major, column j the eigenvector of w[j]) into the conventions above
// (evals descending, evecs row-major with column j = eigenvector j, sign rule applied).
void eigh_from_lapack(const double* w, const double* v, int n, double* evals, double* evecs);

// The input checks eigh_jacobi_cpu makes (square symmetric within 1e-9 max|a|, finite), with the same messages;
// `what` names the caller, `index` the matrix of the batch.
void eigh_check_symmetric(const double* a, int n, const char* what, int64_t index);

}  // namespace llm
