#!/usr/bin/env bash
# The whole test suite: unit + CLI tests of the normal build (CUDA tests skip without a GPU), then the CPU tests
# under ASan+UBSan and each fuzz target for a bounded time (set LLM_QUICK=1 to skip those two).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
# The CUDA sources and tests/cuda on the CPU emulator (emu/, docs/performance.md "CUDA under host emulation"):
# only the emulated sources compile (the host code is shared); ctest entries cuda_emu_*. LLM_EMU=0 skips it.
if [ "${LLM_EMU:-1}" != "0" ]; then
  if [ -f /usr/local/cuda/include/cuda_runtime_api.h ] || [ -n "${CUDA_PATH:-}" ]; then
    cmake -S . -B "$BUILD_DIR" -DLLM_CUDA_EMU=ON >/dev/null
    cmake --build "$BUILD_DIR" -j"$(nproc)" --target llm_cuda_emu_tests
  else
    echo "SKIPPED: CUDA emulator tests (no CUDA Toolkit headers)"
  fi
fi
ctest --test-dir "$BUILD_DIR" --output-on-failure -j"$(nproc)"
if [ "${LLM_QUICK:-0}" != "1" ] && [ -x tools/sanitize_and_fuzz.sh ]; then
  bash tools/sanitize_and_fuzz.sh
fi
