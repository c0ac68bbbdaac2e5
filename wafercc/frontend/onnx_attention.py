"""Attention lifting: scores between q and k views become one IR ``attention`` op."""
from __future__ import annotations

import dataclasses

import numpy as np
import math

from ..ir import BATCH, CONTEXT, SEQ, DType, ValueKind
from .onnx_bias import score_bias
from .onnx_masks import mask_facts
from .onnx_regions import weight_of
from .onnx_views import Scores, View


class AttentionLifting:
    """Methods of the lifter for attention scores, the ONNX Attention and RotaryEmbedding ops."""

    def _scores_op(self, node, vs):
        op = node.op_type
        s = next(v for v in vs if isinstance(v, Scores))
        ins = list(node.input)
        other = [t for t, v in zip(ins, vs) if not isinstance(v, Scores) and t]
        out = node.output[0]
        aux = all(t not in self.act or isinstance(self.views.get(t), tuple) for t in other)
        if op == "Where" and isinstance(self.views.get(ins[0]), tuple):
            self.views[out] = s  # NaN guard of fully masked rows
        elif op in ("Add", "Where") and aux:
            mask = next((t for t in other if t not in self.act and self._mask_like(t)), None)
            s = self._with_bias(node, s, other) if op == "Add" else s
            self.views[out] = dataclasses.replace(s, mask=mask or s.mask)
        elif op == "Reshape" and len(self.src.shapes.get(out) or (0, 0, 0)) in (3, 4):
            self.views[out] = s   # batch and heads merged or split (bmm-style decompositions)
        elif op == "Sub" and len(other) == 1 and isinstance(self.views.get(other[0]), tuple):
            self.views[out] = s  # subtracting the row maximum before softmax
        elif op in ("Mul", "Div") and len(other) == 1 and self.src.scalar(other[0]) is not None:
            c = self.src.scalar(other[0])
            c = c if op == "Mul" else 1 / c
            if s.bias is not None:   # the bias is scaled too
                if s.bias["kind"] != "alibi" or s.pre_cap_scale is not None or s.softcap:
                    self._fail(node, "scaling attention scores after a position bias was added")
                s = dataclasses.replace(s, bias={"kind": "alibi", "slopes": [x * c for x in s.bias["slopes"]]})
            if s.pre_cap_scale is not None:  # cap * tanh(scores * scale / cap): logit softcapping
                self.views[out] = dataclasses.replace(s, softcap=c, scale=s.pre_cap_scale * c, pre_cap_scale=None)
            else:
                self.views[out] = dataclasses.replace(s, scale=s.scale * c)
        elif op == "Tanh" and not s.probs and not s.softcap and s.pre_cap_scale is None:
            self.views[out] = dataclasses.replace(s, pre_cap_scale=s.scale, scale=1.0)
        elif op == "Softmax":
            self.views[out] = dataclasses.replace(s, probs=True)
        elif op in ("Cast", "Identity", "Dropout"):
            self.views[out] = s
        elif op == "Max" and not s.probs and len(other) == 1 and self._floor_constant(other[0]):
            self.views[out] = s   # max(scores, finfo.min): keeps fully masked rows finite (XGLM, OPT)
        elif op == "Slice" and s.probs and s.sinks:
            self.views[out] = s  # drops the sink column
        elif op == "Concat" and not s.probs and len(other) == 1 and (sinks := self._sink_weight(other[0], s)):
            self.views[out] = dataclasses.replace(s, sinks=sinks)
        elif op in ("ReduceMax", "IsNaN", "IsInf"):
            self.views[out] = ("guard", ins[0])
        else:
            self._fail(node, "unexpected operation between the attention scores and their softmax")

    def _with_bias(self, node, s: Scores, other) -> Scores:
        """A position bias among the AUX tensors added to the scores (onnx_bias), recorded once."""
        if s.probs:
            return s
        heads = self.g.values[s.q.value].shape[-1] // s.q.head_dim
        for t in other:
            if t in self.act or not self.src.shapes.get(t) or len(self.src.shapes[t]) < 2:
                continue
            found = score_bias(self, node, t, heads)
            if found is None:
                continue
            if s.bias is not None:
                self._fail(node, "a second position bias added to the same attention scores")
            s = dataclasses.replace(s, bias=found[0], bias_table=found[1])
        return s

    def _floor_constant(self, t: str) -> bool:
        """A scalar at most -1e30: clamping scores from below at it changes no softmax."""
        c = self.src.scalar(t)
        return c is not None and c <= -1e30

    def _mask_like(self, t: str) -> bool:
        """A mask: computed from inputs, or a constant [.., q, k] one (a static-shape export folds
        its causal mask); not a scalar or a per-row bias."""
        shape = self.src.shapes.get(t)
        if not shape or len(shape) < 2:
            return False
        c = self.src.const(t)
        return c is None or (c.ndim >= 2 and c.shape[-1] > 1 and c.shape[-2] > 1)

    def _sink_weight(self, t: str, s: Scores) -> str | None:
        """Per-head attention sinks: a [heads] weight broadcast to a score column, or that broadcast
        folded to a constant by a static export ([batch, heads, S, 1]): declared as its [heads]."""
        for _ in range(6):
            w = weight_of(self.src, t)
            if w is not None:
                dims = tuple(int(d) for d in self.src.inits[w[0]].dims)
                if sum(d != 1 for d in dims) == 1:
                    return w[0]
                return w[0] if self._folded_sinks(w[0], dims, s) else None
            p = self.src.prod(t)
            if p is None or p.op_type not in ("Expand", "Reshape", "Unsqueeze", "Cast"):
                return None
            t = p.input[0]
        return None

    def _folded_sinks(self, init: str, dims: tuple, s: Scores) -> bool:
        """A [.., heads, .., 1] constant whose values repeat along every axis but the heads': one
        sink per head, expanded by the exporter.  Declared as [heads] (the loader takes one copy,
        sim/weights.py); without its data the repetition cannot be checked, so it is refused."""
        heads = self.g.values[s.q.value].shape[-1] // s.q.head_dim
        if dims[-1] != 1 or dims.count(heads) != 1 or not self.src.has_data(init):
            return False
        a = np.moveaxis(np.asarray(self.src.array(init)), dims.index(heads), -1).reshape(-1, heads)
        if not np.array_equal(a, np.broadcast_to(a[:1], a.shape)):
            return False
        self.declared[init] = (heads,)
        return True

    def _emit_attention(self, node, s: Scores, v: View):
        q, k = s.q, s.k
        dh = q.head_dim
        mask = s.mask
        facts = mask_facts(self.src, mask, self.act, frozenset(self.cached.values())) if mask else None
        causal = facts.causal if facts else False
        # a KV-cache input (past_key_values.*) makes it a decoder's attention whatever its mask says
        causal = causal or k.value in self.cached
        attrs = {"num_heads": self.g.values[q.value].shape[-1] // dh,
                 "num_kv_heads": self.g.values[k.value].shape[-1] // dh,
                 "head_dim": dh, "causal": causal}
        if facts and facts.sliding_window:
            attrs["sliding_window"] = facts.sliding_window
        if s.pre_cap_scale is not None:
            self._fail(node, "tanh of attention scores without the matching softcap multiplication")
        if not math.isclose(s.scale, 1 / math.sqrt(dh), rel_tol=1e-5):
            attrs["scale"] = float(s.scale)
        if s.softcap:
            attrs["softcap"] = float(s.softcap)
        if s.bias is not None:
            attrs["position_bias"] = s.bias
        self._emit_attention_node(node, q.value, k.value, v.value, attrs,
                                  padding=bool(facts and facts.padding and not causal), sinks=s.sinks,
                                  bias_table=s.bias_table)
        if v.layout == "Bsd":    # [batch * heads, seq, head_dim] probabilities times V
            self.views[node.output[0]] = dataclasses.replace(self.views[node.output[0]], layout="Bsd")

    def _emit_attention_node(self, node, q, k, v, attrs, padding=False, sinks=None, bias_table=None):
        ins = {"q": q, "k": k, "v": v}
        layer = self.src.layer_of(node)
        if attrs["causal"]:
            # decoders keep K and V per token: the IR makes that state explicit
            dt = self.g.values[k].dtype
            tag = layer if layer is not None else self.kv_index
            self.kv_index += 1
            for r in ("k_cache", "v_cache"):
                name = f"layers.{tag}.{r}"
                while name in self.g.values:
                    name += "_"
                self.g.add_value(name, (BATCH, attrs["num_kv_heads"], CONTEXT, attrs["head_dim"]), dt,
                                 ValueKind.KV_CACHE)
                ins[r] = name
        if sinks:
            ins["sinks"] = self._weight(sinks)
        if bias_table:
            ins["bias_table"] = self._weight(bias_table)
        if padding:
            m = next((t for t in self.src.graph_inputs if "mask" in t.lower()), None)
            if m is not None:
                if m not in self.g.values:
                    self.g.add_value(m, (BATCH, SEQ), DType.I64, ValueKind.INPUT)
                ins["mask"] = m
        out = self._emit(node, "attention", ins, attrs)
        self.views[node.output[0]] = View(out, "bhsd", attrs["head_dim"])

    def _attention_op(self, node):
        """The ONNX Attention op (opset 23+)."""
        src = self.src
        ins = list(node.input) + [""] * 6
        if any(ins[4:6]) or len(node.output) > 1 and any(node.output[1:]):
            self._fail(node, "Attention with past key/value inputs or outputs (export without cache)")
        qv, kv, vv = (self.views.get(t) for t in ins[:3])
        if not all(isinstance(x, View) for x in (qv, kv, vv)):
            self._fail(node, "Attention inputs are not activations")
        hq = src.attr(node, "q_num_heads")
        if qv.layout == "flat":
            dh = self.g.values[qv.value].shape[-1] // hq
        else:
            dh = qv.head_dim
        mask = ins[3] or None
        facts = mask_facts(src, mask, self.act, frozenset(self.cached.values())) if mask else None
        causal = bool(src.attr(node, "is_causal", 0)) or bool(facts and facts.causal)
        attrs = {"num_heads": self.g.values[qv.value].shape[-1] // dh,
                 "num_kv_heads": self.g.values[kv.value].shape[-1] // dh, "head_dim": dh, "causal": causal}
        if facts and facts.sliding_window:
            attrs["sliding_window"] = facts.sliding_window
        scale = src.attr(node, "scale")
        scale = (scale if scale is not None else 1 / math.sqrt(dh)) * qv.scale * kv.scale
        if not math.isclose(scale, 1 / math.sqrt(dh), rel_tol=1e-5):
            attrs["scale"] = float(scale)
        if src.attr(node, "softcap", 0.0):
            attrs["softcap"] = float(src.attr(node, "softcap"))
        bias = score_bias(self, node, mask, attrs["num_heads"]) \
            if mask and mask not in self.act and src.elem.get(mask) != 9 else None   # 9: a bool mask
        if bias is not None:
            attrs["position_bias"] = bias[0]
        self._emit_attention_node(node, qv.value, kv.value, vv.value, attrs,
                                  padding=bool(facts and facts.padding and not causal),
                                  bias_table=bias[1] if bias else None)
        if qv.layout == "flat":
            self.views[node.output[0]] = View(self.views[node.output[0]].value)

    # -- fused QKV projections split per head ([b, s, heads, 3, head_dim], BLOOM) ----------------
    def _fused_qkv_view(self, node, x: View, shape, target):
        """A flat [b, s, F] projection reshaped to [b, s, A, B, head_dim]: one of A, B is the
        heads, the other the q/k/v parts, picked later by a Gather (``_fused_qkv_pick``)."""
        dims = list(shape[-3:]) if shape and len(shape) == 5 else [None] * 3
        if target is not None and target.size == 5:
            dims = [d if isinstance(d, int) and d > 0 else (int(t) if t > 0 else None)
                    for d, t in zip(dims, target.reshape(-1)[2:])]
        if not all(isinstance(d, int) and d > 0 for d in dims) \
                or dims[0] * dims[1] * dims[2] != self.g.values[x.value].shape[-1]:
            self._fail(node, "reshape of a flat tensor to rank 5 whose last three dims are not known")
        self.__dict__.setdefault("_fused", {})[node.output[0]] = tuple(dims)
        self.views[node.output[0]] = View(x.value, "fused", dims[2], x.scale)

    def _fused_qkv_pick(self, node, x: View):
        """Gather of one part (constant index) along axis 2 or 3 of a fused [b, s, A, B, head_dim]
        view: IR layout ops reshape, slice (the part) and reshape back to [b, s, heads * head_dim]."""
        src = self.src
        dims = self.__dict__.get("_fused", {}).get(node.input[0])
        idx = src.const(node.input[1])
        axis = src.attr(node, "axis", 0) % 5
        if dims is None or idx is None or idx.size != 1 or axis not in (2, 3):
            self._fail(node, "picking from a fused [b, s, heads, parts, head_dim] projection other than one "
                             "constant index along the heads or parts axis")
        lead = list(self.g.values[x.value].shape[:-1])
        key = ("fused", x.value)
        if key not in self.__dict__.setdefault("_fused", {}):
            self._fused[key] = self._emit(node, "layout", {"x": x.value}, {"kind": "reshape", "shape": lead + list(dims)})
        ax = axis - 5                       # -3 or -2 in the IR's [.., A, B, head_dim]
        c = int(idx.reshape(-1)[0]) % dims[axis - 2]
        kept = [d for k, d in enumerate(dims) if k != axis - 2]
        part = self._emit(node, "layout", {"x": self._fused[key]},
                          {"kind": "slice", "shape": lead + kept, "axis": ax, "start": c, "end": c + 1})
        flat = self._emit(node, "layout", {"x": part}, {"kind": "reshape", "shape": lead + [kept[0] * kept[1]]})
        self.views[node.output[0]] = View(flat, "bshd", dims[2], x.scale)

    def _rotary_op(self, node):
        x = self.views.get(node.input[0])
        if not isinstance(x, View):
            self._fail(node, "RotaryEmbedding input is not an activation")
        nh = self.src.attr(node, "num_heads", 0)
        dh = x.head_dim or (self.g.values[x.value].shape[-1] // nh if nh else 0)
        if not dh:
            self._fail(node, "cannot tell the head size of a 3-D RotaryEmbedding input without num_heads")
        attrs = {"num_heads": self.g.values[x.value].shape[-1] // dh, "head_dim": dh}
        rd = self.src.attr(node, "rotary_embedding_dim", 0)
        if rd and rd != dh:
            attrs["rotary_dim"] = rd
        if self.src.attr(node, "interleaved", 0):
            attrs["interleaved"] = True
        self.views[node.output[0]] = dataclasses.replace(x, value=self._emit(node, "rotary", {"x": x.value}, attrs))
