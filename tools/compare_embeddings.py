#!/usr/bin/env python3
"""Cosine similarity between two embedding dumps of the same images (two backbones,
e.g. the shipped int8-weight model against the float one).

    edgehead eval DATA --save-embeddings /tmp/a            # shipped model
    EDGEHEAD__BACKBONE__MODEL=/tmp/float.onnx edgehead eval DATA --save-embeddings /tmp/b
    python3 tools/compare_embeddings.py /tmp/a /tmp/b
"""

import sys

import numpy as np

from embeddings import read


def load(d):
    rows, x = read(d)
    keep = [i for i, r in enumerate(rows) if "of" not in r]  # not augmented views
    return [rows[i]["path"] for i in keep], x[keep]


def main():
    pa, a = load(sys.argv[1])
    pb, b = load(sys.argv[2])
    rows = {p: i for i, p in enumerate(pb)}
    common = [(i, rows[p]) for i, p in enumerate(pa) if p in rows]
    ia, ib = zip(*common)
    a, b = a[list(ia)], b[list(ib)]
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    print(f"{len(cos)} images: cosine mean {cos.mean():.5f}, min {cos.min():.5f}, "
          f"1st percentile {np.percentile(cos, 1):.5f}")


if __name__ == "__main__":
    main()
