"""Weight values for an IR graph, read from the ONNX file it was lowered from.

IR weight values are named after the ONNX initializers they came from, so
loading is a lookup by name plus a shape check against the IR declaration.
Float weights of any stored precision (bf16, f16, f8...) become float32: the
interpreter computes in float32.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from ..errors import InputFileError
from ..ir import DType, Graph
from ..ir.values import format_shape
from .errors import SimulationError


def load_weights(graph: Graph, path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Values of every WEIGHT of ``graph`` from the ONNX file at ``path`` (external data included)."""
    import onnx
    from onnx import numpy_helper

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputFileError("no such file", where=path)
    try:
        model = onnx.load(path, load_external_data=True)
    except Exception as e:  # protobuf decode errors, missing external data files
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise InputFileError(f"cannot load the ONNX model with its weights: {first}", where=path) from None
    inits = {t.name: t for t in model.graph.initializer}
    out: dict[str, np.ndarray] = {}
    for v in graph.weights():
        t = inits.get(v.name)
        if t is None:
            raise SimulationError(f"weight '{v.name}' of graph '{graph.name}' is not an initializer of the file",
                                  where=path)
        try:
            out[v.name] = numpy_helper.to_array(t, base_dir=os.path.dirname(os.path.abspath(path)))
        except Exception as e:
            first = (str(e).splitlines() or [type(e).__name__])[0][:200]
            raise SimulationError(f"cannot read weight '{v.name}': {first}", where=path) from None
    return check_weights(graph, out, where=path)


def check_weights(graph: Graph, weights: Mapping[str, np.ndarray], where: str | None = None
                  ) -> dict[str, np.ndarray]:
    """The graph's weights from ``weights``, shape-checked, floats as float32, ints as int64.
    Raises :class:`SimulationError` for a missing weight or one whose shape differs from the IR."""
    out: dict[str, np.ndarray] = {}
    for v in graph.weights():
        if v.name not in weights:
            raise SimulationError(f"weight '{v.name}' {format_shape(v.shape)} has no value", where=where)
        a = _declared(np.asarray(weights[v.name]), v, where)
        if not v.is_static or tuple(a.shape) != tuple(v.shape):
            raise SimulationError(f"weight '{v.name}' has shape {list(a.shape)}, the IR declares "
                                  f"{format_shape(v.shape)}", where=where)
        if v.dtype.is_float:
            a = a.astype(np.float32)
        elif v.dtype is DType.BOOL:
            a = a.astype(bool)
        else:
            a = a.astype(np.int64)
        out[v.name] = a
    return out


def _declared(a: np.ndarray, v, where) -> np.ndarray:
    """A stored array in the shape the IR declares for it, where the frontend declared fewer dims
    (docs/ir.md, "Weights"): without leading unit dims (a folded position table, a [1, 1, D] CLS
    token), one of identical copies along leading dims (a token an exporter expanded to the traced
    batch: the copies are checked equal), or with trailing dims flattened (a patch embedding's conv
    kernel [D, C, kh, kw] as the matrix [D, C*kh*kw]), or, for a 1-D declaration, one of identical
    copies along every axis but the one of its length (folded per-head sinks).  Anything else is
    returned unchanged."""
    shape = tuple(v.shape)
    if v.is_static and shape and a.ndim < len(shape) and a.shape == tuple(d for d in shape if d != 1) \
            and a.size == int(np.prod(shape)):
        return a.reshape(shape)       # declared with unit dims the store lacks ([D] as one token row [1, D])
    if not v.is_static or a.ndim <= len(shape) or not shape:
        return a
    lead = a.ndim - len(shape)
    if a.shape[lead:] == shape:
        if all(d == 1 for d in a.shape[:lead]):
            return a.reshape(shape)
        flat = a.reshape((-1,) + shape)
        if not np.array_equal(flat, np.broadcast_to(flat[:1], flat.shape)):
            raise SimulationError(f"weight '{v.name}' {list(a.shape)} is declared {format_shape(shape)}, one of "
                                  f"copies along its leading dims, but the copies differ", where=where)
        return flat[0]
    k = len(shape) - 1
    if a.shape[:k] == shape[:k] and int(np.prod(a.shape[k:])) == shape[-1]:
        return a.reshape(shape)
    if len(shape) == 1 and a.shape.count(shape[0]) == 1:
        # one of copies along every other axis (per-head sinks an exporter expanded to [b, h, S, 1])
        flat = np.moveaxis(a, a.shape.index(shape[0]), -1).reshape(-1, shape[0])
        if not np.array_equal(flat, np.broadcast_to(flat[:1], flat.shape)):
            raise SimulationError(f"weight '{v.name}' {list(a.shape)} is declared {format_shape(shape)}, one of "
                                  f"copies along its other axes, but the copies differ", where=where)
        return flat[0]
    return a
