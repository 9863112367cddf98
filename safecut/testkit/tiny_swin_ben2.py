"""A tiny BEN2-I/O test graph with window attention, MLP MatMuls and a conv decoder (``onnx.helper``, seeded),
for the quantizer's tests: input ``input`` float32 [1,3,S,S], output ``output`` float16 [1,1,S,S], sigmoid
inside. Not a stand-in for BEN2's cost: the bench uses bench/ben2_arch.py (the real architecture) for that.
"""
from __future__ import annotations

import os

import numpy as np

DEPTHS = (2, 2, 18, 2)
DIMS = (128, 256, 512, 1024)
HEADS = (4, 8, 16, 32)
WINDOW = 8
VIEW = 512
SIZE = 1024
OPSET = 17


class _G:
    """Tiny graph builder: unique names, initializers, nodes."""

    def __init__(self, seed: int = 0):
        from onnx import helper, numpy_helper

        self.h, self.nh = helper, numpy_helper
        self.nodes, self.inits = [], []
        self.n = 0
        self.rng = np.random.default_rng(seed)
        self.params = 0

    def name(self, p: str) -> str:
        self.n += 1
        return f"{p}_{self.n}"

    def const(self, arr, p="c", count=False) -> str:
        nm = self.name(p)
        arr = np.asarray(arr)
        self.inits.append(self.nh.from_array(arr, nm))
        if count:
            self.params += arr.size
        return nm

    def weight(self, shape, p="w", std=0.02) -> str:
        return self.const((self.rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float32), p, True)

    def ints(self, vals) -> str:
        return self.const(np.asarray(vals, np.int64), "shape")

    def op(self, op: str, inputs, p=None, **attrs) -> str:
        out = self.name(p or op.lower())
        self.nodes.append(self.h.make_node(op, list(inputs), [out], **attrs))
        return out

    def ops(self, op: str, inputs, n_out: int, **attrs) -> list[str]:
        outs = [self.name(op.lower()) for _ in range(n_out)]
        self.nodes.append(self.h.make_node(op, list(inputs), outs, **attrs))
        return outs

    # layers
    def linear(self, x, cin, cout):
        y = self.op("MatMul", [x, self.weight((cin, cout))])
        return self.op("Add", [y, self.const(np.zeros(cout, np.float32), "b", True)])

    def ln(self, x, c):
        return self.op("LayerNormalization", [x, self.const(np.ones(c, np.float32), "g", True),
                                              self.const(np.zeros(c, np.float32), "beta", True)],
                       axis=-1, epsilon=1e-5)

    def gelu(self, x):
        s = self.op("Div", [x, self.const(np.float32(np.sqrt(2.0)))])
        e = self.op("Erf", [s])
        e1 = self.op("Add", [e, self.const(np.float32(1.0))])
        m = self.op("Mul", [x, e1])
        return self.op("Mul", [m, self.const(np.float32(0.5))])

    def conv(self, x, cin, cout, k, stride=1, pad=None, relu=False):
        pad = k // 2 if pad is None else pad
        std = float(np.sqrt(2.0 / (cin * k * k)))
        y = self.op("Conv", [x, self.weight((cout, cin, k, k), std=std),
                             self.const(np.zeros(cout, np.float32), "b", True)],
                    kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)
        return self.op("Relu", [y]) if relu else y

    def resize(self, x, scale):
        return self.op("Resize", [x, self.const(np.array([], np.float32), "roi"),
                                  self.const(np.array([1, 1, scale, scale], np.float32), "scales")], mode="linear")


