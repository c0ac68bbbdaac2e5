"""Kernel of the IR's ``onnx`` op: the stored node run by the ONNX reference implementation.

The frontend already normalised the node to the IR value's rank (ir/ops_onnx.py), so the node runs
as stored on the interpreter's arrays (ir/onnx_eval.py): the result is the operator's ONNX
meaning, not a reimplementation of it.
"""
from __future__ import annotations

import numpy as np
from onnx import helper

from ..ir.onnx_eval import run_node
from .errors import SimulationError


def const_array(c: dict) -> np.ndarray:
    """A constant input as the frontend stored it: {"dtype", "shape", "data"}."""
    return np.asarray(c["data"], dtype=np.dtype(c["dtype"])).reshape(c["shape"])


def onnx_op(node, inputs, ctx):
    at = node.spec.with_defaults(node.attrs)
    where = f"node '{node.name}' (op onnx {at['op_type']})"
    consts = at["consts"] or {}
    args = []
    for ref in at["inputs"]:
        if not ref:
            args.append(None)
        elif ref in consts:
            args.append(const_array(consts[ref]))
        elif ref in inputs:
            a = np.asarray(inputs[ref])
            args.append(a.astype(np.float32) if a.dtype.kind == "f" else a)
        else:
            raise SimulationError(f"operand {ref} has no value", where=where)
    onnx_node = helper.make_node(at["op_type"], [f"x{i}" if a is not None else "" for i, a in enumerate(args)],
                                 [f"y{i}" for i in range(at["output"] + 1)], domain=at["domain"] or "",
                                 **(at["attributes"] or {}))
    try:
        y = run_node(onnx_node, args, at["opset"])[at["output"]]
    except Exception as e:  # the reference implementation rejected the node: say which, in one line
        raise SimulationError(f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}", where=where) from None
    return y.astype(np.float32) if y.dtype.kind == "f" else y
