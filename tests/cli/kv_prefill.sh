#!/usr/bin/env bash
# CLI behaviour of prefill compression (issue 7): the +quant/+keep/+evict parts of --kv and --kv-config on
# run and perplexity; clear errors, non-zero exits, never a crash. Usage: bash kv_prefill.sh <llm binary> <source dir>
set -u
source "$(dirname "$0")/common.bash" "$@"
if [ ! -f "$MODEL" ]; then echo "SKIPPED: demo model missing at $MODEL (run tools/setup.sh)"; exit 0; fi
expect_fail "fractions not summing to 1" "sum to 1" "$LLM" run -m "$MODEL" -p hi -n 1 --kv "quant:8/4/2=0.2/0.5/0.4"
expect_fail "keep ratio outside (0,1]" "outside (0, 1]" "$LLM" run -m "$MODEL" -p hi -n 1 --kv "keep:1.5"
expect_fail "unknown eviction method" "unknown method" "$LLM" run -m "$MODEL" -p hi -n 1 --kv "evict:lru,budget=0.5"
expect_fail "svd combined: bad rank-row group" "must be >= 4" "$LLM" run -m "$MODEL" -p hi -n 1 --kv "svd+quant:4,group=2"
echo '{"kv": "full", "k": 16, "quant": "4"}' >"$TMP/bad.json"
expect_fail "kv-config: svd keys with kv full" "low-rank keys" "$LLM" run -m "$MODEL" -p hi -n 1 --kv-config "$TMP/bad.json"
expect_fail "perplexity with dropped tokens" "selective propagation" \
  "$LLM" perplexity -m "$MODEL" -f "$SRC/tests/data/text/GFDL-1.3.txt" -c 64 --stride 64 --kv "keep:0.5"
echo '{"kv": "full", "quant": "8/4/2=0.2/0.5/0.3,recent=8", "evict": "snapkv,budget=0.5"}' >"$TMP/c.json"
out=$("$LLM" run -m "$MODEL" -p "The capital of France is" -n 6 --temp 0 --kv-config "$TMP/c.json" 2>"$TMP/err")
if echo "$out" | grep -q Paris; then echo "ok: --kv-config quant+evict generates: $out"; else echo "FAIL: $out"; cat "$TMP/err"; fails=$((fails + 1)); fi
out=$("$LLM" run -m "$MODEL" -p "The capital of France is" -n 6 --temp 0 --kv "quant:8/4=0.5/0.5,recent=2+keep:0.5,from=10" 2>"$TMP/err")
if echo "$out" | grep -q Paris; then echo "ok: --kv quant+keep generates: $out"; else echo "FAIL: $out"; cat "$TMP/err"; fails=$((fails + 1)); fi
# issue 7's unified policy: svd ranks + bits + keep/drop in one spec and in one JSON file (full ranks: the
# on-the-fly weights basis is poor at low rank on this model, see docs/kv-compression.md; this checks the wiring)
out=$("$LLM" run -m "$MODEL" -p "The capital of France is" -n 6 --temp 0 --kv "svd:k=d,v=d,policy=uniform+quant:8,recent=4+evict:snapkv,budget=0.5" 2>"$TMP/err")
if echo "$out" | grep -q Paris; then echo "ok: --kv svd+quant+evict generates: $out"; else echo "FAIL: $out"; cat "$TMP/err"; fails=$((fails + 1)); fi
echo '{"kv": "svd", "k": "d", "v": "d", "policy": "importance", "quant": "8/4=0.5/0.5,recent=4", "keep": "0.5,from=10", "imp": "w=8"}' >"$TMP/u.json"
out=$("$LLM" run -m "$MODEL" -p "The capital of France is" -n 6 --temp 0 --kv-config "$TMP/u.json" 2>"$TMP/err")
if echo "$out" | grep -q Paris; then echo "ok: --kv-config svd(policy=importance)+quant+keep+imp generates: $out"; else echo "FAIL: $out"; cat "$TMP/err"; fails=$((fails + 1)); fi
[ $fails -eq 0 ] || exit 1
