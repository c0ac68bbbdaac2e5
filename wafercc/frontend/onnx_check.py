"""Input validation of an ONNX model, before anything reads it for lifting.

Two stages (docs/onnx-lifter.md, "Loading"):

1. A sanity pass in Python over the protobuf, which cannot crash on any input: opset imports,
   node domains (only the standard one is lowered; any other is refused, never matched as a
   standard op), op schemas (arity, required inputs present, attribute names and types), value
   names (every input produced exactly once or a graph input / initializer, no dangling name, no
   value with two producers), tensors (a known data type, data whose size matches it, dims within
   ``ir.values.MAX_DIM`` and ``MAX_ELEMENTS``, external data inside the model's directory) and the
   dims of graph inputs and outputs.  A cycle is named by the sort (onnx_source._topological).
2. onnx's own checker with strict shape inference on a weight-free skeleton of the model (external
   and large initializers become typed graph inputs, so nothing is loaded), in a forked child
   (:mod:`.isolated`): onnx's C++ inference segfaults on some hostile attributes.

Every refusal is one line naming the file and, where there is one, the node.
"""
from __future__ import annotations

import math
import os

import onnx
from onnx import defs, helper

from ..errors import InputFileError, UnsupportedOpError, shorten
from ..ir.values import MAX_DIM, MAX_ELEMENTS
from . import isolated

STANDARD = ("", "ai.onnx")
CHECK_SECONDS = 300.0    # onnx's checker on the 80-layer Llama-3.1-70B export takes ~1 s
KEEP_INLINE = 4096       # initializers up to this many elements stay in the skeleton (shape data)

# sub-byte types are packed in raw data (and 2- and 4-bit ones in int32_data too, a byte per entry)
_BITS = {getattr(onnx.TensorProto, name): bits for name, bits in (
    ("INT4", 4), ("UINT4", 4), ("FLOAT4E2M1", 4), ("INT2", 2), ("UINT2", 2), ("FLOAT6E2M3", 6), ("FLOAT6E3M2", 6))
    if hasattr(onnx.TensorProto, name)}
_COMPLEX = {onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128}
_DATA_TYPES = set(onnx.TensorProto.DataType.values()) - {onnx.TensorProto.UNDEFINED}
_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")


def validate(model: onnx.ModelProto, where: str, needs_inference: bool = False) -> list | None:
    """Refuse a malformed ``model`` with one :class:`InputFileError` (or :class:`UnsupportedOpError`
    for a valid node of a domain wafercc does not lower).  With ``needs_inference`` also run onnx's
    shape inference in the same child and return the inferred ``value_info``."""
    opset = _opsets(model, where)
    g = model.graph
    for t in g.initializer:
        check_tensor(t, f"initializer '{t.name}'", where)
    _value_dims(g, where)
    _names(g, where)
    _nodes(g.node, opset, where)
    from .onnx_source import _topological
    nodes = _topological(list(g.node), {t.name for t in g.initializer} | {i.name for i in g.input}, where)
    return _native_check(_skeleton(model, nodes), where, needs_inference)


# -- opsets and nodes ----------------------------------------------------------------------------
def _opsets(model, where: str) -> int:
    seen: dict[str, int] = {}
    for o in model.opset_import:
        _is_text(o.domain, "an opset domain", where)
        dom = "" if o.domain == "ai.onnx" else o.domain
        if dom in seen:
            raise InputFileError(f"opset of domain '{o.domain or 'ai.onnx'}' imported twice", where=where)
        seen[dom] = o.version
    if "" not in seen:
        raise InputFileError("imports no opset of the standard ONNX domain", where=where)
    top = defs.onnx_opset_version()
    if not 1 <= seen[""] <= top:
        raise InputFileError(f"standard opset {seen['']} is outside the 1..{top} this onnx knows", where=where)
    return seen[""]


def _is_text(value, what: str, where: str) -> None:
    """protobuf hands a proto2 string field that is not valid UTF-8 back as bytes, which no later
    step expects."""
    if not isinstance(value, str):
        raise InputFileError(f"{what} is not valid UTF-8 text (corrupt file?)", where=where)


def _node_where(node, where: str) -> str:
    return f"{where}: node '{node.name or (node.output[0] if node.output else '?')}' ({node.op_type})"


