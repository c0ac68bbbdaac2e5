"""Multi-head latent attention (DeepSeek-V2/V3 MLA), lowered to the IR attention's MLA mode.

MLA projects each token to one narrow row, ``kv_lora_rank`` latent values plus a ``qk_rope_head_dim``
key shared by every head, normalises the latent and up-projects it per head to the keys' non-rotary
part and the values.  What a cache stores is that row (Hugging Face caches it compressed).  The IR's
``attention`` op has an MLA mode for it (``kv_lora_rank``, ``rope_dim``, ``v_head_dim``, operands
``q_rope`` and ``kv_b_w``, caches of the latent and rope-key rows: docs/ir.md).

Found structurally (:func:`_mla_seeds`): a projection whose output is split in two along the features,
one part normalised (a ReduceMean on its way) and multiplied by a 2-D weight whose input width is that
part's width (``kv_b_proj``).  :func:`detect_mla` grows one region from there to the probabilities x V
product whose V descends from that up-projection: everything computed from the query projection, the
normalised latent and the shared rope part on the way (the per-head nope/rope split of q, both
rotaries, the up-projection, the key assembly -- ``new_empty`` + two slice copies, i.e.
ConstantOfShape + ScatterND, or a Concat --, scale, mask, softmax, past-cache appends).  It is emitted
(:func:`emit_mla`) as layout slices of q, two IR rotary ops (q's rope part per head, the shared key
with ``num_heads`` 1) and one MLA ``attention``.  A split projection that matches the seed but not the
rest is refused by name (:func:`refuse_mla`).

HF's ``rope_interleave`` rotates the interleaved pairs and writes the result de-interleaved (evens,
then odds) for q and k alike; QK^T is unchanged by the same permutation of both sides' rope dims, so
the IR's interleaved rotary (pairs kept in place) gives the same scores, and the cached rope key has
the same width.
"""
from __future__ import annotations

import math

from ..errors import UnsupportedOpError
from ..ir import BATCH, CONTEXT, ValueKind
from .onnx_masks import mask_facts
from .onnx_regions import Region, _slice_step, detect_rotary, weight_of
from .onnx_views import View

_THROUGH = {"Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Transpose", "Pow", "ReduceMean", "Add",
            "Sqrt", "Div", "Mul", "Reciprocal", "SimplifiedLayerNormalization", "RMSNormalization",
            "LayerNormalization", "Concat", "Expand"}


def _width(src, t):
    s = src.shapes.get(t)
    return s[-1] if s and isinstance(s[-1], int) else None


def _halves(src, t):
    """The two feature slices of ``t`` when it is split in two along its last axis."""
    users = [u for u in src.users(t) if u.op_type not in ("Shape", "Size")]
    if len(users) == 1 and users[0].op_type == "Split" and len([o for o in users[0].output if o]) == 2:
        axis = src.attr(users[0], "axis", 0)
        rank = len(src.shapes.get(t) or ())
        if rank and axis in (-1, rank - 1):
            return list(users[0].output)
    if len(users) == 1 and users[0].op_type == "SplitToSequence":  # dynamo: SplitToSequence + SequenceAt
        at = [u for u in src.users(users[0].output[0]) if u.op_type == "SequenceAt"]
        pos = sorted((src.scalar(u.input[1]), u.output[0]) for u in at if src.scalar(u.input[1]) is not None)
        if len(pos) == 2 and len(at) == 2:
            return [t for _, t in pos]
    if len(users) == 2 and all(u.op_type == "Slice" for u in users):
        return [u.output[0] for u in users]
    return None


def _normalised_then_projected(src, t, width, limit=48):
    """A MatMul with a [width, n] weight reached from ``t`` through a normalisation (ReduceMean)."""
    frontier, seen, normed = [(t, False)], set(), None
    while frontier and limit > 0:
        t, norm = frontier.pop(0)
        if (t, norm) in seen:
            continue
        seen.add((t, norm))
        for u in src.users(t):
            limit -= 1
            if u.op_type in ("MatMul", "Gemm") and u.input[0] == t and norm:
                w = weight_of(src, u.input[1])
                shape = src.shapes.get(w[0]) if w else None
                if shape and len(shape) == 2 and (shape[1] if (w[1] ^ bool(u.op_type == "Gemm" and
                                                  src.attr(u, "transB", 0))) else shape[0]) == width:
                    return u
            elif u.op_type in _THROUGH:
                normed = norm or u.op_type in ("ReduceMean", "SimplifiedLayerNormalization", "RMSNormalization",
                                               "LayerNormalization")
                frontier.extend((o, normed) for o in u.output if o)
    return None


