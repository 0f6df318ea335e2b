#!/usr/bin/env bash
# find_package(llm) works: install the build tree to a temporary prefix, build examples/ against it and run it.
# Usage: bash install_example.sh <llm binary> <source dir>
set -eu
LLM="$1"
SRC="$2"
BUILD=$(dirname "$LLM")
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cmake --install "$BUILD" --prefix "$TMP/prefix" >/dev/null
cmake -S "$SRC/examples" -B "$TMP/build" -G Ninja -DCMAKE_PREFIX_PATH="$TMP/prefix" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$TMP/build" >/dev/null
echo "ok: examples/ built against the installed package"
MODEL="$SRC/models/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$MODEL" ]; then echo "SKIPPED: demo model missing, example not run"; exit 0; fi
out=$("$TMP/build/complete" "$MODEL" "The capital of France is" 8)
echo "$out" | grep -q Paris || { echo "FAIL: example output: $out"; exit 1; }
echo "ok: example ran: $out"
if "$TMP/build/complete" "$TMP/none.gguf" "x" 2>"$TMP/err"; then echo "FAIL: bad model accepted"; exit 1; fi
grep -q none.gguf "$TMP/err" && echo "ok: example reports a bad model"
