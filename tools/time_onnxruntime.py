#!/usr/bin/env python3
"""Time onnxruntime on a model file, to compare with `edgehead bench` on the same file.

    python3 tools/time_onnxruntime.py models/efficientnet-lite0-features-int8w.onnx --threads 1

Feeds a fixed 1x3x224x224 input (a synthetic frame preprocessed as edgehead does),
warms up, then prints median, p90 and min latency over --runs runs, with the default
graph optimizations (what a user of onnxruntime would get).
"""

import argparse
import time

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=100)
    args = ap.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 256, size=shape).astype(np.float32) - 127.0) / 128.0
    for _ in range(5):
        sess.run(None, {inp.name: x})
    ms = []
    for _ in range(args.runs):
        t = time.perf_counter()
        sess.run(None, {inp.name: x})
        ms.append((time.perf_counter() - t) * 1000)
    ms.sort()
    print(
        f"onnxruntime {ort.__version__}, {args.threads} thread(s): median {ms[len(ms) // 2]:.2f} ms, "
        f"p90 {ms[int(len(ms) * 0.9)]:.2f} ms, min {ms[0]:.2f} ms ({args.runs} runs) on {args.model}"
    )


if __name__ == "__main__":
    main()
