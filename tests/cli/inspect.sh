#!/usr/bin/env bash
# llm inspect: the demo model's config and tensor types (text and --json), a generated HF directory, and
# clear non-zero exits for a non-model file and a missing file.
# Usage: inspect.sh BUILD/llm SOURCE_DIR
set -uo pipefail
LLM=$1
SRC=$2
GEN=$(dirname "$LLM")/gen_model
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fails=0
check() {  # check DESCRIPTION COMMAND...: the command must succeed
  local what=$1; shift
  if "$@"; then echo "ok   $what"; else echo "FAIL $what"; fails=$((fails + 1)); fi
}
has_line() { grep -qx -- "$2" <<<"$1"; }

# --- bad input: non-zero exit and a message naming the file and the problem ---
echo "just text" >"$TMP/notes.txt"
out=$("$LLM" inspect -m "$TMP/notes.txt" 2>&1); rc=$?
check "non-model file exits non-zero" test $rc -ne 0
check "non-model file message" grep -q "notes.txt: not a model: expected a .gguf file, a .safetensors file or a Hugging Face directory with config.json" <<<"$out"
out=$("$LLM" inspect -m "$TMP/missing.gguf" 2>&1); rc=$?
check "missing file exits non-zero" test $rc -ne 0
check "missing file message" grep -q "missing.gguf: no such file or directory" <<<"$out"
printf 'GGUF\x03\x00\x00\x00' >"$TMP/trunc.gguf"
out=$("$LLM" inspect -m "$TMP/trunc.gguf" 2>&1); rc=$?
check "truncated gguf exits non-zero with 'llm: error:'" test $rc -ne 0
check "truncated gguf message names the file" grep -q "llm: error: .*trunc.gguf" <<<"$out"
out=$("$LLM" inspect -m 2>&1); rc=$?
check "-m without a value exits non-zero" test $rc -ne 0

# --- a generated HF directory (2 shards) ---
if [ -x "$GEN" ]; then
  "$GEN" --config "$SRC/tests/data/models/tiny/config.json" -o "$TMP/tiny" --shards 2 >/dev/null
  out=$("$LLM" inspect -m "$TMP/tiny"); rc=$?
  check "tiny dir exits 0" test $rc -eq 0
  check "tiny: layers 2" has_line "$out" "layers: 2"
  check "tiny: rope_layout half_split" has_line "$out" "rope_layout: half_split"
  check "tiny: 21 tensors" has_line "$out" "tensors: 21"
  check "tiny: q_proj is BF16 [64, 64]" grep -Eq "^blk\.0\.attn_q\.weight +BF16 +\[64, 64\] +8192$" <<<"$out"
else
  echo "SKIPPED: $GEN not built"
fi

# --- the demo model ---
MODEL="$SRC/models/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$MODEL" ]; then
  echo "SKIPPED: demo model missing at $MODEL (run tools/setup.sh)"
else
  out=$(LLM_MODEL="$MODEL" "$LLM" inspect); rc=$?
  check "demo model (default path) exits 0" test $rc -eq 0
  for line in "arch: llama" "layers: 30" "hidden: 576" "heads: 9" "kv_heads: 3" "head_dim: 64" "ffn: 1536" \
              "vocab: 49152" "rope_theta: 100000" "tied: true" "rope_layout: interleaved" "tensors: 272"; do
    check "demo: $line" has_line "$out" "$line"
  done
  check "demo: token_embd is Q8_0" grep -Eq "^token_embd\.weight +Q8_0 +\[49152, 576\]" <<<"$out"
  check "demo: layer matrices are Q4_1" test "$(grep -Ec '^blk\.[0-9]+\.(attn_[qkv]|attn_output|ffn_gate|ffn_up|ffn_down)\.weight +Q4_1 ' <<<"$out")" -eq 210
  check "demo: norms are F32" test "$(grep -Ec '_norm\.weight +F32 +\[576\]' <<<"$out")" -eq 61
  json=$("$LLM" inspect -m "$MODEL" --json); rc=$?
  check "demo --json exits 0" test $rc -eq 0
  for kv in '"layers": 30' '"heads": 9' '"kv_heads": 3' '"head_dim": 64' '"vocab": 49152' '"tensors": 272' \
            '"dtype": "Q4_1"' '"dtype": "Q8_0"' '"dtype": "F32"'; do
    check "demo --json: $kv" grep -q -- "$kv" <<<"$json"
  done
  check "demo --json: one object" test "$(head -c1 <<<"$json")$(tail -n1 <<<"$json")" = "{}"
fi

if [ $fails -ne 0 ]; then echo "$fails check(s) failed"; exit 1; fi
echo "all inspect checks passed"
