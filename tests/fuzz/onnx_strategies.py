"""Hypothesis strategies that corrupt a valid ONNX model as a careless user or an attacker would.

``onnx_files(base)`` draws serialised models: ``base`` with one to three field corruptions
(tensor data types, dims and data, or a well-formed tensor of another shape and type; value shapes
and element types; node input and output names,
attributes, domains and op types; removed, duplicated or reordered nodes; opset and IR
versions), sometimes followed by a byte-level corruption of the file.  The fast test
(tests/test_onnx_validation.py) runs a few hundred draws; a long fuzz run reuses the same
strategies with more examples.  ``small_model()`` is a valid 15-node model that lowers in
~0.1 s (embedding, RMS norm, MLP, residual, softmax, reshape; a Constant and small int64
initializers give the mutations typed data to break).
"""
from __future__ import annotations

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

# values chosen to hit the edges: empty, negative, int32 and int64 overflow, absurd sizes
HOSTILE_INTS = [0, 1, -1, -5, 2, 7, 2**31 - 1, 2**31, 2**40, 2**62, 2**63 - 1, -2**63]
DATA_TYPES = sorted(onnx.TensorProto.DataType.values()) + [99, 1000]
DOMAINS = ["evil.domain", "ai.onnx.ml", "com.microsoft", "ai.onnx", "pkg.onnxscript.torch_lib"]
OP_TYPES = ["Relu", "MatMul", "Gather", "GatherND", "Reshape", "Conv", "NoSuchOp", "Loop", "Identity",
            "Softmax", "Concat", "Expand", "Range", "ConstantOfShape", "TopK"]


def small_model() -> onnx.ModelProto:
    r = np.random.default_rng(0)
    inits = [numpy_helper.from_array(r.standard_normal((64, 16)).astype(np.float32), "emb"),
             numpy_helper.from_array(r.standard_normal((16, 32)).astype(np.float32), "w1"),
             numpy_helper.from_array(r.standard_normal((32, 16)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.ones(16, np.float32), "gamma"),
             numpy_helper.from_array(np.array([-1], np.int64), "axes"),
             numpy_helper.from_array(np.array([0, 0, 16], np.int64), "flat_shape")]
    node = helper.make_node
    nodes = [node("Gather", ["emb", "input_ids"], ["h"], name="embed"),
             node("Constant", [], ["eps"], name="eps", value=numpy_helper.from_array(np.array(1e-5, np.float32))),
             node("Mul", ["h", "h"], ["sq"], name="sq"),
             node("ReduceMean", ["sq", "axes"], ["ms"], name="ms", keepdims=1),
             node("Add", ["ms", "eps"], ["mse"], name="mse"),
             node("Sqrt", ["mse"], ["rms"], name="rms"),
             node("Div", ["h", "rms"], ["hn"], name="hn"),
             node("Mul", ["hn", "gamma"], ["hg"], name="norm"),
             node("MatMul", ["hg", "w1"], ["u"], name="up"),
             node("Relu", ["u"], ["a"], name="act"),
             node("MatMul", ["a", "w2"], ["d"], name="down"),
             node("Add", ["h", "d"], ["r"], name="residual"),
             node("Softmax", ["r"], ["p"], name="softmax", axis=-1),
             node("Reshape", ["p", "flat_shape"], ["y"], name="merge")]
    g = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 16])], initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


# -- one corruption each: (model, draw) -> None, in place ---------------------------------------
def _pick(draw, seq, label):
    return seq[draw(st.integers(0, len(seq) - 1), label=label)] if len(seq) else None


def _tensors(m):
    """Initializers and Constant-node tensors: every TensorProto the frontend may read values of."""
    ts = list(m.graph.initializer)
    ts += [a.t for n in m.graph.node for a in n.attribute if a.type == onnx.AttributeProto.TENSOR]
    return ts


def tensor_dtype(m, draw):
    t = _pick(draw, _tensors(m), "tensor")
    if t is not None:
        t.data_type = draw(st.sampled_from(DATA_TYPES), label="data_type")


def tensor_dims(m, draw):
    t = _pick(draw, _tensors(m), "tensor")
    if t is None:
        return
    dims = list(t.dims)
    if dims and draw(st.booleans(), label="replace a dim"):
        dims[draw(st.integers(0, len(dims) - 1))] = draw(st.sampled_from(HOSTILE_INTS), label="dim")
    else:
        dims = draw(st.lists(st.sampled_from(HOSTILE_INTS), max_size=3), label="dims")
    del t.dims[:]
    t.dims.extend(dims)


def tensor_data(m, draw):
    t = _pick(draw, _tensors(m), "tensor")
    if t is None:
        return
    how = draw(st.sampled_from(["truncate", "extend", "drop", "external", "typed"]), label="data")
    if how == "truncate":
        t.raw_data = t.raw_data[:draw(st.integers(0, max(0, len(t.raw_data) - 1)))]
    elif how == "extend":
        t.raw_data = t.raw_data + b"\x00" * draw(st.integers(1, 64))
    elif how == "drop":
        t.ClearField("raw_data")
    elif how == "external":
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        t.external_data.add(key="location", value=draw(st.sampled_from(["absent.bin", "../../etc/passwd", "/etc/passwd", ""])))
        if draw(st.booleans()):
            t.external_data.add(key="length", value=draw(st.sampled_from(["-1", "x", "4", "99999999999999999999"])))
    else:
        t.float_data.extend([1.0] * draw(st.integers(1, 4)))


_NUMPY_TYPES = [np.float32, np.float16, np.float64, np.int64, np.int32, np.int8, np.uint8, np.bool_]


