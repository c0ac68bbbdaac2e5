"""The op set: operands, attributes, shape inference and cost of every op.

Each op is an :class:`OpSpec` in :data:`OPS`.  Costs are functions of the
operand shapes evaluated under a binding of the symbolic dims (``batch``,
``seq``, ``context``); see docs/ir.md for the definitions.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

from ..errors import IRError
from .dtypes import DType
from .values import Dim, Shape, Value, ValueKind, numel, resolve

ACT = frozenset({ValueKind.ACTIVATION, ValueKind.INPUT})
WEIGHT = frozenset({ValueKind.WEIGHT})
KV = frozenset({ValueKind.KV_CACHE})
ANY_DATA = frozenset({ValueKind.ACTIVATION, ValueKind.INPUT, ValueKind.WEIGHT})


class ShapeError(IRError):
    """Raised by shape inference; the verifier turns it into a located message.  An ``IRError``
    (so a ``WaferccError``): a frontend that lets one escape still gives the user one line."""


@dataclasses.dataclass(frozen=True)
class Operand:
    role: str
    kinds: frozenset
    optional: bool = False
    # False for a weight torch holds as a registered buffer (state, not a trainable parameter): it
    # occupies memory like any weight but the model's parameter count leaves it out
    parameter: bool = True


@dataclasses.dataclass(frozen=True)
class Attr:
    name: str
    types: tuple
    required: bool = True
    default: Any = None
    choices: tuple | None = None
    positive: bool = False


@dataclasses.dataclass(frozen=True)
class OpCost:
    """Cost of one op under a binding of the symbolic dims (see docs/ir.md)."""

    flops: int
    bytes_read: int
    bytes_written: int
    weight_bytes: int
    kv_bytes_per_token: int


@dataclasses.dataclass(frozen=True)
class CostContext:
    """Dims to evaluate at and dtypes that override the stored ones."""

    bindings: Mapping[str, int]
    weight_dtype: DType | None = None
    act_dtype: DType | None = None
    kv_dtype: DType | None = None


@dataclasses.dataclass(frozen=True)
class OpSpec:
    name: str
    doc: str
    operands: tuple[Operand, ...]
    attrs: tuple[Attr, ...]
    infer: Callable[[Mapping[str, Value], Mapping[str, Any]], list[tuple[Shape, DType]]]
    flops: Callable[[Mapping[str, Value], list[Value], Mapping[str, Any], Mapping[str, int]], int]
    check: Callable[[Mapping[str, Any]], list[str]] | None = None

    def operand(self, role: str) -> Operand | None:
        return next((o for o in self.operands if o.role == role), None)

    def attr(self, name: str) -> Attr | None:
        return next((a for a in self.attrs if a.name == name), None)

    def with_defaults(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        full = {a.name: a.default for a in self.attrs if not a.required}
        # An explicit null for an optional attribute means its default.
        full.update((k, v) for k, v in attrs.items() if v is not None or k not in full)
        return full

    def cost(self, ins: Mapping[str, Value], outs: list[Value], attrs: Mapping[str, Any],
             ctx: CostContext) -> OpCost:
        attrs = self.with_defaults(attrs)
        b = ctx.bindings
        weight_bytes = sum(v.nbytes(b, ctx.weight_dtype) for v in _unique(ins.values())
                           if v.kind is ValueKind.WEIGHT)
        act_in = sum(v.nbytes(b, ctx.act_dtype if v.dtype.is_float else None)
                     for v in ins.values() if v.kind in ACT)
        act_out = sum(v.nbytes(b, ctx.act_dtype if v.dtype.is_float else None) for v in outs)
        kv_tok = kv_read = 0
        if "k_cache" in ins:
            # Per token each cache grows by one row; per step each sequence reads the
            # keys its queries attend to (shared by the step's queries).
            kv_tok = sum((ctx.kv_dtype or ins[r].dtype).nbytes(_kv_row(ins[r]))
                         for r in ("k_cache", "v_cache"))
            q = ins["q"]
            seqs = numel(q.shape[:-2], b) if len(q.shape) > 2 else 1
            window = attrs.get("sliding_window") or 0
            ctx_len = resolve("context", b) if "context" in b else _rows_per_seq(q, b)
            kv_read = kv_tok * seqs * (min(ctx_len, window) if window else ctx_len)
            kv_tok_written = kv_tok * numel(q.shape[:-1], b)
        else:
            kv_tok_written = 0
        return OpCost(
            flops=int(self.flops(ins, outs, attrs, b)),
            bytes_read=act_in + weight_bytes + kv_read,
            bytes_written=act_out + kv_tok_written,
            weight_bytes=weight_bytes,
            kv_bytes_per_token=kv_tok,
        )


def _unique(values):
    seen = set()
    for v in values:
        if v.name not in seen:
            seen.add(v.name)
            yield v


def _kv_row(v: Value) -> int:
    """Elements a K or V cache of shape [batch, kv_heads, context, head_dim] adds per token."""
    return int(v.shape[1]) * int(v.shape[3])


def _rows_per_seq(q: Value, b: Mapping[str, int]) -> int:
    return resolve(q.shape[-2], b) if len(q.shape) >= 2 else 1


def _attended_len(q: Value, attrs: Mapping[str, Any], b: Mapping[str, int], cached: bool) -> int:
    """Sum over the queries of one sequence of the keys each query attends to."""
    s = _rows_per_seq(q, b)
    w = attrs.get("sliding_window") or 0
    if cached:
        ctx = resolve("context", b) if "context" in b else s
        return s * (min(ctx, w) if w else ctx)
    if not attrs.get("causal", False):
        return s * (min(s, w) if w else s)
    return sum(min(i, w) if w else i for i in range(1, s + 1))


# --- helpers for shape inference -------------------------------------------------

def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ShapeError(msg)


def _fmt(shape: Shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def broadcast(a: Shape, b: Shape) -> Shape:
    out: list[Dim] = []
    for i in range(max(len(a), len(b))):
        da = a[len(a) - 1 - i] if i < len(a) else 1
        db = b[len(b) - 1 - i] if i < len(b) else 1
        if da == db or db == 1:
            out.append(da)
        elif da == 1:
            out.append(db)
        else:
            raise ShapeError(f"shapes {_fmt(a)} and {_fmt(b)} do not broadcast")
    return tuple(reversed(out))


def _mat(w: Value, transposed: bool, what: str) -> tuple[int, int]:
    """(in, out) of a 2-D weight stored [in, out], or [out, in] when transposed."""
    _need(len(w.shape) == 2, f"{what} must be 2-D, got {_fmt(w.shape)}")
    k, n = w.shape
    return (n, k) if transposed else (k, n)


def _expert_mat(w: Value, transposed: bool, what: str) -> tuple[int, int, int]:
    _need(len(w.shape) == 3, f"{what} must be 3-D [experts, ., .], got {_fmt(w.shape)}")
    e, a, c = w.shape
    return (e, c, a) if transposed else (e, a, c)


def _rows(x: Value, b: Mapping[str, int]) -> int:
    return numel(x.shape[:-1], b)


# --- matmul ------------------------------------------------------------------

def _matmul_infer(ins, at):
    x, w = ins["x"], ins["w"]
    k, n = _mat(w, at["transpose_w"], "weight")
    _need(len(x.shape) >= 1 and x.shape[-1] == k,
          f"x {_fmt(x.shape)} has last dim {x.shape[-1] if x.shape else '?'}, weight expects {k}")
    if "b" in ins:
        _need(tuple(ins["b"].shape) == (n,), f"bias {_fmt(ins['b'].shape)} expected [{n}]")
    return [(tuple(x.shape[:-1]) + (n,), x.dtype)]


def _matmul_flops(ins, outs, at, b):
    k, n = _mat(ins["w"], at["transpose_w"], "weight")
    rows = _rows(ins["x"], b)
    return 2 * rows * k * n + (rows * n if "b" in ins else 0)


# --- embedding ---------------------------------------------------------------

def _embedding_infer(ins, at):
    ids, table = ins["ids"], ins["table"]
    _need(not ids.dtype.is_float, f"ids must be integer, got {ids.dtype.value}")
    _need(len(table.shape) == 2, f"table must be 2-D, got {_fmt(table.shape)}")
    return [(tuple(ids.shape) + (table.shape[1],), table.dtype)]


# --- norm ------------------------------------------------------------------------

def _norm_infer(ins, at):
    x = ins["x"]
    _need(len(x.shape) >= 1, "x must have at least one dim")
    g = at["group"] or x.shape[-1]
    _need(isinstance(x.shape[-1], int) and isinstance(g, int) and g > 0 and x.shape[-1] % g == 0,
          f"normalised group {g} does not divide last dim of {_fmt(x.shape)}")
    for r in ("scale", "bias"):
        if r in ins:
            _need(tuple(ins[r].shape) == (g,), f"{r} {_fmt(ins[r].shape)} expected [{g}]")
    return [(x.shape, x.dtype)]


def _norm_flops(ins, outs, at, b):
    per = 4 if at["kind"] == "rms" else 7
    return numel(ins["x"].shape, b) * (per + ("bias" in ins))


# --- elementwise, activation, softmax ----------------------------------------------

UNARY_FNS = ("neg", "exp", "log", "sqrt", "rsqrt", "reciprocal", "abs", "clamp", "square")
BINARY_FNS = ("add", "sub", "mul", "div", "max", "min", "pow")
# FLOPs per softmax element (per attention score): the numerically stable softmax's five steps, max,
# subtract, exp, sum and normalise, one FLOP each.  A counting convention (exp as one FLOP), not a
# measured WSE figure; the compute_efficiency fit (docs/cost-model.md) absorbs the difference.  The
# cost kernel (passes/cost_kernel.py) charges the same count to a KV grid's cores.
SOFTMAX_FLOPS = 5


def _elementwise_infer(ins, at):
    a = ins["a"]
    fn = at["fn"]
    if fn in UNARY_FNS:
        _need("b" not in ins, f"'{fn}' takes one operand")
        return [(a.shape, a.dtype)]
    if "b" not in ins:
        _need(at["scalar"] is not None, f"'{fn}' needs operand b or a scalar")
        return [(a.shape, a.dtype)]
    _need(at["scalar"] is None, f"'{fn}' has both operand b and a scalar")
    return [(broadcast(a.shape, ins["b"].shape), a.dtype)]


ACTIVATION_FLOPS = {"silu": 4, "gelu": 8, "gelu_tanh": 9, "relu": 1, "sigmoid": 4,
                    "tanh": 5, "softplus": 4, "swiglu_clamped": 8}


def _same_shape_infer(role):
    return lambda ins, at: [(ins[role].shape, ins[role].dtype)]


def _per_elem(n):
    return lambda ins, outs, at, b: n(at) * numel(outs[0].shape, b)


# --- rotary --------------------------------------------------------------------------

def _rotary_infer(ins, at):
    x = ins["x"]
    _need(len(x.shape) >= 1 and x.shape[-1] == at["num_heads"] * at["head_dim"],
          f"x last dim {x.shape[-1] if x.shape else '?'} != num_heads {at['num_heads']} x head_dim {at['head_dim']}")
    return [(x.shape, x.dtype)]


def _rotary_check(at):
    rd = at.get("rotary_dim") or at["head_dim"]
    return [] if 0 < rd <= at["head_dim"] and rd % 2 == 0 else [
        f"rotary_dim {rd} must be even and at most head_dim {at['head_dim']}"]


def _rotary_flops(ins, outs, at, b):
    return 3 * _rows(ins["x"], b) * at["num_heads"] * (at["rotary_dim"] or at["head_dim"])


# --- attention -----------------------------------------------------------------------

def _attention_check(at):
    errs = []
    if at["num_heads"] % at["num_kv_heads"]:
        errs.append(f"num_heads {at['num_heads']} is not a multiple of num_kv_heads {at['num_kv_heads']}")
    if at["sliding_window"] < 0:
        errs.append(f"sliding_window {at['sliding_window']} must be >= 0")
    if at["position_bias"] is not None:
        errs += _position_bias_check(at["position_bias"], at["num_heads"])
    r, rd, vd = at["kv_lora_rank"], at["rope_dim"], at["v_head_dim"]
    if r < 0 or rd < 0 or vd < 0:
        errs.append(f"kv_lora_rank {r}, rope_dim {rd} and v_head_dim {vd} must be >= 0")
    elif r:
        if at["num_kv_heads"] != 1:
            errs.append(f"MLA (kv_lora_rank {r}) caches one shared row: num_kv_heads must be 1, got {at['num_kv_heads']}")
        if not 0 < rd < at["head_dim"]:
            errs.append(f"MLA rope_dim {rd} must be in 1..head_dim - 1 = {at['head_dim'] - 1}")
    elif rd or vd:
        errs.append("rope_dim and v_head_dim are MLA attributes: they need kv_lora_rank > 0")
    return errs


def mla_dims(at) -> tuple[int, int, int, int] | None:
    """(kv_lora_rank, rope_dim, nope_dim, v_head_dim) of an MLA attention (docs/ir.md), else None.
    ``head_dim`` is the q/k head dim nope_dim + rope_dim; v_head_dim 0 means nope_dim."""
    r = at.get("kv_lora_rank") or 0
    if not r:
        return None
    rd = at.get("rope_dim") or 0
    nope = at["head_dim"] - rd
    return r, rd, nope, at.get("v_head_dim") or nope


POSITION_BIAS_KINDS = ("alibi", "relative")


def _position_bias_check(pb, heads: int) -> list[str]:
    """``position_bias``: {"kind": "alibi", "slopes": [Hq floats]} or {"kind": "relative",
    "num_buckets": int > 0, "max_distance": int > 0, "bidirectional": bool} (docs/ir.md)."""
    kind = pb.get("kind")
    if kind not in POSITION_BIAS_KINDS:
        return [f"position_bias kind {kind!r}, expected one of {', '.join(POSITION_BIAS_KINDS)}"]
    if kind == "alibi":
        sl = pb.get("slopes")
        if set(pb) != {"kind", "slopes"} or not isinstance(sl, list) or len(sl) != heads \
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in sl):
            return [f"alibi position_bias needs exactly 'slopes', a list of num_heads = {heads} numbers, got {pb}"]
        return []
    want = {"kind", "num_buckets", "max_distance", "bidirectional"}
    if set(pb) != want:
        return [f"relative position_bias needs exactly {sorted(want)}, got {sorted(pb)}"]
    nb, md = pb["num_buckets"], pb["max_distance"]
    if not (isinstance(nb, int) and isinstance(md, int) and nb > 0 and md > 0
            and isinstance(pb["bidirectional"], bool)) or isinstance(nb, bool) or isinstance(md, bool):
        return [f"relative position_bias needs num_buckets, max_distance > 0 (int) and bidirectional (bool), got {pb}"]
    exact = (nb // 2 if pb["bidirectional"] else nb) // 2
    if exact < 1 or md <= exact:
        return [f"relative position_bias: max_distance {md} must exceed the exact buckets {exact} (num_buckets {nb})"]
    return []


def relative_position_bucket(rel, num_buckets: int, max_distance: int, bidirectional: bool):
    """T5's bucket of relative position ``rel`` = key position - query position (an integer
    array): exact buckets for small distances, logarithmic ones up to ``max_distance``, the
    last bucket beyond; with ``bidirectional`` half the buckets are for keys after the query.
    Computed in float32 as the reference implementation does, so bucket edges agree."""
    import numpy as np
    rel = np.asarray(rel, dtype=np.int64)
    nb = num_buckets
    ret = np.zeros(rel.shape, np.int64)
    if bidirectional:
        nb //= 2
        ret += (rel > 0).astype(np.int64) * nb
        n = np.abs(rel)
    else:
        n = np.maximum(-rel, 0)
    exact = nb // 2
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.log(np.maximum(n, 1).astype(np.float32) / np.float32(exact)) / np.float32(math.log(max_distance / exact))
        large = exact + (f * np.float32(nb - exact)).astype(np.int64)
    large = np.minimum(large, nb - 1)
    return ret + np.where(n < exact, n, large)


def _mla_infer(ins, at):
    """MLA mode: q [.., H*nope] and q_rope [.., H*rope] (rotated) per head; k the normalised latent
    [.., kv_lora_rank], v the shared rotated key [.., rope]; kv_b_w up-projects the latent to each
    head's [k_nope | v]; the caches hold the k and v rows (one shared 'head')."""
    q, qr, k, v = ins["q"], ins.get("q_rope"), ins["k"], ins["v"]
    r, rd, nope, vd = mla_dims(at)
    hq = at["num_heads"]
    _need(qr is not None and "kv_b_w" in ins, "MLA attention (kv_lora_rank > 0) needs operands q_rope and kv_b_w")
    _need(len(q.shape) >= 2, f"q must be [..., seq, heads*nope_dim], got {_fmt(q.shape)}")
    for name, t, want in (("q", q, hq * nope), ("q_rope", qr, hq * rd), ("k", k, r), ("v", v, rd)):
        _need(len(t.shape) == len(q.shape) and tuple(t.shape[:-1]) == tuple(q.shape[:-1]),
              f"{name} {_fmt(t.shape)} and q {_fmt(q.shape)} differ in leading dims")
        _need(t.shape[-1] == want, f"{name} last dim {t.shape[-1]} expected {want}")
    _need(_mat(ins["kv_b_w"], at["kv_b_transposed"], "kv_b_w") == (r, hq * (nope + vd)),
          f"kv_b_w {_fmt(ins['kv_b_w'].shape)} does not map kv_lora_rank {r} to num_heads x (nope + v_head_dim) "
          f"= {hq * (nope + vd)}")
    if ("k_cache" in ins) != ("v_cache" in ins):
        raise ShapeError("k_cache and v_cache must both be present or both absent")
    for role, width in (("k_cache", r), ("v_cache", rd)):
        if role in ins:
            c = ins[role].shape
            _need(len(c) == 4 and c[1] == 1 and c[3] == width and c[0] == q.shape[0],
                  f"{role} {_fmt(c)} expected [{q.shape[0]}, 1, context, {width}]")
    _need("bias_table" not in ins and at["position_bias"] is None, "MLA attention with a position bias")
    return [(tuple(q.shape[:-1]) + (hq * vd,), q.dtype)]


