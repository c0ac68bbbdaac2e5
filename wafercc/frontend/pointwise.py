"""A small NumPy evaluator for ONNX ops on constants and pointwise regions.

Used to fold constant subgraphs (axes, scales, eps) and to recognise an
activation function from the values a pointwise region computes, whichever
way an exporter decomposed it.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper

_UNARY = {
    "Neg": np.negative, "Exp": np.exp, "Log": np.log, "Sqrt": np.sqrt, "Abs": np.abs,
    "Reciprocal": lambda x: 1.0 / x, "Tanh": np.tanh, "Sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "Relu": lambda x: np.maximum(x, 0), "Erf": np.vectorize(math.erf, otypes=[np.float64]),
    "Softplus": lambda x: np.log1p(np.exp(x)), "Identity": lambda x: x, "Floor": np.floor,
    "Ceil": np.ceil, "Sin": np.sin, "Cos": np.cos, "Not": np.logical_not,
}
_BINARY = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": None, "Pow": np.power,
    "Max": np.maximum, "Min": np.minimum, "Equal": np.equal, "Less": np.less,
    "LessOrEqual": np.less_equal, "Greater": np.greater, "GreaterOrEqual": np.greater_equal,
    "And": np.logical_and, "Or": np.logical_or,
}
POINTWISE_OPS = set(_UNARY) | set(_BINARY) | {"Clip", "Cast", "Where", "Gelu", "HardSigmoid"}


def _div(a, b):
    if np.issubdtype(np.asarray(a).dtype, np.integer) and np.issubdtype(np.asarray(b).dtype, np.integer):
        return np.floor_divide(a, b)
    return np.divide(a, b)


def eval_pointwise(src, node, args):
    op = node.op_type
    if op in _UNARY:
        return _UNARY[op](args[0])
    if op == "Div":
        return _div(args[0], args[1])
    if op in _BINARY:
        return _BINARY[op](args[0], args[1])
    if op == "Clip":
        lo = args[1] if len(args) > 1 and args[1] is not None else src.attr(node, "min")
        hi = args[2] if len(args) > 2 and args[2] is not None else src.attr(node, "max")
        return np.clip(args[0], lo if lo is not None else -np.inf, hi if hi is not None else np.inf)
    if op == "Cast":
        to = src.attr(node, "to")
        return args[0].astype(helper.tensor_dtype_to_np_dtype(to)) if to not in (16,) else args[0].astype(np.float32)
    if op == "Where":
        return np.where(args[0], args[1], args[2])
    if op == "Gelu":
        x = args[0]
        if src.attr(node, "approximate", "none") == "tanh":
            return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
        return 0.5 * x * (1 + _UNARY["Erf"](x / math.sqrt(2)))
    if op == "HardSigmoid":
        a, b = src.attr(node, "alpha", 0.2), src.attr(node, "beta", 0.5)
        return np.clip(a * args[0] + b, 0, 1)
    raise KeyError(op)


FOLD_LIMIT = 1 << 16  # elements: a larger result of the reference fallback is not a small constant


def fold(src, node, args, out: str | None = None):
    """Evaluate ``node``'s output ``out`` (default its first) on constant ``args`` (raises if the op
    is not foldable)."""
    op = node.op_type
    if op in ("Max", "Min", "Sum", "Mean") and len(args) == 1:   # variadic ops of one input copy it
        return np.asarray(args[0])
    if op in POINTWISE_OPS:
        return eval_pointwise(src, node, args)
    if op == "CastLike":
        return args[0].astype(np.asarray(args[1]).dtype) if args[1] is not None else args[0]
    if op == "Reshape":
        shape = [int(d) for d in args[1]]
        shape = [args[0].shape[i] if d == 0 else d for i, d in enumerate(shape)]
        return args[0].reshape(shape)
    if op == "Unsqueeze":
        axes = args[1] if len(args) > 1 else src.attr(node, "axes")
        out = args[0]
        for a in sorted(int(x) % (out.ndim + len(axes)) for x in np.atleast_1d(axes)):
            out = np.expand_dims(out, a)
        return out
    if op == "Squeeze":
        axes = args[1] if len(args) > 1 else src.attr(node, "axes")
        return np.squeeze(args[0], axis=None if axes is None else tuple(int(a) for a in np.atleast_1d(axes)))
    if op == "Transpose":
        return np.transpose(args[0], src.attr(node, "perm"))
    if op == "Concat":
        return np.concatenate([np.atleast_1d(a) for a in args], axis=src.attr(node, "axis"))
    if op == "Range":
        return np.arange(args[0], args[1], args[2])
    if op == "ConstantOfShape":
        t = src.attr(node, "value")
        v = numpy_helper.to_array(t) if t is not None else np.zeros(1, np.float32)
        return np.full([int(d) for d in args[0]], v.reshape(-1)[0], dtype=v.dtype)
    if op == "Expand":
        return args[0] * np.ones([int(d) for d in args[1]], dtype=args[0].dtype)
    if op == "Shape":
        start, end = src.attr(node, "start", 0), src.attr(node, "end", None)
        return np.array(args[0].shape[start:end], dtype=np.int64)
    if node.domain in ("", "ai.onnx") and not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                                                  for a in node.attribute):
        from ..ir.onnx_eval import run_node   # any other standard op: its reference definition
        res = run_node(node, args, src.opset)[list(node.output).index(out) if out else 0]
        if res.size > FOLD_LIMIT:
            raise ValueError("too large to fold")
        return res
    raise KeyError(op)


# Named activations recognised from values; each maps to the IR activation fn.
_PROBE = np.linspace(-6.0, 6.0, 97)
_REFERENCE = {
    "silu": lambda x: x / (1 + np.exp(-x)),
    "gelu": lambda x: 0.5 * x * (1 + _UNARY["Erf"](x / math.sqrt(2))),
    "gelu_tanh": lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
    "relu": lambda x: np.maximum(x, 0),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "tanh": np.tanh,
    "softplus": lambda x: np.log1p(np.exp(x)),
}


def classify_activation(fn) -> str | None:
    """Name of the activation that ``fn`` computes on a probe grid, or None."""
    try:
        with np.errstate(all="ignore"):
            y = np.asarray(fn(_PROBE.copy()), dtype=np.float64)
    except Exception:
        return None
    if y.shape != _PROBE.shape or not np.all(np.isfinite(y)):
        return None
    for name, ref in _REFERENCE.items():
        if np.allclose(y, ref(_PROBE), rtol=1e-4, atol=1e-5):
            return name
    return None
