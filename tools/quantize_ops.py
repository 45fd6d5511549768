"""Static int8 quantization in operator form (QLinearConv), for boards where integer
kernels may win. Used by `export_backbone.py --quant qop --calib DIR`.

Activations are uint8 with a zero point, calibrated as min/max over the calibration
images; weights are int8, symmetric, per output channel; biases int32. A Conv
followed by Clip(0, 6) becomes one QLinearConv whose output range is [0, max]: the
saturation of uint8 is the ReLU6. Residual Adds and the final pooling run in float
between DequantizeLinear and QuantizeLinear (standard ops only: tract cannot load
onnxruntime's com.microsoft.QLinearAdd).
"""

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CALIB_LIMIT = 64


def _images(folder):
    from PIL import Image

    paths = []
    for root, _dirs, files in os.walk(folder):
        paths += [os.path.join(root, f) for f in files if f.lower().endswith((".jpg", ".jpeg", ".png"))]
    paths.sort()
    if not paths:
        raise SystemExit(f"--calib {folder}: no images")
    step = max(1, len(paths) // CALIB_LIMIT)
    for p in paths[::step][:CALIB_LIMIT]:
        yield np.asarray(Image.open(p).convert("RGB"))


def _ranges(model, folder, preprocess):
    """min/max of every tensor over the calibration images (onnxruntime, float)."""
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    names = [o for n in m.graph.node for o in n.output]
    del m.graph.output[:]
    for name in names:
        m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    lo, hi = {}, {}
    n = 0
    for rgb in _images(folder):
        x = preprocess(rgb)
        lo["input"] = min(lo.get("input", np.inf), float(x.min()))
        hi["input"] = max(hi.get("input", -np.inf), float(x.max()))
        for name, v in zip(names, sess.run(names, {"input": x})):
            lo[name] = min(lo.get(name, np.inf), float(v.min()))
            hi[name] = max(hi.get(name, -np.inf), float(v.max()))
        n += 1
    print(f"calibrated on {n} images")
    return lo, hi


def _uint8_params(lo, hi):
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0 if hi > lo else 1.0
    zp = int(np.clip(round(-lo / scale), 0, 255))
    return np.float32(scale), np.uint8(zp)


def quantize(model, calib_folder, preprocess, depthwise_float=False):
    """The operator-form model. `depthwise_float` keeps the depthwise convolutions
    in float between DequantizeLinear and QuantizeLinear: tract has no integer
    depthwise kernel and lowers them to im2col + one small matmul per channel."""
    if not calib_folder:
        raise SystemExit("--quant qop needs --calib FOLDER of images")
    lo, hi = _ranges(model, calib_folder, preprocess)
    g = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    nodes, new_inits = [], []

    def const(name, arr):
        new_inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    qparams = {}  # float tensor name -> (quantized name, scale name, zp name)

    def qparams_for(name, lo_v, hi_v):
        s, z = _uint8_params(lo_v, hi_v)
        return const(name + ".s", s), const(name + ".zp", z)

    def quantized(name):
        """The uint8 version of a float tensor, quantizing it if needed."""
        if name not in qparams:
            s, z = qparams_for(name, lo[name], hi[name])
            nodes.append(helper.make_node("QuantizeLinear", [name, s, z], [name + ".q"]))
            qparams[name] = (name + ".q", s, z)
        return qparams[name]

    def dequantized(name):
        if name in qparams:
            q, s, z = qparams[name]
            out = name + ".dq"
            if not any(o == out for n in nodes for o in n.output):
                nodes.append(helper.make_node("DequantizeLinear", [q, s, z], [out]))
            return out
        return name

    skip = set()
    for node in g.node:
        if id(node) in skip:
            continue
        group = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "group"), 1)
        if node.op_type == "Conv" and depthwise_float and group > 1:
            n2 = helper.make_node("Conv", [dequantized(node.input[0])] + list(node.input[1:]),
                                  list(node.output), name=node.name)
            n2.attribute.extend(node.attribute)
            nodes.append(n2)
        elif node.op_type == "Clip":
            nodes.append(helper.make_node("Clip", list(node.input), list(node.output), name=node.name))
        elif node.op_type == "Conv":
            x_q, x_s, x_z = quantized(node.input[0])
            w = inits[node.input[1]]
            b = inits[node.input[2]]
            x_scale = float(numpy_helper.to_array(next(i for i in new_inits if i.name == x_s)))
            absmax = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
            # Per channel scale; never so small that the int32 bias overflows (channels
            # whose folded weights are ~0 but whose bias is not).
            w_s = np.maximum(absmax / 127.0, np.abs(b) / (x_scale * 2.0**30)).astype(np.float32)
            w_s = np.where(w_s > 0, w_s, 1.0).astype(np.float32)
            w_q = np.clip(np.round(w / w_s.reshape(-1, 1, 1, 1)), -127, 127).astype(np.int8)
            b_q = np.clip(np.round(b / (x_scale * w_s)), -(2**31), 2**31 - 1).astype(np.int32)
            out = node.output[0]
            nxt = consumers.get(out, [])
            if len(nxt) == 1 and nxt[0].op_type == "Clip":
                clip = nxt[0]
                skip.add(id(clip))
                out = clip.output[0]
                y_s, y_z = qparams_for(out, 0.0, min(6.0, hi[out]))
            else:
                y_s, y_z = qparams_for(out, lo[out], hi[out])
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            pre = node.name
            nodes.append(helper.make_node(
                "QLinearConv",
                [x_q, x_s, x_z, const(pre + ".wq", w_q), const(pre + ".ws", w_s),
                 const(pre + ".wz", np.zeros(w.shape[0], np.int8)), y_s, y_z, const(pre + ".bq", b_q)],
                [out + ".q"], name=pre + ".q", **attrs))
            qparams[out] = (out + ".q", y_s, y_z)
        elif node.op_type == "Add":
            a, b = (dequantized(i) for i in node.input)
            nodes.append(helper.make_node("Add", [a, b], [node.output[0]], name=node.name))
        elif node.op_type in ("GlobalAveragePool", "Flatten", "Gemm"):
            ins = [dequantized(node.input[0])] + list(node.input[1:])
            n2 = helper.make_node(node.op_type, ins, list(node.output), name=node.name)
            n2.attribute.extend(node.attribute)
            nodes.append(n2)
        else:
            raise SystemExit(f"qop: unsupported op {node.op_type}")
    kept = [i for i in g.initializer if i.name in {x for n in nodes for x in n.input}]
    graph = helper.make_graph(nodes, g.name + "_qop", list(g.input), list(g.output), kept + new_inits)
    out = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                            producer_name="edgehead-tools-quantize_ops", producer_version="1")
    out.ir_version = 8
    onnx.checker.check_model(out, full_check=True)
    return out
