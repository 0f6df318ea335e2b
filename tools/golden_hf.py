#!/usr/bin/env python3
"""Golden reference data for the demo model, made with Hugging Face transformers (an independent implementation).

transformers loads the demo GGUF with `gguf_file=`, dequantises every tensor to float32 (with the `gguf` package),
un-permutes the GGUF Q/K rows back into HF's half-split RoPE layout and ties lm_head to the embedding. All maths
here runs on the CPU in float32, single-threaded where it matters for determinism (torch.use_deterministic_algorithms).

Writes (see tests/data/golden/README.md for every field):
  tests/data/golden/smollm2_logits.json          per-position logits summaries for 3 prompts
  tests/data/golden/smollm2_logits_p0_last.f32   the full logits row of the last position of prompt 0
  tests/data/golden/smollm2_greedy.json          64-token greedy generations (2 plain prompts, 1 chat)
  tests/data/golden/smollm2_perplexity.json      strided-window perplexity of tests/data/text/GFDL-1.3.txt

Usage: python3 tools/golden_hf.py [--models DIR] [--out DIR] [--check] [--parts logits,greedy,ppl]
Needs: torch (CPU), transformers >= 5, gguf, accelerate (transformers refuses GGUF loading without it).
--check recomputes everything and compares with the files on disk instead of writing them.
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOPK = 10

LOGIT_PROMPTS = [
    # plain English sentence
    "The capital of France is Paris, and the capital of Germany is",
    # code snippet (exercises the digit splitting and whitespace runs of the smollm pre-tokenizer)
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n\n"
    "for i in range(10):\n    print(i, fibonacci(i))\n",
    # a longer paragraph (~100 tokens)
    "The history of computing is longer than the history of computing hardware and modern computing "
    "technology and includes the history of methods intended for pen and paper or for chalk and slate, "
    "with or without the aid of tables. Digital computing is intimately tied to the representation of "
    "numbers. But long before abstractions like the number arose, there were mathematical concepts to "
    "serve the purposes of civilization. These concepts are implicit in concrete practices such as "
    "one-to-one correspondence, the basis of counting.",
]

GREEDY_PLAIN_PROMPTS = [
    "Once upon a time, there was a little robot who",
    "The three primary colors are",
]
GREEDY_CHATS = [
    # no system message: the template injects its default system prompt
    [{"role": "user", "content": "Write a short poem about the sea."}],
    # an explicit system message (no default injected) and a short answer that should end on <|im_end|> (EOS)
    [{"role": "system", "content": "You are a concise assistant. Answer in one sentence."},
     {"role": "user", "content": "What is the capital of France?"}],
]
MAX_NEW_TOKENS = 64

PPL_TEXT = "tests/data/text/GFDL-1.3.txt"
PPL_CONFIGS = [(512, 256), (256, 256)]   # (ctx, stride)
PPL_PREFIX = 1024                        # a cheap variant on the first 1024 ids, for quick engine tests


def f32(x):
    """A float32 value as the Python float that prints it exactly (JSON round-trips it bit for bit)."""
    return float(np.float32(x))


def load(models_dir):
    tok = AutoTokenizer.from_pretrained(models_dir, gguf_file=GGUF_NAME)
    model = AutoModelForCausalLM.from_pretrained(models_dir, gguf_file=GGUF_NAME, dtype=torch.float32)
    model.eval()
    return tok, model


def model_info(tok, model):
    c = model.config
    return {
        "gguf_file": GGUF_NAME,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "dtype": "float32 (weights dequantised from GGUF by transformers; maths in float32 on the CPU)",
        "hidden_size": c.hidden_size, "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads, "num_key_value_heads": c.num_key_value_heads,
        "head_dim": c.head_dim, "intermediate_size": c.intermediate_size, "vocab_size": c.vocab_size,
        "rope_theta": c.rope_parameters["rope_theta"], "rope_type": c.rope_parameters["rope_type"],
        "rms_norm_eps": c.rms_norm_eps, "tie_word_embeddings": c.tie_word_embeddings,
        "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
        "add_bos_token": False,
    }


def encode(tok, text):
    # The GGUF says tokenizer.ggml.add_bos_token = false, and the HF tokenizer built from it adds nothing either:
    # the ids are the text's tokens only. add_special_tokens=False makes that explicit; we assert both agree.
    ids = tok(text, add_special_tokens=False).input_ids
    assert ids == tok(text).input_ids, "HF tokenizer added special tokens although the GGUF says add_bos_token=false"
    return ids


@torch.no_grad()
def forward_logits(model, ids):
    """Logits [T, V] float32 of one full (no-cache) forward over ids, positions 0..T-1."""
    x = torch.tensor([ids], dtype=torch.long)
    return model(input_ids=x, use_cache=False).logits[0].float()


def row_summary(row):
    r64 = row.double()
    vals, idx = torch.topk(row, TOPK)
    return {
        "argmax": int(torch.argmax(row)),
        "max": f32(row.max()),
        "logsumexp": float(torch.logsumexp(r64, 0)),
        "sum": float(r64.sum()),
        "sumsq": float((r64 * r64).sum()),
        "top_ids": [int(i) for i in idx],
        "top_logits": [f32(v) for v in vals],
    }


def make_logits(tok, model):
    prompts = []
    last_row = None
    for pi, text in enumerate(LOGIT_PROMPTS):
        ids = encode(tok, text)
        logits = forward_logits(model, ids)
        if pi == 0:
            last_row = logits[-1].numpy().astype("<f4")
        prompts.append({"text": text, "ids": ids, "n_tokens": len(ids),
                        "positions": [row_summary(logits[t]) for t in range(len(ids))]})
    return {"format": "llm golden logits v1", "topk": TOPK, "model": model_info(tok, model),
            "full_row_file": "smollm2_logits_p0_last.f32",
            "full_row_note": "prompts[0], last position: vocab_size float32 little-endian logits",
            "prompts": prompts}, last_row


@torch.no_grad()
def greedy(tok, model, kind, prompt_ids, extra):
    eos = model.generation_config.eos_token_id
    eos_ids = [eos] if isinstance(eos, int) else list(eos)
    x = torch.tensor([prompt_ids], dtype=torch.long)
    out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=MAX_NEW_TOKENS,
                         do_sample=False, num_beams=1, output_logits=True, return_dict_in_generate=True,
                         pad_token_id=model.generation_config.pad_token_id)
    new_ids = out.sequences[0, len(prompt_ids):].tolist()
    # Per step: the top-2 margin of the raw logits, so a test can see where a near-tie makes a token fragile.
    margins = []
    for step, lg in enumerate(out.logits):
        v, i = torch.topk(lg[0].float(), 2)
        assert int(i[0]) == new_ids[step], "generate() did not pick the argmax (greedy expected)"
        margins.append(f32(v[0] - v[1]))
    stopped_on_eos = len(new_ids) < MAX_NEW_TOKENS or (len(new_ids) > 0 and new_ids[-1] in eos_ids)
    # Second way: one full no-cache forward over prompt + output; its argmax at each position must be the next token.
    full = forward_logits(model, prompt_ids + new_ids)
    tf = torch.argmax(full[len(prompt_ids) - 1: len(prompt_ids) + len(new_ids) - 1], dim=-1).tolist()
    assert tf == new_ids, f"teacher-forced argmax differs from generate() for {kind}"
    d = {"kind": kind, **extra, "prompt_ids": prompt_ids, "output_ids": new_ids,
         "output_text": tok.decode(new_ids, skip_special_tokens=False),
         "n_new": len(new_ids), "stopped_on_eos": stopped_on_eos, "eos_ids": eos_ids,
         "top2_margins": margins, "min_top2_margin": min(margins) if margins else None}
    return d, out.logits[0][0].float()


def make_greedy(tok, model):
    cases = []
    for text in GREEDY_PLAIN_PROMPTS:
        ids = encode(tok, text)
        d, step0 = greedy(tok, model, "plain", ids, {"prompt": text})
        # Sanity: greedy step 0 = argmax of the plain forward's last row.
        assert int(torch.argmax(step0)) == int(torch.argmax(forward_logits(model, ids)[-1]))
        cases.append(d)
    for messages in GREEDY_CHATS:
        rendered = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = encode(tok, rendered)
        ids_tpl = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids_tpl, dict) or hasattr(ids_tpl, "keys"):
            ids_tpl = ids_tpl["input_ids"]
        assert list(ids_tpl) == ids, "apply_chat_template(tokenize=True) differs from tokenizing the rendered string"
        d, _ = greedy(tok, model, "chat", ids, {"messages": messages, "add_generation_prompt": True,
                                                "rendered": rendered})
        cases.append(d)
    return {"format": "llm golden greedy v1", "max_new_tokens": MAX_NEW_TOKENS, "do_sample": False,
            "model": model_info(tok, model), "chat_template": tok.chat_template, "cases": cases}


@torch.no_grad()
def strided_ppl(model, ids, ctx, stride):
    """HF's strided sliding-window perplexity; the exact algorithm is written down in tests/data/golden/README.md."""
    n = len(ids)
    nll, count, prev_end, windows = 0.0, 0, 0, 0
    for begin in range(0, n, stride):
        end = min(begin + ctx, n)
        first_target = max(prev_end, begin + 1)          # token index of the first scored target in this window
        logits = forward_logits(model, ids[begin:end]).double()
        logp = torch.log_softmax(logits, dim=-1)
        for j in range(first_target, end):               # target token j is predicted by window row j-1-begin
            nll -= float(logp[j - 1 - begin, ids[j]])
            count += 1
        windows += 1
        prev_end = end
        if end == n:
            break
    return {"ctx": ctx, "stride": stride, "windows": windows, "nll": nll, "count": count,
            "mean_nll": nll / count, "ppl": math.exp(nll / count)}


