#!/usr/bin/env python3
"""Make the dequantisation fixtures in tests/data/quants/ with the independent `gguf` Python package (PyPI,
llama.cpp's gguf-py, tested with 0.19).

For each GGML type T:
  T.bin  raw blocks (little-endian, GGML layout): blocks quantised by gguf.quants.quantize where the package can
         quantise T, then blocks of random bytes whose fp16 scale fields are overwritten with sane values
         (random bytes would otherwise give inf/NaN scales and test nothing);
  T.f32  gguf.quants.dequantize(T.bin) as little-endian float32.
Plus conversions checked against numpy / the package:
  f32_to_bf16.{f32,u16}  gguf.quants.quantize(x, BF16) (round to nearest even, NaN kept)
  f32_to_f16.{f32,u16}   numpy astype(float16) (IEEE round to nearest even)

Run from the repository root:  python3 tools/make_quant_fixtures.py
"""
import os
import numpy as np
from gguf import GGMLQuantizationType as T, GGML_QUANT_SIZES
from gguf import quants

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "quants")
rng = np.random.default_rng(20261122)

# Byte offsets of the fp16 scale fields inside one block of each type.
SCALE_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}
CAN_QUANTIZE = {T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0}


def sane_fp16(n):
    mag = 10.0 ** rng.uniform(-3, 0, size=n)
    sign = rng.choice([-1.0, 1.0], size=n)
    return (mag * sign).astype(np.float16)


def write(name, raw: bytes, expected: np.ndarray, ext="f32"):
    with open(os.path.join(OUT, name + ".bin"), "wb") as f:
        f.write(raw)
    with open(os.path.join(OUT, name + "." + ext), "wb") as f:
        f.write(expected.astype("<f4" if ext == "f32" else "<u2").tobytes())


def main():
    os.makedirs(OUT, exist_ok=True)
    for t, fields in SCALE_FIELDS.items():
        block_elems, block_bytes = GGML_QUANT_SIZES[t]
        parts = []
        if t in CAN_QUANTIZE:
            x = rng.standard_normal(4 * block_elems).astype(np.float32) * 0.1
            x[:5] = [0.0, 1.0, -1.0, 0.5, -0.25]
            parts.append(quants.quantize(x.reshape(4, block_elems), t).reshape(-1))
        n_rand = 4
        rb = rng.integers(0, 256, size=(n_rand, block_bytes), dtype=np.uint8)
        for off in fields:
            rb[:, off:off + 2] = sane_fp16(n_rand).view(np.uint8).reshape(n_rand, 2)
        parts.append(rb.reshape(-1))
        raw = np.concatenate(parts).astype(np.uint8)
        nblocks = raw.size // block_bytes
        y = quants.dequantize(raw.reshape(nblocks, block_bytes), t).reshape(-1).astype(np.float32)
        assert y.size == nblocks * block_elems and np.all(np.isfinite(y))
        write(t.name, raw.tobytes(), y)

    # Plain types: every special class of value (zeros, subnormals, inf, extremes) plus random bit patterns.
    f32 = np.concatenate([np.array([0.0, -0.0, 1.0, -2.5, np.inf, -np.inf, 1e-45, 3.4e38], np.float32),
                          rng.standard_normal(56).astype(np.float32)])
    write("F32", f32.tobytes(), quants.dequantize(f32.view(np.uint8), T.F32).reshape(-1))
    f16_bits = rng.integers(0, 65536, size=256, dtype=np.uint16)
    f16_bits[:6] = [0x0000, 0x8000, 0x0001, 0x83ff, 0x7c00, 0xfbff]  # zeros, subnormals, inf, -max
    f16_bits = f16_bits[((f16_bits & 0x7c00) != 0x7c00) | ((f16_bits & 0x3ff) == 0)]  # drop NaNs
    write("F16", f16_bits.tobytes(), quants.dequantize(f16_bits.view(np.uint8), T.F16).reshape(-1))
    bf16_bits = rng.integers(0, 65536, size=256, dtype=np.uint16)
    bf16_bits[:4] = [0x0000, 0x8000, 0x0001, 0x7f80]
    bf16_bits = bf16_bits[((bf16_bits & 0x7f80) != 0x7f80) | ((bf16_bits & 0x7f) == 0)]  # drop NaNs
    write("BF16", bf16_bits.tobytes(), quants.dequantize(bf16_bits.view(np.uint8), T.BF16).reshape(-1))

    # f32 -> bf16 / f16 rounding: random values plus exact ties (low half exactly 0x8000 / halfway).
    x = rng.standard_normal(200).astype(np.float32) * np.float32(100.0)
    ties = (rng.integers(0, 1 << 15, size=24, dtype=np.uint32) << 16 | 0x8000).view(np.float32)
    x = np.concatenate([x, ties, np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, 3.3e38, 65519.0, 65520.0,
                                           6e-8, 2.9e-8, 1e-5], np.float32)])
    with open(os.path.join(OUT, "f32_to_bf16.f32"), "wb") as f:
        f.write(x.astype("<f4").tobytes())
    with open(os.path.join(OUT, "f32_to_bf16.u16"), "wb") as f:
        f.write(quants.quantize(x, T.BF16).view(np.uint16).astype("<u2").tobytes())
    with np.errstate(over="ignore"):
        h = x.astype(np.float16)
    with open(os.path.join(OUT, "f32_to_f16.f32"), "wb") as f:
        f.write(x.astype("<f4").tobytes())
    with open(os.path.join(OUT, "f32_to_f16.u16"), "wb") as f:
        f.write(h.view(np.uint16).astype("<u2").tobytes())


if __name__ == "__main__":
    main()
