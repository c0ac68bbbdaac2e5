"""The ``onnx`` op: an ONNX operator with no semantic lowering, kept as its ONNX definition.

The frontend emits it for operators that compute on one token's features at a time (element-wise
maps, reductions, scans, top-k and pads along the last axis): the attributes it stores are already
normalised to the IR value's rank (the axis is the last one, pads have one pair per IR axis), so
the simulator runs the node as stored (``onnx.reference``) and the cost is read off its shapes.
On the wafer it is a rider: it holds no matrix, so it travels with its producer's or consumer's
cores and is timed by its bytes and FLOPs (passes/tile.py, passes/cost_kernel.py).
"""
from __future__ import annotations

import math

from .dtypes import DType
from .ops import ANY_DATA, Attr, Operand, OpSpec, ShapeError, _fmt
from .values import numel

MAX_INPUTS = 8
ROLES = tuple(f"in{i}" for i in range(MAX_INPUTS))

# FLOPs per element of the largest operand (the work of one element's formula); 1 where unlisted.
# Transcendentals follow ir/ops.py's ACTIVATION_FLOPS scale (a polynomial of a few terms).
FLOPS_PER_ELEMENT = {
    "Erf": 8, "Sin": 6, "Cos": 6, "Tan": 8, "Asin": 8, "Acos": 8, "Atan": 8, "Sinh": 6, "Cosh": 6,
    "Asinh": 8, "Acosh": 8, "Atanh": 8, "Elu": 4, "Selu": 5, "Celu": 5, "Mish": 9, "Softsign": 2,
    "HardSwish": 3, "LeakyRelu": 2, "PRelu": 2, "ThresholdedRelu": 1, "Gelu": 8, "LogSoftmax": 6,
    "ReduceLogSumExp": 5, "ReduceLogSum": 2, "ReduceL2": 2, "ReduceSumSquare": 2,
    "LpNormalization": 3, "MeanVarianceNormalization": 5, "Hardmax": 1, "Mod": 2,
}


def _infer(ins, at):
    if at["inputs"] and at["inputs"][0] == "":
        raise ShapeError("the first ONNX input is absent")
    for ref in at["inputs"]:
        if ref and ref not in ins and ref not in (at["consts"] or {}):
            raise ShapeError(f"ONNX input '{ref}' is neither an operand nor a constant")
    try:
        dtype = DType.parse(at["dtype"])
    except ValueError as e:
        raise ShapeError(str(e)) from None
    return [(tuple(at["shape"]), dtype)]


def _flops(ins, outs, at, b):
    if not at["counted"]:
        return 0      # another output of the same node carries its work
    n = max([numel(v.shape, b) for v in ins.values()] + [numel(outs[0].shape, b)])
    if at["op_type"] == "TopK":
        k = max(int(numel(outs[0].shape[-1:], b)), 1)
        return n * max(1, math.ceil(math.log2(k + 1)))   # a k-deep selection per element
    return n * FLOPS_PER_ELEMENT.get(at["op_type"], 1)


def _check(at):
    errs = []
    if not at["op_type"]:
        errs.append("op_type is empty")
    bad = [d for d in at["shape"] if not (isinstance(d, str) or (isinstance(d, int) and d >= 0))]
    if bad:
        errs.append(f"shape {_fmt(tuple(at['shape']))} has invalid dims {bad}")
    if len(at["inputs"]) > MAX_INPUTS + len(at["consts"] or {}):
        errs.append(f"{len(at['inputs'])} ONNX inputs, at most {MAX_INPUTS} operands and the constants")
    if at["output"] < 0:
        errs.append(f"output {at['output']} must be >= 0")
    return errs


ONNX_OP = OpSpec(
    "onnx", "an ONNX operator applied per token (axes normalised to the last one), run by its ONNX "
            "definition; a rider timed by its bytes and FLOPs",
    tuple(Operand(r, ANY_DATA, i > 0) for i, r in enumerate(ROLES)),
    (Attr("op_type", (str,)), Attr("domain", (str,), False, ""), Attr("opset", (int,), positive=True),
     Attr("inputs", (list,)), Attr("attributes", (dict,), False, None), Attr("consts", (dict,), False, None),
     Attr("output", (int,), False, 0), Attr("counted", (bool,), False, True),
     Attr("shape", (list,)), Attr("dtype", (str,))),
    _infer, _flops, _check)
