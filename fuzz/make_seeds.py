"""Writes small valid seed inputs for the fuzz targets into corpus/<target>/ (run once; committed)."""

import json
import struct
from pathlib import Path

HERE = Path(__file__).parent


def safetensors(tensors):
    """tensors: list of (name, dtype, shape, raw bytes)."""
    header, offset = {}, 0
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-(8 + len(h)) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(t[3] for t in tensors)


def f32(*v):
    return struct.pack(f"<{len(v)}f", *v)


def bf16(*v):
    return b"".join(struct.pack("<f", x)[2:] for x in v)


WORD = "embeddings.word_embeddings.weight"
BIAS = "encoder.layer.0.output.dense.bias"


def manifest(encoding, tensors):
    return {
        "format_version": 1,
        "base": {"id": "fuzz", "sha256": "a" * 64},
        "architecture": "bert",
        "encoding": encoding,
        "tensors": tensors,
        "num_examples": 3,
        "metrics": {"dev_accuracy": 0.5},
        "contributor": "fuzz",
        "diff_sha256": "b" * 64,
        "diff_bytes": 0,
        "created_by": "seed",
    }


def main():
    seeds = {
        "f32": (
            manifest({"kind": "f32"}, [
                {"name": WORD, "shape": [4, 2], "dtype": "F32"},
                {"name": BIAS, "shape": [2], "dtype": "BF16"},
            ]),
            safetensors([(WORD, "F32", [4, 2], f32(*range(8))), (BIAS, "F32", [2], f32(0.5, -0.5))]),
        ),
        "int8": (
            manifest({"kind": "int8"}, [
                {"name": WORD, "shape": [4, 2], "dtype": "F32", "scale": 0.01},
                {"name": BIAS, "shape": [2], "dtype": "BF16", "scale": 0.5},
            ]),
            safetensors([(WORD, "I8", [4, 2], bytes(range(8))), (BIAS, "I8", [2], b"\x01\xff")]),
        ),
        "topk": (
            manifest({"kind": "top-k", "density": 0.5}, [
                {"name": WORD, "shape": [4, 2], "dtype": "F32", "kept": 2},
                {"name": BIAS, "shape": [2], "dtype": "BF16", "kept": 1},
            ]),
            safetensors([
                (WORD + "::indices", "U32", [2], struct.pack("<2I", 1, 6)),
                (WORD + "::values", "BF16", [2], bf16(1.0, -2.0)),
                (BIAS + "::indices", "U32", [1], struct.pack("<I", 0)),
                (BIAS + "::values", "BF16", [1], bf16(3.0)),
            ]),
        ),
    }
    (HERE / "corpus/diff").mkdir(parents=True, exist_ok=True)
    (HERE / "corpus/tensorfile").mkdir(parents=True, exist_ok=True)
    for name, (m, body) in seeds.items():
        (HERE / f"corpus/diff/seed-{name}").write_bytes(json.dumps(m).encode() + b"\0" + body)
        (HERE / f"corpus/tensorfile/seed-{name}").write_bytes(body)


if __name__ == "__main__":
    main()
