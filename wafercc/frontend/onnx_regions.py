"""Find multi-node patterns in an ONNX graph before the walk lifts it.

Each detector returns :class:`Region` objects: the ACT input tensor ``x``, the
output tensor ``y``, the ONNX nodes the region covers and what it computes.
The lifter emits one IR op per region when it reaches the producer of ``y``.
"""
from __future__ import annotations

import dataclasses
from typing import Any


from .pointwise import POINTWISE_OPS, classify_activation, eval_pointwise
from .onnx_rope import rope_frequencies

LAYOUT_OPS = {"Reshape", "Transpose", "Unsqueeze", "Squeeze", "Expand", "Identity", "Cast", "Flatten"}


@dataclasses.dataclass
class Region:
    kind: str                  # norm | rotary | activation | moe
    x: str
    y: str
    nodes: set[int]
    params: dict[str, Any]


def _src_weight(src, t, depth=0):
    """(initializer name, transposed) if ``t`` is an initializer seen through layout ops."""
    if t in src.inits:
        return t, False
    node = src.prod(t)
    if node is None or depth > 6:
        return None
    if node.op_type in ("Identity", "Cast", "CastLike", "Reshape", "Unsqueeze", "Squeeze"):
        return _src_weight(src, node.input[0], depth + 1)
    if node.op_type == "Transpose":
        w = _src_weight(src, node.input[0], depth + 1)
        perm = list(src.attr(node, "perm") or [])
        if w and perm == list(range(len(perm))):
            return w
        if w and perm and perm[-2:] == [len(perm) - 1, len(perm) - 2] and perm[:-2] == list(range(len(perm) - 2)):
            return w[0], not w[1]
        return None
    return None


def weight_of(src, t):
    return _src_weight(src, t)


# ---------------------------------------------------------------------------------
# norms

def _other(node, t):
    ins = [i for i in node.input if i]
    return ins[1] if ins[0] == t else ins[0] if len(ins) > 1 and ins[1] == t else None


def _single_user(src, t, ops):
    us = src.users(t)
    if len(us) == 1 and us[0].op_type in ops:
        return us[0]
    return None


def _skip_casts(src, t, nodes):
    while True:
        u = _single_user(src, t, ("Cast",))
        if u is None:
            return t
        nodes.add(src.producer[u.output[0]])
        t = u.output[0]


def _back_cast(src, t):
    node = src.prod(t)
    while node is not None and node.op_type == "Cast":
        t = node.input[0]
        node = src.prod(t)
    return t


