"""NumPy kernels, one per IR op kind (semantics: docs/ir.md).

Every kernel is ``kernel(node, inputs, ctx) -> np.ndarray``: ``inputs`` maps
operand roles to arrays (weights included, KV caches not: those live in
``ctx.kv``), ``ctx`` is the interpreter's :class:`~wafercc.sim.reference.StepContext`.
Kernels accumulate in float64 and return float32, whatever float dtype the IR
declares (low precision is not emulated).
Attribute combinations without a defined meaning raise :class:`SimulationError`.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import erf, expit

from .errors import SimulationError
from .onnx_kernel import onnx_op


def fail(node, msg: str):
    raise SimulationError(msg, where=f"node '{node.name}' (op {node.op})")


def attrs_of(node) -> dict:
    return node.spec.with_defaults(node.attrs)


def _f(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _out(y) -> np.ndarray:
    return np.asarray(y, dtype=np.float32)


# --- matmul, embedding, norm ---------------------------------------------------------

def matmul(node, inputs, ctx):
    at = attrs_of(node)
    x, w = _f(inputs["x"]), _f(inputs["w"])
    if w.ndim != 2:
        fail(node, f"weight must be 2-D, got shape {list(w.shape)}")
    w = w.T if at["transpose_w"] else w
    if x.shape[-1] != w.shape[0]:
        fail(node, f"x {list(x.shape)} does not match weight [{w.shape[0]}, {w.shape[1]}] (in, out)")
    y = x @ w
    if "b" in inputs:
        y = y + _f(inputs["b"])
    return _out(y)


def embedding(node, inputs, ctx):
    ids, table = np.asarray(inputs["ids"]), np.asarray(inputs["table"])
    if not np.issubdtype(ids.dtype, np.integer):
        fail(node, f"ids must be integers, got {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= table.shape[0]):
        fail(node, f"ids out of range [0, {table.shape[0]}): min {ids.min()}, max {ids.max()}")
    return _out(table[ids])


def norm(node, inputs, ctx):
    at = attrs_of(node)
    x = _f(inputs["x"])
    g = at["group"] or x.shape[-1]
    if x.shape[-1] % g:
        fail(node, f"group {g} does not divide the last dim {x.shape[-1]}")
    xs = x.reshape(x.shape[:-1] + (x.shape[-1] // g, g))
    if at["kind"] == "rms":
        y = xs / np.sqrt(np.mean(xs * xs, axis=-1, keepdims=True) + at["eps"])
    elif at["kind"] == "layer":
        c = xs - xs.mean(axis=-1, keepdims=True)
        y = c / np.sqrt(np.mean(c * c, axis=-1, keepdims=True) + at["eps"])
    else:
        fail(node, f"unknown norm kind '{at['kind']}'")
    if "scale" in inputs:
        y = y * (_f(inputs["scale"]) + at["scale_offset"])
    elif at["scale_offset"]:
        fail(node, "scale_offset without a scale operand has no defined meaning")
    if "bias" in inputs:
        y = y + _f(inputs["bias"])
    return _out(y.reshape(x.shape))


# --- pointwise ---------------------------------------------------------------------------

_UNARY = {"neg": np.negative, "exp": np.exp, "log": np.log, "sqrt": np.sqrt,
          "rsqrt": lambda a: 1.0 / np.sqrt(a), "reciprocal": lambda a: 1.0 / a, "abs": np.abs,
          "square": np.square}
_BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
           "max": np.maximum, "min": np.minimum, "pow": np.power}


def elementwise(node, inputs, ctx):
    at = attrs_of(node)
    fn = at["fn"]
    a = _f(inputs["a"])
    if fn != "clamp" and (at["min"] is not None or at["max"] is not None):
        fail(node, f"attributes min/max only apply to fn 'clamp', not '{fn}'")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if fn in _UNARY or fn == "clamp":
            if "b" in inputs or at["scalar"] is not None:
                fail(node, f"unary fn '{fn}' takes neither operand b nor a scalar")
            if fn == "clamp":
                lo = -np.inf if at["min"] is None else at["min"]
                hi = np.inf if at["max"] is None else at["max"]
                y = np.clip(a, lo, hi)
            else:
                y = _UNARY[fn](a)
        else:
            if fn not in _BINARY:
                fail(node, f"unknown fn '{fn}'")
            if ("b" in inputs) == (at["scalar"] is not None):
                fail(node, f"binary fn '{fn}' needs exactly one of operand b and a scalar")
            b = _f(inputs["b"]) if "b" in inputs else at["scalar"]  # a scalar is the right operand
            y = _BINARY[fn](a, b)
    ints = [np.asarray(inputs[r]) for r in ("a", "b") if r in inputs]
    if all(np.issubdtype(t.dtype, np.integer) for t in ints) and float(at["scalar"] or 0).is_integer():
        return np.trunc(y).astype(np.int64)  # integer arithmetic stays integer (ONNX Div truncates)
    return _out(y)


def _act(fn: str, x: np.ndarray, node) -> np.ndarray:
    if fn == "silu":
        return x * expit(x)
    if fn == "gelu":
        return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
    if fn == "gelu_tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    if fn == "relu":
        return np.maximum(x, 0.0)
    if fn == "sigmoid":
        return expit(x)
    if fn == "tanh":
        return np.tanh(x)
    if fn == "softplus":
        return np.logaddexp(0.0, x)
    if fn == "swiglu_clamped":
        fail(node, "swiglu_clamped needs a gate and an up projection: it is only defined inside moe")
    fail(node, f"unknown activation '{fn}'")


def activation(node, inputs, ctx):
    return _out(_act(attrs_of(node)["fn"], _f(inputs["x"]), node))


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def softmax(node, inputs, ctx):
    return _out(_softmax(_f(inputs["x"])))


# --- rotary --------------------------------------------------------------------------------

def _inv_freq(node, at, rd: int) -> np.ndarray:
    inv = at["theta"] ** (-np.arange(0, rd, 2, dtype=np.float64) / rd)
    s = at["scaling"]
    if not s:
        return inv
    kind = s.get("rope_type", s.get("type", "default"))
    if kind == "default":
        return inv
    if kind == "table":  # the inverse frequencies as the file stores them (e.g. YaRN-blended)
        t = np.asarray(s.get("inv_freq", ()), dtype=np.float64).reshape(-1)
        if t.size != rd // 2:
            fail(node, f"rotary table of {t.size} inverse frequencies, rotary_dim {rd} needs {rd // 2}")
        return t
    if kind == "linear":
        return inv / float(s["factor"])
    if kind == "llama3":
        need = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
        missing = [k for k in need if k not in s]
        if missing:
            fail(node, f"llama3 rotary scaling lacks {', '.join(missing)}")
        f, lo, hi, old = (float(s[k]) for k in need)
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > old / lo, inv / f, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        medium = (wavelen >= old / hi) & (wavelen <= old / lo)
        return np.where(medium, (1 - smooth) * scaled / f + smooth * scaled, scaled)
    fail(node, f"rotary scaling type '{kind}' is not supported (default, linear, llama3, table are)")


def rotary(node, inputs, ctx):
    at = attrs_of(node)
    h, dh = at["num_heads"], at["head_dim"]
    rd = at["rotary_dim"] or dh
    if rd % 2 or not 0 < rd <= dh:
        fail(node, f"rotary_dim {rd} must be even and at most head_dim {dh}")
    x = _f(inputs["x"])
    if x.shape[-1] != h * dh:
        fail(node, f"x last dim {x.shape[-1]} != num_heads {h} x head_dim {dh}")
    pos = np.asarray(ctx.positions)
    if pos.shape != x.shape[:-1]:
        fail(node, f"positions {list(pos.shape)} do not match the token dims of x {list(x.shape[:-1])}")
    ang = pos[..., None, None].astype(np.float64) * _inv_freq(node, at, rd)  # [..., 1, rd/2]
    amp = float((at["scaling"] or {}).get("attention_factor", 1.0))  # YaRN scales cos and sin alike
    cos, sin = amp * np.cos(ang), amp * np.sin(ang)
    xh = x.reshape(x.shape[:-1] + (h, dh))
    xr = xh[..., :rd]
    if at["interleaved"]:  # GPT-J: pairs (2i, 2i+1)
        a, b = xr[..., 0::2], xr[..., 1::2]
        rot = np.stack([a * cos - b * sin, b * cos + a * sin], axis=-1).reshape(xr.shape)
    else:  # GPT-NeoX / HF rotate_half: pairs (i, i + rd/2)
        a, b = xr[..., :rd // 2], xr[..., rd // 2:]
        rot = np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)
    return _out(np.concatenate([rot, xh[..., rd:]], axis=-1).reshape(x.shape))


# --- attention -------------------------------------------------------------------------------

def kv_append(entry: dict, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Write this step's K, V ``[batch, kv_heads, seq, head_dim]`` after the ``entry["len"]``
    cached positions of ``entry["k"]``/``entry["v"]``; returns the keys and values to attend over.
    The interpreter advances ``entry["len"]`` after the step."""
    n, s = entry["len"], k.shape[2]
    kc, vc = entry["k"], entry["v"]
    if kc.shape[:2] != k.shape[:2] or kc.shape[3] != k.shape[3]:
        raise SimulationError(f"K {list(k.shape)} does not fit the cache {list(kc.shape)}")
    if n + s > kc.shape[2]:
        raise SimulationError(f"cache of {kc.shape[2]} positions cannot take {s} more after {n}")
    kc[:, :, n:n + s] = k
    vc[:, :, n:n + s] = v
    return kc[:, :, :n + s], vc[:, :, :n + s]


