# Shared by the CLI test scripts (sourced; the .bash suffix keeps it out of ctest's tests/cli/*.sh glob).
# Sets LLM, SRC, MODEL, TMP (removed on exit) and `fails`, and defines:
#   expect_fail "description" "needle in stderr" cmd...   non-zero exit below 128 (no signal) + the needle in stderr
#   expect_ok "description" cmd...                         exit 0
#   skip_without_model                                     no demo model: SKIPPED, exit (1 if a check failed already)
#   short_perplexity                                       PPL: `llm perplexity` args over a 2-sentence text, 16 tokens
LLM="$1"
SRC="$2"
MODEL="$SRC/models/SmolLM2-135M-Instruct.Q4_1.gguf"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fails=0

expect_fail() {
  local what="$1" needle="$2"
  shift 2
  "$@" >"$TMP/out" 2>"$TMP/err"
  local rc=$?
  if [ $rc -eq 0 ] || [ $rc -ge 128 ]; then
    echo "FAIL: $what: exit code $rc (want 1..127)"; cat "$TMP/err"; fails=$((fails + 1)); return
  fi
  if ! grep -qi -- "$needle" "$TMP/err"; then
    echo "FAIL: $what: stderr lacks '$needle':"; cat "$TMP/err"; fails=$((fails + 1)); return
  fi
  echo "ok: $what"
}

expect_ok() {
  local what="$1"
  shift
  "$@" >"$TMP/out" 2>"$TMP/err"
  local rc=$?
  if [ $rc -ne 0 ]; then echo "FAIL: $what: exit $rc"; cat "$TMP/err"; fails=$((fails + 1)); return 1; fi
  echo "ok: $what"
}

skip_without_model() {
  if [ ! -f "$MODEL" ]; then
    echo "SKIPPED: demo model missing at $MODEL (run tools/setup.sh)"
    [ $fails -eq 0 ] || exit 1
    exit 0
  fi
}

short_perplexity() {
  printf 'The quick brown fox jumps over the lazy dog. A second sentence follows the first one here.\n' >"$TMP/t.txt"
  PPL=(perplexity -m "$MODEL" -f "$TMP/t.txt" -c 16 --stride 16 -t 2)
}