def _attention_infer(ins, at):
    if mla_dims(at):
        return _mla_infer(ins, at)
    _need("q_rope" not in ins and "kv_b_w" not in ins, "operands q_rope and kv_b_w need kv_lora_rank > 0 (MLA)")
    q, k, v = ins["q"], ins["k"], ins["v"]
    hq, hkv, dh = at["num_heads"], at["num_kv_heads"], at["head_dim"]
    _need(len(q.shape) >= 2, f"q must be [..., seq, heads*head_dim], got {_fmt(q.shape)}")
    _need(q.shape[-1] == hq * dh, f"q last dim {q.shape[-1]} != num_heads x head_dim = {hq * dh}")
    for r, t in (("k", k), ("v", v)):
        _need(len(t.shape) == len(q.shape) and tuple(t.shape[:-1]) == tuple(q.shape[:-1]),
              f"{r} {_fmt(t.shape)} and q {_fmt(q.shape)} differ in leading dims")
        _need(t.shape[-1] == hkv * dh,
              f"{r} last dim {t.shape[-1]} != num_kv_heads x head_dim = {hkv * dh}")
    if ("k_cache" in ins) != ("v_cache" in ins):
        raise ShapeError("k_cache and v_cache must both be present or both absent")
    for r in ("k_cache", "v_cache"):
        if r in ins:
            c = ins[r].shape
            _need(len(c) == 4 and c[1] == hkv and c[3] == dh and c[0] == q.shape[0],
                  f"{r} {_fmt(c)} expected [{q.shape[0]}, {hkv}, context, {dh}]")
    pb = at["position_bias"]
    if pb is not None and pb.get("kind") == "relative":
        _need("bias_table" in ins, "a relative position_bias needs operand bias_table [num_buckets, num_heads]")
        _need(tuple(ins["bias_table"].shape) == (pb["num_buckets"], hq),
              f"bias_table {_fmt(ins['bias_table'].shape)} expected [{pb['num_buckets']}, {hq}]")
    else:
        _need("bias_table" not in ins, "operand bias_table without a relative position_bias")
    if "sinks" in ins:
        sk = ins["sinks"].shape
        _need(all(isinstance(d, int) for d in sk) and sum(d != 1 for d in sk) <= 1 and numel(sk) == hq, f"sinks {_fmt(sk)} expected [{hq}] (or 1s around it)")
    return [(q.shape, q.dtype)]


