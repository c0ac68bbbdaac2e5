"""ONNX file or ModelProto -> verified IR graph."""
from __future__ import annotations

import os

import onnx

from ..errors import InputFileError
from ..ir import Graph, verify
from .onnx_branches import inline_cache_branch
from .onnx_contrib import expand_contrib, has_contrib
from .onnx_lift import lift
from .onnx_source import SourceGraph, load_model


def _needs_shape_inference(model: onnx.ModelProto) -> bool:
    """Exporters annotate most intermediate shapes; infer the rest when many are missing."""
    known = {v.name for v in model.graph.value_info}
    outputs = [o for n in model.graph.node for o in n.output if o]
    return sum(o not in known for o in outputs) > len(outputs) // 10


def lower_onnx_model(model: onnx.ModelProto, name: str = "model", where: str = "model",
                     base_dir: str | None = None) -> Graph:
    """Lower a ModelProto; ``base_dir`` locates external data (read only to recognise tied weights)."""
    model = inline_cache_branch(model, where)  # optimum's merged decoder: its with-past branch
    fused = has_contrib(model)
    model = expand_contrib(model)   # onnxruntime-fused files: contrib ops to standard ONNX first
    if fused or _needs_shape_inference(model):
        try:
            model = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
        except Exception as e:  # onnx raises InferenceError / ValidationError subclasses
            raise InputFileError(f"ONNX shape inference failed: {str(e).splitlines()[0][:200]}", where=where) from None
    src = SourceGraph(model, where, base_dir)
    graph = lift(src, name)
    verify(graph)
    return graph


def lower_onnx(path: str | os.PathLike, name: str | None = None) -> Graph:
    """Lower an ONNX file (weights inline, external or absent) to verified IR."""
    path = os.fspath(path)
    model = load_model(path)
    base = name or os.path.splitext(os.path.basename(path))[0]
    return lower_onnx_model(model, base, where=path, base_dir=os.path.dirname(os.path.abspath(path)))
