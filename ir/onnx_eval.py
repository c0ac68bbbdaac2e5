"""One ONNX node run by ``onnx.reference``, the ONNX project's executable definition of each operator.

Used where wafercc needs an operator's exact meaning without lowering it: the frontend's constant
folding of ops it has no folding rule for, and the simulator's kernel of the IR's ``onnx`` op.
"""
from __future__ import annotations

import functools

import numpy as np
import onnx
from onnx import helper


def _elem(a: np.ndarray) -> int:
    return helper.np_dtype_to_tensor_dtype(a.dtype)


@functools.lru_cache(maxsize=512)
def _evaluator(node_bytes: bytes, opset: int, elems: tuple):
    from onnx.reference import ReferenceEvaluator
    node = onnx.NodeProto.FromString(node_bytes)
    fed = [t for t in node.input if t]
    inputs = [helper.make_tensor_value_info(t, e, None) for t, e in zip(fed, elems)]
    outputs = [helper.make_tensor_value_info(o, 0, None) for o in node.output]
    graph = helper.make_graph([node], "node", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(node.domain or "", opset)])
    return ReferenceEvaluator(model)


def run_node(node: onnx.NodeProto, args: list, opset: int) -> list[np.ndarray]:
    """Outputs of ``node`` on ``args`` (one per input position; None for an absent input)."""
    fed = [np.asarray(a) for t, a in zip(node.input, args) if t]
    ev = _evaluator(node.SerializeToString(), opset, tuple(_elem(a) for a in fed))
    names = [t for t in node.input if t]
    return [np.asarray(r) for r in ev.run(None, dict(zip(names, fed)))]
