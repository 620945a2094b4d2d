"""NumPy reference for `coldfuse bench fuse`: base + mean(diffs), tensor by tensor, written as safetensors.

A straightforward vectorised implementation (np.memmap inputs, one f32 accumulator per tensor), the
kind a Python coordinator would use. Prints one JSON line with its wall time (interpreter start-up and
imports excluded).

  python fuse_numpy.py OUT BASE DIFF [DIFF ...]
"""

import json
import struct
import sys
import time

import numpy as np


def header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        meta = json.loads(f.read(n))
    meta.pop("__metadata__", None)
    return meta, 8 + n


def tensor(mm, start, entry):
    b, e = entry["data_offsets"]
    raw = mm[start + b : start + e]
    dtype = entry["dtype"]
    if dtype == "F32":
        return raw.view(np.float32)
    if dtype == "F16":
        return raw.view(np.float16).astype(np.float32)
    if dtype == "BF16":
        return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    raise SystemExit(f"unsupported dtype {dtype}")


def main():
    out, base, diffs = sys.argv[1], sys.argv[2], sys.argv[3:]
    t0 = time.perf_counter()
    base_meta, base_start = header(base)
    base_mm = np.memmap(base, dtype=np.uint8, mode="r")
    inputs = []
    for d in diffs:
        meta, start = header(d)
        inputs.append((meta, start, np.memmap(d, dtype=np.uint8, mode="r")))
    names = sorted(base_meta, key=lambda k: base_meta[k]["data_offsets"][0])
    out_meta = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in names:
        e = base_meta[name]
        size = e["data_offsets"][1] - e["data_offsets"][0]
        out_meta[name] = {"dtype": e["dtype"], "shape": e["shape"], "data_offsets": [offset, offset + size]}
        offset += size
    head = json.dumps(out_meta).encode()
    head += b" " * (-(8 + len(head)) % 8)
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for name in names:
            b = tensor(base_mm, base_start, base_meta[name])
            if name in inputs[0][0]:
                acc = np.zeros_like(b, dtype=np.float32)
                for meta, start, mm in inputs:
                    acc += tensor(mm, start, meta[name])
                acc /= len(inputs)
                acc += b
                f.write(acc.astype(np.float32).tobytes())
            else:
                f.write(b.tobytes())
    print(json.dumps({"seconds": time.perf_counter() - t0}))


if __name__ == "__main__":
    main()