def _mla_seeds(src, act):
    """(kv_a node index, latent tensor, r, rope tensor, rope width, kv_b up-projection node) per MLA."""
    for i, node in enumerate(src.nodes):
        if node.op_type not in ("MatMul", "Gemm") or node.input[0] not in act:
            continue
        w = weight_of(src, node.input[1])
        if w is None or len(src.shapes.get(w[0], ())) != 2:
            continue
        out = node.output[0]
        users = src.users(out)
        if len(users) == 1 and users[0].op_type == "Add":   # a bias (attention_bias), folded into the matmul
            b = weight_of(src, users[0].input[1] if users[0].input[0] == out else users[0].input[0])
            if b is not None and len(src.shapes.get(b[0], ())) == 1:
                out = users[0].output[0]
        parts = _halves(src, out)
        if not parts:
            continue
        widths = [_width(src, p) for p in parts]
        for (lat, r), (kr, rope) in ((parts[0], widths[0]), (parts[1], widths[1])), \
                                     ((parts[1], widths[1]), (parts[0], widths[0])):
            if not r or not rope or rope >= r:
                continue
            up = _normalised_then_projected(src, lat, r)
            if up is not None:
                yield i, lat, r, kr, rope, up
                break


def refuse_mla(src, act: set[str], handled=frozenset()) -> None:
    """Raise a one-line UnsupportedOpError at the first multi-head latent attention not lowered
    (``handled``: the kv_a projections whose region :func:`detect_mla` found)."""
    for i, lat, r, kr, rope, up in _mla_seeds(src, act):
        node = src.nodes[i]
        if i not in handled:
            raise UnsupportedOpError(
                node.op_type, node=node.name or src.scope(node),
                detail=f"multi-head latent attention (MLA: each token's {r}-wide latent and {rope}-wide "
                       f"shared rotary key, the latent up-projected per head by '{up.name or up.op_type}') "
                       "whose attention was not recognised (expected the up-projection's values to meet a "
                       "softmax in a probabilities x V product, the query heads to come from one projection and "
                       "the key from the latent and the rope part only)")


# -- the region ------------------------------------------------------------------------------------
_PASS = {"Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Transpose", "Expand", "Dropout", "Contiguous"}


def _graph_input(src, t):
    """The graph input ``t`` is through casts, identities and one-input concats; None if computed."""
    for _ in range(8):
        if t in src.graph_inputs:
            return t
        p = src.prod(t)
        if p is None or not (p.op_type in ("Cast", "Identity", "CastLike", "Slice")
                             or (p.op_type == "Concat" and len([i for i in p.input if i]) == 1)):
            return None
        t = p.input[0]
    return None


def _back(src, t, act):
    """``t`` traced back through layout ops and past-cache appends: (its source, [(past input, append)])."""
    pasts = []
    while True:
        p = src.prod(t)
        if p is None:
            return t, pasts
        if p.op_type in _PASS:
            t = p.input[0]
            continue
        if p.op_type == "Concat":
            acts = [x for x in p.input if x in act]
            others = [x for x in p.input if x and x not in act]
            roots = [_graph_input(src, x) for x in others]
            if len(acts) == 1 and others and all(roots):
                pasts.append((roots[0], p.output[0]))
                t = acts[0]
                continue
        return t, pasts


def _roots(src, t, act, stop=frozenset(), limit=400):
    """Where ``t``'s activation ancestors start: tensors in ``stop`` and outputs of weight projections."""
    roots, seen, stack = set(), set(), [t]
    while stack and limit > 0:
        limit -= 1
        u = stack.pop()
        if u in seen or u not in act:
            continue
        seen.add(u)
        p = src.prod(u)
        if u in stop or p is None or (p.op_type in ("MatMul", "Gemm") and weight_of(src, p.input[1])):
            roots.add(u)
            continue
        stack.extend(i for i in p.input if i)
    return roots if not stack else None