def _block(g: _G, x, B, R, C, heads, window=WINDOW):
    """One Swin-style block on x [B, R, R, C] (NHWC)."""
    w = min(window, R)
    nw = (R // w) ** 2
    hd = C // heads
    y = g.ln(x, C)
    y = g.op("Reshape", [y, g.ints([B, R // w, w, R // w, w, C])])
    y = g.op("Transpose", [y], perm=[0, 1, 3, 2, 4, 5])
    y = g.op("Reshape", [y, g.ints([B * nw, w * w, C])])
    qkv = g.linear(y, C, 3 * C)
    qkv = g.op("Reshape", [qkv, g.ints([B * nw, w * w, 3, heads, hd])])
    qkv = g.op("Transpose", [qkv], perm=[2, 0, 3, 1, 4])          # 3, B*nw, heads, w², hd
    q, k, v = g.ops("Split", [qkv], 3, axis=0)
    q, k, v = (g.op("Squeeze", [t, g.ints([0])]) for t in (q, k, v))
    q = g.op("Mul", [q, g.const(np.float32(hd ** -0.5))])
    kt = g.op("Transpose", [k], perm=[0, 1, 3, 2])
    a = g.op("MatMul", [q, kt])                                     # B*nw, heads, w², w²
    a = g.op("Add", [a, g.weight((heads, w * w, w * w), "relbias")])
    a = g.op("Softmax", [a], axis=-1)
    o = g.op("MatMul", [a, v])                                      # B*nw, heads, w², hd
    o = g.op("Transpose", [o], perm=[0, 2, 1, 3])
    o = g.op("Reshape", [o, g.ints([B * nw, w * w, C])])
    o = g.linear(o, C, C)
    o = g.op("Reshape", [o, g.ints([B, R // w, R // w, w, w, C])])
    o = g.op("Transpose", [o], perm=[0, 1, 3, 2, 4, 5])
    o = g.op("Reshape", [o, g.ints([B, R, R, C])])
    x = g.op("Add", [x, o])
    y = g.ln(x, C)
    y = g.linear(y, C, 4 * C)
    y = g.gelu(y)
    y = g.linear(y, 4 * C, C)
    return g.op("Add", [x, y])


def _merge(g: _G, x, B, R, C):
    """2x2 patch merging: [B,R,R,C] -> [B,R/2,R/2,2C]."""
    y = g.op("Reshape", [x, g.ints([B, R // 2, 2, R // 2, 2, C])])
    y = g.op("Transpose", [y], perm=[0, 1, 3, 4, 2, 5])
    y = g.op("Reshape", [y, g.ints([B, R // 2, R // 2, 4 * C])])
    y = g.ln(y, 4 * C)
    return g.op("MatMul", [y, g.weight((4 * C, 2 * C))])


def build_model(seed: int = 0, *, size: int = SIZE, depths=DEPTHS, dims=DIMS, heads=HEADS, window: int = WINDOW,
                fpn: int = 128):
    """The graph (and its parameter count). Defaults: the bench model; smaller arguments give tiny test
    models with the same structure (``size`` divisible by 64)."""
    from onnx import TensorProto

    g = _G(seed)
    B = 5
    view = size // 2
    # views: global (resized) + 4 local quarters
    glob_v = g.op("Resize", ["input", g.const(np.array([], np.float32), "roi"),
                             g.const(np.array([1, 1, 0.5, 0.5], np.float32), "scales")], mode="linear")
    loc = g.op("Reshape", ["input", g.ints([3, 2, view, 2, view])])
    loc = g.op("Transpose", [loc], perm=[1, 3, 0, 2, 4])            # 2,2,3,view,view
    loc = g.op("Reshape", [loc, g.ints([4, 3, view, view])])
    views = g.op("Concat", [glob_v, loc], axis=0)                   # 5,3,view,view
    # encoder
    x = g.conv(views, 3, dims[0], 4, stride=4, pad=0)               # 5,C0,view/4,view/4
    x = g.op("Transpose", [x], perm=[0, 2, 3, 1])
    x = g.ln(x, dims[0])
    R = view // 4
    feats = []
    for s, (depth, C, nh) in enumerate(zip(depths, dims, heads)):
        for _ in range(depth):
            x = _block(g, x, B, R, C, nh, window)
        feats.append((g.op("Transpose", [g.ln(x, C)], perm=[0, 3, 1, 2]), C))   # NCHW
        if s < len(depths) - 1:
            x = _merge(g, x, B, R, C)
            R //= 2
    # decoder (FPN)
    F = fpn
    p = g.conv(feats[-1][0], feats[-1][1], F, 1)
    for f, c in reversed(feats[:-1]):
        p = g.op("Add", [g.conv(f, c, F, 1), g.resize(p, 2.0)])
    p = g.conv(p, F, F, 3, relu=True)
    p = g.conv(p, F, F, 3, relu=True)                               # 5,F,view/4,view/4
    p = g.conv(p, F, F // 2, 3, relu=True)
    p = g.resize(p, 4.0)                                            # 5,F/2,view,view
    p = g.conv(p, F // 2, F // 4, 3, relu=True)
    p = g.conv(p, F // 4, 1, 1)                                     # 5,1,view,view
    gl, lo = g.ops("Split", [p, g.ints([1, 4])], 2, axis=0)
    lo = g.op("Reshape", [lo, g.ints([2, 2, view, view])])
    lo = g.op("Transpose", [lo], perm=[0, 2, 1, 3])
    lo = g.op("Reshape", [lo, g.ints([1, 1, size, size])])
    y = g.op("Add", [lo, g.resize(gl, 2.0)])
    y = g.op("Sigmoid", [y])
    g.nodes.append(g.h.make_node("Cast", [y], ["output"], to=TensorProto.FLOAT16))
    graph = g.h.make_graph(
        g.nodes, "tiny_swin_ben2",
        [g.h.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        [g.h.make_tensor_value_info("output", TensorProto.FLOAT16, [1, 1, size, size])], g.inits)
    model = g.h.make_model(graph, opset_imports=[g.h.make_opsetid("", OPSET)], producer_name="safecut-bench")
    model.ir_version = 8
    model.doc_string = "SafeCut test kit: tiny BEN2-I/O graph (random weights). See safecut/testkit/tiny_swin_ben2.py."
    return model, g.params


def build_tiny(path: str, seed: int = 0) -> str:
    """A ~0.3 M-parameter model of the same structure (128² I/O) for tests: it has MatMuls to quantize."""
    import onnx

    model, _ = build_model(seed, size=128, depths=(1, 1, 1, 1), dims=(16, 32, 64, 128), heads=(1, 2, 4, 8),
                           window=4, fpn=16)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    onnx.save(model, path)
    return path