def _attention_flops(ins, outs, at, b):
    q = ins["q"]
    seqs = numel(q.shape[:-2], b) if len(q.shape) > 2 else 1
    pairs = seqs * _attended_len(q, at, b, "k_cache" in ins)
    mla = mla_dims(at)
    if mla:
        # MLA, counted in the expanded form the source computes (HF's expand_kv, the ONNX graph,
        # the reference kernel): each step up-projects every key position it attends over once,
        # 2 x kv_lora_rank x H x (nope + v) FLOPs per key, then QK^T over nope + rope and PV over
        # v_head_dim.  (The absorbed form folds kv_b_w into q and the output instead, and attends
        # over the latent: 2H(nope + v)r per query and H(2(r + rope) + 2r) per score; see docs/ir.md.)
        r, rd, nope, vd = mla
        keys = seqs * _keys_per_seq(q, at, b, "k_cache" in ins)
        return keys * 2 * r * at["num_heads"] * (nope + vd) + \
            at["num_heads"] * pairs * (2 * at["head_dim"] + 2 * vd + score_flops(at))
    # QK^T and PV: 2 FLOPs per MAC each; the softmax SOFTMAX_FLOPS per score; a position bias
    # one add per score (its slope or table value is looked up, not computed).
    return at["num_heads"] * pairs * (4 * at["head_dim"] + score_flops(at))


