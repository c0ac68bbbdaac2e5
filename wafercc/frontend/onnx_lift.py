"""Lift an ONNX graph into the wafercc IR.

The walk visits ONNX nodes in order.  Tensors computed from token activations
(ACT) map to IR values through a :class:`View` that records how the ONNX
tensor lays out the IR value (flat, split into heads, transposed, scaled), so
layout-only ops fold away.  Masks, positions and shapes (AUX) are not lifted:
their meaning is read off (causal, window, rotary tables).  Multi-node patterns
are found first (onnx_regions) and emitted as one IR op each.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..errors import InputFileError, UnsupportedOpError
from ..ir import BATCH, SEQ, DType, Graph, ValueKind
from ..ir.ops import ShapeError
from .onnx_mla import detect_mla, emit_mla, refuse_mla
from .onnx_moe import detect_moe
from .onnx_patches import conv_refusal, detect_patches, emit_patches, is_patch_conv
from .onnx_regions import (LAYOUT_OPS, Region, detect_activation, detect_norm, detect_rotary,
                           trig_tensors, weight_of)
from .onnx_attention import AttentionLifting
from .onnx_bias import relative_lookup
from .onnx_generic import GenericLifting, refusal
from .onnx_layout import LayoutLifting
from .onnx_source import SourceGraph, onnx_dtype
from .onnx_ties import Ties
from .onnx_views import Scores, View

ACTIVATION_ANCHORS = {"Sigmoid", "Tanh", "Erf", "Relu", "Softplus", "Gelu", "HardSigmoid"}
UNARY_MAP = {"Neg": "neg", "Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Reciprocal": "reciprocal", "Abs": "abs"}
BINARY_MAP = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Max": "max", "Min": "min", "Pow": "pow"}
ACT_MAP = {"Sigmoid": "sigmoid", "Tanh": "tanh", "Relu": "relu", "Softplus": "softplus"}
# ONNX ops the walk lowers (outside the multi-node regions) when they compute on activations
LIFTABLE_OPS = (set(UNARY_MAP) | set(BINARY_MAP) | set(ACT_MAP) | LAYOUT_OPS | {
    "Gather", "MatMul", "Gemm", "Clip", "Softmax", "LayerNormalization", "RMSNormalization",
    "SimplifiedLayerNormalization", "Attention", "RotaryEmbedding", "Slice", "Split", "SplitToSequence",
    "SequenceAt", "Dropout", "Contiguous", "CastLike", "Where", "ReduceMax", "IsNaN", "IsInf", "Equal",
    "Not", "Concat", "Shape", "Size", "GatherND"})


class Lifter(AttentionLifting, LayoutLifting, GenericLifting):
    def __init__(self, src: SourceGraph, name: str):
        self.src = src
        self.g = Graph(name, {"source": "onnx", "opset": src.opset})
        self.views: dict[str, Any] = {}
        self.node_names: set[str] = set()
        self.weights: dict[str, str] = {}
        self.act: set[str] = set()
        self.kv_index = 0
        self.cached: dict[str, str] = {}   # IR value of K or V -> the past_key_values input appended to it
        self.present: set[str] = set()     # ONNX tensors that are a KV cache with this step appended
        self._layer_of_value: dict[str, int | None] = {}
        self._skip: set[str] = set()  # bias additions folded into the matmul before them
        self.declared: dict[str, tuple] = {}  # initializer -> the fewer dims its IR weight has (sim/weights.py)
        self.head_slices: dict[str, tuple] = {}  # ONNX tensor -> (view, start, end) of each head it keeps

    # -- entry ------------------------------------------------------------------
    def run(self) -> Graph:
        src = self.src
        self._classify()
        self.ties = Ties(src, {weight_of(src, n.input[0])[0] for n in src.nodes if self._is_seed(n)})
        self.regions = self._find_regions()
        covered = {i: r for r in self.regions for i in r.nodes}
        ends = {src.producer[r.y]: r for r in self.regions}
        refuse_mla(src, self.act, {r.params["seed"] for r in self.regions if r.kind == "mla"})
        self._check_op_types(covered)
        for i, node in enumerate(src.nodes):
            if i in ends:
                self._emit_region(ends[i], node)
            elif i in covered or node.op_type in ("Shape", "Size") or \
                    (node.output and all(o in self.shape_only for o in node.output)):
                continue
            elif any(t in self.act for t in self._data_inputs(node)) or self._is_seed(node):
                self._lift(node)
        for o in src.graph_outputs:
            if o in self.present:          # present.* outputs: the cache state, held by the IR's KV values
                continue
            v = self.views.get(o)
            if not isinstance(v, View) or v.layout != "flat":
                raise InputFileError(f"graph output '{o}' is not computed from the token activations",
                                     where=src.where)
            self.g.outputs.append(v.value)
        self._drop_dead_layouts()
        # which past input each KV cache stands for: simulate --compare feeds the IR's cache to onnxruntime
        past = {n.inputs[f"{r}_cache"]: self.cached[n.inputs[r]] for n in self.g.nodes if n.op == "attention"
                for r in ("k", "v") if f"{r}_cache" in n.inputs and n.inputs[r] in self.cached}
        if past:
            self.g.meta["past_inputs"] = dict(sorted(past.items()))
        return self.g

    def _check_op_types(self, covered):
        """Name the first activation op no lowering exists for, before lifting anything:
        a model built on such an op (a convolution, a recurrence) fails on that op."""
        for i, node in enumerate(self.src.nodes):
            if i in covered or node.op_type in LIFTABLE_OPS or \
                    (node.output and all(o in self.shape_only for o in node.output)):
                continue
            if node.op_type == "Conv" and (node.input[0] in self.act or node.input[0] in self.src.graph_inputs):
                self._fail(node, conv_refusal(self.src, i))
            if any(t in self.act for t in self._data_inputs(node)) and (why := refusal(node)):
                self._fail(node, why)

    # -- tensor classes -------------------------------------------------------
    def _is_seed(self, node) -> bool:
        # a lookup in a 2-D weight: token, position or token-type embedding (its ids may be
        # inputs, positions computed in the graph, or a constant buffer such as type ids 0)
        return node.op_type == "Gather" and weight_of(self.src, node.input[0]) is not None \
            and len(self.src.shapes.get(node.input[0], ())) == 2 and self.src.attr(node, "axis", 0) == 0 \
            and relative_lookup(self.src, node) is None   # a relative position bias table: onnx_bias

    @staticmethod
    def _data_inputs(node):
        """Inputs whose values flow into the output (CastLike's second input gives only a type)."""
        return node.input[:1] if node.op_type in ("CastLike", "Expand", "Reshape") else node.input

    def _classify(self):
        for node in self.src.nodes:
            if self._is_seed(node) or is_patch_conv(self.src, node) \
                    or any(t in self.act for t in self._data_inputs(node)):
                if node.op_type in ("Shape", "Size"):
                    continue
                self.act.update(o for o in node.output if o)
        # still activations for mask and bias analysis (their subgraphs stop at them), just not lifted
        self.shape_only = self._shape_only()

    def _shape_only(self) -> set[str]:
        """Activation-derived tensors read only for their shape (BART's ``embeds[:, :, -1]`` feeding
        a Shape for its positions): not computed on the wafer, so not lifted."""
        src, outs = self.src, set(self.src.graph_outputs)
        only: set[str] = set()
        for node in reversed(src.nodes):
            if node.op_type in ("Shape", "Size") or not any(o in self.act for o in node.output):
                continue
            if self._is_seed(node):
                continue      # an embedding lookup stays (the parameters it reads are the model's)
            if all(o and o not in outs and all(u.op_type in ("Shape", "Size") or all(x in only for x in u.output)
                                                 for u in src.users(o)) and src.users(o) for o in node.output):
                only.update(node.output)
        return only

    def _find_regions(self) -> list[Region]:
        src, act = self.src, self.act
        regions: list[Region] = []
        claimed: set[int] = set()

        def take(r):
            if r is not None and not (r.nodes & claimed):
                regions.append(r)
                claimed.update(r.nodes)

        for i, n in enumerate(src.nodes):
            if n.op_type == "Conv" and i not in claimed:
                r = detect_patches(src, i)
                take(r if isinstance(r, Region) else None)
        for i, n in enumerate(src.nodes):
            if n.op_type == "TopK" and n.input[0] in act:
                take(detect_moe(src, i, act, claimed))
        for i, n in enumerate(src.nodes):
            if n.op_type == "ReduceMean" and i not in claimed:
                take(detect_norm(src, i, act))
        trig = trig_tensors(src, act)
        for r in detect_mla(src, act, trig, claimed):   # before rotary: its rope parts' rotaries are inside
            take(r)
        for i, n in enumerate(src.nodes):
            if i not in claimed and n.op_type == "Mul" and any(t in trig for t in n.input) \
                    and any(t in act for t in n.input):
                take(detect_rotary(src, i, act, trig, claimed))
        for i, n in enumerate(src.nodes):
            if i not in claimed and n.op_type in ACTIVATION_ANCHORS and n.input[0] in act:
                take(detect_activation(src, i, act, claimed))
        return regions

    # -- helpers ----------------------------------------------------------------
    def _name(self, node) -> str:
        base = self.src.scope(node) or node.name or node.op_type
        name, k = base, 1
        while name in self.node_names:
            k += 1
            name = f"{base}#{k}"
        self.node_names.add(name)
        return name

    def _weight(self, init: str) -> str:
        """The IR weight of an initializer: one per distinct weight (see onnx_ties)."""
        if init not in self.weights:
            same = self.ties.same(init, self.weights)
            if same is None:
                t = self.src.inits[init]
                self.g.add_value(init, self.declared.get(init, tuple(t.dims)),
                                 onnx_dtype(t.data_type, f"initializer '{init}'"), ValueKind.WEIGHT)
            self.weights[init] = init if same is None else self.weights[same]
        return self.weights[init]

    def _fail(self, node, why: str):
        raise UnsupportedOpError(node.op_type, node=node.name or self.src.scope(node), detail=why)

    def _flat(self, node, t: str) -> str:
        v = self.views.get(t)
        if not isinstance(v, View) or v.layout != "flat" or v.scale != 1.0:
            self._fail(node, f"input '{t}' is not a plain activation (layout {getattr(v, 'layout', type(v).__name__)})")
        return v.value

    def _emit(self, node, op, inputs, attrs=None):
        name = self._name(node)
        layer = self.src.layer_of(node)
        if layer is None and not self.src.has_scope(node):
            layer = self._input_layer(inputs)
        n = self.add_node(node, op, inputs, [self._value_name(name)], name=name, attrs=attrs or {}, layer=layer)
        self._layer_of_value[n.outputs[0]] = layer
        return n.outputs[0]

    def add_node(self, node, op, inputs, outputs, **kw):
        """``Graph.add_node`` for the lowering of ONNX ``node``: a shape the IR op cannot take (a 0
        or an overflowing dim that reached it) is a one-line error located at that node."""
        try:
            return self.g.add_node(op, inputs, outputs, **kw)
        except ShapeError as e:
            raise ShapeError(f"lowered as IR op {op}: {e}", where=f"{self.src.where}: node "
                             f"'{node.name or node.op_type}' ({node.op_type})") from None

    def _input_layer(self, inputs) -> int | None:
        """A node the exporter left without a module scope (an optimized export's ``node_Split_12``)
        belongs to the layer whose output it reads, so the planner keeps it with that layer."""
        layers = [self._layer_of_value.get(v) for v in inputs.values()]
        layers = [k for k in layers if k is not None]
        return max(layers) if layers else None

    def _value_name(self, node_name: str) -> str:
        """IR values are named after the (scope-derived, unique) node that makes them, so the
        same model gives the same IR whatever temporary names the exporter chose."""
        name = node_name
        while name in self.g.values:
            name += "'"
        return name

    def _ids_input(self, node, ids: str) -> str:
        """IR input for the indices of an embedding lookup."""
        src = self.src
        base, shifted = ids, False
        while src.prod(base) is not None and src.prod(base).op_type in LAYOUT_OPS | {"Add", "Sub"}:
            p = src.prod(base)
            shifted |= p.op_type in ("Add", "Sub")
            base = p.input[0]
        if base in src.graph_inputs:
            name = base
        else:
            p = src.prod(base)
            is_range = p is not None and p.op_type == "Range"
            folded = self._folded_range(ids)
            if folded is not None:   # a static export's positions, folded: offset from the traced past
                offset = folded - max((n for n in self._past_inputs().values() if n is not None), default=0)
            else:   # a Range shifted by Add/Sub (BART's positions + 2) is positions only if the shift is 0
                offset = self._position_offset(ids) if shifted or not is_range else None
            ranged = is_range and (not shifted or offset == 0) or folded is not None and offset == 0
            name = "position_ids" if ranged else f"{node.input[0]}.ids"
            if offset is not None and not ranged:   # positions + c (OPT, RoBERTa, BART): the host feeds them
                self.g.meta.setdefault("position_offsets", {})[name] = offset
        if name not in self.g.values:
            self.g.add_value(name, (BATCH, SEQ), DType.I64, ValueKind.INPUT)
        return name

    def _position_offset(self, ids: str) -> int | None:
        """c when the ids computed in the graph are each token's position + c for an unpadded batch
        (probed on onnxruntime at two lengths), else None (token types, anything else)."""
        from .onnx_masks import Subgraph
        past = self._past_inputs()
        try:   # a dynamic past is probed empty; a static one has its traced length P, so positions start at P
            sub = Subgraph(self.src, ids, self.act, what="embedding ids")
            probes = [np.asarray(sub.run(n, frozenset(past))) for n in (5, 7)]
        except InputFileError:
            return None
        start = max((n for n in past.values() if n is not None), default=0)
        offsets = set()
        for v in probes:
            if not v.size or not np.issubdtype(v.dtype, np.integer):
                return None
            rows = v.reshape(-1, v.shape[-1])
            c = int(rows[0, 0])
            if not np.array_equal(rows, np.broadcast_to(c + np.arange(rows.shape[1]), rows.shape)):
                return None
            offsets.add(c - start)
        return offsets.pop() if len(offsets) == 1 else None

    def _past_inputs(self) -> dict:
        """Past caches (4-D graph inputs appended to by a Concat) -> their static length (axis 2) or None."""
        out = {}
        for t in self.src.graph_inputs:
            shape = self.src.static_shape(t)
            if shape and len(shape) == 4 and any(u.op_type == "Concat" for u in self.src.users(t)):
                out[t] = shape[2] if isinstance(shape[2], int) else None
        return out

    def _folded_range(self, ids: str) -> int | None:
        """P when ``ids`` is a constant whose every row is the range P, P + 1, ... (a static export's
        folded positions: P is the traced cache length, plus the table's offset, BART's and OPT's 2)."""
        v = self.src.const(ids)
        if v is None or v.size < 2 or v.ndim not in (1, 2) or not np.issubdtype(v.dtype, np.integer):
            return None
        rows = v.reshape(-1, v.shape[-1])
        if rows.shape[1] < 2 or not np.array_equal(rows, np.broadcast_to(rows[0, 0] + np.arange(rows.shape[1]),
                                                                          rows.shape)):
            return None
        return int(rows[0, 0])

    # -- regions ----------------------------------------------------------------
    def _emit_region(self, r: Region, node):
        p = r.params
        if r.kind == "moe":
            from .onnx_moe import emit_moe
            self.views[r.y] = View(emit_moe(self, r, node))
            return
        if r.kind == "mla":
            return emit_mla(self, r, node)
        if r.kind == "patches":
            self.views[r.y] = View(emit_patches(self, r, node))
            return
        xv = self.views.get(r.x)
        if not isinstance(xv, View):
            self._fail(node, f"{r.kind} input '{r.x}' is not an activation")
        if r.kind == "norm":
            ins = {"x": xv.value}
            if p["scale"]:
                ins["scale"] = self._weight(p["scale"])
            if p["bias"]:
                ins["bias"] = self._weight(p["bias"])
            attrs = {"kind": p["kind"], "eps": p["eps"]}
            if xv.layout != "flat":
                attrs["group"] = xv.head_dim
            if p["scale_offset"]:
                attrs["scale_offset"] = p["scale_offset"]
            self.views[r.y] = dataclasses.replace(xv, value=self._emit(node, "norm", ins, attrs))
        elif r.kind == "rotary":
            if xv.layout not in ("bshd", "bhsd"):
                self._fail(node, f"rotary embedding applied to a tensor with layout {xv.layout}")
            rotary_dim = p["rotary_dim"]
            part = self.head_slices.get(r.x)
            if part is not None and part[1] == 0:
                # a partial rotary: the first `end` elements of each head rotate, the rest pass
                # (rejoined by a Concat, see _rotary_rejoin); the op rotates the whole heads' prefix
                xv, rotary_dim = part[0], part[2]
            width = self.g.values[xv.value].shape[-1]
            attrs = {"num_heads": width // xv.head_dim, "head_dim": xv.head_dim}
            if rotary_dim and rotary_dim != xv.head_dim:
                attrs["rotary_dim"] = rotary_dim
            if p["interleaved"]:
                attrs["interleaved"] = True
            if p["theta"]:
                attrs["theta"] = p["theta"]
            if p.get("scaling"):
                attrs["scaling"] = p["scaling"]
            y = dataclasses.replace(xv, value=self._emit(node, "rotary", {"x": xv.value}, attrs))
            self.views[r.y] = ("rotated", y, part) if part is not None and part[1] == 0 else y
        elif r.kind == "activation":
            if xv.layout != "flat":
                self._fail(node, "activation on a split-heads tensor")
            self.views[r.y] = View(self._emit(node, "activation", {"x": xv.value}, {"fn": p["fn"]}))

    # -- one node ---------------------------------------------------------------
    def _lift(self, node):
        op = node.op_type
        src = self.src
        ins = list(node.input)
        if self._is_seed(node):
            w = weight_of(src, ins[0])
            ids = self._ids_input(node, ins[1])
            self.views[node.output[0]] = View(self._emit(node, "embedding", {"ids": ids, "table": self._weight(w[0])}))
            return
        vs = [self.views.get(t) for t in ins]
        if op in ("MatMul", "Gemm"):
            return self._matmul(node, vs)
        if any(isinstance(v, Scores) for v in vs):
            return self._scores_op(node, vs)
        if op in LAYOUT_OPS or op in ("Slice", "Split", "Dropout", "Contiguous", "CastLike",
                                      "SplitToSequence", "SequenceAt"):
            return self._layout(node, vs)
        if op in BINARY_MAP:
            return self._or_generic(node, lambda: self._binary(node, vs))
        if (op in UNARY_MAP or op in ACT_MAP or op == "Clip") and not self._plain(ins[0]):
            return self._generic(node)
        if op in UNARY_MAP or op in ACT_MAP or op == "Clip":
            x = self._flat(node, ins[0])
            if op in ACT_MAP:
                out = self._emit(node, "activation", {"x": x}, {"fn": ACT_MAP[op]})
            elif op == "Clip":
                lo = src.scalar(ins[1]) if len(ins) > 1 and ins[1] else src.attr(node, "min")
                hi = src.scalar(ins[2]) if len(ins) > 2 and ins[2] else src.attr(node, "max")
                out = self._emit(node, "elementwise", {"a": x}, {"fn": "clamp", "min": lo, "max": hi})
            else:
                out = self._emit(node, "elementwise", {"a": x}, {"fn": UNARY_MAP[op]})
            self.views[node.output[0]] = View(out)
            return
        if op == "Softmax":
            x = self._flat(node, ins[0])
            self.views[node.output[0]] = View(self._emit(node, "softmax", {"x": x}))
            return
        if op == "Gather" and isinstance(vs[0], View):
            return self._gather_tokens(node, vs[0])
        if op == "GatherND" and isinstance(vs[0], View):
            return self._gather_nd_heads(node, vs[0])
        if op in ("LayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization"):
            return self._norm_op(node)
        if op == "Attention":
            return self._attention_op(node)
        if op == "RotaryEmbedding":
            return self._rotary_op(node)
        if op == "Concat" and any(isinstance(v, tuple) and v[0] == "empty" for v in vs):
            kept = [v for v in vs if not (isinstance(v, tuple) and v[0] == "empty")]
            if len(kept) == 1:
                self.views[node.output[0]] = kept[0]
                return
            vs = kept
        if op == "Concat" and (self._cache_append(node, vs) or self._rotary_rejoin(node, vs)):
            return
        if op in ("IsNaN", "IsInf", "Equal", "Not"):
            # only used to guard softmax outputs of fully masked rows
            self.views[node.output[0]] = ("guard", ins[0])
            return
        self._generic(node)

    def _plain(self, t: str) -> bool:
        v = self.views.get(t)
        return isinstance(v, View) and v.layout == "flat" and v.scale == 1.0

    def _or_generic(self, node, specific):
        """The specific lowering, else (when it refuses the node) the generic one: an element-wise
        op the IR's elementwise cannot say (a constant on the left of a Div, a tensor operand)."""
        before = len(self.g.nodes)
        try:
            return specific()
        except UnsupportedOpError as first:
            if len(self.g.nodes) != before or any(o in self.views for o in node.output) or \
                    not all(self._plain(t) or t not in self.act for t in node.input if t):
                raise
            try:
                return self._generic(node)
            except UnsupportedOpError:
                raise first from None

    def _cache_append(self, node, vs) -> bool:
        """``Concat(past, new)`` along the sequence axis of split-heads K or V, where ``past`` is a
        graph input (past_key_values.* of optimum's with-past decoders, a DynamicCache export): the
        IR's attention keeps that state as its KV cache, so the view passes through unchanged."""
        acts = [v for v in vs if isinstance(v, View)]
        if len(acts) != 1 or acts[0].layout not in ("bhsd", "bshd", "gqa"):
            return False
        seq_axis = 2 if acts[0].layout in ("bhsd", "gqa") else 1
        axis = self.src.attr(node, "axis", 0)
        rank = len(self.src.shapes.get(node.output[0], ()) or ()) or 4
        if axis % rank != seq_axis:
            return False
        past = [t for t, v in zip(node.input, vs) if not isinstance(v, View)]
        roots = [self._input_root(t) for t in past]
        if not past or any(r is None for r in roots):
            return False
        self.views[node.output[0]] = acts[0]
        self.cached[acts[0].value] = roots[0]
        self.present.add(node.output[0])
        return True

    def _rotary_rejoin(self, node, vs) -> bool:
        """``Concat(rotary(x[..., :r]), x[..., r:])`` along the head dim: the partial rotary the
        region emitted on all of x (its rotary_dim r).  The pass-through slice becomes dead."""
        if len(vs) != 2 or not (isinstance(vs[0], tuple) and vs[0][0] == "rotated"):
            return False
        _, y, (base, _, r) = vs[0]
        rest = self.head_slices.get(node.input[1])
        if rest is None or rest[0] != base or rest[1:] != (r, base.head_dim):
            self._fail(node, "a partial rotary rejoined with something other than the rest of its heads")
        if self._onnx_axis(node, self.src.attr(node, "axis", 0)) != -1:
            self._fail(node, "a partial rotary rejoined along an axis other than the head dim")
        self.views[node.output[0]] = y
        return True

    def _drop_dead_layouts(self) -> None:
        """Remove layout ops nothing reads: the slices a partial rotary's op made unnecessary (it
        rotates the heads' prefix in place).  Layout ops hold no weights, so no count changes."""
        while True:
            read = {v for n in self.g.nodes for v in n.inputs.values()} | set(self.g.outputs)
            dead = [n for n in self.g.nodes if n.op == "layout" and not any(o in read for o in n.outputs)]
            if not dead:
                return
            for n in dead:
                self.g.nodes.remove(n)
                for o in n.outputs:
                    del self.g.values[o]

    def _input_root(self, t: str) -> str | None:
        """The graph input ``t`` is, through casts and identities; None if it is computed."""
        while t not in self.src.graph_inputs:
            p = self.src.prod(t)
            # Slice: a sliding-window cache keeps its last positions before the append
            if p is None or not (p.op_type in ("Cast", "Identity", "CastLike", "Slice")
                                 or (p.op_type == "Concat" and len([i for i in p.input if i]) == 1)):
                return None
            t = p.input[0]
        return t

    def _matmul(self, node, vs):
        src = self.src
        a, b = node.input[0], node.input[1]
        wb = weight_of(src, b)
        if wb is not None and isinstance(vs[0], View):
            x = self._flat(node, a)
            wb = self.ties.find(*wb, self.weights)
            transposed = wb[1]
            if node.op_type == "Gemm":
                if src.attr(node, "transA", 0):
                    self._fail(node, "Gemm with transA on the activation")
                transposed ^= bool(src.attr(node, "transB", 0))
            ins = {"x": x, "w": self._weight(wb[0])}
            bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
            out_t = node.output[0]
            if bias is None:
                users = src.users(out_t)
                if len(users) == 1 and users[0].op_type == "Add":
                    other = users[0].input[1] if users[0].input[0] == out_t else users[0].input[0]
                    bw = weight_of(src, other)
                    if bw is not None and len(src.shapes.get(bw[0], ())) == 1:
                        bias = other
                        out_t = users[0].output[0]
            if bias is not None:
                bw = weight_of(src, bias)
                if bw is None:
                    self._fail(node, "bias is not an initializer")
                ins["b"] = self._weight(bw[0])
            attrs = {"transpose_w": True} if transposed else {}
            out = self._emit(node, "matmul", ins, attrs)
            self.views[node.output[0]] = View(out)
            self.views[out_t] = View(out)
            if out_t != node.output[0]:
                self._skip.add(out_t)
            return
        if isinstance(vs[0], View) and isinstance(vs[1], View):
            q, k = vs
            if q.layout in ("bhsd", "bshd") and k.layout == "bhds" or q.layout == "Bsd" and k.layout == "Bds":
                self.views[node.output[0]] = Scores(q, k, q.scale * k.scale, None)
                return
            self._fail(node, f"activation x activation product with layouts {q.layout} x {k.layout}")
        if isinstance(vs[0], Scores) and vs[0].probs and isinstance(vs[1], View):
            return self._emit_attention(node, vs[0], vs[1])
        self._fail(node, "matrix product whose second operand is neither a weight nor attention keys")

    def _norm_op(self, node):
        src = self.src
        x = self.views.get(node.input[0])
        if not isinstance(x, View):
            self._fail(node, "norm input is not an activation")
        axis = src.attr(node, "axis", -1)
        rank = len(src.shapes.get(node.input[0], ())) or None
        if rank and axis not in (-1, rank - 1):
            self._fail(node, f"normalisation over axis {axis}, expected the last axis")
        kind = "layer" if node.op_type == "LayerNormalization" else "rms"
        ins = {"x": x.value}
        attrs = {"kind": kind, "eps": float(src.attr(node, "epsilon", 1e-5))}
        for role, t in (("scale", node.input[1] if len(node.input) > 1 else ""),
                        ("bias", node.input[2] if len(node.input) > 2 else "")):
            if not t:
                continue
            w = weight_of(src, t)
            if w is not None:
                ins[role] = self._weight(w[0])
                continue
            c = self._fill_value(t)
            if c is not None and c == (1.0 if role == "scale" else 0.0):
                continue      # a norm without that affine part (OLMo): the exporter passes ones / zeros
            offset = self._offset_weight(t) if role == "scale" else None
            if offset is None:
                self._fail(node, f"norm {role} is neither an initializer, (1 +) an initializer nor a constant "
                                 f"{'one' if role == 'scale' else 'zero'}")
            ins[role], attrs["scale_offset"] = offset
        if x.layout != "flat":
            attrs["group"] = x.head_dim
        self.views[node.output[0]] = dataclasses.replace(x, value=self._emit(node, "norm", ins, attrs))

    def _fill_value(self, t: str) -> float | None:
        """The one value of a constant tensor, or of a scalar broadcast by Expand / ConstantOfShape
        (to activation size, which is not folded: see SourceGraph._const), else None."""
        c = self.src.const(t)
        if c is not None:
            return float(c.reshape(-1)[0]) if c.size and np.all(c == c.reshape(-1)[0]) else None
        p = self.src.prod(t)
        if p is not None and p.op_type in ("Expand", "Cast", "Identity", "CastLike"):
            return self._fill_value(p.input[0])
        if p is not None and p.op_type == "ConstantOfShape":
            v = self.src.attr(p, "value")
            from onnx import numpy_helper
            return float(numpy_helper.to_array(v).reshape(-1)[0]) if v is not None else 0.0
        return None

    def _offset_weight(self, t: str):
        """(IR weight, c) when ``t`` is ``w + c`` of a weight and a scalar (Nemotron's LayerNorm1P, a
        ``(1 + w)`` scale), else None."""
        p = self.src.prod(t)
        if p is None or p.op_type != "Add":
            return None
        for a, b in (p.input[:2], p.input[1::-1]):
            w, c = weight_of(self.src, a), self.src.scalar(b)
            if w is not None and c is not None:
                return self._weight(w[0]), float(c)
        return None

    def _binary(self, node, vs):
        src = self.src
        if node.output[0] in self._skip:
            return
        a, b = node.input[0], node.input[1]
        va, vb = vs[0], vs[1]
        op = BINARY_MAP[node.op_type]
        if isinstance(va, tuple) or isinstance(vb, tuple):
            self._fail(node, "arithmetic on a softmax guard")
        # scaling of split heads (scaled dot-product attention decompositions)
        for v, other in ((va, b), (vb, a)):
            if isinstance(v, View) and v.layout != "flat" and node.op_type in ("Mul", "Div") \
                    and src.scalar(other) is not None and other not in self.act:
                c = src.scalar(other)
                self.views[node.output[0]] = dataclasses.replace(
                    v, scale=v.scale * (c if node.op_type == "Mul" or v is vb else 1 / c))
                return
        ins: dict[str, str] = {}
        attrs: dict[str, Any] = {"fn": op}
        if isinstance(va, View) and isinstance(vb, View):
            ins = {"a": self._flat(node, a), "b": self._flat(node, b)}
        else:
            act_t, const_t = (a, b) if isinstance(va, View) else (b, a)
            if isinstance(va, View) is False and node.op_type in ("Sub", "Div", "Pow"):
                self._fail(node, "constant on the left of a non-commutative op")
            c = src.scalar(const_t)
            if c is not None:
                ins = {"a": self._flat(node, act_t)}
                attrs["scalar"] = c
            else:
                w = weight_of(src, const_t)
                if w is None:
                    self._fail(node, f"operand '{const_t}' is neither an activation, a weight nor a scalar")
                x = self._flat(node, act_t)
                rows = self._folded_positions(w[0], x) if node.op_type == "Add" else None
                ins = {"a": x, "b": self._position_lookup(node, w[0], rows) if rows else self._weight(w[0])}
        self.views[node.output[0]] = View(self._emit(node, "elementwise", ins, attrs))


    def _folded_positions(self, init: str, x: str) -> int | None:
        """Rows of a position table an exporter folded to the traced length: a [1, S, D] (or [S, D])
        constant added to [batch, seq, D] activations, as a static-shape export of GPT-2 writes
        ``wpe[0:S]``.  None when ``init`` is anything else (a bias broadcasts along seq)."""
        dims = [int(d) for d in self.src.inits[init].dims]
        width = self.g.values[x].shape[-1]
        if len(dims) < 2 or dims[-1] != width or dims[-2] <= 1 or any(d != 1 for d in dims[:-2]):
            return None
        return dims[-2] if tuple(self.g.values[x].shape[:-1]) == (BATCH, SEQ) else None

    def _position_lookup(self, node, init: str, rows: int) -> str:
        """The folded table as what it is: a lookup by position (its params: the rows it kept)."""
        import warnings
        name = init                    # the initializer itself, without its leading unit dims
        if name not in self.g.values:
            t = self.src.inits[init]
            self.g.add_value(name, (rows, int(t.dims[-1])), onnx_dtype(t.data_type, f"initializer '{init}'"),
                             ValueKind.WEIGHT)
            warnings.warn(f"{self.src.where}: '{init}' is a position table the exporter folded to the traced "
                          f"length ({rows} rows): its parameters count those rows, not the model's full table",
                          stacklevel=2)
        if "position_ids" not in self.g.values:
            self.g.add_value("position_ids", (BATCH, SEQ), DType.I64, ValueKind.INPUT)
        return self._emit(node, "embedding", {"ids": "position_ids", "table": name})


def lift(src: SourceGraph, name: str) -> Graph:
    """Lift an indexed ONNX graph; the result is verified by the caller."""
    return Lifter(src, name).run()
