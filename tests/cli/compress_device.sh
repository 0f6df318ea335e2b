#!/usr/bin/env bash
# llm compress --device cpu|cuda (issue 6: the profile's eigen-decompositions on the GPU through cuSOLVER).
# Without a GPU (or without the CUDA backend) --device cuda is a clear error before the model is even loaded; with
# one, both devices write a profile. Usage: bash compress_device.sh <llm binary> <source dir>
set -u
source "$(dirname "$0")/common.bash" "$@"

expect_fail "compress: unknown device" "use cpu or cuda" "$LLM" compress -m "$MODEL" --device tpu -o "$TMP/p.safetensors"
"$LLM" compress --help >"$TMP/help" 2>&1
grep -q -- "--device" "$TMP/help" || { echo "FAIL: compress --help does not list --device"; fails=$((fails + 1)); }

if nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
  if [ ! -f "$MODEL" ]; then
    echo "SKIPPED: demo model missing at $MODEL (run tools/setup.sh)"
  else
    "$LLM" compress -m "$MODEL" -t 2 --device cuda -v --basis weights -o "$TMP/g.safetensors" >"$TMP/out" 2>"$TMP/err"
    rc=$?
    if [ $rc -ne 0 ] && grep -q "no CUDA backend" "$TMP/err"; then
      echo "SKIPPED: this llm was built without CUDA (a GPU is present)"
    elif [ $rc -ne 0 ]; then
      echo "FAIL: compress --device cuda: exit $rc"; cat "$TMP/err"; fails=$((fails + 1))
    else
      echo "ok: compress --device cuda"; grep "eigen-decompositions on cuda" "$TMP/err"
      expect_ok "compress --device cpu" "$LLM" compress -m "$MODEL" -t 2 --device cpu --basis weights -o "$TMP/c.safetensors"
      [ "$(stat -c %s "$TMP/g.safetensors")" = "$(stat -c %s "$TMP/c.safetensors")" ] ||
        { echo "FAIL: the cuda and cpu profiles differ in size"; fails=$((fails + 1)); }
    fi
  fi
else
  # no GPU: refused up front (no model needed, nothing written), whichever way this llm was built
  expect_fail "compress --device cuda without a GPU" "use --device cpu" \
    "$LLM" compress -m "$MODEL" --device cuda --basis weights -o "$TMP/p.safetensors"
  grep -q "compress --device cuda" "$TMP/err" || { echo "FAIL: the error does not name the command"; fails=$((fails + 1)); }
  [ ! -e "$TMP/p.safetensors" ] || { echo "FAIL: a profile was written"; fails=$((fails + 1)); }
  expect_fail "compress --device cuda without a GPU (calib)" "use --device cpu" \
    "$LLM" compress -m "$TMP/no-model.gguf" --device cuda --basis calib --calib-file "$SRC/README.md" -o "$TMP/p.safetensors"
fi

[ $fails -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "all compress --device checks passed"
