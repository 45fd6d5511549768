"""Read what `edgehead eval DATASET --save-embeddings DIR` wrote, and draw k-shot
support sets from it; shared by compare_sklearn.py, compare_embeddings.py and
unknown_check.py."""

import json
import os

import numpy as np


def read(d):
    """(rows, x): one {split, class, path} per row, and the N x dim features."""
    with open(os.path.join(d, "embeddings.json")) as f:
        index = json.load(f)
    x = np.fromfile(os.path.join(d, "embeddings.f32"), dtype="<f4").reshape(-1, index["dim"])
    return index["rows"], x


class Labelled:
    """Features with class indices and train/test masks. The classes are those of
    the train split; the test split defaults to `val` if there is one, else `test`."""

    def __init__(self, d, train_split="train", test_split=None):
        rows, self.x = read(d)
        splits = {r["split"] for r in rows}
        self.test_split = test_split or ("val" if "val" in splits else "test")
        self.classes = sorted({r["class"] for r in rows if r["split"] == train_split})
        self.y = np.array([self.classes.index(r["class"]) for r in rows])
        self.train = np.array([r["split"] == train_split for r in rows])
        self.test = np.array([r["split"] == self.test_split for r in rows])

    def draw(self, shots, seed):
        """Indices of `shots` random train samples per class ("all": every one)."""
        rng = np.random.default_rng(seed)
        pick = []
        for c in range(len(self.classes)):
            idx = np.flatnonzero(self.train & (self.y == c))
            rng.shuffle(idx)
            pick.extend(idx if shots == "all" else idx[: int(shots)])
        return np.array(pick)