class _Schema:
    """What the checks read of an OpSchema, read once per op type (each pybind property access
    builds new objects; a 19,500-node graph would pay for that per node)."""

    __slots__ = ("inputs", "outputs", "required", "attrs")

    def __init__(self, schema):
        self.inputs = (schema.min_input, schema.max_input)
        self.outputs = (schema.min_output, schema.max_output)
        single = defs.OpSchema.FormalParameterOption.Single
        self.required = tuple((p.name, p.option == single) for p in schema.inputs)
        self.attrs = {name: (int(a.type), a.type.name, a.required) for name, a in schema.attributes.items()}


def _nodes(nodes, opset: int, where: str) -> None:
    schemas: dict[str, _Schema] = {}
    for node in nodes:
        for value in (node.op_type, node.domain, node.name):
            _is_text(value, "a node's op type, domain or name", where)
        for p in node.metadata_props:   # the exporters' module scopes the lifter reads
            _is_text(p.key, "a node's metadata", where)
            _is_text(p.value, "a node's metadata", where)
        if node.domain not in STANDARD:
            raise UnsupportedOpError(node.op_type, node=node.name or (node.output[0] if node.output else None),
                                     detail=f"operator of domain '{node.domain}': wafercc lowers only the "
                                            f"standard ONNX domain")
        schema = schemas.get(node.op_type)
        if schema is None:
            try:
                schema = schemas[node.op_type] = _Schema(defs.get_schema(node.op_type, opset, ""))
            except defs.SchemaError:
                raise InputFileError(f"no operator '{node.op_type}' in ONNX opset {opset}",
                                     where=_node_where(node, where)) from None
        _arity(node, schema, where)
        if node.attribute or any(spec[2] for spec in schema.attrs.values()):
            _attributes(node, schema, opset, where)


def _arity(node, schema: _Schema, where: str) -> None:
    n_in, n_out = len(node.input), len(node.output)
    (lo, hi), (olo, ohi) = schema.inputs, schema.outputs
    if not lo <= n_in <= hi:
        raise InputFileError(f"{n_in} inputs, the operator takes {_range(lo, hi)}", where=_node_where(node, where))
    if not olo <= n_out <= ohi:
        raise InputFileError(f"{n_out} outputs, the operator gives {_range(olo, ohi)}", where=_node_where(node, where))
    formal = schema.required
    for k, name in enumerate(node.input):
        if not name and formal:
            param, single = formal[min(k, len(formal) - 1)]
            if single:
                raise InputFileError(f"input {k} ('{param}') is required but its name is empty",
                                     where=_node_where(node, where))
    if not any(node.output):
        raise InputFileError("no named output", where=_node_where(node, where))


def _range(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo} or more" if hi >= 2**31 - 1 else f"{lo} to {hi}"


def _attributes(node, schema: _Schema, opset: int, where: str) -> None:
    nw = _node_where(node, where)
    names = set()
    for a in node.attribute:
        _is_text(a.name, "an attribute name", nw)
        if a.name in names:
            raise InputFileError(f"attribute '{a.name}' given twice", where=nw)
        names.add(a.name)
        spec = schema.attrs.get(a.name)
        if spec is None:
            raise InputFileError(f"unknown attribute '{a.name}'", where=nw)
        if a.ref_attr_name:
            raise InputFileError(f"attribute '{a.name}' refers to a function attribute outside a function", where=nw)
        if a.type != spec[0]:
            got = onnx.AttributeProto.AttributeType.Name(a.type) if a.type in onnx.AttributeProto.AttributeType.values() \
                else str(a.type)
            raise InputFileError(f"attribute '{a.name}' is {got}, expected {spec[1]}", where=nw)
        if a.type == onnx.AttributeProto.TENSOR:
            check_tensor(a.t, f"attribute '{a.name}'", nw)
        elif a.type == onnx.AttributeProto.TENSORS:
            for t in a.tensors:
                check_tensor(t, f"attribute '{a.name}'", nw)
        elif a.type == onnx.AttributeProto.GRAPH:
            _nodes(a.g.node, opset, where)
        elif a.type == onnx.AttributeProto.GRAPHS:
            for sub in a.graphs:
                _nodes(sub.node, opset, where)
    for name, (_, _, required) in schema.attrs.items():
        if required and name not in names:
            raise InputFileError(f"required attribute '{name}' is missing", where=nw)


