#!/usr/bin/env bash
# The whole test suite: unit + CLI tests of the normal build (CUDA tests skip without a GPU), then the CPU tests
# under ASan+UBSan and each fuzz target for a bounded time (set LLM_QUICK=1 to skip those two).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
ctest --test-dir "$BUILD_DIR" --output-on-failure -j"$(nproc)"
if [ "${LLM_QUICK:-0}" != "1" ] && [ -x tools/sanitize_and_fuzz.sh ]; then
  bash tools/sanitize_and_fuzz.sh
fi