def _heads(t: np.ndarray, b: int, s: int, h: int, dh: int) -> np.ndarray:
    return t.reshape(b, s, h, dh).transpose(0, 2, 1, 3)


def _mask(node, inputs, ctx, b, s, t, hq, cached):
    """(allowed [b|1, h|1, s, t] bool or None, additive float or None) from the mask operand,
    else from the interpreter's padding mask (1 = real token) over all keys."""
    if "mask" in inputs:
        m = np.asarray(inputs["mask"])
        if m.ndim == 2:  # key padding of the graph input [batch, seq]
            if m.shape == (b, t):
                keep = m != 0
            elif cached and m.shape == (b, s):
                hist = ctx.attention_mask[:, :t - s] if ctx.attention_mask is not None else np.ones((b, t - s))
                keep = np.concatenate([hist != 0, m != 0], axis=1)
            else:
                fail(node, f"2-D mask {list(m.shape)} is neither [batch, keys] = [{b}, {t}] nor this step's tokens")
            return keep[:, None, None, :], None
        if m.ndim == 4 and m.shape[-2:] == (s, t) and m.shape[0] in (1, b) and m.shape[1] in (1, hq):
            return (m, None) if m.dtype == np.bool_ else (None, _f(m))  # bool: True = attend
        fail(node, f"mask {list(m.shape)} is not [batch, keys] or [batch, 1|heads, {s}, {t}]")
    am = ctx.attention_mask
    if am is None:
        return None, None
    if am.shape != (b, t):
        fail(node, f"attention mask {list(am.shape)} does not cover the {t} keys of {b} sequences")
    return (am != 0)[:, None, None, :], None


