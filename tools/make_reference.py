#!/usr/bin/env python3
"""Reference outputs for the backbone test: onnxruntime's features on a few images.

For each fixture image, writes the model input as a 224x224 PNG (centre-cropped and
resized by Pillow, so the tensor is exactly (png - 127) / 128) and the features
onnxruntime computes from it, to tests/fixtures/reference.json. The Rust test feeds
tract the same tensor and compares (cosine >= 0.999), and also runs edgehead's own
preprocessing on the original JPEG.

    python3 tools/make_reference.py [--model models/efficientnet-lite0-features-int8w.onnx]
"""

import argparse
import hashlib
import json
import os

import numpy as np
from PIL import Image

import export_backbone as eb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGES = ["hat-1.jpg", "shoes-1.jpg", "pants-1.jpg"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(ROOT, "models/efficientnet-lite0-features-int8w.onnx"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests/fixtures"))
    args = ap.parse_args()
    with open(args.model, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    entries = []
    for name in IMAGES:
        rgb = np.asarray(Image.open(os.path.join(args.out, "images", name)).convert("RGB"))
        crop = eb.preprocess_image(rgb)
        png = "input-" + name.rsplit(".", 1)[0] + ".png"
        Image.fromarray(crop).save(os.path.join(args.out, png), optimize=True)
        features = eb.run_ort(args.model, eb.normalize(crop))[0]
        entries.append({
            "image": "images/" + name,
            "input_png": png,
            "features": [round(float(v), 6) for v in features],
        })
        print(f"{name}: |features| = {np.linalg.norm(features):.4f}")
    ref = {
        "model": os.path.basename(args.model),
        "model_sha256": sha,
        "runtime": "onnxruntime (graph optimizations disabled, 1 thread)",
        "tool": "tools/make_reference.py",
        "entries": entries,
    }
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump(ref, f)
        f.write("\n")


if __name__ == "__main__":
    main()