def detect_norm(src, mean_idx: int, act: set[str]) -> Region | None:
    """ReduceMean-anchored RMSNorm / LayerNorm, ending after the scale (and bias)."""
    mean = src.nodes[mean_idx]
    inp = mean.input[0]
    if inp not in act:
        return None
    p = src.prod(inp)
    nodes = {mean_idx}
    if p is not None and (p.op_type == "Pow" and src.scalar(p.input[1]) == 2.0
                          or p.op_type == "Mul" and p.input[0] == p.input[1]):
        kind, x = "rms", _back_cast(src, p.input[0])
        nodes.add(src.producer[inp])
        centered = p.input[0]
        var_node_out = mean.output[0]
    else:
        # layer norm: mean(x) -> x - mean -> square -> mean -> ...
        kind, x = "layer", _back_cast(src, inp)
        # x - mean, computed once or (some models) once per use
        subs = [u for u in src.users(mean.output[0]) if u.op_type == "Sub" and u.input[1] == mean.output[0]]
        if not subs:
            return None
        nodes.update(src.producer[u.output[0]] for u in subs)
        centered_set = [u.output[0] for u in subs]
        sq = next((u for c in centered_set for u in src.users(c) if u.op_type == "Pow" and src.scalar(u.input[1]) == 2.0
                   or u.op_type == "Mul" and u.input[0] == u.input[1] == c), None)
        if sq is None:
            return None
        centered = sq.input[0]
        nodes.add(src.producer[sq.output[0]])
        m2 = _single_user(src, sq.output[0], ("ReduceMean",))
        if m2 is None:
            return None
        nodes.add(src.producer[m2.output[0]])
        var_node_out = m2.output[0]
    add = _single_user(src, var_node_out, ("Add",))
    if add is None:
        return None
    eps = src.scalar(_other(add, var_node_out))
    if eps is None:
        return None
    nodes.add(src.producer[add.output[0]])
    t = add.output[0]
    u = _single_user(src, t, ("Sqrt", "Rsqrt"))
    if u is None:
        return None
    nodes.add(src.producer[u.output[0]])
    t, inverted = u.output[0], u.op_type == "Rsqrt"
    if not inverted:
        r = _single_user(src, t, ("Reciprocal", "Div"))
        if r is not None and (r.op_type == "Reciprocal" or r.input[1] == t and src.scalar(r.input[0]) == 1.0):
            nodes.add(src.producer[r.output[0]])
            t, inverted = r.output[0], True
    t = _skip_casts(src, t, nodes)
    users = src.users(t)
    if len(users) != 1:
        return None
    apply = users[0]
    scaled = {_back_cast(src, c) for c in (centered_set if kind == "layer" else [centered])} | {x}
    if inverted and apply.op_type == "Mul" and _back_cast(src, _other(apply, t)) in scaled:
        pass
    elif not inverted and apply.op_type == "Div" and apply.input[1] == t:
        pass
    else:
        return None
    nodes.add(src.producer[apply.output[0]])
    y = _skip_casts(src, apply.output[0], nodes)
    scale = bias = None
    offset = 0.0
    u = _single_user(src, y, ("Mul",))
    if u is not None:
        w = weight_of(src, _other(u, y))
        if w is None:
            # (1 + w) scales (Gemma-style): Add(w, 1) folded into the scale
            pa = src.prod(_other(u, y))
            if pa is not None and pa.op_type == "Add":
                for a, b in ((pa.input[0], pa.input[1]), (pa.input[1], pa.input[0])):
                    if weight_of(src, a) and src.scalar(b) is not None:
                        w, offset = weight_of(src, a), src.scalar(b)
                        break
        if w is not None:
            scale = w[0]
            nodes.add(src.producer[u.output[0]])
            y = _skip_casts(src, u.output[0], nodes)
            if kind == "layer":
                ub = _single_user(src, y, ("Add",))
                wb = weight_of(src, _other(ub, y)) if ub is not None else None
                if wb is not None:
                    bias = wb[0]
                    nodes.add(src.producer[ub.output[0]])
                    y = ub.output[0]
    return Region("norm", x, y, nodes, {"kind": kind, "eps": float(eps), "scale": scale, "bias": bias,
                                        "scale_offset": float(offset)})


# ---------------------------------------------------------------------------------
# pointwise activations

def detect_activation(src, anchor_idx: int, act: set[str], claimed: set[int]) -> Region | None:
    """A connected pointwise region with one ACT input and scalar constants only."""
    anchor = src.nodes[anchor_idx]
    acts = [t for t in anchor.input if t in act]
    if len(acts) != 1:
        return None
    nodes = {anchor_idx}
    # backward: absorb pointwise producers (scalar constants only) until one root input remains
    roots: set[str] = set()
    stack = list(acts)
    while stack:
        t = stack.pop()
        p = src.prod(t)
        i = src.producer.get(t)
        pure = p is not None and p.op_type in POINTWISE_OPS and i not in claimed and all(
            a in act or not a or (src.const(a) is not None and src.const(a).size == 1) for a in p.input)
        if not pure or len(nodes) > 24:
            roots.add(t)
            continue
        if i not in nodes:
            nodes.add(i)
            stack.extend(a for a in p.input if a in act)
    if len(roots) != 1:
        return None
    x = roots.pop()
    inside = {o for i in nodes for o in src.nodes[i].output} | {x}

    def scalar(a):
        return src.const(a) is not None and src.const(a).size == 1

    # forward: absorb pointwise ops whose operands are all inside or scalar constants
    changed = True
    while changed and len(nodes) <= 24:
        changed = False
        for t in list(inside):
            for u in src.users(t):
                i = src.producer[u.output[0]]
                if u.op_type not in POINTWISE_OPS or i in claimed or i in nodes:
                    continue
                if all(a in inside or scalar(a) for a in u.input if a):
                    nodes.add(i)
                    inside.add(u.output[0])
                    changed = True
    # exactly one value may leave the region
    outs = [o for i in nodes for o in src.nodes[i].output
            if o in src.graph_outputs or any(src.producer[u.output[0]] not in nodes for u in src.users(o))]
    if len(outs) != 1:
        return None
    y = outs[0]
    order = sorted(nodes)

    def fn(v):
        vals = {x: v}
        for i in order:
            n = src.nodes[i]
            args = [vals[t] if t in vals else src.const(t) for t in n.input if t]
            vals[n.output[0]] = eval_pointwise(src, n, args)
        return vals[y]

    name = classify_activation(fn)
    if name is None:
        return None
    return Region("activation", x, y, nodes, {"fn": name})


