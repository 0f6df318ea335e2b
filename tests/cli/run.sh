#!/usr/bin/env bash
# CLI behaviour of llm run / chat / perplexity / bench: output on good input, clear errors and non-zero exits
# on bad input, never a crash (exit codes >= 128 are signals). Usage: bash run.sh <llm binary> <source dir>
set -u
source "$(dirname "$0")/common.bash" "$@"

# errors that need no model
expect_fail "run: unknown flag" "unknown flag" "$LLM" run --no-such-flag
expect_fail "run: no prompt" "prompt" "$LLM" run -m "$MODEL"
expect_fail "run: -n 0" "-n must be at least 1" "$LLM" run -m "$MODEL" -p hi -n 0
expect_fail "run: empty prompt" "empty" "$LLM" run -m "$MODEL" -p ""
expect_fail "run: bad number" "expects an integer" "$LLM" run -m "$MODEL" -p hi -n lots
expect_fail "run: bad temperature" "temperature" "$LLM" run -m "$MODEL" -p hi --temp -1
echo "not a model" >"$TMP/junk.gguf"
expect_fail "run: not a model" "junk.gguf" "$LLM" run -m "$TMP/junk.gguf" -p hi
expect_fail "run: missing model" "nope.gguf" "$LLM" run -m "$TMP/nope.gguf" -p hi
if ! nvidia-smi -L >/dev/null 2>&1; then  # on a GPU machine --device cuda works
  expect_fail "run: cuda unavailable" "cuda" "$LLM" run -m "$MODEL" -p hi --device cuda
fi
expect_fail "perplexity: no file" "-f FILE" "$LLM" perplexity -m "$MODEL"
expect_fail "perplexity: missing file" "cannot read" "$LLM" perplexity -m "$MODEL" -f "$TMP/none.txt"
expect_fail "bench: -p 0" "-p must be" "$LLM" bench -m "$MODEL" -p 0

if [ ! -f "$MODEL" ]; then
  echo "SKIPPED: demo model missing at $MODEL (run tools/setup.sh)"
  [ $fails -eq 0 ] && exit 0 || exit 1
fi

# a prompt longer than the context
long=$(printf 'word %.0s' $(seq 1 100))
expect_fail "run: prompt longer than the context" "context" "$LLM" run -m "$MODEL" -p "$long" -c 32

# greedy run: streams text to stdout, stats to stderr
if expect_ok "run: greedy" "$LLM" run -m "$MODEL" -p "The capital of France is" -n 8 --temp 0; then
  grep -q "Paris" "$TMP/out" || { echo "FAIL: run output lacks Paris: $(cat "$TMP/out")"; fails=$((fails + 1)); }
  grep -q "tok/s" "$TMP/err" || { echo "FAIL: run stats missing on stderr"; fails=$((fails + 1)); }
  grep -q "peak memory" "$TMP/err" || { echo "FAIL: run peak memory missing"; fails=$((fails + 1)); }
fi
# seeded sampling repeats
"$LLM" run -m "$MODEL" -p "Tell me a story" -n 8 --temp 0.9 --seed 5 >"$TMP/s1" 2>/dev/null
"$LLM" run -m "$MODEL" -p "Tell me a story" -n 8 --temp 0.9 --seed 5 >"$TMP/s2" 2>/dev/null
if cmp -s "$TMP/s1" "$TMP/s2" && [ -s "$TMP/s1" ]; then echo "ok: seeded sampling repeats"; else
  echo "FAIL: same seed gave different text"; fails=$((fails + 1)); fi
# issue 5: the default device, said with -v (cpu without a GPU or without a CUDA build)
if expect_ok "run: -v names the device" "$LLM" run -m "$MODEL" -p hi -n 1 --temp 0 -v; then
  if nvidia-smi -L >/dev/null 2>&1; then want="device (cpu|cuda)"; else want="device cpu \\("; fi
  grep -Eq "$want" "$TMP/err" || { echo "FAIL: run -v does not say '$want': $(cat "$TMP/err")"; fails=$((fails + 1)); }
fi
expect_ok "run: --chat" "$LLM" run -m "$MODEL" -p "What is 2+2?" -n 8 --temp 0 --chat

# chat from a pipe: two turns, two replies
if printf 'Hi!\nWhat is the capital of France?\n' | "$LLM" chat -m "$MODEL" -n 16 --temp 0 >"$TMP/chat" 2>"$TMP/err"; then
  [ "$(grep -c . "$TMP/chat")" -ge 2 ] && echo "ok: chat from a pipe" || { echo "FAIL: chat replies: $(cat "$TMP/chat")"; fails=$((fails + 1)); }
else
  echo "FAIL: chat exit"; cat "$TMP/err"; fails=$((fails + 1))
fi

# perplexity JSON on a short text
head -c 3000 "$SRC/README.md" >"$TMP/text.txt"
if expect_ok "perplexity --json" "$LLM" perplexity -m "$MODEL" -f "$TMP/text.txt" -c 64 --stride 32 --max-tokens 200 --json; then
  python3 - "$TMP/out" <<'PY' || fails=$((fails + 1))
import json, math, sys
d = json.load(open(sys.argv[1]))
assert {"ppl", "nll", "tokens"} <= d.keys(), d
assert abs(math.exp(d["nll"]) - d["ppl"]) < 1e-3 * d["ppl"], d
assert d["tokens"] == 199 and d["windows"] == 6 and 1 < d["ppl"] < 1000, d
print("ok: perplexity JSON fields", d["ppl"])
PY
fi
expect_ok "bench --json" "$LLM" bench -m "$MODEL" -p 16 -n 4 --json
grep -q '"decode_tok_s"' "$TMP/out" || { echo "FAIL: bench json"; fails=$((fails + 1)); }
# a compressed cache reports its own bytes per cached token, not the full cache's: every prompt token but the
# last 4 at 4 bits (group 32: 2 groups of 20 bytes a 64-wide row), the rest at 16 bits counted 2 bytes a value,
# plus each entry's width byte per KV head and its int32 position per layer
if expect_ok "bench --json --kv quant" "$LLM" bench -m "$MODEL" --device cpu -p 16 -n 4 --kv quant:4,recent=4 --json; then
  python3 - "$TMP/out" <<'PY' || fails=$((fails + 1))
import json, sys
d = json.load(open(sys.argv[1]))
assert d["kv"] == "full+quant:4,recent=4", d
assert d["full_kv_bytes_per_token"] == 2 * 30 * 3 * 64 * 4, d
rows = 2 * 30 * 3  # K and V rows of one token: layers x KV heads
want = (rows * (16 * 40 + 4 * 128) + 30 * 20 * (3 + 4)) / 20  # 16 of the 20 tokens at 4 bits, 4 in the window
assert abs(d["kv_bytes_per_token"] - want) < 1, (d["kv_bytes_per_token"], want)
print("ok: bench --kv quant bytes per token", d["kv_bytes_per_token"])
PY
fi

[ $fails -eq 0 ] && echo "all CLI checks passed" || echo "$fails CLI checks failed"
[ $fails -eq 0 ]