def _from_softmax(src, t, act, depth=4):
    p = src.prod(t)
    if p is None or depth == 0:
        return False
    if p.op_type == "Softmax":
        return True
    return any(_from_softmax(src, i, act, depth - 1) for i in p.input if i in act)


def _out_width(src, t, act):
    """Input width of the weight projection reached from ``t`` through layout ops (o_proj)."""
    for _ in range(8):
        us = [u for u in src.users(t) if u.op_type not in ("Shape", "Size")]
        if len(us) != 1:
            return None
        u = us[0]
        if u.op_type in ("MatMul", "Gemm") and u.input[0] == t:
            w = weight_of(src, u.input[1])
            shape = src.shapes.get(w[0]) if w else None
            if not shape or len(shape) != 2:
                return None
            return shape[1] if w[1] ^ bool(u.op_type == "Gemm" and src.attr(u, "transB", 0)) else shape[0]
        if u.op_type not in _PASS:
            return None
        t = u.output[0]
    return None


def detect_mla(src, act: set[str], trig: set[str], claimed: set[int]) -> list[Region]:
    """One region per multi-head latent attention (see the module docstring)."""
    out = []
    for seed, lat, r, kr, rope, up in _mla_seeds(src, act):
        reg = _mla_region(src, act, trig, claimed, seed, r, kr, rope, up)
        if reg is not None:
            out.append(reg)
    return out