# ---------------------------------------------------------------------------------
# rotary embeddings

ROTARY_OPS = {"Mul", "Add", "Sub", "Neg", "Slice", "Split", "Concat", "SplitToSequence", "SequenceAt",
              "Unsqueeze", "Reshape", "Flatten"}  # the last three: interleaved pairs, stacked and flattened
_TRAILING = {"Unsqueeze", "Reshape", "Flatten"}


def trig_tensors(src, act: set[str]) -> set[str]:
    """Non-ACT tensors computed from Cos/Sin (the rotary tables), and rotary tables an exporter
    folded to constants (see :func:`folded_tables`)."""
    trig: set[str] = set()
    for n in src.nodes:
        if (n.op_type in ("Cos", "Sin") or any(t in trig for t in n.input)) and not any(t in act for t in n.input):
            trig.update(n.output)
    return trig | folded_tables(src, act)


def folded_tables(src, act: set[str]) -> set[str]:
    """Non-activation, non-scalar operands of a Mul with an activation that may be rotary tables
    not computed by Cos/Sin in the graph: folded to the traced positions by a static-shape export,
    or looked up by position in a precomputed sinusoid table (GPT-J).  Only candidates:
    :func:`detect_rotary` accepts them only inside a rotate-half structure (a negated half and two
    distinct tables of one shape), so a plain scaling by a constant is never one."""
    found: set[str] = set()
    for n in src.nodes:
        if n.op_type != "Mul" or not any(t in act for t in n.input):
            continue
        for t in n.input:
            shape = src.shapes.get(t)
            if t in act or src.scalar(t) is not None or (shape is not None and len(shape) < 2):
                continue
            found.add(t)
    return found