def make_ppl(tok, model):
    with open(os.path.join(REPO, PPL_TEXT), "rb") as f:
        raw = f.read()
    text = raw.decode("utf-8")                            # bytes as they are: no newline translation
    ids = encode(tok, text)
    runs = [dict(strided_ppl(model, ids, c, s), n_tokens=len(ids), prefix=None) for c, s in PPL_CONFIGS]
    runs.append(dict(strided_ppl(model, ids[:PPL_PREFIX], 512, 256), n_tokens=PPL_PREFIX, prefix=PPL_PREFIX))
    return {"format": "llm golden perplexity v1", "model": model_info(tok, model),
            "text_file": PPL_TEXT, "text_bytes": len(raw),
            "text_source": "Debian 12 package base-files 12.4+deb12u11: /usr/share/common-licenses/GFDL-1.3",
            "bos_added": False, "n_tokens": len(ids), "ids": ids, "runs": runs}


def dump(obj, path):
    with open(path, "w") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=os.path.join(REPO, "models"))
    ap.add_argument("--out", default=os.path.join(REPO, "tests/data/golden"))
    ap.add_argument("--check", action="store_true", help="recompute and compare with the files on disk")
    ap.add_argument("--parts", default="logits,greedy,ppl",
                    help="comma-separated subset of logits,greedy,ppl to make (ppl is the slow one)")
    args = ap.parse_args()
    if not os.path.exists(os.path.join(args.models, GGUF_NAME)):
        sys.exit(f"error: {GGUF_NAME} not found in {args.models}: run tools/setup.sh or pass --models DIR")

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    tok, model = load(args.models)

    parts = set(args.parts.split(","))
    logits_fx, last_row = make_logits(tok, model)   # always: the determinism check below needs it
    outs = {"smollm2_logits.json": logits_fx}
    if "greedy" in parts:
        outs["smollm2_greedy.json"] = greedy_fx = make_greedy(tok, model)
    if "ppl" in parts:
        outs["smollm2_perplexity.json"] = ppl_fx = make_ppl(tok, model)

    # Determinism: a second forward of prompt 0 must give the same bits.
    again = forward_logits(model, logits_fx["prompts"][0]["ids"])[-1].numpy().astype("<f4")
    assert np.array_equal(again, last_row), "two forwards of the same prompt differ"

    if args.check:
        bad = 0
        for name, obj in outs.items():
            with open(os.path.join(args.out, name)) as f:
                old = json.load(f)
            new = json.loads(json.dumps(obj))
            for k in ("transformers_version", "torch_version"):
                old["model"].pop(k, None), new["model"].pop(k, None)
            same = old == new
            bad += not same
            print(f"{name}: {'same' if same else 'DIFFERENT'}")
        old_row = np.fromfile(os.path.join(args.out, logits_fx["full_row_file"]), dtype="<f4")
        same = np.array_equal(old_row, last_row)
        bad += not same
        print(f"{logits_fx['full_row_file']}: {'same' if same else 'DIFFERENT'}")
        sys.exit(1 if bad else 0)

    os.makedirs(args.out, exist_ok=True)
    for name, obj in outs.items():
        dump(obj, os.path.join(args.out, name))
    last_row.tofile(os.path.join(args.out, logits_fx["full_row_file"]))
    for r in (ppl_fx["runs"] if "ppl" in parts else []):
        print(f"ppl ctx={r['ctx']} stride={r['stride']} n={r['n_tokens']} count={r['count']} "
              f"nll={r['nll']:.6f} ppl={r['ppl']:.6f}")
    for c in (greedy_fx["cases"] if "greedy" in parts else []):
        print(f"greedy {c['kind']}: n_new={c['n_new']} eos={c['stopped_on_eos']} "
              f"min_margin={c['min_top2_margin']:.4f} text={c['output_text']!r}")


if __name__ == "__main__":
    main()