def _mla_region(src, act, trig, claimed, seed, r, kr, rope, up):
    w = weight_of(src, up.input[1])
    if w is None:
        return None
    transposed = w[1] ^ bool(up.op_type == "Gemm" and src.attr(up, "transB", 0))
    wshape = src.shapes.get(w[0])
    width = wshape[0] if transposed else wshape[1]
    latent, pasts = _back(src, up.input[0], act)
    # forward from the up-projection: the scores (keys) and the probabilities x V product (values)
    reach, frontier, qk, pv = {up.output[0]}, [up.output[0]], None, None
    while frontier and (pv is None or qk is None):
        t = frontier.pop(0)
        for u in src.users(t):
            if u.op_type in ("Shape", "Size"):
                continue
            if u.op_type == "Attention" and len(u.input) > 2 and u.input[1] in reach and u.input[2] in reach \
                    and u.input[0] not in reach:   # opset 23: QK^T, mask, softmax and P x V in one op
                qk = pv = u
                break
            if u.op_type == "MatMul" and u.input[1] in reach and u.input[0] not in reach and u.input[0] in act:
                if _from_softmax(src, u.input[0], act):
                    pv = pv or u
                else:
                    qk = qk or u
                continue
            for o in u.output:
                if o and o not in reach:
                    reach.add(o)
                    frontier.append(o)
    if qk is None or pv is None:
        return None
    fused = pv.op_type == "Attention"
    if fused and (any(pv.input[4:]) or any(pv.output[1:]) or src.attr(pv, "softcap", 0.0)):
        return None
    q_roots = _roots(src, qk.input[0], act)
    kv = {up.output[0], kr}
    k_roots = (_roots(src, qk.input[1], act, kv) or {None}) | (_roots(src, pv.input[2 if fused else 1], act, kv) or {None})
    if not q_roots or len(q_roots) != 1 or k_roots != kv or len(src.shapes.get(next(iter(q_roots))) or ()) != 3:
        return None
    q = q_roots.pop()
    # the nodes between: computed from q, the latent and the rope part, on the way to P x V
    producer = src.producer
    pv_i = producer[pv.output[0]]
    fwd, frontier = set(), [q, latent, kr]
    seen = set(frontier)
    while frontier:
        t = frontier.pop()
        for u in src.users(t):
            j = producer[u.output[0]]
            if j in fwd:
                continue
            fwd.add(j)
            if j == pv_i:
                continue
            for o in u.output:
                if o and o not in seen:
                    seen.add(o)
                    frontier.append(o)
    nodes, stack = {pv_i}, [pv_i]
    while stack:
        for t in src.nodes[stack.pop()].input:
            j = producer.get(t)
            if j is not None and j in fwd and j not in nodes:
                nodes.add(j)
                stack.append(j)
    if nodes & claimed:
        return None
    # nothing computed inside is read outside, but for the present.* cache outputs
    present = []
    for j in nodes:
        for o in src.nodes[j].output:
            if not o or o not in act or o == pv.output[0]:
                continue
            if o in src.graph_outputs:
                if not _appended(src, o, act):
                    return None
                present.append(o)
            if any(producer[u.output[0]] not in nodes and u.op_type not in ("Shape", "Size") for u in src.users(o)):
                return None
    # head counts: q is [.., H*(nope+rope)], kv_b gives [.., H*(nope+v)], o_proj reads [.., H*v]
    fq, ov = src.shapes[q][-1], _out_width(src, pv.output[0], act)
    if not all(isinstance(x, int) for x in (fq, ov, width)) or (fq - width + ov) % rope:
        return None
    heads = (fq - width + ov) // rope
    if heads <= 0 or fq % heads or ov % heads:
        return None
    dv, nope = ov // heads, fq // heads - rope
    if nope <= 0 or dv <= 0 or heads * (nope + dv) != width:
        return None
    # scale (every scalar multiply on the q, key and score paths), mask, rotary of both rope parts
    scale, mask = 1.0, None
    if fused:
        a = src.attr(pv, "scale")
        scale = a if a is not None else 1 / math.sqrt(nope + rope)
        mask = pv.input[3] if len(pv.input) > 3 and pv.input[3] else None
    scores = set() if fused else _below(src, nodes, qk.output[0])
    below = {t: _below(src, nodes, t) for t in (q, kr)}
    for j in sorted(nodes):
        n = src.nodes[j]
        ins = [i for i in n.input if i]
        if n.op_type in ("Mul", "Div") and len(ins) == 2 and ins[0] in act and ins[1] not in act \
                and src.scalar(ins[1]) is not None:
            c = src.scalar(ins[1])
            scale *= c if n.op_type == "Mul" else 1 / c
        elif n.op_type == "Mul" and len(ins) == 2 and ins[1] in act and ins[0] not in act \
                and src.scalar(ins[0]) is not None:
            scale *= src.scalar(ins[0])
        elif n.op_type in ("Add", "Where") and j in scores and n.op_type == "Add":
            other = [i for i in ins if i not in act]
            if len(other) == 1 and len(src.shapes.get(other[0]) or ()) >= 2:
                mask = mask or other[0]
        elif n.op_type == "Where" and j in scores and ins[0] not in act \
                and src.prod(ins[0]) is not None and src.prod(ins[0]).op_type not in ("IsNaN", "IsInf"):
            mask = mask or ins[0]
    rot = {}
    for side in (kr, q):
        muls = [j for j in nodes if src.nodes[j].op_type == "Mul" and any(a in trig for a in src.nodes[j].input)
                and j in below[side]]
        if not muls:
            return None
        found = detect_rotary(src, muls[0], act, trig, set()) if side == kr else None
        tables = frozenset(a for j in muls for a in src.nodes[j].input if a in trig)
        step2 = any(src.nodes[j].op_type == "Slice" and _slice_step(src, src.nodes[j]) == 2 for j in below[side])
        if side == kr:
            if found is None:
                return None
            rot = {"interleaved": found.params["interleaved"], "theta": found.params["theta"], "tables": tables,
                   "step2": step2, "scaling": found.params.get("scaling")}
        elif tables != rot["tables"] or step2 != rot["step2"]:
            return None
    return Region("mla", q, pv.output[0], nodes, {
        "seed": seed, "q": q, "latent": latent, "rope": kr, "heads": heads, "nope": nope, "rope_dim": rope,
        "v_head_dim": dv, "rank": r, "w": w[0], "transposed": transposed,
        "scale": scale, "mask": mask, "interleaved": rot["interleaved"], "theta": rot["theta"],
        "scaling": rot["scaling"],
        "past_latent": pasts[0][0] if pasts else None,
        "past_rope": next((_graph_input(src, i) for j in sorted(below[kr]) for i in src.nodes[j].input
                           if src.nodes[j].op_type == "Concat" and i and i not in act and _graph_input(src, i)),
                          None),
        "present": present, "is_causal": bool(fused and src.attr(pv, "is_causal", 0))})


