"""Read-only index over an ONNX graph for the lifter.

Never loads external weight data: a model whose external data file is absent
still lowers (weights are needed only by the simulator).  Small constants
(axes, scales, eps) are read from Constant nodes and inline initializers.
"""
from __future__ import annotations

import os
import re
from typing import Iterable

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import InputFileError, one_line
from ..ir import DType

_ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: DType.F32, onnx.TensorProto.FLOAT16: DType.F16,
    onnx.TensorProto.BFLOAT16: DType.BF16, onnx.TensorProto.FLOAT8E4M3FN: DType.F8E4M3,
    onnx.TensorProto.FLOAT8E5M2: DType.F8E5M2, onnx.TensorProto.INT64: DType.I64,
    onnx.TensorProto.INT32: DType.I32, onnx.TensorProto.INT8: DType.I8, onnx.TensorProto.UINT8: DType.I8,
    onnx.TensorProto.BOOL: DType.BOOL, onnx.TensorProto.DOUBLE: DType.F32,
    onnx.TensorProto.INT4: DType.I4,
}
if hasattr(onnx.TensorProto, "FLOAT4E2M1"):
    _ONNX_DTYPES[onnx.TensorProto.FLOAT4E2M1] = DType.F4E2M1

_LAYER_RE = re.compile(r"(?:^|[./])(\d+)(?=[./]|$)")
SMALL_CONST = 4096  # elements: constants up to this size are read for folding


