#!/usr/bin/env bash
# --dtype (issue 5): bf16 | f16 for the CUDA backend; --device cpu computes in fp32 and refuses f16 with the reason,
# in every command that takes --device; -v names the dtype in use. Usage: bash dtype.sh <llm binary> <source dir>
set -u
source "$(dirname "$0")/common.bash" "$@"

# refused before the model is read (so no model file is needed)
expect_fail "run: unknown dtype" "use bf16 or f16" "$LLM" run -m "$MODEL" -p hi --device cpu --dtype f8
expect_fail "run: f16 on cpu" "computes in fp32" "$LLM" run -m "$MODEL" -p hi --device cpu --dtype f16
expect_fail "chat: f16 on cpu" "--device cuda" "$LLM" chat -m "$MODEL" --device cpu --dtype f16
expect_fail "perplexity: f16 on cpu" "computes in fp32" "$LLM" perplexity -m "$MODEL" --device cpu --dtype f16 \
  -f "$SRC/tests/data/text/GFDL-1.3.txt"
printf '%s\n' '{"input": "q?", "context": "The pass key is 1.", "answers": ["1"], "all_classes": null, "length": 6, "dataset": "passkey", "_id": "d-1"}' >"$TMP/one.jsonl"
expect_fail "eval: f16 on cpu" "computes in fp32" "$LLM" eval -m "$MODEL" --device cpu --dtype f16 \
  --data "$TMP/one.jsonl"
expect_fail "bench: f16 on cpu" "computes in fp32" "$LLM" bench -m "$MODEL" --device cpu --dtype f16 -p 4 -n 1
if ! nvidia-smi -L >/dev/null 2>&1; then  # no GPU: cuda itself is refused, f16 or not
  expect_fail "run: f16 on cuda without a GPU" "cuda" "$LLM" run -m "$MODEL" -p hi --device cuda --dtype f16
fi

if [ -f "$MODEL" ]; then
  if expect_ok "run: -v names the dtype (cpu: fp32)" "$LLM" run -m "$MODEL" -p hi -n 1 --temp 0 -v --device cpu; then
    grep -q "dtype fp32" "$TMP/err" || { echo "FAIL: -v lacks 'dtype fp32':"; cat "$TMP/err"; fails=$((fails + 1)); }
  fi
  expect_ok "run: --dtype bf16 on cpu is the default (accepted)" "$LLM" run -m "$MODEL" -p hi -n 1 --temp 0 \
    --device cpu --dtype bf16
else
  echo "SKIPPED: demo model absent ($MODEL)"
fi

[ $fails -eq 0 ] && echo "all CLI checks passed" || echo "$fails CLI checks failed"
[ $fails -eq 0 ]