def position_bias(node, at, inputs, head, rel) -> np.ndarray:
    """The ``position_bias`` added to the score of query head ``head`` for a key at relative
    position ``rel`` = key position - query position (integer arrays that broadcast): ALiBi's
    ``slope[head] * rel``, or the relative kind's ``bias_table[bucket(rel), head]``."""
    pb = at["position_bias"]
    if pb["kind"] == "alibi":
        return np.asarray(pb["slopes"], np.float64)[head] * rel
    if pb["kind"] != "relative" or "bias_table" not in inputs:
        fail(node, f"position_bias {pb} needs kind alibi, or relative with a bias_table operand")
    from ..ir.ops import relative_position_bucket
    table = _f(inputs["bias_table"])
    bucket = relative_position_bucket(rel, pb["num_buckets"], pb["max_distance"], pb["bidirectional"])
    return table[bucket, head]


def _mla_expand(node, at, inputs, lat, kr):
    """MLA keys and values [b, H, t, .] from the latent [b, 1, t, r] and the shared rotary key
    [b, 1, t, rope]: each head's [k_nope | v] = latent @ kv_b_w, k = [k_nope | k_rope]."""
    from ..ir.ops import mla_dims
    r, rd, nope, vd = mla_dims(at)
    hq = at["num_heads"]
    w = _f(inputs["kv_b_w"])
    w = w.T if at["kv_b_transposed"] else w
    if w.shape != (r, hq * (nope + vd)):
        fail(node, f"kv_b_w {list(w.shape)} does not map kv_lora_rank {r} to {hq} x {nope + vd}")
    b, _, t, _ = lat.shape
    kv = (lat[:, 0] @ w).reshape(b, t, hq, nope + vd).transpose(0, 2, 1, 3)
    k = np.concatenate([kv[..., :nope], np.broadcast_to(kr, (b, hq, t, rd))], axis=-1)
    return k, kv[..., nope:]