# -- names ---------------------------------------------------------------------------------------
def _names(g, where: str) -> None:
    """SSA: each value has one source (graph input, initializer or one node output); every name
    read is one of those; every graph output is one of those."""
    source: dict[str, str] = {}
    for kind, names in (("graph input", [i.name for i in g.input]), ("initializer", [t.name for t in g.initializer])):
        for name in names:
            _is_text(name, f"a {kind} name", where)
            if not name:
                raise InputFileError(f"a {kind} has an empty name", where=where)
            if source.get(name) == kind:
                raise InputFileError(f"{kind} '{name}' is declared twice", where=where)
            source.setdefault(name, kind)   # an initializer may also be listed as a graph input
    for node in g.node:
        for o in node.output:
            if not o:
                continue
            _is_text(o, "a node output name", where)
            if o in source:
                raise InputFileError(f"output '{o}' already comes from {source[o]}: a value has one producer",
                                     where=_node_where(node, where))
            source[o] = f"node '{node.name or node.op_type}'"
    for node in g.node:
        for t in node.input:
            if t and t not in source:
                _is_text(t, "a node input name", where)
                raise InputFileError(f"input '{t}' is produced by no node and is neither a graph input nor an "
                                     f"initializer", where=_node_where(node, where))
    for o in g.output:
        if o.name not in source:
            _is_text(o.name, "a graph output name", where)
            raise InputFileError(f"graph output '{o.name}' is produced by no node", where=where)


# -- tensors and dims ----------------------------------------------------------------------------
def _dims_ok(dims, what: str, where: str, allow_zero: bool) -> int:
    """Product of ``dims`` (ints); each must be in 0/1..MAX_DIM, the product within MAX_ELEMENTS."""
    for d in dims:
        if d < 0 or d > MAX_DIM or (d == 0 and not allow_zero):
            raise InputFileError(f"{what} has dim {d}; dims must be 1 to 2**31 - 1"
                                 + (" (or 0 for an empty list)" if allow_zero else ""), where=where)
    n = math.prod(dims)
    if n > MAX_ELEMENTS:
        raise InputFileError(f"{what} has {n} elements, more than the 2**53 wafercc can count", where=where)
    return n


def check_tensor(t: onnx.TensorProto, what: str, where: str) -> None:
    """A tensor's data type is known and its stored data (raw, typed fields or external) has the
    size its dims and type give; ``numpy_helper.to_array`` then cannot fail on it."""
    if t.data_type not in _DATA_TYPES:
        raise InputFileError(f"{what} has unknown data type {t.data_type}", where=where)
    # a 0 dim is an empty list (a Resize's roi); in a matrix it is a weight with no rows
    n = _dims_ok(list(t.dims), what, where, allow_zero=len(t.dims) < 2)
    if t.data_type == onnx.TensorProto.STRING:
        return
    size = _nbytes(t.data_type, n)
    typed = [f for f in _FIELDS if len(getattr(t, f))]
    stores = typed + (["raw_data"] if t.HasField("raw_data") else []) + \
        (["external data"] if t.data_location == onnx.TensorProto.EXTERNAL else [])
    if len(stores) > 1:
        raise InputFileError(f"{what} stores its data in {' and '.join(stores)}; expected one", where=where)
    if t.data_location == onnx.TensorProto.EXTERNAL:
        _external(t, size, what, where)
    elif t.HasField("raw_data"):
        if len(t.raw_data) != size:
            name = onnx.TensorProto.DataType.Name(t.data_type)
            raise InputFileError(f"{what} holds {len(t.raw_data)} bytes of raw data; {n} {name} elements "
                                 f"take {size}", where=where)
    elif typed:
        field = typed[0]
        if field != helper.tensor_dtype_to_field(t.data_type):
            raise InputFileError(f"{what} of type {onnx.TensorProto.DataType.Name(t.data_type)} stores its "
                                 f"values in {field}", where=where)
        want = 2 * n if t.data_type in _COMPLEX else size if _BITS.get(t.data_type) in (2, 4) else n
        got = len(getattr(t, field))
        if got != want:
            raise InputFileError(f"{what} holds {got} values in {field}; its dims give {want}", where=where)
    elif n:
        raise InputFileError(f"{what} has {n} elements but stores no data", where=where)


def _nbytes(data_type: int, n: int) -> int:
    bits = _BITS.get(data_type)
    return (n * bits + 7) // 8 if bits else n * helper.tensor_dtype_to_np_dtype(data_type).itemsize


