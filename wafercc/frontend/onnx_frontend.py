"""ONNX file or ModelProto -> validated (onnx_check: sanity pass, then onnx's checker, isolated) -> verified IR graph."""
from __future__ import annotations

import os

import onnx

from ..ir import Graph, verify
from ..ir.ops import ShapeError
from .onnx_branches import inline_cache_branch
from .onnx_check import validate
from .onnx_contrib import expand_contrib, has_contrib
from .onnx_lift import lift
from .onnx_source import SourceGraph, inline_functions, load_model


def _needs_shape_inference(model: onnx.ModelProto) -> bool:
    """Exporters annotate most intermediate shapes; infer the rest when many are missing."""
    known = {v.name for v in model.graph.value_info}
    outputs = [o for n in model.graph.node for o in n.output if o]
    return sum(o not in known for o in outputs) > len(outputs) // 10


def lower_onnx_model(model: onnx.ModelProto, name: str = "model", where: str = "model",
                     base_dir: str | None = None) -> Graph:
    """Lower a ModelProto; ``base_dir`` locates external data (read only to recognise tied weights)."""
    if model.functions:
        model = inline_functions(model, where)
    # canonical forms first, then the validation layer on what will be lifted (it refuses other domains)
    model = inline_cache_branch(model, where)  # optimum's merged decoder: its with-past branch
    fused = has_contrib(model)
    model = expand_contrib(model)   # onnxruntime-fused files: contrib ops to standard ONNX first
    inferred = validate(model, where, needs_inference=fused or _needs_shape_inference(model))
    if inferred is not None:
        model = _with_shapes(model, inferred)
    src = SourceGraph(model, where, base_dir)
    try:
        graph = lift(src, name)
    except ShapeError as e:
        # the lifter's own calls name their node; a shape error from deeper is located at the file
        raise ShapeError(str(e), where=None if e.where else where) from None
    verify(graph)
    return graph


def _with_shapes(model: onnx.ModelProto, value_info: list) -> onnx.ModelProto:
    """A copy of ``model`` carrying the shapes onnx inferred (the caller's model is left as it was)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.value_info[:]
    out.graph.value_info.extend(value_info)
    return out


def lower_onnx(path: str | os.PathLike, name: str | None = None) -> Graph:
    """Lower an ONNX file (weights inline, external or absent) to verified IR."""
    path = os.fspath(path)
    model = load_model(path)
    base = name or os.path.splitext(os.path.basename(path))[0]
    return lower_onnx_model(model, base, where=path, base_dir=os.path.dirname(os.path.abspath(path)))
