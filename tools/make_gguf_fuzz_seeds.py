#!/usr/bin/env python3
"""Write small valid GGUF files with the independent `gguf` Python package (gguf-py GGUFWriter, PyPI 0.19) as the
GGUF fuzzer's seed corpus (fuzz/corpus/gguf/); tests/test_gguf.cpp also parses them. Each file stays < 10 KB.

Run from the repository root:  python3 tools/make_gguf_fuzz_seeds.py
"""
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf import quants

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fuzz", "corpus", "gguf")
rng = np.random.default_rng(7)


def tiny_llama(path, version):
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(32)
    w.add_feed_forward_length(32)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(8)])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)

    def q(name, shape, t):
        x = rng.standard_normal(shape).astype(np.float32)
        if t == T.F32:
            w.add_tensor(name, x)
        else:
            w.add_tensor(name, quants.quantize(x, t), raw_dtype=t)

    q("token_embd.weight", (8, 32), T.Q8_0)
    q("output_norm.weight", (32,), T.F32)
    q("blk.0.attn_norm.weight", (32,), T.F32)
    q("blk.0.attn_q.weight", (32, 32), T.Q4_0)
    q("blk.0.attn_k.weight", (16, 32), T.Q4_1)
    q("blk.0.attn_v.weight", (16, 32), T.Q5_0)
    q("blk.0.attn_output.weight", (32, 32), T.Q5_1)
    q("blk.0.ffn_norm.weight", (32,), T.F32)
    q("blk.0.ffn_gate.weight", (32, 32), T.F16)
    q("blk.0.ffn_up.weight", (32, 32), T.BF16)
    q("blk.0.ffn_down.weight", (32, 32), T.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if version != 3:  # v2 and v3 share the layout (v3 only added big-endian files): patch the version field
        with open(path, "r+b") as f:
            f.seek(4)
            f.write(np.uint32(version).tobytes())


def all_types(path):
    w = gguf.GGUFWriter(path, "test")
    w.data_alignment = 64
    w.add_custom_alignment(64)
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -5)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -7)
    w.add_float32("t.f32", 0.5)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo")
    w.add_uint64("t.u64", 1 << 40)
    w.add_int64("t.i64", -(1 << 40))
    w.add_float64("t.f64", 0.125)
    w.add_array("t.arr_i32", [1, 2, 3])
    w.add_array("t.arr_str", ["a", "bc"])
    w.add_array("t.nested", [[1, 2], [3]])
    for t in (T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K):
        block_elems, block_bytes = gguf.GGML_QUANT_SIZES[t]
        raw = rng.integers(0, 256, size=(1, block_bytes), dtype=np.uint8)
        w.add_tensor(f"k.{t.name}", raw, raw_shape=(1, block_bytes), raw_dtype=t)
    w.add_tensor("f32.4d", rng.standard_normal((2, 3, 2, 2)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    os.makedirs(OUT, exist_ok=True)
    tiny_llama(os.path.join(OUT, "tiny_llama_v3.gguf"), 3)
    tiny_llama(os.path.join(OUT, "tiny_llama_v2.gguf"), 2)
    all_types(os.path.join(OUT, "all_types.gguf"))
    for n in sorted(os.listdir(OUT)):
        print(n, os.path.getsize(os.path.join(OUT, n)))


if __name__ == "__main__":
    main()