def _keys_per_seq(q: Value, attrs: Mapping[str, Any], b: Mapping[str, int], cached: bool) -> int:
    """Key positions one sequence's step attends over (each up-projected once by MLA)."""
    s = _rows_per_seq(q, b)
    w = attrs.get("sliding_window") or 0
    n = (resolve("context", b) if "context" in b else s) if cached else s
    return min(n, w) if w else n


def kv_head_dim(at) -> int:
    """Width of one cached row per kv head that a KV-grid core computes against: head_dim, or for
    MLA kv_lora_rank + rope_dim (the cores hold the latent rows and attend in the absorbed form:
    q absorbed through kv_b_w's key half, the output through its value half; docs/ir.md)."""
    mla = mla_dims(at)
    return mla[0] + mla[1] if mla else at["head_dim"]


def score_flops(at) -> int:
    """FLOPs per attention score besides QK^T and PV: softmax, plus one add for a position bias."""
    return SOFTMAX_FLOPS + (1 if at.get("position_bias") else 0)


# --- moe --------------------------------------------------------------------------------

def _moe_check(at):
    errs = []
    if not 0 < at["top_k"] <= at["num_experts"]:
        errs.append(f"top_k {at['top_k']} must be in 1..num_experts {at['num_experts']}")
    g, tg = at["n_group"], at["topk_group"]
    if g < 1 or at["num_experts"] % g:
        errs.append(f"n_group {g} must be >= 1 and divide num_experts {at['num_experts']}")
    elif not 0 < (tg or g) <= g:
        errs.append(f"topk_group {tg} must be in 1..n_group {g}")
    elif g > 1 and not 0 < at["group_score_k"] <= at["num_experts"] // g:
        errs.append(f"group_score_k {at['group_score_k']} must be in 1..{at['num_experts'] // g} (experts per group)")
    elif at["top_k"] > (tg or g) * (at["num_experts"] // g):
        errs.append(f"top_k {at['top_k']} exceeds the {(tg or g) * (at['num_experts'] // g)} experts of the "
                    f"{tg or g} chosen groups")
    if at["shared_intermediate"] < 0:
        errs.append(f"shared_intermediate {at['shared_intermediate']} must be >= 0")
    return errs


def _moe_infer(ins, at):
    x = ins["x"]
    d, e, i = at["hidden"], at["num_experts"], at["intermediate"]
    _need(len(x.shape) >= 1 and x.shape[-1] == d, f"x last dim {x.shape[-1] if x.shape else '?'} != hidden {d}")
    _need(_mat(ins["router_w"], at["router_transposed"], "router_w") == (d, e),
          f"router_w {_fmt(ins['router_w'].shape)} does not map hidden {d} to {e} experts")
    for r in ("router_b", "router_score_bias"):
        if r in ins:
            _need(numel(ins[r].shape) == e, f"{r} {_fmt(ins[r].shape)} must hold {e} values (one per expert)")
    t = at["experts_transposed"]
    if at["gated"] and "gate_up_w" in ins:
        _need(_expert_mat(ins["gate_up_w"], t, "gate_up_w") == (e, d, 2 * i),
              f"gate_up_w {_fmt(ins['gate_up_w'].shape)} does not map hidden {d} to 2x{i} for {e} experts")
    else:
        names = ("gate_w", "up_w") if at["gated"] else ("up_w",)
        for r in names:
            _need(r in ins, f"{'gated' if at['gated'] else 'ungated'} experts need operand {r}")
            _need(_expert_mat(ins[r], t, r) == (e, d, i),
                  f"{r} {_fmt(ins[r].shape)} does not map hidden {d} to {i} for {e} experts")
    _need(_expert_mat(ins["down_w"], t, "down_w") == (e, i, d),
          f"down_w {_fmt(ins['down_w'].shape)} does not map {i} to hidden {d} for {e} experts")
    si = at["shared_intermediate"]
    for r, want in (("shared_gate_w", (d, si)), ("shared_up_w", (d, si)), ("shared_down_w", (si, d))):
        if r in ins:
            _need(si > 0 and _mat(ins[r], at["shared_transposed"], r) == want,
                  f"{r} {_fmt(ins[r].shape)} expected to map {want[0]} to {want[1]}")
    return [(x.shape, x.dtype)]


def _moe_flops(ins, outs, at, b):
    rows = _rows(ins["x"], b)
    d, e, i, k = at["hidden"], at["num_experts"], at["intermediate"], at["top_k"]
    mats = 3 if at["gated"] else 2
    act = ACTIVATION_FLOPS.get(at["activation"], 4)
    expert = mats * 2 * d * i + act * i + (i if at["gated"] else 0)
    si = at["shared_intermediate"]
    shared = (3 * 2 * d * si + act * si + si) if si else 0
    return rows * (2 * d * e + 5 * e + k * (expert + d) + shared)


# --- layout ----------------------------------------------------------------------------

def _layout_infer(ins, at):
    x = ins["x"]
    shape = tuple(at["shape"])
    try:
        dtype = DType.parse(at["dtype"]) if at["dtype"] else x.dtype
    except ValueError as e:
        raise ShapeError(str(e)) from None
    if at["kind"] in ("reshape", "transpose", "cast"):
        from .values import same_numel
        _need(same_numel(x.shape, shape), f"{at['kind']} of {_fmt(x.shape)} to {_fmt(shape)} changes the element count")
    return [(shape, dtype)]


# --- prefix_tokens -----------------------------------------------------------------------

def _prefix_infer(ins, at):
    x, t = ins["x"], ins["tokens"]
    _need(len(x.shape) >= 2, f"x must be [..., seq, width], got {_fmt(x.shape)}")
    _need(len(t.shape) == 2 and t.shape[1] == x.shape[-1],
          f"tokens {_fmt(t.shape)} expected [rows, {x.shape[-1]}]")
    rows = x.shape[-2]
    _need(not isinstance(rows, int) or at["start"] + t.shape[0] <= rows,
          f"token rows {at['start']}..{at['start'] + t.shape[0] - 1} do not fit the {rows} rows of x")
    return [(x.shape, x.dtype)]


def _prefix_check(at):
    return [] if at["start"] >= 0 else [f"start {at['start']} must be >= 0"]


def _shape_attr_ok(at):
    bad = [d for d in at["shape"] if not (isinstance(d, str) or (isinstance(d, int) and d > 0))]
    return [f"shape {at['shape']} has invalid dims {bad}"] if bad else []


def _zero(*_):
    return 0


OPS: dict[str, OpSpec] = {s.name: s for s in [
    OpSpec("matmul", "y = x @ W (+ b); W weight-stationary, stored [in, out] or [out, in] if transpose_w",
           (Operand("x", ACT), Operand("w", WEIGHT), Operand("b", WEIGHT, True)),
           (Attr("transpose_w", (bool,), False, False),),
           _matmul_infer, _matmul_flops),
    OpSpec("embedding", "y = table[ids]",
           (Operand("ids", ACT), Operand("table", WEIGHT)), (), _embedding_infer, _zero),
    OpSpec("norm", "RMS or layer norm over groups of `group` elements (0 = last dim)",
           (Operand("x", ACT), Operand("scale", WEIGHT, True), Operand("bias", WEIGHT, True)),
           (Attr("kind", (str,), choices=("rms", "layer")), Attr("eps", (float,)),
            Attr("group", (int,), False, 0), Attr("scale_offset", (float,), False, 0.0)),
           _norm_infer, _norm_flops),
    OpSpec("elementwise", "y = fn(a[, b | scalar]) with broadcasting",
           (Operand("a", ANY_DATA), Operand("b", ANY_DATA, True)),
           (Attr("fn", (str,), choices=UNARY_FNS + BINARY_FNS), Attr("scalar", (float,), False, None),
            Attr("min", (float,), False, None), Attr("max", (float,), False, None)),
           _elementwise_infer, lambda ins, outs, at, b: numel(outs[0].shape, b)),
    OpSpec("activation", "y = fn(x)",
           (Operand("x", ACT),),
           (Attr("fn", (str,), choices=tuple(ACTIVATION_FLOPS)),),
           _same_shape_infer("x"), _per_elem(lambda at: ACTIVATION_FLOPS[at["fn"]])),
    OpSpec("softmax", "y = softmax(x) over the last axis",
           (Operand("x", ACT),), (), _same_shape_infer("x"), _per_elem(lambda at: SOFTMAX_FLOPS)),
    OpSpec("rotary", "rotary position embedding of each head of x at the token's position",
           (Operand("x", ACT),),
           (Attr("num_heads", (int,), positive=True), Attr("head_dim", (int,), positive=True),
            Attr("rotary_dim", (int,), False, 0), Attr("theta", (float,), False, 10000.0),
            Attr("interleaved", (bool,), False, False), Attr("scaling", (dict,), False, None)),
           _rotary_infer, _rotary_flops, _rotary_check),
    OpSpec("attention", "scaled dot-product attention of q over k, v (and the KV cache)",
           (Operand("q", ACT), Operand("k", ACT), Operand("v", ACT),
            Operand("k_cache", KV, True), Operand("v_cache", KV, True),
            Operand("sinks", WEIGHT, True), Operand("mask", ACT, True), Operand("bias_table", WEIGHT, True),
            Operand("q_rope", ACT, True), Operand("kv_b_w", WEIGHT, True)),
           (Attr("num_heads", (int,), positive=True), Attr("num_kv_heads", (int,), positive=True),
            Attr("head_dim", (int,), positive=True), Attr("causal", (bool,)),
            Attr("sliding_window", (int,), False, 0), Attr("scale", (float,), False, None),
            Attr("softcap", (float,), False, 0.0), Attr("position_bias", (dict,), False, None),
            Attr("kv_lora_rank", (int,), False, 0), Attr("rope_dim", (int,), False, 0),
            Attr("v_head_dim", (int,), False, 0), Attr("kv_b_transposed", (bool,), False, False)),
           _attention_infer, _attention_flops, _attention_check),
    OpSpec("moe", "mixture of experts: router, top-k experts, optional shared experts",
           (Operand("x", ACT), Operand("router_w", WEIGHT), Operand("router_b", WEIGHT, True),
            Operand("gate_up_w", WEIGHT, True), Operand("gate_up_b", WEIGHT, True),
            Operand("gate_w", WEIGHT, True), Operand("up_w", WEIGHT, True),
            Operand("down_w", WEIGHT), Operand("down_b", WEIGHT, True),
            Operand("shared_gate_w", WEIGHT, True), Operand("shared_up_w", WEIGHT, True),
            Operand("shared_down_w", WEIGHT, True), Operand("shared_router_w", WEIGHT, True),
            Operand("router_score_bias", WEIGHT, True, parameter=False)),
           (Attr("num_experts", (int,), positive=True), Attr("top_k", (int,), positive=True),
            Attr("hidden", (int,), positive=True), Attr("intermediate", (int,), positive=True),
            Attr("activation", (str,), choices=tuple(ACTIVATION_FLOPS)), Attr("gated", (bool,)),
            Attr("router_fn", (str,), False, "softmax_topk",
                 choices=("softmax_topk", "topk_softmax", "sigmoid_topk")),
            Attr("normalize_topk", (bool,), False, False),
            Attr("n_group", (int,), False, 1), Attr("topk_group", (int,), False, 0),
            Attr("group_score_k", (int,), False, 2), Attr("group_fill", (float,), False, None),
            Attr("routed_scaling_factor", (float,), False, 1.0),
            Attr("router_transposed", (bool,), False, False),
            Attr("experts_transposed", (bool,), False, False),
            Attr("shared_transposed", (bool,), False, False),
            Attr("shared_intermediate", (int,), False, 0),
            Attr("gate_up_interleaved", (bool,), False, False),
            Attr("activation_params", (dict,), False, None)),
           _moe_infer, _moe_flops, _moe_check),
    OpSpec("prefix_tokens", "y = x with token rows start..start+rows-1 replaced by the rows of tokens "
                            "(learned tokens prepended to patch rows: a ViT's CLS)",
           (Operand("x", ACT), Operand("tokens", WEIGHT)),
           (Attr("start", (int,), False, 0),),
           _prefix_infer, _zero, _prefix_check),
    OpSpec("layout", "data movement only: reshape, transpose, cast, slice, expand",
           (Operand("x", ANY_DATA),),
           (Attr("kind", (str,), choices=("reshape", "transpose", "cast", "slice", "expand")),
            Attr("shape", (list,)), Attr("dtype", (str,), False, None),
            Attr("perm", (list,), False, None), Attr("axis", (int,), False, None),
            Attr("start", (int,), False, None), Attr("end", (int,), False, None)),
           _layout_infer, _zero, _shape_attr_ok),
]}

from .ops_onnx import ONNX_OP  # noqa: E402  (it builds on the definitions above)

OPS[ONNX_OP.name] = ONNX_OP