def onnx_dtype(code: int, where: str) -> DType:
    if code not in _ONNX_DTYPES:
        raise InputFileError(f"unsupported tensor element type {onnx.TensorProto.DataType.Name(code)}", where=where)
    return _ONNX_DTYPES[code]


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Load an ONNX file without its external data; one-line errors for bad files."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputFileError("no such file", where=path)
    if os.path.isdir(path):
        raise InputFileError("is a directory, expected an ONNX file", where=path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InputFileError(f"cannot read: {e.strerror}", where=path) from None
    if not data:
        raise InputFileError("empty file, expected an ONNX model", where=path)
    try:
        model = onnx.ModelProto()
        model.ParseFromString(data)
    except Exception:  # protobuf raises DecodeError, or RuntimeWarning subclasses
        raise InputFileError("not an ONNX model or truncated (protobuf decode failed)", where=path) from None
    if not model.graph.node or not model.opset_import:
        raise InputFileError("not an ONNX model (no graph nodes or opset imports; truncated?)", where=path)
    return inline_functions(model, path) if model.functions else model


def inline_functions(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """The model with its local functions inlined (a function node becomes the nodes it stands for)."""
    from onnx import inliner
    try:
        return inliner.inline_local_functions(model)
    except Exception as e:  # onnx's C++ inliner reports a malformed function as a plain exception
        raise InputFileError(f"cannot inline the model's local functions: {one_line(e)}", where=where) from None


def _topological(nodes: list, available: set[str], where: str) -> list:
    """ONNX nodes must be topologically sorted; sort them if not, and name a cycle if there is one."""
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    if all(producer.get(t, -1) < i for i, n in enumerate(nodes) for t in n.input if t and t not in available):
        return nodes
    import graphlib
    deps = {i: {producer[t] for t in n.input if t in producer and t not in available} for i, n in enumerate(nodes)}
    try:
        return [nodes[i] for i in graphlib.TopologicalSorter(deps).static_order()]
    except graphlib.CycleError as e:
        cycle = " -> ".join(f"'{nodes[i].name or nodes[i].op_type}' ({nodes[i].op_type})" for i in e.args[1])
        raise InputFileError(f"graph has a cycle through nodes {cycle}", where=where) from None


class SourceGraph:
    """Producers, consumers, shapes, constants and scopes of an ONNX graph."""

    def __init__(self, model: onnx.ModelProto, where: str = "model", base_dir: str | None = None):
        self.where = where
        self.base_dir = base_dir
        g = model.graph
        self.model = model
        self.opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
        self.nodes = list(g.node)
        self.inits = {t.name: t for t in g.initializer}
        self.graph_inputs = [i.name for i in g.input if i.name not in self.inits]
        self.graph_outputs = [o.name for o in g.output]
        self.nodes = _topological(self.nodes, set(self.inits) | set(self.graph_inputs), where)
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = {}
        for i, n in enumerate(self.nodes):
            for o in n.output:
                if o:
                    self.producer[o] = i
            for t in n.input:
                if t:
                    self.consumers.setdefault(t, []).append(i)
        self.shapes: dict[str, tuple] = {}
        self.elem: dict[str, int] = {}
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            tt = vi.type.tensor_type
            if tt.HasField("shape"):
                self.shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                             for d in tt.shape.dim)
            self.elem[vi.name] = tt.elem_type
        for t in g.initializer:
            self.shapes[t.name] = tuple(t.dims)
            self.elem[t.name] = t.data_type
        self._const_cache: dict[str, np.ndarray | None] = {}

    # -- node facts ------------------------------------------------------------
    def attr(self, node, name, default=None):
        for a in node.attribute:
            if a.name == name:
                return onnx.helper.get_attribute_value(a)
        return default

    def scope(self, node) -> str:
        """Module path of a node: torch dynamo metadata, else the legacy node name."""
        for p in node.metadata_props:
            if p.key == "pkg.torch.onnx.name_scopes":
                try:
                    import ast
                    scopes = ast.literal_eval(p.value)
                    return scopes[-2] if len(scopes) >= 2 else scopes[-1]
                except (ValueError, SyntaxError):
                    pass
        for p in node.metadata_props:
            if p.key == "namespace":
                parts = [s.split(":")[0].strip() for s in p.value.split("/")]
                return parts[-2] if len(parts) >= 2 else parts[-1]
        return node.name.strip("/").rsplit("/", 1)[0].replace("/", ".")

    def has_scope(self, node) -> bool:
        """Whether the exporter recorded the node's module path (metadata or a legacy '/a/b' name)."""
        keys = {p.key for p in node.metadata_props}
        return bool(keys & {"pkg.torch.onnx.name_scopes", "namespace"}) or "/" in node.name

    def layer_of(self, node) -> int | None:
        m = _LAYER_RE.search(self.scope(node))
        return int(m.group(1)) if m else None

    def prod(self, tensor: str):
        i = self.producer.get(tensor)
        return None if i is None else self.nodes[i]

    def users(self, tensor: str) -> list:
        return [self.nodes[i] for i in self.consumers.get(tensor, [])]

    # -- constants -------------------------------------------------------------
    def is_initializer(self, t: str) -> bool:
        return t in self.inits

    def has_data(self, t: str) -> bool:
        """True if the initializer's values can be read (inline, or an external file that exists)."""
        init = self.inits.get(t)
        if init is None:
            return False
        if init.data_location != onnx.TensorProto.EXTERNAL:
            return True
        loc = next((e.value for e in init.external_data if e.key == "location"), None)
        return bool(self.base_dir and loc and os.path.isfile(os.path.join(self.base_dir, loc)))

    def array(self, t: str) -> np.ndarray:
        """Values of an initializer for which :meth:`has_data` holds."""
        return numpy_helper.to_array(self.inits[t], base_dir=self.base_dir or "")

    def const(self, t: str) -> np.ndarray | None:
        """Value of a small constant tensor (Constant node, inline initializer, or a
        fold of those through a few shape-free ops); None if not a known constant."""
        if t in self._const_cache:
            return self._const_cache[t]
        self._const_cache[t] = None  # guards against cycles
        val = self._const(t)
        self._const_cache[t] = val
        return val

    def _const(self, t: str):
        if not t:
            return None
        init = self.inits.get(t)
        if init is not None:
            if init.data_location == onnx.TensorProto.EXTERNAL or np.prod(init.dims, dtype=np.int64) > SMALL_CONST:
                return None
            return numpy_helper.to_array(init)
        node = self.prod(t)
        if node is None:
            return None
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
                if a.name in ("value_float", "value_int"):
                    return np.array(onnx.helper.get_attribute_value(a))
                if a.name in ("value_floats", "value_ints"):
                    return np.array(onnx.helper.get_attribute_value(a))
            return None
        from .pointwise import fold
        if node.op_type in ("Gather", "Slice") and self._shape_of(node.input[0]) is not None:
            return self._static_dims(node)
        if node.op_type == "Shape":    # the shape of a tensor whose every dim is static
            dims = self._shape_of(t)
            return np.array(dims, dtype=np.int64) if dims is not None and all(
                isinstance(d, int) and d >= 0 for d in dims) else None
        if node.op_type == "CastLike":  # only the type of the second input matters
            v = self.const(node.input[0])
            if v is None:
                return None
            elem = self.elem.get(node.input[1])
            if elem:
                v = v.astype(onnx.helper.tensor_dtype_to_np_dtype(elem)) if elem != onnx.TensorProto.BFLOAT16 \
                    else v.astype(np.float32)
            return v
        args = [self.const(i) if i else None for i in node.input]
        if any(a is None for i, a in zip(node.input, args) if i):
            return None
        if node.op_type in ("Expand", "ConstantOfShape") and \
                np.prod([int(d) for d in np.asarray(args[-1]).reshape(-1)], dtype=np.int64) > SMALL_CONST:
            return None    # a broadcast to activation size (ones for an affine-free norm): not a small constant
        try:
            return fold(self, node, args, t)
        except Exception:  # not foldable: treat as non-constant
            return None

    def _shape_of(self, t: str):
        """The shape ``t`` holds when it is Shape(x) of a tensor of known rank (dims may be symbolic)."""
        node = self.prod(t)
        if node is None or node.op_type != "Shape" or self.shapes.get(node.input[0]) is None:
            return None
        dims = list(self.shapes[node.input[0]])
        start = self.attr(node, "start", 0)
        end = self.attr(node, "end", None)
        return dims[start:end]

    def _static_dims(self, node):
        """Gather / Slice of a Shape picking only static dims (a head size read off the input's
        shape while batch and sequence stay symbolic): folded; None if a picked dim is symbolic."""
        dims = np.array(self._shape_of(node.input[0]), dtype=object)
        try:
            if node.op_type == "Gather":
                idx = self.const(node.input[1])
                picked = dims[idx] if idx is not None else None
            else:
                bounds = [self.const(i) if len(node.input) > k and node.input[k] else None
                          for k, i in enumerate(node.input[:5]) if k > 0]
                starts, ends = bounds[0], bounds[1]
                steps = bounds[3] if len(bounds) > 3 else None
                if starts is None or ends is None or starts.size != 1 or (len(bounds) > 2 and bounds[2] is not None
                                                                         and int(bounds[2].reshape(-1)[0]) != 0):
                    return None
                step = int(steps.reshape(-1)[0]) if steps is not None else 1
                picked = dims[int(starts.reshape(-1)[0]):int(min(ends.reshape(-1)[0], 2**62)):step]
        except (IndexError, TypeError, ValueError):
            return None
        if picked is None or not all(isinstance(d, (int, np.integer)) for d in np.asarray(picked).reshape(-1)):
            return None
        return np.asarray(picked, dtype=np.int64)

    def scalar(self, t: str) -> float | None:
        v = self.const(t)
        if v is None or v.size != 1:
            return None
        return float(v.reshape(()))

    def static_shape(self, t: str) -> tuple | None:
        return self.shapes.get(t)

    def topo(self) -> Iterable[tuple[int, object]]:
        return enumerate(self.nodes)
