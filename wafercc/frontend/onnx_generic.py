"""The lowering of last resort: an ONNX operator with no semantic lowering becomes the IR's ``onnx``
op (ir/ops_onnx.py) when it works on one token's features at a time.

wafercc streams per-token activations through the wafer and keeps nothing across tokens but the KV
cache, so the test is whether the operator mixes tokens: element-wise maps never do; reductions,
scans, top-k, normalisations and pads do not when their axis is the feature (last) axis. Those are
kept as their ONNX node, normalised to the IR value's rank (the axis becomes -1, pads get one pair
per IR axis, constants keep only their feature dim), so that the simulator can run the node as
stored. Anything else is refused with the node, the reason and what to do.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ..ir.values import Value
from .onnx_source import onnx_dtype
from .onnx_views import View

# element-wise, with numpy broadcasting (inputs: activations, or constants of the feature dim)
MAP_OPS = {
    "Erf", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh",
    "Asinh", "Acosh", "Atanh", "Elu", "Selu", "Celu", "LeakyRelu", "ThresholdedRelu", "HardSwish",
    "HardSigmoid", "Softsign", "Mish", "PRelu", "Gelu", "Shrink", "Mod", "Greater", "Less",
    "GreaterOrEqual", "LessOrEqual", "And", "Or", "Xor", "BitwiseAnd", "BitwiseOr", "BitwiseXor",
    "BitwiseNot", "BitShift", "Sum", "Mean", "Where", "Sigmoid", "Tanh", "Relu", "Softplus", "Exp", "Log",
    "Sqrt", "Reciprocal", "Abs", "Neg", "Max", "Min", "Pow", "Add", "Sub", "Mul", "Div", "Clip", "Not",
    "Equal", "IsNaN", "IsInf"}
AXIS_OPS = {"ArgMax": 0, "ArgMin": 0, "LogSoftmax": -1, "Hardmax": -1, "LpNormalization": -1, "TopK": -1,
            "Softmax": -1}  # op -> its default axis (opset 13+)
REDUCE_OPS = {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"}
OTHER_OPS = {"CumSum", "Pad", "MeanVarianceNormalization"}
GENERIC_OPS = MAP_OPS | set(AXIS_OPS) | REDUCE_OPS | OTHER_OPS

# why the rest cannot be a per-token op, by family
_FAMILIES = [
    ({"LSTM", "GRU", "RNN", "Scan", "Loop", "If"},
     "is a recurrence or control flow: the wafer runs a fixed per-token dataflow"),
    ({"Conv", "ConvTranspose", "ConvInteger", "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool",
      "GlobalMaxPool", "Resize", "Upsample", "Col2Im", "STFT", "DFT"},
     "mixes neighbouring tokens (a window over the sequence): only the KV cache carries state across tokens"),
    ({"NonZero", "Unique", "Compress", "NonMaxSuppression", "StringNormalizer", "RandomNormal",
      "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"},
     "has a data-dependent or random output"),
]


def refusal(node) -> str | None:
    """Why ``node`` can have no generic lowering, from its type alone (None: it may have one)."""
    if node.domain not in ("", "ai.onnx"):
        return (f"operator of domain '{node.domain}': only standard ONNX operators have a definition to "
                "run them by (export without that custom op or fusion)")
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        return "control flow (a subgraph attribute): the wafer runs a fixed per-token dataflow"
    if node.op_type in GENERIC_OPS:
        return None
    for ops, why in _FAMILIES:
        if node.op_type in ops:
            return f"{node.op_type} {why}"
    return "no lowering for this operator in the wafercc op set (see docs/ir.md)"


def _attr_value(node, a):
    if a.type in (onnx.AttributeProto.TENSOR, onnx.AttributeProto.TENSORS, onnx.AttributeProto.SPARSE_TENSOR,
                  onnx.AttributeProto.SPARSE_TENSORS, onnx.AttributeProto.TYPE_PROTO,
                  onnx.AttributeProto.TYPE_PROTOS):
        return None
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, list):
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in v]
    return v


def _const_entry(arr: np.ndarray) -> dict:
    arr = np.asarray(arr)
    return {"dtype": arr.dtype.name, "shape": list(arr.shape), "data": arr.reshape(-1).tolist()}


class GenericLifting:
    """Methods of the lifter for the ``onnx`` op."""

    def _generic(self, node):
        why = refusal(node)
        if why:
            self._fail(node, why)
        src, op = self.src, node.op_type
        attrs = {}
        for a in node.attribute:
            v = _attr_value(node, a)
            if v is None:
                self._fail(node, f"attribute '{a.name}' holds a tensor or type; the generic lowering keeps "
                                 "scalars, strings and lists")
            attrs[a.name] = v
        acts = [t for t in node.input if t and t in self.act]
        if not acts:
            self._fail(node, "no activation input")
        first = self.views.get(acts[0])
        for t in acts:
            v = self.views.get(t)
            if not isinstance(v, View) or v.layout != "flat" or v.scale != 1.0:
                self._fail(node, f"input '{t}' is not a per-token activation (layout "
                                 f"{getattr(v, 'layout', type(v).__name__)}); the generic lowering takes [tokens, features]")
        xval: Value = self.g.values[first.value]
        lead, R = tuple(xval.shape[:-1]), len(xval.shape)
        rank = len(src.shapes[acts[0]]) if src.shapes.get(acts[0]) is not None else None
        if rank is None:
            self._fail(node, f"input '{acts[0]}' has no inferred rank")
        plan = _Plan(self, node, attrs, lead, R, rank)
        if op in MAP_OPS:
            plan.map()
        elif op in AXIS_OPS:
            plan.axis(AXIS_OPS[op])
        elif op in REDUCE_OPS:
            plan.reduce()
        elif op == "CumSum":
            plan.cumsum()
        elif op == "Pad":
            plan.pad()
        else:  # MeanVarianceNormalization
            plan.attr_axes("axes", [0, 2, 3])
            plan.same()
        plan.emit()


class _Plan:
    """One node's operands, constants, normalised attributes and output shapes."""

    def __init__(self, lf, node, attrs, lead, R, rank):
        self.lf, self.node, self.attrs, self.lead, self.R, self.rank = lf, node, attrs, lead, R, rank
        self.refs, self.operands, self.consts = [], {}, {}
        self.widths = []           # last dims of the inputs, for the element-wise output
        self.out_last: list = []   # per output: its last dim
        src = lf.src
        for pos, t in enumerate(node.input):
            if not t:
                self.refs.append("")
                continue
            if t in lf.act:
                role = f"in{len(self.operands)}"
                if len(self.operands) >= 8:
                    lf._fail(node, "more than 8 activation or weight inputs")
                self.operands[role] = lf.views[t].value
                self.refs.append(role)
                self.widths.append(lf.g.values[lf.views[t].value].shape[-1])
                continue
            data = node.op_type in MAP_OPS or pos == 0   # the other inputs say how (k, axes, pads)
            if data and src.is_initializer(t):           # a learned operand (PRelu's slope): a weight
                role = f"in{len(self.operands)}"
                self.operands[role] = ("weight", t)
                self.refs.append(role)
                continue
            c = src.const(t)
            if c is not None:
                key = f"c{pos}"
                self.consts[key] = np.asarray(c)
                self.refs.append(key)
                continue
            lf._fail(node, f"input '{t}' is neither an activation, a weight nor a constant")

    def fail(self, why):
        self.lf._fail(self.node, why)

    # -- the feature axis -------------------------------------------------------------------
    def _last_axis(self, ax, what):
        a = int(ax) + self.rank if int(ax) < 0 else int(ax)
        if a != self.rank - 1:
            self.fail(f"{self.node.op_type} along axis {a} of a {self.rank}-D activation mixes tokens: wafercc "
                      "keeps per-token activations and only the KV cache across tokens; export the model "
                      f"without it (e.g. the hidden states before a pooling head) ({what})")

    def _feature_const(self, key):
        """A constant operand of an element-wise op: all dims but the feature dim must be 1."""
        c = self.consts[key]
        if c.ndim and any(d != 1 for d in c.shape[:-1]):
            self.fail(f"constant input of shape {list(c.shape)} varies across tokens")
        self.consts[key] = c.reshape(c.shape[-1:]) if c.ndim else c

    def map(self):
        for key in list(self.consts):
            self._feature_const(key)
            self.widths.append(self.consts[key].shape[-1] if self.consts[key].ndim else 1)
        for role, v in list(self.operands.items()):
            if isinstance(v, tuple):
                shape = self.lf.src.shapes[v[1]]
                if any(d != 1 for d in shape[:-1]):
                    self.fail(f"weight input '{v[1]}' of shape {list(shape)} varies across tokens")
                if len(shape) > 1:
                    self.lf.declared[v[1]] = tuple(shape[-1:])
                self.widths.append(shape[-1] if shape else 1)
        wide = {w for w in self.widths if w != 1}
        if len(wide) > 1:
            self.fail(f"inputs of feature widths {sorted(map(str, wide))} do not broadcast")
        self.out_last = [next(iter(wide), 1)]

    def same(self):
        self.out_last = [self.lf.g.values[self.operands["in0"]].shape[-1]]

    def attr_axes(self, name, default):
        axes = self.attrs.get(name, default)
        for a in axes:
            self._last_axis(a, f"{name}={list(axes)}")
        if len(axes) != 1:
            self._last_axis(min(axes), f"{name}={list(axes)}")
        self.attrs[name] = [-1]

    def axis(self, default):
        op = self.node.op_type
        self._last_axis(self.attrs.get("axis", default), "axis")
        self.attrs["axis"] = -1
        width = self.lf.g.values[self.operands["in0"]].shape[-1]
        if op == "TopK":
            k = self.consts.get("c1")
            if k is None:
                self.fail("TopK's k is not a constant")
            self.consts["c1"] = k.reshape(1).astype(np.int64)
            self.out_last = [int(k.reshape(-1)[0])] * 2
        elif op in ("ArgMax", "ArgMin"):
            self._keep_reduced_axis()
        else:
            self.out_last = [width]

    def reduce(self):
        if "axes" in self.attrs:
            self.attr_axes("axes", None)
        elif "c1" in self.consts:
            axes = self.consts["c1"].reshape(-1)
            if axes.size != 1:
                self.fail(f"reduction over axes {axes.tolist()} of a {self.rank}-D activation mixes tokens")
            self._last_axis(axes[0], f"axes={axes.tolist()}")
            self.consts["c1"] = np.asarray([-1], np.int64)
        else:
            self.fail(f"{self.node.op_type} over every axis mixes tokens: wafercc keeps per-token activations")
        self._keep_reduced_axis()

    def _keep_reduced_axis(self):
        # the IR value keeps the reduced feature axis as 1 (keepdims=0 only drops it from the ONNX
        # tensor's shape; the next Unsqueeze or Reshape is then a no-op on the IR value)
        self.attrs["keepdims"] = 1
        self.out_last = [1]

    def cumsum(self):
        ax = self.consts.get("c1")
        if ax is None:
            self.fail("CumSum's axis is not a constant")
        self._last_axis(ax.reshape(-1)[0], "axis")
        self.consts["c1"] = np.asarray(-1, ax.dtype)
        self.same()

    def pad(self):
        pads = self.consts.get("c1") if len(self.node.input) > 1 and self.node.input[1] else \
            np.asarray(self.attrs.pop("pads", None) or [], np.int64)
        if pads is None:
            self.fail("Pad's pads are not a constant")
        pads = pads.reshape(-1).astype(np.int64)
        axes = list(range(self.rank))
        if len(self.node.input) > 3 and self.node.input[3]:
            given = self.consts.get("c3")
            if given is None:
                self.fail("Pad's axes are not a constant")
            axes = [int(a) + self.rank if a < 0 else int(a) for a in given.reshape(-1)]
            self.consts.pop("c3")
            self.refs = self.refs[:3]
        n = len(axes)
        if pads.size != 2 * n:
            self.fail(f"{pads.size} pads for {n} axes")
        begin, end = dict(zip(axes, pads[:n])), dict(zip(axes, pads[n:]))
        for a in axes:
            if a != self.rank - 1 and (begin[a] or end[a]):
                self._last_axis(a, f"pads {pads.tolist()}")
        b, e = int(begin.get(self.rank - 1, 0)), int(end.get(self.rank - 1, 0))
        new = np.asarray([0] * (self.R - 1) + [b] + [0] * (self.R - 1) + [e], np.int64)
        if "pads" in self.attrs or self.lf.src.opset < 11:
            self.attrs["pads"] = new.tolist()
        else:
            self.consts["c1"] = new
        width = self.lf.g.values[self.operands["in0"]].shape[-1]
        if not isinstance(width, int):
            self.fail("padding a symbolic feature dim")
        self.out_last = [width + b + e]

    # -- emit -----------------------------------------------------------------------------------
    def emit(self):
        lf, node, src = self.lf, self.node, self.lf.src
        inputs = {}
        for role, v in self.operands.items():
            inputs[role] = lf._weight(v[1]) if isinstance(v, tuple) else v
        consts = {k: _const_entry(c) for k, c in self.consts.items()}
        counted = True
        for i, out in enumerate(node.output):
            if not out or i >= len(self.out_last) or not (src.users(out) or out in src.graph_outputs):
                continue
            last = self.out_last[i]
            shape = list(self.lead) + [last if isinstance(last, str) else int(last)]
            code = src.elem.get(out)
            if code:
                dtype = onnx_dtype(code, f"output '{out}' of node '{node.name}'").value
            elif node.op_type == "TopK" and i == 1 or node.op_type in ("ArgMax", "ArgMin"):
                dtype = "i64"
            else:
                dtype = lf.g.values[inputs["in0"]].dtype.value
            at = {"op_type": node.op_type, "domain": node.domain, "opset": src.opset, "inputs": self.refs,
                  "attributes": self.attrs or None, "consts": consts or None, "output": i, "counted": counted,
                  "shape": shape, "dtype": dtype}
            value = lf._emit(node, "onnx", inputs, at)
            lf.views[out] = View(value)
            counted = False
