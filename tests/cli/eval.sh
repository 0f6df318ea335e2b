#!/usr/bin/env bash
# CLI behaviour of llm eval: bad records and flags give clear errors naming the record / flag (non-zero exit, never
# a crash); plots from JSON; with the demo model a tiny eval on two short passkey records (well-formed JSON,
# scores in range) and a two-trial search. Usage: bash eval.sh <llm binary> <source dir>
set -u
source "$(dirname "$0")/common.bash" "$@"
SUITE="$(dirname "$LLM")/make_longctx_suite"


good='{"input": "What is the pass key?", "context": "The grass is green. The pass key is 12345. Remember it.", "answers": ["12345"], "all_classes": null, "length": 10, "dataset": "passkey", "_id": "good-1"}'
printf '%s\n' "$good" >"$TMP/good.jsonl"
printf '%s\n%s\n' "$good" '{"input": "q", "context": "c", "all_classes": null, "length": 1, "dataset": "passkey", "_id": "no-answers-7"}' >"$TMP/missing.jsonl"
printf '%s\n' '{"input": "q", "context": "c", "answers": ["a"], "all_classes": null, "length": 1, "dataset": "hotpot_qa", "_id": "rec-unknown"}' >"$TMP/unknown.jsonl"
printf '%s\n' '{"input": "q", "context": "", "answers": ["a"], "all_classes": null, "length": 0, "dataset": "passkey", "_id": "rec-empty"}' >"$TMP/empty.jsonl"
printf '%s\n' '{"input": "q", "context": "c", "answers": ["a"], ' >"$TMP/broken.jsonl"

# errors that need no model (records are read before the model loads)
expect_fail "eval: no --data" "--data" "$LLM" eval -m "$MODEL"
expect_fail "eval: missing file" "nope.jsonl" "$LLM" eval -m "$MODEL" --data "$TMP/nope.jsonl"
expect_fail "eval: missing field names the record" "no-answers-7" "$LLM" eval -m "$MODEL" --data "$TMP/missing.jsonl"
expect_fail "eval: missing field names the field" "missing field \"answers\"" "$LLM" eval -m "$MODEL" --data "$TMP/missing.jsonl"
expect_fail "eval: missing field names the line" "missing.jsonl:2" "$LLM" eval -m "$MODEL" --data "$TMP/missing.jsonl"
expect_fail "eval: unknown dataset" "unknown dataset \"hotpot_qa\"" "$LLM" eval -m "$MODEL" --data "$TMP/unknown.jsonl"
expect_fail "eval: unknown dataset names the record" "rec-unknown" "$LLM" eval -m "$MODEL" --data "$TMP/unknown.jsonl"
expect_fail "eval: empty context" "empty \"context\"" "$LLM" eval -m "$MODEL" --data "$TMP/empty.jsonl"
expect_fail "eval: empty context names the record" "rec-empty" "$LLM" eval -m "$MODEL" --data "$TMP/empty.jsonl"
expect_fail "eval: broken JSON" "not valid JSON" "$LLM" eval -m "$MODEL" --data "$TMP/broken.jsonl"
expect_fail "eval: --task absent from the data" "it has: passkey" "$LLM" eval -m "$MODEL" --data "$TMP/good.jsonl" --task niah
expect_fail "eval: bad --limit" "--limit" "$LLM" eval -m "$MODEL" --data "$TMP/good.jsonl" --limit -1
expect_fail "eval: --ablate and --search" "separate" "$LLM" eval -m "$MODEL" --data "$TMP/good.jsonl" --ablate --search random
expect_fail "eval: bad search method" "random or evolve" "$LLM" eval -m "$MODEL" --data "$TMP/good.jsonl" --search bayes
expect_fail "eval: --ablate needs a compressed spec" "--kv" "$LLM" eval -m "$MODEL" --data "$TMP/good.jsonl" --ablate --kv full
expect_fail "eval: unknown flag" "unknown flag" "$LLM" eval --frobnicate

