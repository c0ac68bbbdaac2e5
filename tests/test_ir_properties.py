"""Property tests: random small graphs round-trip through the text and JSON forms."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wafercc.ir import (DType, Graph, ValueKind, collect_problems, from_json, model_facts,
                        parse_graph, print_graph, to_dict, to_json, verify)
from wafercc.ir.ops import ACTIVATION_FLOPS, BINARY_FNS, UNARY_FNS

FLOAT_DTYPES = [DType.F32, DType.F16, DType.BF16, DType.F8E4M3]
# mostly plain identifiers, sometimes characters that force the quoted %"..." form
NAMES = st.text(st.sampled_from("abcxyzAB_.-/09 %\":{}é\u2028\x0b\\"), min_size=1, max_size=6)


@st.composite
def chain_graphs(draw):
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    lead = draw(st.sampled_from([("batch", "seq"), ("batch",), (3,), ("batch", 2, "seq")]))
    width = draw(st.integers(1, 64))
    g = Graph(draw(NAMES), meta=draw(st.dictionaries(NAMES,
                                                     st.one_of(st.integers(), st.text(max_size=5), st.booleans()),
                                                     max_size=3)))
    used: set[str] = set()

    def fresh(stem):
        n = draw(st.one_of(st.just(stem), NAMES)) + f"{len(used)}"
        used.add(n)
        return n

    cur = g.add_value(fresh("x"), lead + (width,), dtype, ValueKind.INPUT).name
    for i in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["matmul", "activation", "elementwise", "norm"]))
        layer = draw(st.one_of(st.none(), st.integers(0, 3)))
        name = fresh("node")
        out = fresh("v")
        if op == "matmul":
            n = draw(st.integers(1, 64))
            t = draw(st.booleans())
            w = g.add_value(fresh("w"), (n, width) if t else (width, n), dtype, ValueKind.WEIGHT).name
            ins = {"x": cur, "w": w}
            if draw(st.booleans()):
                ins["b"] = g.add_value(fresh("b"), (n,), dtype, ValueKind.WEIGHT).name
            attrs = {"transpose_w": True} if t else draw(st.sampled_from([{}, {"transpose_w": False}]))
            width = n
        elif op == "activation":
            ins, attrs = {"x": cur}, {"fn": draw(st.sampled_from(sorted(ACTIVATION_FLOPS)))}
        elif op == "elementwise":
            fn = draw(st.sampled_from(UNARY_FNS + BINARY_FNS))
            ins, attrs = {"a": cur}, {"fn": fn}
            if fn in BINARY_FNS:
                if draw(st.booleans()):
                    attrs["scalar"] = draw(st.floats(allow_nan=False, allow_infinity=False))
                else:
                    ins["b"] = g.add_value(fresh("c"), (width,), dtype, ValueKind.WEIGHT).name
        else:
            divisors = [d for d in range(1, width + 1) if width % d == 0]
            group = draw(st.sampled_from(divisors + [0]))
            attrs = {"kind": draw(st.sampled_from(["rms", "layer"])),
                     "eps": draw(st.floats(1e-12, 1e-1))}
            if group:
                attrs["group"] = group
            ins = {"x": cur}
            gsize = group or width
            if draw(st.booleans()):
                ins["scale"] = g.add_value(fresh("s"), (gsize,), dtype, ValueKind.WEIGHT).name
        g.add_node(op, ins, [out], name=name, attrs=attrs, layer=layer)
        cur = out
    g.outputs.append(cur)
    return g


def _normalized(g):
    d = to_dict(g)
    d["values"] = sorted(d["values"], key=lambda v: v["name"])
    return d


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chain_graphs())
def test_random_chain_text_round_trip(g):
    assert collect_problems(g) == []
    text = print_graph(g)
    g2 = parse_graph(text)
    verify(g2)
    assert print_graph(g2) == text
    # the text form lists inputs, then weights/KV caches, then node outputs, so
    # only the order of the value table may differ
    assert _normalized(g2) == _normalized(g)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chain_graphs())
def test_random_chain_json_round_trip(g):
    js = to_json(g)
    g2 = from_json(js)
    verify(g2)
    assert to_json(g2) == js
    assert print_graph(g2) == print_graph(g)
    assert model_facts(g2) == model_facts(g)
