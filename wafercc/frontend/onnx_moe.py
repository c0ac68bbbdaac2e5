"""Mixture-of-experts regions: router + top-k + expert matmuls -> one IR ``moe`` op.

Anchored on TopK over activations.  The region runs from the router's input
to the first tensor that every path from the TopK passes through (where the
weighted expert outputs are summed); expert weights are the 3-D initializers
the region multiplies with, their roles read from shapes and dataflow.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from onnx import numpy_helper

from .onnx_regions import LAYOUT_OPS, Region, detect_activation, weight_of

# ops that sum the weighted expert outputs back to one row per token
_COMBINE_OPS = {"ReduceSum", "ScatterND", "ScatterElements", "Sum", "Add"}
_ACT_ANCHORS = {"Sigmoid": "silu", "Erf": "gelu", "Tanh": "gelu_tanh", "Relu": "relu", "Gelu": "gelu"}


# ops a router score passes through unchanged in value
_PASS = {"Cast", "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze"}
# ops between a group-selection TopK and the TopK that chooses the experts (the group mask)
_STOP_FORWARD = {"MatMul", "Gemm", "Einsum", "Gather", "GatherND", "OneHot"}


@dataclasses.dataclass
class _Route:
    """What the graph computes between the router matmul and the weights applied to the experts."""
    x: str                       # router input
    w: tuple                     # (initializer, transposed)
    bias: str | None             # bias of the router logits
    fn: str                      # softmax_topk | topk_softmax | sigmoid_topk
    score_bias: str | None = None  # correction bias added to the scores for the choice only
    group: dict | None = None    # n_group, topk_group, group_score_k, group_fill
    scores: str | None = None    # the (unbiased) scores tensor
    normalize: bool = False
    scale: float = 1.0


def _strip(src, t):
    """``t`` seen back through value-preserving layout ops."""
    p = src.prod(t)
    while p is not None and p.op_type in _PASS:
        t = p.input[0]
        p = src.prod(t)
    return t


def _add_weight(src, node):
    """(initializer, other input) if ``node`` is an Add of an activation and a weight."""
    if node.op_type != "Add" or len(node.input) != 2:
        return None
    for a, b in ((1, 0), (0, 1)):
        w = weight_of(src, node.input[a])
        if w is not None and src.prod(node.input[b]) is not None:
            return node.input[a], node.input[b]
    return None


def _router(src, topk) -> _Route | None:
    """Walk back from the TopK that chooses the experts to the router matmul: layout ops, a group
    mask (Where over a scatter of the chosen groups), a score-correction bias, sigmoid/softmax, a
    logit bias."""
    t = topk.input[0]
    act_fn = scores = pending_bias = logit_bias = group = None
    for _ in range(32):
        p = src.prod(t)
        if p is None:
            return None
        op = p.op_type
        if op in _PASS:
            t = p.input[0]
        elif op == "Where" and group is None and act_fn is None and pending_bias is None:
            g = _group_mask(src, p)
            if g is None:
                return None
            group, t = g
        elif op in ("Softmax", "Sigmoid") and act_fn is None:
            act_fn, scores, t = op, p.output[0], p.input[0]
        elif _add_weight(src, p) is not None and (pending_bias is None if act_fn is None else logit_bias is None):
            b, t = _add_weight(src, p)
            if act_fn is None:
                pending_bias = b
            else:
                logit_bias = b
        elif op in ("MatMul", "Gemm"):
            w = weight_of(src, p.input[1])
            if w is None or len(src.shapes.get(w[0], ())) != 2:
                return None
            if op == "Gemm" and src.attr(p, "transB", 0):
                w = (w[0], not w[1])
            if op == "Gemm" and len(p.input) > 2 and p.input[2]:
                if logit_bias is not None:
                    return None
                logit_bias = p.input[2]
            score_bias = None
            if act_fn is None:  # no activation before the choice: a bias here is on the logits
                if pending_bias is not None and logit_bias is not None:
                    return None
                logit_bias = logit_bias or pending_bias
            else:
                score_bias = pending_bias
            fn = {"Sigmoid": "sigmoid_topk", "Softmax": "softmax_topk", None: "topk_softmax"}[act_fn]
            return _Route(p.input[0], w, logit_bias, fn, score_bias, group, scores)
        else:
            return None
    return None


def _fill_value(src, t):
    """The scalar a constant-filled tensor holds (Constant, Expand / CastLike of one, ConstantOfShape)."""
    for _ in range(6):
        v = src.const(t)
        if v is None and t in src.inits and src.has_data(t) and np.prod(src.inits[t].dims) <= 1 << 16:
            v = src.array(t)  # an initializer in the external data file (a static export's folded zeros)
        if v is not None:
            return float(v.reshape(-1)[0]) if v.size and np.all(v == v.reshape(-1)[0]) else None
        p = src.prod(t)
        if p is None:
            return None
        if p.op_type == "ConstantOfShape":
            a = src.attr(p, "value")
            return float(numpy_helper.to_array(a).reshape(-1)[0]) if a is not None else 0.0
        if p.op_type not in ("Expand", "CastLike", "Cast", "Identity", "Reshape", "Unsqueeze"):
            return None
        t = p.input[0]
    return None


def _group_mask(src, where):
    """Group-limited routing (DeepSeek-V3, GLM-4-MoE): ``where(mask, scores, fill)`` where the mask marks
    the experts of the ``topk_group`` groups whose best ``group_score_k`` scores sum highest.
    Returns (attrs, the scores tensor) or None."""
    cond, a, b = where.input
    fa, fb = src.scalar(a), src.scalar(b)
    if (fa is None) == (fb is None):
        return None
    fill, data, keep_if_true = (fb, a, True) if fb is not None else (fa, b, False)
    # the condition back to the scatter that marks the chosen groups; each Not flips it
    flips, t = 0, cond
    for _ in range(16):
        p = src.prod(t)
        if p is None:
            return None
        if p.op_type in ("ScatterElements", "ScatterND"):
            break
        if p.op_type == "Not":
            flips += 1
        elif p.op_type == "Equal" and src.scalar(p.input[1]) == 0.0:
            flips += 1
        elif p.op_type not in _PASS | {"Expand", "Tile"}:
            return None
        t = p.input[0]
    else:
        return None
    base, marked = _fill_value(src, p.input[0]), _fill_value(src, p.input[2])
    if base != 0.0 or not marked:
        return None
    if (flips % 2 == 0) != keep_if_true:
        return None  # the unchosen groups kept: not a group limit
    gsel = _topk_behind(src, p.input[1])
    if gsel is None:
        return None
    k = src.const(gsel.input[1])
    red = src.prod(_strip(src, gsel.input[0]))
    if k is None or red is None or red.op_type not in ("ReduceSum", "ReduceMax"):
        return None
    if red.op_type == "ReduceMax":
        gk, grouped = 1, red.input[0]
    else:
        gscore = src.prod(_strip(src, red.input[0]))
        if gscore is None or gscore.op_type != "TopK" or src.const(gscore.input[1]) is None:
            return None
        gk, grouped = int(src.const(gscore.input[1]).reshape(-1)[0]), gscore.input[0]
    shape = src.shapes.get(grouped)
    if _strip(src, grouped) != _strip(src, data) or not shape or len(shape) < 2 or not isinstance(shape[-2], int):
        return None
    attrs = {"n_group": int(shape[-2]), "topk_group": int(k.reshape(-1)[0]), "group_score_k": gk}
    if fill != float("-inf"):
        attrs["group_fill"] = float(fill)
    return attrs, data


def _topk_behind(src, t, limit=12):
    """The nearest TopK whose indices ``t`` is computed from (a bounded backward walk)."""
    stack, seen = [t], set()
    while stack and limit > 0:
        t = stack.pop(0)
        if not t or t in seen:
            continue
        seen.add(t)
        p = src.prod(t)
        if p is None:
            continue
        if p.op_type == "TopK":
            return p if t == p.output[1] else None
        limit -= 1
        if p.op_type not in ("Shape", "Size"):
            stack.extend(p.input)
    return None


def _feeds_topk(src, topk, limit=60) -> bool:
    """True if a TopK's outputs reach another TopK before any matmul or gather: it scores or picks
    groups of experts for the TopK that chooses them, and is not that TopK."""
    frontier, seen = list(topk.output), set()
    while frontier and limit > 0:
        t = frontier.pop(0)
        if t in seen:
            continue
        seen.add(t)
        for u in src.users(t):
            if u.op_type == "TopK":
                return True
            if u.op_type in _STOP_FORWARD or u.op_type in ("Shape", "Size"):
                continue
            limit -= 1
            frontier.extend(o for o in u.output if o)
    return False


def _weights(src, topk, route: _Route, region):
    """The weights applied to the chosen experts: the TopK's values (softmaxed for topk_softmax) or
    the unbiased scores gathered at its indices; then divided by their sum, times a constant."""
    vals, idx = topk.output[0], topk.output[1]
    w = None
    for i in sorted(region):
        n = src.nodes[i]
        if n.op_type in ("GatherElements", "Gather") and weight_of(src, n.input[0]) is None \
                and src.prod(n.input[0]) is not None and _strip(src, n.input[1]) == idx:
            if route.scores is None or _strip(src, n.input[0]) != route.scores:
                return "the expert weights are gathered from something other than the router's scores"
            w = n.output[0]
            break
    if w is None:
        if route.score_bias is not None:
            return "the expert weights are the TopK's biased scores"
        w = vals
        if route.fn == "topk_softmax":
            users = [u for u in src.users(_follow(src, w)) if u.op_type == "Softmax"]
            if not users:
                return "the TopK over the router logits is not followed by a softmax"
            w = users[0].output[0]
    for _ in range(12):
        w = _follow(src, w)
        users = [u for u in src.users(w) if u.op_type not in ("Shape", "Size")]
        div = [u for u in users if u.op_type == "Div" and u.input[0] == w and _sum_of(src, u.input[1], w)]
        mul = [u for u in users if u.op_type == "Mul" and src.scalar(u.input[1] if u.input[0] == w else u.input[0])
               is not None]
        if div:
            route.normalize, route.scale, w = True, 1.0, div[0].output[0]  # a scale before cancels
        elif mul and len(users) == 1:
            m = mul[0]
            route.scale *= src.scalar(m.input[1] if m.input[0] == w else m.input[0])
            w = m.output[0]
        else:
            return None
    return None


def _follow(src, t):
    """``t`` followed forward through single-use value-preserving ops."""
    for _ in range(8):
        users = [u for u in src.users(t) if u.op_type not in ("Shape", "Size")]
        if len(users) != 1 or users[0].op_type not in ("Cast", "Identity"):
            return t
        t = users[0].output[0]
    return t


def _sum_of(src, t, w):
    """True if ``t`` is sum(w) over the experts (maybe plus a tiny epsilon)."""
    p = src.prod(_strip(src, t))
    if p is not None and p.op_type == "Add" and any(src.scalar(i) is not None and abs(src.scalar(i)) < 1e-6
                                                    for i in p.input):
        p = src.prod(_strip(src, next(i for i in p.input if src.scalar(i) is None)))
    return p is not None and p.op_type == "ReduceSum" and _strip(src, p.input[0]) in (w, _strip(src, w))


def _x_chain(src, t):
    """The router input and the tensors it is a pure layout view of."""
    chain = {t}
    p = src.prod(t)
    while p is not None and p.op_type in LAYOUT_OPS:
        t = p.input[0]
        chain.add(t)
        p = src.prod(t)
    return chain


def detect_moe(src, topk_idx: int, act: set[str], claimed: set[int]) -> Region | None:
    topk = src.nodes[topk_idx]
    if _feeds_topk(src, topk):
        return None  # scores or picks groups for the TopK that chooses the experts
    route = _router(src, topk)
    if route is None:
        return None
    x_in = route.x
    xs = _x_chain(src, x_in)
    # router nodes: from the router input to the TopK
    region: set[int] = set()
    _add_between(src, topk.input[0], xs, region, act)
    region.add(topk_idx)
    router_nodes = set(region)
    tensors = {o for i in region for o in src.nodes[i].output}
    y = None
    for i in range(topk_idx + 1, len(src.nodes)):
        n = src.nodes[i]
        if not any(t in tensors for t in n.input):
            continue
        if n.op_type in ("Shape", "Size"):
            continue
        region.add(i)
        tensors.update(n.output)
        for t in n.input:
            if t and t not in tensors and t in act and t not in xs:
                _add_between(src, t, xs, region, act)
                tensors.update(o for j in region for o in src.nodes[j].output)
        pending = {t for j in region for t in src.nodes[j].output
                   if any(k > i for k in src.consumers.get(t, [])) and src.nodes[j].op_type not in ("Shape",)}
        experts = [w for w in _weights_in(src, region) if len(src.shapes.get(w[0], ())) == 3]
        if len(pending) == 1 and experts and n.output[0] in pending and n.op_type in _COMBINE_OPS:
            y = n.output[0]
            break
    if y is None or region & claimed:
        return None
    why = _weights(src, topk, route, region)
    return Region("moe", x_in, y, region, {"router": route.w, "router_bias": route.bias, "router_fn": route.fn,
                                           "topk": topk_idx, "route": route, "unsupported": why,
                                           "router_nodes": router_nodes | _producers_of(src, route.scores, xs, act)})


def _producers_of(src, t, xs, act) -> set[int]:
    out: set[int] = set()
    if t:
        _add_between(src, t, xs, out, act)
    return out


def _add_between(src, t, xs, region, act, limit=64):
    """Add the nodes computing ``t`` from the router input (bounded walk)."""
    stack = [t]
    seen = set()
    while stack and limit > 0:
        t = stack.pop()
        if t in xs or t in seen or t not in act:
            continue
        seen.add(t)
        i = src.producer.get(t)
        if i is None:
            continue
        region.add(i)
        limit -= 1
        stack.extend(a for a in src.nodes[i].input if a)


def _weights_in(src, region):
    out = []
    seen = set()
    for i in sorted(region):
        for t in src.nodes[i].input:
            w = weight_of(src, t) if t else None
            if w and w[0] not in seen and len(src.shapes.get(w[0], ())) >= 2:
                seen.add(w[0])
                out.append((w[0], i, t))
    return out


def _orientation(src, region, init, used_as):
    """True if the expert weight is stored [E, out, in] (computes W @ x)."""
    flip = False
    t = used_as
    for _ in range(8):
        users = [u for u in src.users(t) if src.producer[u.output[0]] in region]
        if not users:
            return None
        u = users[0]
        if u.op_type == "MatMul":
            left = u.input[0] == t
            return left ^ flip
        if u.op_type == "Transpose":
            perm = list(src.attr(u, "perm") or [])
            if perm[-2:] == [len(perm) - 1, len(perm) - 2]:
                flip = not flip
        t = u.output[0]
    return None


def emit_moe(lifter, r: Region, node) -> str:
    src = lifter.src
    xv = lifter.views.get(r.x)
    if xv is None or xv.layout != "flat":
        lifter._fail(node, "mixture-of-experts input is not a plain activation")
    x = xv.value
    d = lifter.g.values[x].shape[-1]
    rw, rt = r.params["router"]
    e_dims = src.shapes[rw]
    e = e_dims[0] if rt else e_dims[1]
    topk = src.nodes[r.params["topk"]]
    k = src.const(topk.input[1])
    if k is None:
        lifter._fail(topk, "TopK with a non-constant k")
    route = r.params["route"]
    if r.params["unsupported"]:
        lifter._fail(topk, f"mixture-of-experts router not recognised: {r.params['unsupported']}")
    ins = {"x": x, "router_w": lifter._weight(rw)}
    if r.params["router_bias"]:
        ins["router_b"] = lifter._weight(weight_of(src, r.params["router_bias"])[0])
    if route.score_bias:
        ins["router_score_bias"] = lifter._weight(weight_of(src, route.score_bias)[0])
    attrs = {"num_experts": int(e), "top_k": int(k.reshape(-1)[0]), "hidden": int(d),
             "router_fn": r.params["router_fn"]}
    if rt:
        attrs["router_transposed"] = True
    if route.group and route.group["n_group"] > 1:
        attrs.update(route.group)
    if route.scale != 1.0:
        attrs["routed_scaling_factor"] = float(route.scale)
    attrs["normalize_topk"] = route.normalize
    experts, biases = [], []
    transposed = None
    for w, i, used in _weights_in(src, r.nodes - r.params["router_nodes"]):
        if w == rw or any(b and w == weight_of(src, b)[0] for b in (r.params["router_bias"], route.score_bias)):
            continue
        shape = src.shapes[w]
        if len(shape) == 3:
            if shape[0] != e:
                lifter._fail(node, f"expert weight '{w}' {list(shape)} does not have {e} experts first")
            t = _orientation(src, r.nodes, w, used)
            if t is None:
                lifter._fail(node, f"cannot tell how expert weight '{w}' is multiplied")
            transposed = t if transposed is None else transposed
            if t != transposed:
                lifter._fail(node, "expert weights stored in mixed orientations")
            din, dout = (shape[2], shape[1]) if t else (shape[1], shape[2])
            experts.append((i, w, din, dout))
        elif len(shape) == 2 and shape[0] == e:
            biases.append((w, shape[1]))
        else:
            lifter._fail(node, f"unexpected weight '{w}' {list(shape)} inside a mixture of experts")
    # dataflow decides the roles (shapes alone are ambiguous when intermediate == hidden):
    # the down projection is the expert product computed last
    experts.sort()
    outof = [(w, din, dout) for _, w, din, dout in experts[-1:] if dout == d]
    into = [(w, din, dout) for _, w, din, dout in experts[:-1] if din == d]
    if len(outof) != 1 or len(into) != len(experts) - 1 or not into:
        lifter._fail(node, "expert projections not recognised: expected gate/up projections from the hidden "
                     f"size {d} followed by one down projection to it, got "
                     f"{[(w, din, dout) for _, w, din, dout in experts]}")
    down, inter, _ = outof[0]
    attrs["intermediate"] = int(inter)
    if transposed:
        attrs["experts_transposed"] = True
    if len(into) == 1 and into[0][2] == 2 * inter:
        ins["gate_up_w"] = lifter._weight(into[0][0])
        attrs["gated"] = True
        attrs["gate_up_interleaved"] = any(src.nodes[i].op_type == "Slice" and _step(src, src.nodes[i]) == 2
                                           for i in r.nodes)
        for b, n in biases:
            ins["gate_up_b" if n == 2 * inter else "down_b"] = lifter._weight(b)
    elif len(into) == 2:
        gate, up = _gate_first(src, r.nodes, into)
        ins["gate_w"], ins["up_w"] = lifter._weight(gate[0]), lifter._weight(up[0])
        attrs["gated"] = True
    elif len(into) == 1:
        ins["up_w"] = lifter._weight(into[0][0])
        attrs["gated"] = False
    else:
        lifter._fail(node, f"{len(into)} expert projections from the hidden size; expected 1 or 2")
    ins["down_w"] = lifter._weight(down)
    if not attrs.get("gate_up_interleaved"):
        attrs.pop("gate_up_interleaved", None)
    attrs["activation"], params = _activation(src, r.nodes - r.params["router_nodes"], lifter.act)
    if params:
        attrs["activation_params"] = params
    name = lifter._name(node)
    layer = src.layer_of(src.nodes[r.params["topk"]])
    n = lifter.add_node(node, "moe", ins, [lifter._value_name(name)], name=name, attrs=attrs, layer=layer)
    lifter._layer_of_value[n.outputs[0]] = layer
    return n.outputs[0]


def _step(src, node):
    if len(node.input) >= 5 and node.input[4]:
        v = src.const(node.input[4])
        return int(v.reshape(-1)[0]) if v is not None else 1
    return 1


def _gate_first(src, region, into):
    """Order two D->I expert weights as (gate, up): the gate feeds the nonlinearity."""
    for cand in into:
        frontier = [cand[0]]
        for _ in range(8):
            nxt = []
            for t in frontier:
                for u in src.users(t):
                    if src.producer[u.output[0]] in region:
                        if u.op_type in _ACT_ANCHORS:
                            other = into[1] if cand is into[0] else into[0]
                            return cand, other
                        nxt.extend(u.output)
            frontier = nxt
    return into[0], into[1]


def _activation(src, region, act):
    ops = {src.nodes[i].op_type for i in region}
    anchors = [i for i in sorted(region) if src.nodes[i].op_type in _ACT_ANCHORS]
    if not anchors:
        return "relu" if "Relu" in ops else "silu", None
    if "Clip" in ops:
        # clamped SwiGLU (gpt-oss): gate.clamp(max=L) * sigmoid(alpha * gate) * (up.clamp(-L, L) + 1)
        alpha = limit = None
        for i in region:
            n = src.nodes[i]
            if n.op_type == "Clip":
                hi = src.scalar(n.input[2]) if len(n.input) > 2 and n.input[2] else src.attr(n, "max")
                limit = hi if hi is not None else limit
            if n.op_type == "Mul" and any(src.nodes[j].op_type == "Sigmoid" and n.output[0] in src.nodes[j].input
                                          for j in region):
                c = [src.scalar(t) for t in n.input if src.scalar(t) is not None]
                alpha = c[0] if c else alpha
        return "swiglu_clamped", {"alpha": alpha, "limit": limit}
    r = detect_activation(src, anchors[0], act, set())
    return (r.params["fn"] if r else _ACT_ANCHORS[src.nodes[anchors[0]].op_type]), None
