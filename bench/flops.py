"""Count an ONNX graph's FLOPs (Conv, ConvTranspose, MatMul, Gemm and their quantized forms) with
onnx shape inference. 2 FLOPs per multiply-add; elementwise ops, softmax, norms and resizes are not
counted (they are a few percent at most and bound by memory, not arithmetic).

``python -m bench.flops MODEL.onnx [--shape input=1,3,1024,1024]``
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict

import numpy as np

_MATMULS = {"MatMul", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QLinearMatMul",
            "FusedMatMul", "MatMulNBits"}
_CONVS = {"Conv", "ConvInteger", "QLinearConv", "FusedConv", "NhwcConv"}


def _dims(vi) -> list[int] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    out = []
    for d in t.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            out.append(int(d.dim_value))
        else:
            return None
    return out


def count_flops(model, input_shapes: dict[str, list[int]] | None = None) -> dict:
    """{"total": FLOPs, "by_op": {op: FLOPs}, "nodes": counted, "unknown": nodes whose shapes were unknown}."""
    import onnx
    from onnx import shape_inference

    if isinstance(model, str):
        m = onnx.load(model, load_external_data=False)
    else:
        m = onnx.ModelProto()
        m.CopyFrom(model)
    if input_shapes:
        for inp in m.graph.input:
            if inp.name in input_shapes:
                dims = inp.type.tensor_type.shape.dim
                for d, v in zip(dims, input_shapes[inp.name]):
                    d.ClearField("dim_param")
                    d.dim_value = int(v)
    # shape inference needs initializer shapes only; strip raw data so huge models stay cheap
    g = onnx.ModelProto()
    g.CopyFrom(m)
    for t in g.graph.initializer:  # keep small tensors (Reshape shapes, scales): data propagation needs them
        if t.data_type != onnx.TensorProto.INT64 and int(np.prod(t.dims or [1])) > 4096:
            t.ClearField("raw_data")
            t.ClearField("float_data")
            t.ClearField("int32_data")
    shapes: dict[str, list[int]] = {}
    for t in m.graph.initializer:
        shapes[t.name] = list(t.dims)
    try:
        inferred = shape_inference.infer_shapes(g, strict_mode=False, data_prop=True)
    except Exception:
        inferred = shape_inference.infer_shapes(m)
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        d = _dims(vi)
        if d is not None:
            shapes[vi.name] = d
    by_op: dict[str, float] = defaultdict(float)
    by_kind: dict[str, float] = defaultdict(float)
    inits = {t.name for t in m.graph.initializer}
    for node in m.graph.node:       # constants: initializers and what is computed from them alone (Transpose…)
        if node.op_type == "Constant" or (node.input and all(i in inits for i in node.input if i)):
            inits.update(node.output)
    in_hw = next((shapes[i.name][-1] for i in m.graph.input if len(shapes.get(i.name, [])) == 4), None)
    counted = unknown = 0
    for node in m.graph.node:
        op = node.op_type
        if op not in _MATMULS | _CONVS | {"Gemm", "ConvTranspose"}:
            continue
        try:
            if op in _CONVS or op == "ConvTranspose":
                w = shapes[node.input[3] if op == "QLinearConv" else node.input[1]]
                y = shapes[node.output[0]]
                group = next((a.i for a in node.attribute if a.name == "group"), 1)
                # Conv: out elements x (Cin/group x kH x kW) MACs; ConvTranspose: in elements x (Cout/g x k…)
                if op == "ConvTranspose":
                    x = shapes[node.input[0]]
                    macs = int(np.prod(x)) * int(np.prod(w[1:]))
                else:
                    macs = int(np.prod(y)) * int(np.prod(w[1:]))
                    _ = group  # w[1] is already Cin/group
            elif op == "Gemm":
                a, b = shapes[node.input[0]], shapes[node.input[1]]
                ta = next((x.i for x in node.attribute if x.name == "transA"), 0)
                tb = next((x.i for x in node.attribute if x.name == "transB"), 0)
                M = a[1] if ta else a[0]
                K = a[0] if ta else a[1]
                N = b[0] if tb else b[1]
                macs = M * K * N
            else:
                ia, ib = (0, 3) if op == "QLinearMatMul" else (0, 1)
                a = shapes[node.input[ia]]
                y = shapes[node.output[0]]
                if op == "MatMulNBits":
                    K = next(x.i for x in node.attribute if x.name == "K")
                else:
                    K = a[-1]
                macs = int(np.prod(y)) * K
        except (KeyError, IndexError, StopIteration):
            unknown += 1
            continue
        by_op[op] += 2.0 * macs
        by_kind[_kind(node, op, inits, shapes, in_hw)] += 2.0 * macs
        counted += 1
    return {"total": float(sum(by_op.values())), "by_op": dict(by_op), "by_kind": dict(by_kind), "nodes": counted,
            "unknown": unknown}


def _kind(node, op: str, inits: set, shapes: dict, in_hw: int | None) -> str:
    """The cost split of a BEN2-like graph: weight linears (a MatMul/Gemm with a constant operand), attention
    products (both operands computed; 'window' when a side is one Swin window of tokens, else 'decoder'), convolutions at a quarter
    of the input size or more ('full-resolution') or at the views' scales."""
    if op in _CONVS or op == "ConvTranspose":
        y = shapes.get(node.output[0], [])
        return "conv full-resolution" if in_hw and y and y[-1] >= in_hw // 4 else "conv view-scale"
    if op in ("MatMulNBits", "DynamicQuantizeMatMul", "MatMulInteger") or any(i in inits for i in node.input[:4]):
        return "weight linears"
    a = shapes.get(node.input[0], [])
    y = shapes.get(node.output[0], [])
    window = any(d in (v * v for v in (7, 8, 12)) for d in (y[-2:] + a[-1:]))   # Swin windows of 7², 8², 12²
    return "attention window (backbone)" if window else "attention decoder"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.flops")
    ap.add_argument("model")
    ap.add_argument("--shape", action="append", default=[], help="name=1,3,1024,1024 for dynamic inputs")
    a = ap.parse_args(argv)
    shapes = {s.split("=")[0]: [int(v) for v in s.split("=")[1].split(",")] for s in a.shape}
    r = count_flops(a.model, shapes or None)
    r["GFLOPs"] = round(r["total"] / 1e9, 2)
    r["GFLOPs_by_kind"] = {k: round(v / 1e9, 1) for k, v in sorted(r["by_kind"].items())}
    json.dump(r, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
