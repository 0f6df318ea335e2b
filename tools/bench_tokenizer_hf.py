#!/usr/bin/env python3
"""Encoding throughput of Hugging Face `tokenizers` and `tiktoken` on the same text as tools/bench_tokenizer,
single thread, for the Llama-3 tokenizer. tiktoken gets the Llama-3 pattern and ranks built from the same
tokenizer.json (byte-level vocab strings turned back into bytes), and the 256 special tokens.
  python3 tools/bench_tokenizer_hf.py --file /tmp/corpus.txt [--model tests/data/tokenizers/llama3/tokenizer.json]
Prints one JSON line per library (wall MB/s and MB/s by thread CPU time, best of --iters after one warm-up).
"""
import argparse
import json
import os
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # HF tokenizers: encode() of one text is single-threaded anyway
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tiktoken  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def bytes_to_unicode():
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def bench(name, fn, text, iters):
    mb = len(text.encode("utf-8")) / 1e6
    n = len(fn(text))  # warm-up (fills HF's word cache)
    best_wall = best_cpu = 1e30
    for _ in range(iters):
        w, c = time.perf_counter(), time.thread_time()
        fn(text)
        best_wall = min(best_wall, time.perf_counter() - w)
        best_cpu = min(best_cpu, time.thread_time() - c)
    print(json.dumps({"library": name, "tokens": n, "bytes": int(mb * 1e6), "warm_mb_s": round(mb / best_wall, 2),
                      "warm_cpu_mb_s": round(mb / best_cpu, 2)}))
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--file", required=True)
    ap.add_argument("--model", default="tests/data/tokenizers/llama3/tokenizer.json")
    ap.add_argument("--iters", type=int, default=3)
    a = ap.parse_args()
    text = open(a.file, encoding="utf-8").read()

    hf = Tokenizer.from_file(a.model)
    n_hf = bench("hf-tokenizers", lambda t: hf.encode(t, add_special_tokens=False).ids, text, a.iters)
    # HF is much slower on one huge string than on many small ones: also time it on the file cut at
    # newline+letter points into ~64 KB pieces (the same cut points our encoder uses internally).
    pieces, start = [], 0
    while start < len(text):
        end = start + 65536
        while end + 1 < len(text) and not (text[end] == "\n" and text[end + 1].isascii() and text[end + 1].isalpha()):
            end += 1
        end = min(end + 1, len(text))
        pieces.append(text[start:end])
        start = end
    bench("hf-tokenizers-64k-pieces",
          lambda t: [i for p in pieces for i in hf.encode(p, add_special_tokens=False).ids], text, a.iters)

    j = json.load(open(a.model, encoding="utf-8"))
    dec = bytes_to_unicode()
    ranks = {bytes(dec[ch] for ch in tok): i for tok, i in j["model"]["vocab"].items()}
    specials = {t["content"]: t["id"] for t in j["added_tokens"]}
    enc = tiktoken.Encoding("llama3", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens=specials)
    n_tt = bench("tiktoken", lambda t: enc.encode(t, allowed_special="all"), text, a.iters)
    if n_hf != n_tt:
        print(json.dumps({"warning": "token counts differ", "hf": n_hf, "tiktoken": n_tt}))


if __name__ == "__main__":
    main()