def tensor_replace(m, draw):
    """A tensor swapped for a well-formed one of another shape and type: it passes the data checks,
    so the checker, the constant folder and the lifter meet it."""
    t = _pick(draw, _tensors(m), "tensor")
    if t is None:
        return
    dims = draw(st.lists(st.sampled_from([0, 1, 2, 3, 16, 17, 32]), max_size=3), label="dims")
    dtype = draw(st.sampled_from(_NUMPY_TYPES), label="dtype")
    fill = draw(st.sampled_from([0, 1, -1, 3]), label="fill")
    t.CopyFrom(numpy_helper.from_array(np.full(dims, fill).astype(dtype), t.name))


def value_shape(m, draw):
    vis = list(m.graph.input) + list(m.graph.output) + list(m.graph.value_info)
    vi = _pick(draw, vis, "value")
    if vi is None:
        return
    tt = vi.type.tensor_type
    how = draw(st.sampled_from(["dim", "drop shape", "elem type", "rank"]), label="shape")
    if how == "dim" and len(tt.shape.dim):
        tt.shape.dim[draw(st.integers(0, len(tt.shape.dim) - 1))].dim_value = draw(st.sampled_from(HOSTILE_INTS))
    elif how == "drop shape":
        tt.ClearField("shape")
    elif how == "elem type":
        tt.elem_type = draw(st.sampled_from(DATA_TYPES))
    else:
        tt.shape.dim.add().dim_value = draw(st.sampled_from([1, 2, 3]))


def _names(m):
    return sorted({i.name for i in m.graph.input} | {t.name for t in m.graph.initializer}
                  | {o for n in m.graph.node for o in n.output})


def node_input(m, draw):
    n = _pick(draw, m.graph.node, "node")
    if n is None or not n.input:
        return
    k = draw(st.integers(0, len(n.input) - 1), label="input")
    n.input[k] = draw(st.one_of(st.just(""), st.just("dangling"), st.sampled_from(_names(m))), label="name")


def node_output(m, draw):
    n = _pick(draw, m.graph.node, "node")
    if n is None or not n.output:
        return
    n.output[0] = draw(st.one_of(st.just(""), st.sampled_from(_names(m))), label="name")


def node_attribute(m, draw):
    n = _pick(draw, m.graph.node, "node")
    if n is None:
        return
    how = draw(st.sampled_from(["value", "type", "unknown", "delete"]), label="attribute")
    if how == "unknown" or not n.attribute:
        n.attribute.append(helper.make_attribute(draw(st.sampled_from(["axis", "batch_dims", "perm", "zz"])),
                                                 draw(st.sampled_from(HOSTILE_INTS))))
    elif how == "delete":
        del n.attribute[draw(st.integers(0, len(n.attribute) - 1))]
    else:
        a = n.attribute[draw(st.integers(0, len(n.attribute) - 1))]
        name = a.name
        new = draw(st.sampled_from(HOSTILE_INTS)) if how == "value" else \
            draw(st.sampled_from([1.5, "text", [1, 2], [0.5]]))
        a.CopyFrom(helper.make_attribute(name, new))


def node_kind(m, draw):
    n = _pick(draw, m.graph.node, "node")
    if n is None:
        return
    if draw(st.booleans(), label="domain or op"):
        n.domain = draw(st.sampled_from(DOMAINS))
        if draw(st.booleans()):
            m.opset_import.append(helper.make_opsetid(n.domain, 1))
    else:
        n.op_type = draw(st.sampled_from(OP_TYPES))


def node_set(m, draw):
    nodes = m.graph.node
    if not nodes:
        return
    how = draw(st.sampled_from(["remove", "duplicate", "reverse", "swap"]), label="nodes")
    k = draw(st.integers(0, len(nodes) - 1))
    if how == "remove":
        del nodes[k]
    elif how == "duplicate":
        nodes.add().CopyFrom(nodes[k])
    elif how == "reverse":
        kept = list(nodes)[::-1]
        del nodes[:]
        nodes.extend(kept)
    else:
        j = draw(st.integers(0, len(nodes) - 1))
        a, b = onnx.NodeProto(), onnx.NodeProto()
        a.CopyFrom(nodes[k])
        b.CopyFrom(nodes[j])
        nodes[k].CopyFrom(b)
        nodes[j].CopyFrom(a)


def versions(m, draw):
    if draw(st.booleans(), label="opset or ir"):
        m.opset_import[0].version = draw(st.sampled_from([0, 1, 7, 13, 99, -1, 2**40]))
    else:
        m.ir_version = draw(st.sampled_from([0, 1, 3, 99]))


MUTATIONS = [tensor_dtype, tensor_dims, tensor_data, tensor_replace, tensor_replace, value_shape, node_input,
             node_output, node_attribute, node_attribute, node_kind, node_set, versions]


@st.composite
def mutated_models(draw, base: onnx.ModelProto, max_mutations: int = 3) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(base)
    for mutate in draw(st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=max_mutations), label="mutations"):
        mutate(m, draw)
    return m


@st.composite
def onnx_files(draw, base: onnx.ModelProto, max_mutations: int = 3) -> bytes:
    """A mutated model serialised; one draw in eight also has its bytes truncated or flipped."""
    data = draw(mutated_models(base, max_mutations)).SerializeToString()
    if draw(st.integers(0, 7), label="byte corruption") == 0 and data:
        k = draw(st.integers(0, len(data) - 1))
        data = data[:k] if draw(st.booleans()) else data[:k] + bytes([data[k] ^ 0xFF]) + data[k + 1:]
    return data
