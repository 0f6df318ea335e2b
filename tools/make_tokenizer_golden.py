#!/usr/bin/env python3
"""Golden token ids for the demo model's GGUF tokenizer (SmolLM2, pre-tokenizer "smollm"), made with an
independent implementation: Hugging Face transformers' tokenizer built from the same GGUF
(AutoTokenizer.from_pretrained(dir, gguf_file=...)). Writes llama.cpp's vector format:
  tests/data/tokenizers/smollm2/golden.inp  (cases separated by "\\n__ggml_vocab_test__\\n")
  tests/data/tokenizers/smollm2/golden.out  (one line per case, each id preceded by a space)
Cases are encoded without BOS/EOS (add_special_tokens=False); special-token texts are matched.
Usage: python3 tools/make_tokenizer_golden.py [models/SmolLM2-135M-Instruct.Q4_1.gguf]
"""
import os
import sys

from tokenizers import pre_tokenizers
from transformers import AutoTokenizer

gguf = sys.argv[1] if len(sys.argv) > 1 else "models/SmolLM2-135M-Instruct.Q4_1.gguf"
out_dir = "tests/data/tokenizers/smollm2"
tok = AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(gguf)), gguf_file=os.path.basename(gguf))
# transformers' GGUF converter builds a plain ByteLevel(use_regex) pre-tokenizer for tokenizer.ggml.pre = smollm
# and drops the digit split that SmolLM2's published tokenizer.json has (Sequence[Digits(individual_digits=True),
# ByteLevel]) and that llama.cpp applies for "smollm". The two differ on numerics outside 0-9 ("\u2163", "\u00bd").
# Put the published pre-tokenizer back; vocab and merges stay as transformers read them from the GGUF.
tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
    [pre_tokenizers.Digits(individual_digits=True),
     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])

cases = [
    "Hello world",
    " Hello world",
    "Hello World!",
    "The year 2024 had 366 days; 3.14159 is pi.",
    "1234567890",
    " 12 345 6789 ",
    "Call 555-0199 or +1 (800) 123-4567.",
    "def add(a, b):\n    return a + b\n",
    "for (int i = 0; i < n; ++i) { sum += x[i]; }",
    "    indented\n\tTabbed\n\n\nthree newlines",
    "I'm sure you've heard they'll say it's 'quoted' and we'd",
    "SHOUTING WORDS AND CamelCaseIdentifiers",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber Stra\u00dfe",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u041a\u0430\u043a \u0434\u0435\u043b\u0430?",
    "\u4f60\u597d\uff0c\u4e16\u754c\u3002\u4eca\u5929\u5929\u6c14\u5f88\u597d\u3002",
    "\u3053\u3093\u306b\u3061\u306f\u4e16\u754c \u30ab\u30bf\u30ab\u30ca",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "emoji \U0001F600\U0001F680 and \u2764\ufe0f flags \U0001F1EB\U0001F1F7",
    "\u0661\u0662\u0663 Arabic digits and \u2163 roman numeral and \u00bd",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>text after end",
    "a<|im_end|>b",
    "   ",
    "\n",
    " \n \n",
    "trailing spaces   ",
    "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct?x=1&y=2#frag",
    "x**2 + y**2 == z**2 -> True // comment /* block */",
    "\"JSON\": {\"key\": [1, 2, 3], \"null\": null}",
    "Mixed\u00a0non-breaking\u2003em space\u3000ideographic",
    "A sentence. Another one! And a third? Yes...",
]

os.makedirs(out_dir, exist_ok=True)
with open(f"{out_dir}/golden.inp", "w", encoding="utf-8", newline="") as f:
    for c in cases:
        f.write(c + "\n__ggml_vocab_test__\n")
with open(f"{out_dir}/golden.out", "w", encoding="utf-8") as f:
    for c in cases:
        ids = tok.encode(c, add_special_tokens=False)
        f.write("".join(" %d" % i for i in ids) + "\n")
print("wrote", len(cases), "cases to", out_dir)
