#!/usr/bin/env python3
"""Write small valid safetensors files with the independent `safetensors` Python package (PyPI, numpy API) as
the safetensors fuzzer's seed corpus (fuzz/corpus/safetensors/). Each file stays < 4 KB. A Llama-style
config.json header-alike is added so the fuzzer's config_from_hf_json path starts from valid JSON too.

Run from the repository root:  python3 tools/make_safetensors_fuzz_seeds.py
"""
import json
import os
import struct

import numpy as np
from safetensors.numpy import save

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fuzz", "corpus", "safetensors")
rng = np.random.default_rng(11)


def write(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


os.makedirs(OUT, exist_ok=True)
write("f32_two.safetensors", save({"a": rng.standard_normal((2, 3)).astype(np.float32),
                                    "b": rng.standard_normal((4,)).astype(np.float32)}))
write("f16_meta.safetensors", save({"w": rng.standard_normal((3, 5)).astype(np.float16)},
                                   metadata={"format": "pt", "note": "seed"}))
# numpy has no bfloat16: the bf16 seed is made from the upper halves of f32 values, dtype tag written by hand.
bf = (rng.standard_normal(8).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
header = json.dumps({"x.bf16": {"dtype": "BF16", "shape": [2, 4], "data_offsets": [0, 16]}}).encode()
header += b" " * (-(len(header) + 8) % 8)
write("bf16.safetensors", struct.pack("<Q", len(header)) + header + bf.tobytes())
layers = {
    "model.embed_tokens.weight": rng.standard_normal((8, 4)).astype(np.float16),
    "model.layers.0.self_attn.q_proj.weight": rng.standard_normal((4, 4)).astype(np.float16),
    "model.layers.0.input_layernorm.weight": np.ones(4, np.float32),
    "model.norm.weight": np.ones(4, np.float32),
    "empty": np.zeros((0, 3), np.float32),
}
write("llama_names.safetensors", save(layers))
write("empty.safetensors", save({}))
cfg = json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
                  "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
                  "vocab_size": 256, "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
                  "eos_token_id": [1, 2], "bos_token_id": 0,
                  "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}).encode()
write("config_like.safetensors", struct.pack("<Q", len(cfg)) + cfg)
