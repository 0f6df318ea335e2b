#!/usr/bin/env bash
# CLI behaviour of the low-rank cache's quality options (issue 6): window=N, vsinks=N, alloc=spectrum on --kv and
# --kv-config; clear errors, non-zero exits. Usage: bash kv_quality.sh <llm binary> <source dir>
set -u
source "$(dirname "$0")/common.bash" "$@"

skip_without_model
short_perplexity
expect_ok "kv: window, value sinks, key ranks by spectrum" "$LLM" "${PPL[@]}" --kv svd:k=1/4,sinks=1,vsinks=1,window=4,alloc=spectrum
grep -q "kv svd:k=16,v=16/32/64,policy=seed,basis=weights,metric=score,sinks=1,alloc=spectrum,vsinks=1,window=4" "$TMP/out" ||
  { echo "FAIL: kv description missing"; cat "$TMP/out"; fails=$((fails + 1)); }
expect_fail "kv: bad window" "window=x" "$LLM" "${PPL[@]}" --kv svd:window=x
expect_fail "kv: bad vsinks" "vsinks=-2" "$LLM" "${PPL[@]}" --kv svd:vsinks=-2
expect_fail "kv: bad alloc" "unknown alloc 'layers'" "$LLM" "${PPL[@]}" --kv svd:alloc=layers
expect_ok "kv: window with importance (the unified cache)" "$LLM" "${PPL[@]}" --kv svd:window=8,policy=importance
expect_ok "kv: alloc, sinks, vsinks, window with quant (the unified cache)" "$LLM" "${PPL[@]}" --kv svd:alloc=spectrum,sinks=1,vsinks=1,window=4+quant:8
grep -q "alloc=spectrum,vsinks=1,window=4+quant:8" "$TMP/out" || { echo "FAIL: unified kv description missing"; cat "$TMP/out"; fails=$((fails + 1)); }
echo '{"kv": "svd", "k": "1/4", "window": 4, "vsinks": 1, "alloc": "spectrum"}' >"$TMP/q.json"
expect_ok "kv-config: the same as JSON" "$LLM" "${PPL[@]}" --kv-config "$TMP/q.json"
echo '{"kv": "svd", "window": "4"}' >"$TMP/bad.json"
expect_fail "kv-config: window as a string" "\"window\" must be a number" "$LLM" "${PPL[@]}" --kv-config "$TMP/bad.json"

[ $fails -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "all kv quality CLI checks passed"
