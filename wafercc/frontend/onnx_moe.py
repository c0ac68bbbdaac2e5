"""Mixture-of-experts regions: router + top-k + expert matmuls -> one IR ``moe`` op.

Anchored on TopK over activations.  The region runs from the router's input
to the first tensor that every path from the TopK passes through (where the
weighted expert outputs are summed); expert weights are the 3-D initializers
the region multiplies with, their roles read from shapes and dataflow.
"""
from __future__ import annotations

from .onnx_regions import LAYOUT_OPS, Region, detect_activation, weight_of

# ops that sum the weighted expert outputs back to one row per token
_COMBINE_OPS = {"ReduceSum", "ScatterND", "ScatterElements", "Sum", "Add"}
_ACT_ANCHORS = {"Sigmoid": "silu", "Erf": "gelu", "Tanh": "gelu_tanh", "Relu": "relu", "Gelu": "gelu"}


def _router(src, topk, act):
    """(router input tensor, router weight, transposed, bias, fn, softmax_first)."""
    t = topk.input[0]
    softmax_first = sigmoid = False
    while True:
        p = src.prod(t)
        if p is None:
            return None
        if p.op_type in ("Cast", "Identity"):
            t = p.input[0]
        elif p.op_type == "Softmax":
            softmax_first = True
            t = p.input[0]
        elif p.op_type == "Sigmoid":
            sigmoid = True
            t = p.input[0]
        elif p.op_type == "Add" and weight_of(src, p.input[1]) is not None:
            bias = p.input[1]
            q = src.prod(p.input[0])
            if q is None or q.op_type != "MatMul":
                return None
            w = weight_of(src, q.input[1])
            return q.input[0], w, bias, "sigmoid_topk" if sigmoid else ("softmax_topk" if softmax_first else "topk_softmax")
        elif p.op_type in ("MatMul", "Gemm"):
            w = weight_of(src, p.input[1])
            if w is None:
                return None
            if p.op_type == "Gemm" and src.attr(p, "transB", 0):
                w = (w[0], not w[1])
            bias = p.input[2] if p.op_type == "Gemm" and len(p.input) > 2 and p.input[2] else None
            fn = "sigmoid_topk" if sigmoid else ("softmax_topk" if softmax_first else "topk_softmax")
            return p.input[0], w, bias, fn
        else:
            return None


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
    r = _router(src, topk, act)
    if r is None:
        return None
    x_in, router_w, router_b, router_fn = r
    xs = _x_chain(src, x_in)
    # router nodes: from the router input to the TopK
    region: set[int] = set()
    _add_between(src, topk.input[0], xs, region, act)
    region.add(topk_idx)
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
    return Region("moe", x_in, y, region, {"router": router_w, "router_bias": router_b, "router_fn": router_fn,
                                           "topk": topk_idx})


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
    ins = {"x": x, "router_w": lifter._weight(rw)}
    if r.params["router_bias"]:
        ins["router_b"] = lifter._weight(weight_of(src, r.params["router_bias"])[0])
    attrs = {"num_experts": int(e), "top_k": int(k.reshape(-1)[0]), "hidden": int(d),
             "router_fn": r.params["router_fn"]}
    if rt:
        attrs["router_transposed"] = True
    ops = {src.nodes[i].op_type for i in r.nodes}
    # normalised top-k weights: the top-k values divided by their sum
    attrs["normalize_topk"] = "ReduceSum" in ops and any(
        src.nodes[i].op_type == "Div" and src.prod(src.nodes[i].input[1]) is not None
        and src.prod(src.nodes[i].input[1]).op_type == "ReduceSum"
        and src.prod(src.nodes[i].input[1]).input[0] in (topk.output[0],) for i in r.nodes)
    experts, biases = [], []
    transposed = None
    for w, i, used in _weights_in(src, r.nodes):
        if w == rw or (r.params["router_bias"] and w == weight_of(src, r.params["router_bias"])[0]):
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
    attrs["activation"], params = _activation(src, r.nodes, lifter.act)
    if params:
        attrs["activation_params"] = params
    name = lifter._name(node)
    layer = src.layer_of(src.nodes[r.params["topk"]])
    n = lifter.g.add_node("moe", ins, [lifter._value_name(name)], name=name, attrs=attrs, layer=layer)
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
