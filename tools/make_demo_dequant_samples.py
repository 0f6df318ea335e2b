#!/usr/bin/env python3
"""Sample the demo model's tensors as the independent `gguf` Python package (PyPI, 0.19) reads and dequantises
them -> tests/data/demo_dequant/samples.json, checked by tests/test_gguf.cpp against our loader.

Per tensor: name, GGML type, shape (outermost first, as loader/tensor.h), absolute data offset, the first 16
values of 3 rows (first, middle, last) and, over the WHOLE tensor, the float64 sum and sum of absolute values of
gguf.quants.dequantize's float32 output. Also the header counts and the metadata our config reads.

Run from the repository root:  python3 tools/make_demo_dequant_samples.py [path/to/model.gguf]
"""
import json
import os
import sys

import numpy as np
import gguf
from gguf import quants

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
N_VALUES = 16


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
    r = gguf.GGUFReader(path)
    out = {
        "source": "gguf-py " + getattr(gguf, "__version__", "0.19") + " GGUFReader + gguf.quants.dequantize",
        "file": os.path.basename(path),
        "file_size": os.path.getsize(path),
        "n_tensors": len(r.tensors),
        "n_kv": len(r.fields) - 3,  # GGUFReader adds GGUF.version / tensor_count / kv_count as fields
        "data_offset": int(r.data_offset),
        "tensors": [],
    }
    for t in r.tensors:
        x = quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = [int(d) for d in reversed(list(t.shape))]
        x = x.reshape(-1, shape[-1])
        rows = sorted({0, x.shape[0] // 2, x.shape[0] - 1})
        out["tensors"].append({
            "name": t.name,
            "type": t.tensor_type.name,
            "shape": shape,
            "offset": int(t.data_offset),
            "nbytes": int(t.n_bytes),
            "rows": [{"row": int(i), "values": [float(v) for v in x[i, :N_VALUES]]} for i in rows],
            "sum": float(x.astype(np.float64).sum()),
            "abs_sum": float(np.abs(x.astype(np.float64)).sum()),
        })
    dst = os.path.join(ROOT, "tests", "data", "demo_dequant", "samples.json")
    with open(dst, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(dst, os.path.getsize(dst), "bytes")


if __name__ == "__main__":
    main()