# plots from JSON (no model)
cat >"$TMP/search.json" <<'EOF'
{"method": "random", "trials": [
 {"spec": "svd:k=8,v=8/16/32,policy=seed", "score": 40, "kv_bytes_per_token": 8000},
 {"spec": "svd:k=16,v=16/32/64,policy=seed", "score": 60, "kv_bytes_per_token": 17280},
 {"spec": "svd:k=16,v=8/16/32,policy=seed", "score": 35, "kv_bytes_per_token": 11000}]}
EOF
if expect_ok "plot quality" "$LLM" eval --plot quality --from "$TMP/search.json" --svg "$TMP/q.svg"; then
  grep -q "2 on the Pareto front" "$TMP/err" || { echo "FAIL: plot quality front: $(cat "$TMP/err")"; fails=$((fails + 1)); }
  head -c 200 "$TMP/q.svg" | grep -q "<svg" || { echo "FAIL: no <svg> in the plot"; fails=$((fails + 1)); }
fi
printf '%s\n%s\n' '{"n_prompt": 128, "decode_tok_s": 50.0}' '{"n_prompt": 1024, "decode_tok_s": 40.0}' >"$TMP/bench.jsonl"
expect_ok "plot speed from bench JSON lines" "$LLM" eval --plot speed --from "$TMP/bench.jsonl" --svg "$TMP/s.svg"
expect_fail "plot: bad kind" "quality or speed" "$LLM" eval --plot pie --from "$TMP/bench.jsonl" --svg "$TMP/x.svg"
expect_fail "plot: not an eval JSON" "not an" "$LLM" eval --plot quality --from "$TMP/bench.jsonl" --svg "$TMP/x.svg"
expect_fail "plot: no --svg" "--svg" "$LLM" eval --plot quality --from "$TMP/search.json"

if [ ! -f "$MODEL" ]; then
  echo "SKIPPED: demo model missing at $MODEL (run tools/setup.sh)"
  [ $fails -eq 0 ] && exit 0 || exit 1
fi

# a tiny eval: two passkey records of ~300 tokens made by the suite generator
if [ -x "$SUITE" ]; then
  "$SUITE" --tasks passkey --lengths 300 --depths 0,100 --seed 5 --out "$TMP/suite.jsonl"
else
  printf '%s\n' "$good" >"$TMP/suite.jsonl"
fi
if expect_ok "eval: tiny passkey run" "$LLM" eval -m "$MODEL" --data "$TMP/suite.jsonl" -c 512 --json "$TMP/eval.json"; then
  grep -q "average" "$TMP/out" || { echo "FAIL: eval table lacks the average: $(cat "$TMP/out")"; fails=$((fails + 1)); }
  python3 - "$TMP/eval.json" <<'PY' || fails=$((fails + 1))
import json, sys
d = json.load(open(sys.argv[1]))
assert d["kv"] == "full" and d["n_ctx"] == 512, d
recs = d["records"]
assert len(recs) >= 1 and all(0.0 <= r["score"] <= 1.0 for r in recs), recs
assert all(r["prompt_tokens"] <= 512 - 16 and r["generated_tokens"] <= 16 for r in recs), recs
t = d["summary"]["tasks"]["passkey"]
assert t["n"] == len(recs) and 0.0 <= t["score"] <= 100.0, d["summary"]
assert 0.0 <= d["summary"]["average"] <= 100.0
print("ok: eval JSON well formed, passkey score", t["score"])
PY
fi
# a two-trial random search on one record at a 4x budget
if expect_ok "eval --search random" "$LLM" eval -m "$MODEL" --data "$TMP/suite.jsonl" --limit 1 -c 512 --search random \
    --trials 2 --budget-ratio 4 --seed 3 --json "$TMP/search_out.json"; then
  python3 - "$TMP/search_out.json" <<'PY' || fails=$((fails + 1))
import json, sys
d = json.load(open(sys.argv[1]))
assert d["method"] == "random" and len(d["trials"]) == 2, d
assert all(t["ratio"] >= 4 - 1e-9 and 0 <= t["score"] <= 100 for t in d["trials"]), d
print("ok: search JSON well formed:", [t["spec"] for t in d["trials"]])
PY
fi

[ $fails -eq 0 ] && echo "all eval CLI checks passed" || echo "$fails eval CLI checks failed"
[ $fails -eq 0 ]