def attention(node, inputs, ctx):
    from ..ir.ops import mla_dims
    at = attrs_of(node)
    hq, hkv, dh = at["num_heads"], at["num_kv_heads"], at["head_dim"]
    if hq % hkv:
        fail(node, f"num_heads {hq} is not a multiple of num_kv_heads {hkv}")
    mla = mla_dims(at)
    q, k, v = _f(inputs["q"]), _f(inputs["k"]), _f(inputs["v"])
    if mla:   # cached rows: k = the latent [.., r], v = the shared rotary key [.., rope]
        r, rd, nope, vd = mla
        qr = _f(inputs["q_rope"])
        if q.ndim != 3 or qr.shape != q.shape[:2] + (hq * rd,) or q.shape[2] != hq * nope \
                or k.shape != q.shape[:2] + (r,) or v.shape != q.shape[:2] + (rd,):
            fail(node, f"expected MLA q [batch, seq, {hq * nope}], q_rope [.., {hq * rd}], k [.., {r}], v [.., {rd}], "
                       f"got {list(q.shape)}, {list(qr.shape)}, {list(k.shape)}, {list(v.shape)}")
        b, s, _ = q.shape
        qh = np.concatenate([_heads(q, b, s, hq, nope), _heads(qr, b, s, hq, rd)], axis=-1)
        kh, vh = _heads(k, b, s, 1, r), _heads(v, b, s, 1, rd)
    else:
        if q.ndim != 3 or k.shape[:2] != q.shape[:2] or v.shape != k.shape:
            fail(node, f"expected q [batch, seq, {hq * dh}] and k, v [batch, seq, {hkv * dh}], got "
                       f"{list(q.shape)}, {list(k.shape)}, {list(v.shape)}")
        b, s, _ = q.shape
        qh, kh, vh = _heads(q, b, s, hq, dh), _heads(k, b, s, hkv, dh), _heads(v, b, s, hkv, dh)
    qpos = np.broadcast_to(np.asarray(ctx.positions), (b, s))
    cached = "k_cache" in node.inputs
    if cached:
        if node.name not in ctx.kv:
            fail(node, "has a KV cache operand but the interpreter holds no cache for it")
        kh, vh = kv_append(ctx.kv[node.name], kh.astype(np.float32), vh.astype(np.float32))
        kh, vh = _f(kh), _f(vh)
        t = kh.shape[2]
        kpos = np.broadcast_to(np.arange(t), (b, t))
    else:
        if ctx.past:
            fail(node, f"no KV cache, but {ctx.past} tokens were stepped before: reset() and step the whole sequence")
        t, kpos = s, qpos
    if mla:
        kh, vh = _mla_expand(node, at, inputs, kh, vh)
        hkv = hq
    scale = at["scale"] if at["scale"] is not None else 1.0 / math.sqrt(dh)
    g = hq // hkv  # query head i uses kv head i // g
    scores = np.einsum("bkgsd,bktd->bkgst", qh.reshape(b, hkv, g, s, dh), kh).reshape(b, hq, s, t) * scale
    if at["softcap"]:
        scores = at["softcap"] * np.tanh(scores / at["softcap"])
    allowed = np.ones((b, 1, s, t), dtype=bool)
    diff = qpos[:, None, :, None] - kpos[:, None, None, :]
    if at["causal"]:
        allowed &= diff >= 0
    if at["sliding_window"]:
        if not at["causal"]:
            fail(node, "sliding_window without causal has no defined meaning")
        allowed &= diff < at["sliding_window"]  # the query and the window - 1 keys before it
    if at["position_bias"] is not None:   # after the scale and softcap, like a mask
        rel = -diff                                   # [b, 1, s, t]: key - query position
        scores = scores + position_bias(node, at, inputs, np.arange(hq)[None, :, None, None], rel)
    keep, additive = _mask(node, inputs, ctx, b, s, t, hq, cached)
    if keep is not None:
        allowed = allowed & keep
    if additive is not None:
        scores = scores + additive
    scores = np.where(allowed, scores, -np.inf)
    m = scores.max(axis=-1, keepdims=True)
    if "sinks" in inputs:  # one extra logit per head that takes probability mass, then is dropped
        sink = _f(inputs["sinks"]).reshape(1, hq, 1, 1)
        m = np.maximum(m, sink)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(scores - m)
    den = e.sum(axis=-1, keepdims=True)
    if "sinks" in inputs:
        den = den + np.exp(sink - m)
    p = np.divide(e, den, out=np.zeros_like(e), where=den > 0)  # fully masked rows give 0
    dv = vh.shape[-1]
    o = np.einsum("bkgst,bktd->bkgsd", p.reshape(b, hkv, g, s, t), vh).reshape(b, hq, s, dv)
    return _out(o.transpose(0, 2, 1, 3).reshape(b, s, hq * dv))


