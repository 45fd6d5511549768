#!/usr/bin/env python3
"""scikit-learn's LogisticRegression on the embeddings edgehead computed, for comparison.

    edgehead eval ../shared/data/clothing10 --save-embeddings /tmp/clothing10-emb
    python3 tools/compare_sklearn.py /tmp/clothing10-emb

Reads embeddings.f32 / embeddings.json written by `edgehead eval --save-embeddings`,
trains LogisticRegression (scikit-learn defaults: L2, C=1.0, lbfgs; max_iter raised so
it converges) on the train split, and prints the accuracy on the test split, on the
raw embeddings and on edgehead's own feature transform (centred, L2-normalized), with
the whole train split and k-shot. The support sets are the ones `edgehead eval` drew
(draws.json beside the embeddings), so the numbers pair with eval's rows; without
draws.json (older dumps) they are drawn here, with other draws.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
from sklearn.linear_model import LogisticRegression

from embeddings import Labelled


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--train-split", default="train")
    ap.add_argument("--test-split", default=None)
    ap.add_argument("--shots", default="5,10,all")
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    data = Labelled(args.dir, args.train_split, args.test_split)
    x, y, tr, te = data.x, data.y, data.train, data.test

    def transform(train_x, other):
        c = train_x.mean(axis=0)
        n = lambda a: (a - c) / np.maximum(np.linalg.norm(a - c, axis=1, keepdims=True), 1e-12)
        return n(train_x), n(other)

    draws_file = os.path.join(args.dir, "draws.json")
    draws = json.load(open(draws_file)) if os.path.exists(draws_file) else None
    print(f"{len(data.classes)} classes, {tr.sum()} train, {te.sum()} {data.test_split}; "
          + ("edgehead eval's draws" if draws else "draws of numpy's RNG (no draws.json)"))
    shot_list = (sorted(draws, key=lambda k: (k == "all", int(k) if k != "all" else 0)) if draws
                 else args.shots.split(","))
    for shots in shot_list:
        picks = ([np.array(p) for p in draws[shots]] if draws
                 else [data.draw(shots, seed) for seed in range(1 if shots == "all" else args.seeds)])
        for name, tf in (("raw", None), ("centred+L2", transform)):
            accs, times = [], []
            for pick in picks:
                a, b = x[pick], x[te]
                if tf:
                    a, b = tf(a, b)
                t = time.perf_counter()
                clf = LogisticRegression(max_iter=5000).fit(a, y[pick])
                times.append((time.perf_counter() - t) * 1000)
                accs.append(float((clf.predict(b) == y[te]).mean()))
            print(f"sklearn LogisticRegression {name:11} {shots:>4}-shot: accuracy {np.mean(accs):.4f} ± {np.std(accs):.4f} ({len(accs)} runs), fit {np.mean(times):.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