def detect_rotary(src, seed_idx: int, act: set[str], trig: set[str], claimed: set[int]) -> Region | None:
    """Grow from a Mul(x-ish, cos/sin) node to the region combining rotated halves."""
    # backward: find x through slicing / negation / concatenation of its halves
    nodes: set[int] = set()
    stack = [seed_idx]
    roots: set[str] = set()
    while stack:
        i = stack.pop()
        if i in nodes:
            continue
        nodes.add(i)
        n = src.nodes[i]
        for t in n.input:
            if t not in act:
                continue
            p = src.producer.get(t)
            pn = src.nodes[p] if p is not None else None
            if pn is not None and pn.op_type in ("Slice", "Split", "Neg", "Concat", "Gather", "SplitToSequence",
                                                 "SequenceAt") and p not in claimed:
                stack.append(p)
            else:
                roots.add(t)
    seed_x = [t for t in src.nodes[seed_idx].input if t in act]
    if len(seed_x) == 1 and not any(src.nodes[i].op_type == "Neg" for i in nodes) \
            and any(u.op_type in ("Slice", "Split", "SplitToSequence") for u in src.users(seed_x[0])):
        # the x * cos term of x * cos + rotate_half(x) * sin: x is its operand as it is (a partial
        # rotary's first part of each head, a split of a fused QKV), not the tensor it was sliced from
        roots = set(seed_x)
    if len(roots) != 1:
        return None
    x = roots.pop()
    # forward from x: everything between x and the combine over rotary ops
    region = set()
    frontier = [x]
    inside = {x}
    while frontier:
        t = frontier.pop()
        for u in src.users(t):
            i = src.producer[u.output[0]]
            if i in region or u.op_type not in ROTARY_OPS or i in claimed:
                continue
            ok = all(a in inside or a not in act or not a for a in u.input)
            if u.op_type == "Mul" and not any(a in trig for a in u.input):
                ok = False
            if u.op_type == "Concat" and not all(a in inside for a in u.input if a):
                ok = False   # rotate-half joins two halves of x; a KV-cache append joins a past input
            if not ok:
                continue
            region.add(i)
            for o in u.output:
                inside.add(o)
                frontier.append(o)
    # layout ops only belong to the rotation if the rotation consumes them (not e.g. a GQA repeat after it)
    while True:
        inner = {a for i in region for a in src.nodes[i].input}
        tail = [i for i in region if src.nodes[i].op_type in _TRAILING
                and not any(o in inner for o in src.nodes[i].output)]
        if not tail:
            break
        region.difference_update(tail)
    # a Shape read of an inner tensor (a flatten's target shape) does not make it an output
    outs = [o for i in region for o in src.nodes[i].output
            if any(src.producer[u.output[0]] not in region and u.op_type not in ("Shape", "Size")
                   for u in src.users(o)) or o in src.graph_outputs]
    if len(outs) != 1 or not any(a in trig for i in region for a in src.nodes[i].input):
        return None
    y = outs[0]
    # the tables are what multiplies x: slice bounds read off a table's shape (Shape -> Gather) are
    # trig-derived too, and an optimizer's node order can put them first
    tables = [a for i in sorted(region) if src.nodes[i].op_type == "Mul" for a in src.nodes[i].input if a in trig] \
        or [a for i in sorted(region) for a in src.nodes[i].input if a in trig]
    if not all(_computed_by_trig(src, a) for a in tables) and not _folded_rotation(src, region, tables):
        return None
    rdim = src.shapes.get(tables[0], (None,))[-1]
    negs = {o for i in region if src.nodes[i].op_type == "Neg" for o in src.nodes[i].output}
    rotate_half = any(src.nodes[i].op_type == "Concat" and negs & set(src.nodes[i].input) for i in region)
    if isinstance(rdim, int) and not rotate_half and \
            not any(src.nodes[i].op_type == "Mul" and x in src.nodes[i].input for i in region):
        rdim *= 2  # the tables multiply the halves of x (gpt-oss's split halves), not x: half as wide
    interleaved = any(src.nodes[i].op_type == "Slice" and _slice_step(src, src.nodes[i]) == 2 for i in region)
    return Region("rotary", x, y, region, {"rotary_dim": rdim if isinstance(rdim, int) else 0,
                                           "interleaved": interleaved, **rope_frequencies(src, tables, rdim)})


def _computed_by_trig(src, t: str) -> bool:
    """True if a Cos or Sin node computes ``t`` (through any non-activation ops)."""
    seen, stack = set(), [t]
    while stack:
        u = stack.pop()
        node = src.prod(u)
        if u in seen or node is None:
            continue
        seen.add(u)
        if node.op_type in ("Cos", "Sin"):
            return True
        stack.extend(i for i in node.input if i)
    return False


def _folded_rotation(src, region, tables) -> bool:
    """A region built on constant tables is a rotation only with a negated half (rotate-half's Neg,
    split halves' Sub) and two distinct tables (cos and sin) of one shape."""
    if not any(src.nodes[i].op_type in ("Neg", "Sub") for i in region):   # rotate-half, or split halves
        return False
    distinct = sorted(set(tables))
    static = {tuple(d if isinstance(d, int) else None for d in src.shapes.get(t) or ()) for t in distinct}
    return len(distinct) >= 2 and len(static) == 1      # symbolic dims (named apart) compare as unknown


def _slice_step(src, node):
    if len(node.input) >= 5 and node.input[4]:
        v = src.const(node.input[4])
        return int(v.reshape(-1)[0]) if v is not None else 1
    return 1
