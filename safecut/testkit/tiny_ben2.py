"""A BEN2-compatible ONNX model, built locally and deterministically with onnx.helper.

Same I/O contract as the published BEN2_Base.onnx: input ``input`` float32 [N,3,S,S] (RGB 0..1),
output ``output`` declared **float16** [N,1,S,S], already sigmoid-ed, dynamic batch. Its weights make the
mask a known function of the image: mask ≈ sigmoid(10 * (local mean brightness - 0.5)), so tests can
assert that bright subjects are cut out of dark backgrounds.
"""
from __future__ import annotations

import os

import numpy as np


def build_tiny_ben2(path: str, size: int = 1024, *, dynamic_batch: bool = True, output_fp16: bool = True,
                    opset: int = 17) -> str:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if os.path.exists(path):
        return path
    n = "N" if dynamic_batch else 1
    w1 = np.full((8, 3, 3, 3), 1.0 / 27.0, np.float32)          # 3x3x3 mean
    b1 = np.zeros(8, np.float32)
    w2 = np.full((1, 8, 1, 1), 10.0 / 8.0, np.float32)           # 10 * mean
    b2 = np.array([-5.0], np.float32)                           # - 5
    scales = np.array([1, 1, 2, 2], np.float32)
    inits = [numpy_helper.from_array(a, name) for a, name in
             [(w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"), (scales, "scales")]]
    inits.append(numpy_helper.from_array(np.array([], np.float32), "roi"))
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"]),
        helper.make_node("Resize", ["c2", "roi", "scales"], ["up"], mode="linear"),
        helper.make_node("Sigmoid", ["up"], ["sig"]),
    ]
    out_name = "sig"
    if output_fp16:
        nodes.append(helper.make_node("Cast", ["sig"], ["output"], to=TensorProto.FLOAT16))
        out_name = "output"
    else:
        nodes[-1] = helper.make_node("Sigmoid", ["up"], ["output"])
        out_name = "output"
    graph = helper.make_graph(
        nodes, "tiny_ben2",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [n, 3, size, size])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT16 if output_fp16 else TensorProto.FLOAT,
                                       [n, 1, size, size])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="safecut-testkit")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    onnx.save(model, tmp)
    os.replace(tmp, path)
    return path