# --- mixture of experts -----------------------------------------------------------------------

def _topk(scores: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-scores, axis=-1, kind="stable")[:, :k]  # ties: lower expert index first


def _glu(node, at, gate, up):
    """Expert nonlinearity: act(gate) * up, act(up) without a gate, or gpt-oss's clamped SwiGLU."""
    fn, params = at["activation"], at["activation_params"] or {}
    if fn == "swiglu_clamped":
        if gate is None:
            fail(node, "swiglu_clamped needs gated experts")
        alpha, limit = params.get("alpha"), params.get("limit")
        if alpha is None or limit is None:
            fail(node, f"swiglu_clamped needs activation_params alpha and limit, got {params}")
        gate, up = np.minimum(gate, limit), np.clip(up, -limit, limit)
        return gate * expit(alpha * gate) * (up + 1.0)
    if params:
        fail(node, f"activation_params {params} have no meaning for activation '{fn}'")
    return _act(fn, up, node) if gate is None else _act(fn, gate, node) * up



def route_tokens(logits: np.ndarray, at, k: int, score_bias=None) -> tuple[np.ndarray, np.ndarray]:
    """(expert ids [T, k], weights [T, k]) of the MoE router for its ``router_fn``.

    ``score_bias`` (DeepSeek-V3 / GLM-4-MoE's correction bias) is added to the scores for the choice
    only; with ``n_group`` > 1 the choice is limited to the ``topk_group`` groups of experts whose
    ``group_score_k`` best biased scores sum highest, the others' scores replaced by ``group_fill``
    (None: -inf).  The weights are the unbiased scores of the chosen experts, divided by their sum if
    ``normalize_topk``, times ``routed_scaling_factor``."""
    fn = at["router_fn"]
    if fn == "topk_softmax":  # softmax over the k selected logits: already normalised
        if score_bias is not None or at["n_group"] > 1:
            raise ValueError("topk_softmax routing takes no score bias or expert groups")
        idx = _topk(logits, k)
        wts = _softmax(np.take_along_axis(logits, idx, axis=1))
        return idx, wts * at["routed_scaling_factor"]
    probs = _softmax(logits) if fn == "softmax_topk" else expit(logits)
    choice = probs if score_bias is None else probs + np.asarray(score_bias, probs.dtype).reshape(-1)
    g = at["n_group"]
    if g > 1:
        t, e = choice.shape
        grouped = choice.reshape(t, g, e // g)
        best = -np.sort(-grouped, axis=-1)[..., :at["group_score_k"]].sum(axis=-1)  # [T, groups]
        keep = np.zeros((t, g), bool)
        np.put_along_axis(keep, _topk(best, at["topk_group"] or g), True, axis=1)
        fill = -np.inf if at["group_fill"] is None else at["group_fill"]
        choice = np.where(np.repeat(keep, e // g, axis=1), choice, fill)
    idx = _topk(choice, k)
    wts = np.take_along_axis(probs, idx, axis=1)
    if at["normalize_topk"]:
        wts = wts / wts.sum(axis=1, keepdims=True)
    return idx, wts * at["routed_scaling_factor"]


def routed_experts(node, at, inputs, xt, mm, dtype):
    """The routed experts of an MoE op: router, top-k, then each expert's gate/up/down on the tokens
    that chose it.  ``mm(role, x, expert=None, bias=None)`` multiplies by one logical matrix, densely
    (the reference) or tile by tile over the placed grids (wafercc.sim.tiled)."""
    e_n, d, i_n = at["num_experts"], at["hidden"], at["intermediate"]
    try:
        idx, wts = route_tokens(mm("router_w", xt, bias=inputs.get("router_b")), at, at["top_k"],
                                inputs.get("router_score_bias"))
    except ValueError as e:
        fail(node, str(e))
    fused = at["gated"] and "gate_up_w" in inputs
    gu_b = np.asarray(inputs["gate_up_b"]).reshape(e_n, 2 * i_n) if "gate_up_b" in inputs else None
    down_b = np.asarray(inputs["down_b"]).reshape(e_n, d) if "down_b" in inputs else None
    y = np.zeros(xt.shape, dtype)
    for e in range(e_n):
        rows, slot = np.nonzero(idx == e)
        if not rows.size:
            continue
        xe = xt[rows]
        if fused:
            h = mm("gate_up_w", xe, e, None if gu_b is None else gu_b[e])
            gate, up = (h[:, 0::2], h[:, 1::2]) if at["gate_up_interleaved"] else (h[:, :i_n], h[:, i_n:])
        else:
            gate = mm("gate_w", xe, e) if at["gated"] else None
            up = mm("up_w", xe, e)
        out = mm("down_w", _glu(node, at, gate, up), e, None if down_b is None else down_b[e])
        y[rows] += wts[rows, slot][:, None] * out  # each row selects expert e at most once
    return y

def moe(node, inputs, ctx):
    at = attrs_of(node)
    d = at["hidden"]
    x = _f(inputs["x"])
    if x.shape[-1] != d:
        fail(node, f"x last dim {x.shape[-1]} != hidden {d}")
    xt = x.reshape(-1, d)

    def mm(role, xs, e=None, bias=None):  # x @ the logical [in, out] matrix of ``role`` (expert e)
        w = _f(inputs[role])
        if w.ndim == 3:
            w = w[e].T if at["experts_transposed"] else w[e]
        elif at["shared_transposed" if role.startswith("shared") else "router_transposed"]:
            w = w.T
        return xs @ w if bias is None else xs @ w + _f(bias)

    if not at["gated"] and ({"gate_w", "gate_up_w", "gate_up_b"} & set(inputs)):
        fail(node, "ungated experts with a gate weight")
    if "gate_up_b" in inputs and "gate_up_w" not in inputs:
        fail(node, "gate_up_b without gate_up_w")
    if at["gate_up_interleaved"] and not (at["gated"] and "gate_up_w" in inputs):
        fail(node, "gate_up_interleaved without a fused gate_up_w")
    y = routed_experts(node, at, inputs, xt, mm, xt.dtype)
    y += _shared(node, at, inputs, xt)
    return _out(y.reshape(x.shape))


def _shared(node, at, inputs, xt):
    si = at["shared_intermediate"]
    present = {r for r in ("shared_gate_w", "shared_up_w", "shared_down_w", "shared_router_w") if r in inputs}
    if not present and not si:
        return 0.0
    if si <= 0 or not {"shared_up_w", "shared_down_w"} <= present:
        fail(node, f"a shared expert needs shared_intermediate > 0, shared_up_w and shared_down_w "
                   f"(have {sorted(present)}, shared_intermediate {si})")

    def mat(role):
        w = _f(inputs[role])
        return w.T if at["shared_transposed"] else w

    gate = xt @ mat("shared_gate_w") if "shared_gate_w" in inputs else None
    out = _glu(node, at, gate, xt @ mat("shared_up_w")) @ mat("shared_down_w")
    if "shared_router_w" in inputs:  # Qwen-MoE style: sigmoid(x . w) scales the shared expert
        w = _f(inputs["shared_router_w"])
        if w.size != xt.shape[1]:
            fail(node, f"shared_router_w {list(w.shape)} must hold {xt.shape[1]} values (hidden -> 1)")
        out = out * expit(xt @ w.reshape(-1))[:, None]
    return out


# --- prefix_tokens -----------------------------------------------------------------------------

def prefix_tokens(node, inputs, ctx):
    at = attrs_of(node)
    x, t = _f(inputs["x"]), _f(inputs["tokens"])
    start, rows = at["start"], t.shape[0] if t.ndim == 2 else -1
    if t.ndim != 2 or x.ndim < 2 or t.shape[1] != x.shape[-1]:
        fail(node, f"tokens {list(t.shape)} must be [rows, {x.shape[-1] if x.ndim else '?'}] for x {list(x.shape)}")
    if start < 0 or start + rows > x.shape[-2]:
        fail(node, f"token rows {start}..{start + rows - 1} do not fit the {x.shape[-2]} rows of x")
    y = x.copy()
    y[..., start:start + rows, :] = t
    return _out(y)


# --- layout ---------------------------------------------------------------------------------

_INT_TYPES = {"i64": np.int64, "i32": np.int32, "i8": np.int8}


def _cast(node, y, dtype_name):
    from ..ir import DType
    dt = DType.parse(dtype_name)
    if dt.is_float:
        return np.asarray(y, dtype=np.float32)  # float precision is not emulated
    if dt is DType.BOOL:
        return np.asarray(y) != 0
    if dt.value not in _INT_TYPES:
        fail(node, f"cast to {dt.value} is not supported")
    y = np.asarray(y)
    return (np.trunc(y) if np.issubdtype(y.dtype, np.floating) else y).astype(_INT_TYPES[dt.value])


def layout(node, inputs, ctx):
    at = attrs_of(node)
    x = np.asarray(inputs["x"])
    kind = at["kind"]
    try:
        shape = tuple(d if isinstance(d, int) else int(ctx.bindings[d]) for d in at["shape"])
    except KeyError as e:
        fail(node, f"shape symbol {e} has no binding")
    if at["perm"] is not None and kind != "transpose":
        fail(node, f"perm given to a {kind}")
    if kind != "slice" and any(at[a] is not None for a in ("axis", "start", "end")):
        fail(node, f"axis/start/end given to a {kind}")
    if kind == "reshape":
        if x.size != math.prod(shape):
            fail(node, f"cannot reshape {list(x.shape)} to {list(shape)}")
        y = x.reshape(shape)
    elif kind == "transpose":
        if at["perm"] is None or sorted(at["perm"]) != list(range(x.ndim)):
            fail(node, f"transpose needs a permutation of {x.ndim} axes, got {at['perm']}")
        y = np.transpose(x, at["perm"])
    elif kind == "cast":
        if at["dtype"] is None:
            fail(node, "cast without a dtype")
        y = x.reshape(shape)
    elif kind == "slice":
        if at["axis"] is None:
            fail(node, "slice without an axis")
        sl = [slice(None)] * x.ndim
        sl[at["axis"]] = slice(at["start"] or 0, at["end"])
        y = x[tuple(sl)]
        if y.ndim == len(shape) + 1 and y.shape[at["axis"]] == 1:
            y = y.squeeze(at["axis"])  # one position picked by a scalar index (e.g. a pooler's token 0)
    else:  # expand
        try:
            y = np.broadcast_to(x, shape).copy()
        except ValueError:
            fail(node, f"cannot expand {list(x.shape)} to {list(shape)}")
    if tuple(y.shape) != shape:
        fail(node, f"{kind} of {list(x.shape)} gives {list(y.shape)}, the node declares {list(shape)}")
    if at["dtype"] is not None:
        return _cast(node, y, at["dtype"])
    return y if not np.issubdtype(y.dtype, np.floating) else _out(y)


KERNELS = {"matmul": matmul, "embedding": embedding, "norm": norm, "elementwise": elementwise,
           "activation": activation, "softmax": softmax, "rotary": rotary, "attention": attention,
           "moe": moe, "layout": layout, "prefix_tokens": prefix_tokens, "onnx": onnx_op}