def _appended(src, t, act):
    """``t`` is a past cache input with this step appended (a present.* output), through casts."""
    for _ in range(6):
        p = src.prod(t)
        if p is None:
            return False
        if p.op_type == "Concat":
            return any(i in act for i in p.input) and any(i and i not in act and _graph_input(src, i)
                                                         for i in p.input)
        if p.op_type not in ("Cast", "Identity", "Slice"):
            return False
        t = p.input[0]
    return False


def _below(src, nodes, t):
    """The region's nodes computed from ``t``."""
    out, stack = set(), [t]
    while stack:
        for u in src.users(stack.pop()):
            j = src.producer[u.output[0]]
            if j in nodes and j not in out:
                out.add(j)
                stack.extend(o for o in u.output if o)
    return out


def emit_mla(lf, r: Region, node) -> None:
    """The region as IR: q split per head into its nope and rope parts, the two rotaries, one MLA
    attention (with the latent and rope-key caches of a decoder); its output is P x V's view."""
    p = r.params
    vals = []
    for role in ("q", "latent", "rope"):
        v = lf.views.get(p[role])
        if not isinstance(v, View) or v.layout != "flat" or v.scale != 1.0:
            lf._fail(node, f"multi-head latent attention whose {role} '{p[role]}' is not a plain activation")
        vals.append(v)
    q, latent, kr = vals
    h, nope, rope, dv = p["heads"], p["nope"], p["rope_dim"], p["v_head_dim"]
    heads = View(q.value, "bshd", nope + rope)
    q_nope = lf._slice_heads(node, heads, 0, nope)
    q_rope = lf._slice_heads(node, heads, nope, nope + rope)
    rot = {}
    if p["interleaved"]:
        rot["interleaved"] = True
    if p["theta"]:
        rot["theta"] = p["theta"]
    if p.get("scaling"):       # YaRN tables and attention factor read off the file (onnx_rope)
        rot["scaling"] = p["scaling"]
    q_rope = lf._emit(node, "rotary", {"x": q_rope}, {"num_heads": h, "head_dim": rope, **rot})
    k_rope = lf._emit(node, "rotary", {"x": kr.value}, {"num_heads": 1, "head_dim": rope, **rot})
    pasts = frozenset(x for x in (p["past_latent"], p["past_rope"]) if x)
    facts = mask_facts(lf.src, p["mask"], lf.act, frozenset(lf.cached.values()) | pasts) if p["mask"] else None
    dh = nope + rope
    attrs = {"num_heads": h, "num_kv_heads": 1, "head_dim": dh,
             "causal": bool(facts and facts.causal) or bool(pasts) or p["is_causal"],
             "kv_lora_rank": p["rank"], "rope_dim": rope, "v_head_dim": dv}
    if facts and facts.sliding_window:
        attrs["sliding_window"] = facts.sliding_window
    if not math.isclose(p["scale"], 1 / math.sqrt(dh), rel_tol=1e-5):
        attrs["scale"] = float(p["scale"])
    wb = lf.ties.find(p["w"], p["transposed"], lf.weights)
    if wb[1]:
        attrs["kv_b_transposed"] = True
    ins = {"q": q_nope, "q_rope": q_rope, "k": latent.value, "v": k_rope, "kv_b_w": lf._weight(wb[0])}
    if attrs["causal"]:
        layer = lf.src.layer_of(node)
        tag = layer if layer is not None else lf.kv_index
        lf.kv_index += 1
        dt = lf.g.values[latent.value].dtype
        for role, w in (("k_cache", p["rank"]), ("v_cache", rope)):
            name = f"layers.{tag}.{role}"
            while name in lf.g.values:
                name += "_"
            lf.g.add_value(name, (BATCH, 1, CONTEXT, w), dt, ValueKind.KV_CACHE)
            ins[role] = name
    out = lf._emit(node, "attention", ins, attrs)
    lf.views[r.y] = View(out, "bhsd", dv)
    for value, past in ((latent.value, p["past_latent"]), (k_rope, p["past_rope"])):
        if past:
            lf.cached[value] = past
    lf.present.update(p["present"])
