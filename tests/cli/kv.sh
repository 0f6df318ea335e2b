#!/usr/bin/env bash
# CLI behaviour of the low-rank KV cache (issue 6): llm compress, --kv / --kv-config / --kv-profile on
# perplexity and run; clear errors, non-zero exits, never a crash. Usage: bash kv.sh <llm binary> <source dir>
set -u
source "$(dirname "$0")/common.bash" "$@"

expect_fail "compress: no output" "-o PROFILE" "$LLM" compress -m "$MODEL"
expect_fail "compress: bad basis" "weights or calib" "$LLM" compress -m "$MODEL" --basis pca -o "$TMP/p.safetensors"
expect_fail "compress: bad metric" "score or energy" "$LLM" compress -m "$MODEL" --basis weights --metric l2 -o "$TMP/p.safetensors"
expect_fail "compress: calib without text" "--calib-file" "$LLM" compress -m "$MODEL" --basis calib -o "$TMP/p.safetensors"

skip_without_model
short_perplexity
expect_fail "kv: rank > head_dim" "exceeds head_dim 64" "$LLM" "${PPL[@]}" --kv svd:k=65
expect_fail "kv: rank 0" "rank 0" "$LLM" "${PPL[@]}" --kv svd:v=0
expect_fail "kv: unknown policy" "unknown policy" "$LLM" "${PPL[@]}" --kv svd:policy=random
expect_fail "kv: malformed" "KEY=VALUE" "$LLM" "${PPL[@]}" --kv svd:k16
expect_ok "kv: importance without given scores (the prefill computes them, issue 7)" "$LLM" "${PPL[@]}" --kv svd:policy=importance
expect_fail "kv: calib without profile" "llm compress --basis calib" "$LLM" "${PPL[@]}" --kv svd:basis=calib
expect_fail "kv: profile with full cache" "--kv svd" "$LLM" "${PPL[@]}" --kv-profile "$TMP/none.safetensors"
expect_fail "kv: missing profile" "none.safetensors" "$LLM" "${PPL[@]}" --kv svd --kv-profile "$TMP/none.safetensors"
echo '{"kv": "svd", "k": 1000}' >"$TMP/bad.json"
expect_fail "kv-config: rank too big" "exceeds head_dim" "$LLM" "${PPL[@]}" --kv-config "$TMP/bad.json"

expect_ok "compress: weights profile" "$LLM" compress -m "$MODEL" -t 2 --basis weights -o "$TMP/w.safetensors"
expect_ok "perplexity with the profile" "$LLM" "${PPL[@]}" --kv svd:k=1/4,v=d/4/d/2/d --kv-profile "$TMP/w.safetensors"
grep -q "kv svd:k=16,v=16/32/64,policy=seed,basis=weights" "$TMP/out" || { echo "FAIL: kv description missing"; cat "$TMP/out"; fails=$((fails + 1)); }
expect_ok "compress: calib profile" "$LLM" compress -m "$MODEL" -t 2 --basis calib --calib-file "$TMP/t.txt" -o "$TMP/c.safetensors"
expect_fail "kv: basis mismatch" "basis" "$LLM" "${PPL[@]}" --kv svd:basis=weights --kv-profile "$TMP/c.safetensors"
expect_fail "kv: metric mismatch" "has metric score" "$LLM" "${PPL[@]}" --kv svd:metric=energy --kv-profile "$TMP/c.safetensors"
expect_fail "kv: bad sinks" "sinks=-1" "$LLM" "${PPL[@]}" --kv svd:sinks=-1
expect_ok "kv: sinks with the unified cache" "$LLM" "${PPL[@]}" --kv svd:sinks=4+quant:8
expect_ok "kv: sinks with importance" "$LLM" "${PPL[@]}" --kv svd:sinks=4,policy=importance
# (a profile of another model is refused: tests/test_kv_lowrank.cpp, which can forge one without Python)
expect_ok "run with a compressed cache" "$LLM" run -m "$MODEL" -t 2 -p "Hello" -n 4 --temp 0 --kv svd:k=1/2,v=1/2,policy=uniform

[ $fails -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "all kv CLI checks passed"
