#!/usr/bin/env bash
# llm tokenize: vector files in llama.cpp's format reproduce the .out files; -p and --pieces; errors exit 1.
# usage: tokenize.sh LLM_BINARY SOURCE_DIR
set -u
llm="$1"; src="$2"; d="$src/tests/data/tokenizers"
fail=0
check() { if [ "$1" != "$2" ]; then echo "FAIL: $3"; echo " expected: $2"; echo " got:      $1"; fail=1; fi; }

for v in llama2-spm/ggml-vocab-llama-spm.gguf gpt2/ggml-vocab-gpt-2.gguf starcoder/ggml-vocab-starcoder.gguf; do
  if ! diff <("$llm" tokenize -m "$d/$v" --cases "$d/$v.inp") "$d/$v.out" > /dev/null; then
    echo "FAIL: --cases $v differs from $v.out"; fail=1
  fi
done
out=$("$llm" tokenize -m "$d/gpt2/ggml-vocab-gpt-2.gguf" -p "Hello world")
check "$out" "15496 995" "-p Hello world (gpt-2)"
out=$("$llm" tokenize -m "$d/llama2-spm/ggml-vocab-llama-spm.gguf" -p "Hello" --bos)
check "$out" "1 15043" "-p Hello --bos (llama-spm)"
out=$("$llm" tokenize -m "$d/gpt2/ggml-vocab-gpt-2.gguf" -p " world" --pieces | tr -s ' ')
check "$out" " 995 ' world'" "--pieces"

# errors: exit status 1 and a message naming the problem
"$llm" tokenize -m "$d/no-such-file.json" -p x > /dev/null 2> /tmp/llm_tok_err.$$; rc=$?
check "$rc" "1" "missing file exit status"
grep -q "does not exist" /tmp/llm_tok_err.$$ || { echo "FAIL: missing-file message"; cat /tmp/llm_tok_err.$$; fail=1; }
head -c 5000 "$d/llama3/tokenizer.json" > /tmp/llm_tok_trunc.$$.json
"$llm" tokenize -m /tmp/llm_tok_trunc.$$.json -p x > /dev/null 2> /tmp/llm_tok_err.$$; rc=$?
check "$rc" "1" "truncated tokenizer.json exit status"
grep -q "not valid JSON" /tmp/llm_tok_err.$$ || { echo "FAIL: truncated-json message"; cat /tmp/llm_tok_err.$$; fail=1; }
"$llm" tokenize -m "$d/gpt2/ggml-vocab-gpt-2.gguf" > /dev/null 2>&1; rc=$?
check "$rc" "1" "neither -p nor --cases"
rm -f /tmp/llm_tok_err.$$ /tmp/llm_tok_trunc.$$.json
[ $fail = 0 ] && echo "tokenize CLI: all checks passed"
exit $fail