def _external(t, size: int, what: str, where: str) -> None:
    info = {e.key: e.value for e in t.external_data}
    loc = info.get("location", "")
    if not loc:
        raise InputFileError(f"{what} is external data without a location", where=where)
    if os.path.isabs(loc) or ".." in loc.replace("\\", "/").split("/"):
        raise InputFileError(f"{what}'s external data location '{loc}' leaves the model's directory", where=where)
    for key in ("offset", "length"):
        if key in info and not (info[key].isdigit() and int(info[key]) < 2**63):
            raise InputFileError(f"{what}'s external data {key} '{info[key]}' is not a byte count", where=where)
    if "length" in info and int(info["length"]) != size:
        raise InputFileError(f"{what}'s external data is {info['length']} bytes; its dims and type take {size}",
                             where=where)


def _value_dims(g, where: str) -> None:
    """Dims of the graph's inputs, outputs and annotated values: within int32, and a graph input or
    output has no empty dim (a model fed zero tokens or emitting zero features computes nothing)."""
    inputs, outputs = {v.name for v in g.input}, {v.name for v in g.output}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if not vi.type.HasField("tensor_type"):
            continue
        _is_text(vi.name, "a value name", where)
        tt = vi.type.tensor_type
        kind = "graph input" if vi.name in inputs else "graph output" if vi.name in outputs else "value"
        if not tt.HasField("shape") and kind == "graph input":
            raise InputFileError(f"graph input '{vi.name}' has no shape, not even a rank", where=where)
        if tt.elem_type and tt.elem_type not in _DATA_TYPES:
            raise InputFileError(f"{kind} '{vi.name}' has unknown element type {tt.elem_type}", where=where)
        if tt.HasField("shape"):
            dims = [d.dim_value for d in tt.shape.dim if d.HasField("dim_value")]
            _dims_ok(dims, f"{kind} '{vi.name}'", where, allow_zero=kind == "value")


# -- onnx's checker, isolated --------------------------------------------------------------------
def _skeleton(model: onnx.ModelProto, nodes: list) -> onnx.ModelProto:
    """``model`` with its nodes sorted and without weight data: external and large initializers
    become graph inputs of their type and shape (shape inference needs no more of them)."""
    sk = onnx.ModelProto(ir_version=model.ir_version)
    sk.opset_import.extend(model.opset_import)
    g, src = sk.graph, model.graph
    g.name = "skeleton"    # the model's own text fields are not needed (nor checked as text)
    g.node.extend(nodes)
    # an output of unknown rank is valid (onnxruntime runs it) but fails the checker's main-graph
    # rule that outputs have a shape: it is left out of the skeleton, so checked as a plain value
    g.output.extend(o for o in src.output if not o.type.HasField("tensor_type") or o.type.tensor_type.HasField("shape"))
    g.value_info.extend(src.value_info)
    declared = {i.name for i in src.input}
    g.input.extend(src.input)
    for t in src.initializer:
        if t.data_location != onnx.TensorProto.EXTERNAL and math.prod(t.dims) <= KEEP_INLINE:
            g.initializer.append(t)
        elif t.name not in declared:
            g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return sk


def _native_check(skeleton: onnx.ModelProto, where: str, infer: bool):
    def check():
        try:
            # full_check is the structural check, then strict shape inference; when the lifter needs
            # the inferred shapes that one strict pass (with data propagation) gives them too
            onnx.checker.check_model(skeleton, full_check=not infer)
            if infer:
                out = onnx.shape_inference.infer_shapes(skeleton, check_type=True, strict_mode=True, data_prop=True)
                return [v.SerializeToString() for v in out.graph.value_info]
        except Exception as e:  # ValidationError / InferenceError: the reason, then the node it is in
            raise RuntimeError(_checker_line(e)) from None
        return None
    try:
        result = isolated.call(check, timeout=CHECK_SECONDS)
    except isolated.NativeFailure as e:
        raise InputFileError(f"ONNX checker: {e}", where=where) from None
    if result is None:
        return None
    return [onnx.ValueInfoProto.FromString(b) for b in result]


def _checker_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    context = next((ln.split("==> Context:", 1)[1].strip() for ln in lines if "==> Context:" in ln), "")
    head = lines[0].split("==> Context:")[0].strip()
    return shorten(f"{head} ({context})" if context and context not in head else head, 280)
