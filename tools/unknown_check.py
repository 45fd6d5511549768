#!/usr/bin/env python3
"""How well the nearest-class-mean head says `unknown`, measured on embeddings.

    edgehead eval ../shared/data/hymenoptera --save-embeddings /tmp/hym-emb
    edgehead eval ../shared/data/clothing10 --save-embeddings /tmp/clo-emb
    python3 tools/unknown_check.py /tmp/hym-emb /tmp/clo-emb

Trains the nearest-class-mean rule on k samples per class of the first data set's
train split (k = 1, 2, 5, 10 over 10 random draws, and the whole split), with the
threshold edgehead calibrates by leave-one-out (the lower of the 5th percentile and
mean - 3 sigma of each sample's similarity to the mean of the rest of its class),
and prints: accuracy on its test split, the share of its test images called unknown
(should be low) and the share of the other data set's test images called unknown
(should be high). It does so for the features as edgehead uses them (L2-normalized)
and, for comparison, centred on the mean of the training samples first (what
edgehead did before head format 2), plus the AUROC of the best similarity for
telling the two data sets apart, which needs no threshold.
"""

import argparse

import numpy as np

from embeddings import Labelled


def unit(a):
    return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)


def threshold(z, ys, k):
    sums = np.stack([z[ys == c].sum(0) for c in range(k)])
    counts = np.bincount(ys, minlength=k)
    own = np.array([v @ unit(sums[l] - v) for v, l in zip(z, ys) if counts[l] >= 2])
    if len(own) < 2:
        return None
    return min(np.sort(own)[int((len(own) - 1) * 0.05)], own.mean() - 3 * own.std())


def auroc(pos, neg):
    ranks = np.concatenate([pos, neg]).argsort().argsort() + 1
    return (ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("known", help="embeddings of the data set the head learns")
    ap.add_argument("other", help="embeddings of images that belong to none of its classes")
    ap.add_argument("--seeds", type=int, default=10)
    args = ap.parse_args()
    known = Labelled(args.known)
    x, y, te, k = known.x, known.y, known.test, len(known.classes)
    other_set = Labelled(args.other)
    other = other_set.x[other_set.test]
    print(f"{k} classes; {te.sum()} known test images, {len(other)} others")
    print("shots  features   accuracy  known->unknown  other->unknown  AUROC")
    for shots in ["1", "2", "5", "10", "all"]:
        results = {"L2": [], "centred": []}
        for seed in range(1 if shots == "all" else args.seeds):
            pick = known.draw(shots, seed)
            xs, ys = x[pick], y[pick]
            for name, center in (("L2", np.zeros(x.shape[1])), ("centred", xs.mean(0))):
                z = unit(xs - center)
                means = unit(np.stack([z[ys == c].sum(0) for c in range(k)]))
                s = unit(x[te] - center) @ means.T
                so = unit(other - center) @ means.T
                t = threshold(z, ys, k)
                results[name].append(
                    (
                        (s.argmax(1) == y[te]).mean(),
                        np.nan if t is None else (s.max(1) < t).mean(),
                        np.nan if t is None else (so.max(1) < t).mean(),
                        auroc(s.max(1), so.max(1)),
                    )
                )
        for name, r in results.items():
            m = np.array(r, dtype=float)
            acc, known_unk, other_unk, au = (np.nanmean(m[:, i]) if not np.all(np.isnan(m[:, i])) else np.nan for i in range(4))
            fmt = lambda v: "   -  " if np.isnan(v) else f"{v:6.3f}"
            print(f"{shots:>5}  {name:9} {fmt(acc)}    {fmt(known_unk)}          {fmt(other_unk)}         {fmt(au)}")


if __name__ == "__main__":
    main()
