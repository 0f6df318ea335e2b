#!/usr/bin/env python3
"""How much does the CUDA backend's bf16 (or, with --dtype f16, fp16) rounding move the demo model's logits? (sizes
the demo-model thresholds of tests/cuda/test_forward_cuda.cu before any GPU run).

Independent of this engine: Hugging Face transformers loads the GGUF file (its own dequantisation through the `gguf`
package) and runs in fp32 on the CPU. The CUDA backend's numerics are then emulated: every weight matrix and the
embedding table rounded to bf16, every matrix-product input (normed activations, attention output, SwiGLU output)
rounded to bf16, fp32 residual stream and accumulation. Not emulated: the bf16 KV cache and the bf16 P of the flash
prefill (smaller effects). Prints, per input: top-1 agreement with fp32 and the leads of the missed positions, the
max |logit difference|; per greedy prompt: the smallest lead of the fp32 greedy path and whether the emulated
greedy text is identical. --dtype f16 (issue 5's --dtype f16) rounds to fp16 instead (same places) and first
prints, per layer, the largest |value| of every tensor the f16 path stores in 16 bits (the inputs of every matrix
product, the q/k/v projections that become the rotated queries and the KV cache), measured in fp32, against fp16's
maximum 65504.

    python3 tools/cuda_bf16_emulation.py [--dtype bf16|f16] [models/SmolLM2-135M-Instruct.Q4_1.gguf]
"""
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
args = sys.argv[1:]
DTYPE = "bf16"
if args[:1] == ["--dtype"]:
    DTYPE, args = args[1], args[2:]
    assert DTYPE in ("bf16", "f16"), "--dtype bf16 or f16"
path = args[0] if args else os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
folder, name = os.path.split(os.path.realpath(path))
tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()

BICYCLE = ("The history of the bicycle begins in the early nineteenth century, when inventors in Germany and France "
           "built wooden machines that riders pushed along with their feet. Pedals arrived decades later, and with "
           "them the tall front wheels of the penny-farthing, which were fast but dangerous. The safety bicycle, with "
           "two wheels of equal size and a chain driving the rear one, made cycling popular with millions of people. "
           "Today bicycles are used for commuting, sport and travel all over the world, and")
gfdl = tok(open(os.path.join(ROOT, "tests/data/text/GFDL-1.3.txt")).read(), return_tensors="pt").input_ids
logit_inputs = {"bicycle": tok(BICYCLE, return_tensors="pt").input_ids, "gfdl400": gfdl[:, :400]}
greedy_inputs = {"bicycle": logit_inputs["bicycle"], "gfdl64": gfdl[:, :64], "gfdl150": gfdl[:, :150],
                 "france": tok("The capital of France is", return_tensors="pt").input_ids,
                 "monday": tok("Monday, Tuesday, Wednesday,", return_tensors="pt").input_ids,
                 "twinkle": tok("Twinkle, twinkle, little star, how I wonder what you are.",
                                return_tensors="pt").input_ids,
                 "counting": tok("1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", return_tensors="pt").input_ids}


def logits(ids):
    with torch.no_grad():
        return model(ids).logits[0].float()


def greedy(ids, n=32):
    with torch.no_grad():
        return model.generate(ids, max_new_tokens=n, do_sample=False)[0, ids.shape[1]:]


if DTYPE == "f16":  # the magnitudes the f16 path must hold, per layer, on both logit inputs (fp32 forward)
    peaks = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            def hook(mod, args, out, name=name):
                short = name.replace("model.layers.", "L").replace("self_attn.", "").replace("mlp.", "")
                peaks[short + ".in"] = max(peaks.get(short + ".in", 0.0), args[0].abs().max().item())
                if name.endswith(("q_proj", "k_proj", "v_proj")):
                    peaks[short + ".out"] = max(peaks.get(short + ".out", 0.0), out.abs().max().item())
            hooks.append(mod.register_forward_hook(hook))
    for v in logit_inputs.values():
        logits(v)
    for h in hooks:
        h.remove()
    per_layer = {}
    for k, v in peaks.items():
        layer = k.split(".")[0]
        per_layer[layer] = max(per_layer.get(layer, 0.0), v)
    print("max |16-bit tensor| per layer (inputs of every matrix product, q/k/v):",
          {k: round(v, 1) for k, v in per_layer.items()})
    worst = max(peaks, key=peaks.get)
    print(f"overall max {peaks[worst]:.1f} at {worst} (fp16 max 65504: headroom {65504 / peaks[worst]:.0f}x)",
          flush=True)

ref = {k: logits(v) for k, v in logit_inputs.items()}
ref_greedy = {}
for k, ids in greedy_inputs.items():
    g = greedy(ids)
    lead = logits(torch.cat([ids[0], g]).unsqueeze(0))[ids.shape[1] - 1:-1].topk(2, dim=-1).values
    lead = lead[:, 0] - lead[:, 1]
    ref_greedy[k] = g
    print(f"{k}: fp32 greedy path min lead {lead.min().item():.3f}, steps leading by < 0.3: "
          f"{(lead < 0.3).sum().item()}; {tok.decode(g)!r}", flush=True)


def bf16(t):  # the 16-bit rounding of the chosen dtype (the name kept from the bf16-only version)
    return t.to(torch.bfloat16 if DTYPE == "bf16" else torch.float16).to(torch.float32)


with torch.no_grad():
    for mod in model.modules():
        if isinstance(mod, torch.nn.Linear):
            mod.weight.copy_(bf16(mod.weight))
            mod.register_forward_pre_hook(lambda mod, args: (bf16(args[0]),))
    model.model.embed_tokens.weight.copy_(bf16(model.model.embed_tokens.weight))

for k, ids in logit_inputs.items():
    a, b = ref[k], logits(ids)
    top = a.topk(2, dim=-1).values
    lead = top[:, 0] - top[:, 1]
    miss = a.argmax(-1) != b.argmax(-1)
    print(f"{k}: {len(a)} positions, top-1 agreement {1 - miss.float().mean().item():.4f} ({miss.sum().item()} missed, "
          f"leads {[round(x, 4) for x in lead[miss].tolist()]}), max |diff| {(a - b).abs().max().item():.3f}, "
          f"max |logit| {a.abs().max().item():.1f}, positions leading by < 0.1: {(lead < 0.1).sum().item()}", flush=True)
for k, ids in greedy_inputs.items():
    print(f"{k}: emulated-{DTYPE} greedy text identical to fp32: {bool((greedy(ids) == ref_greedy[k]).all())}", flush=True)
