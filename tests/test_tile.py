"""Tile pass: per-core tiles within the SRAM budget, bytes conserved, GEMV orientation, MoE experts."""
import math

import numpy as np
import pytest
from wafercc.ir import DType, parse_graph, verify
from wafercc.passes import PassManager
from wafercc.passes.tile import TileError, TileOptions, TilePass, tile_plan

from wafercc.plan.options import PlanOptions
from wafercc.plan.planner import plan_wafers
from wafercc.target import load_target
from wafercc.target.device import Device

WSE3 = load_target("wse3")
FREE = WSE3.core.sram - WSE3.core.sram_reserved          # data + buffers of one core
BUDGET = FREE - WSE3.core.receive_buffer                 # data of a core with the target's buffer

TINY = """wafercc.ir 1
graph "tiny" {
  input %ids : i64[batch, seq]
  weight %emb : bf16[1000, 256]
  weight %n0 : bf16[256]
  weight %wq : bf16[256, 256]
  weight %wk : bf16[64, 256]
  weight %wv : bf16[64, 256]
  kv %kc : bf16[batch, 2, context, 32]
  kv %vc : bf16[batch, 2, context, 32]
  weight %wo : bf16[256, 256]
  weight %w1 : bf16[256, 1024]
  weight %b1 : bf16[1024]
  weight %w2 : bf16[256, 1024]
  weight %nf : bf16[256]
  %h : bf16[batch, seq, 256] = embedding(ids=%ids, table=%emb) name="embed"
  %x : bf16[batch, seq, 256] = norm(x=%h, scale=%n0) {"eps": 1e-5, "kind": "rms"} layer=0 name="norm0"
  %q : bf16[batch, seq, 256] = matmul(x=%x, w=%wq) layer=0 name="q"
  %k : bf16[batch, seq, 64] = matmul(x=%x, w=%wk) {"transpose_w": true} layer=0 name="k"
  %v : bf16[batch, seq, 64] = matmul(x=%x, w=%wv) {"transpose_w": true} layer=0 name="v"
  %qr : bf16[batch, seq, 256] = rotary(x=%q) {"head_dim": 32, "num_heads": 8} layer=0 name="rope"
  %a : bf16[batch, seq, 256] = attention(q=%qr, k=%k, v=%v, k_cache=%kc, v_cache=%vc) {"causal": true, "head_dim": 32, "num_heads": 8, "num_kv_heads": 2} layer=0 name="attn"
  %o : bf16[batch, seq, 256] = matmul(x=%a, w=%wo) layer=0 name="o"
  %r : bf16[batch, seq, 256] = elementwise(a=%h, b=%o) {"fn": "add"} layer=0 name="res"
  %u : bf16[batch, seq, 1024] = matmul(x=%r, w=%w1, b=%b1) layer=0 name="up"
  %g : bf16[batch, seq, 1024] = activation(x=%u) {"fn": "silu"} layer=0 name="act"
  %l : bf16[batch, seq, 256] = matmul(x=%g, w=%w2) {"transpose_w": true} layer=0 name="down"
  %y : bf16[batch, seq, 256] = norm(x=%l, scale=%nf) {"eps": 1e-5, "kind": "rms"} name="final_norm"
  %z : bf16[batch, seq, 1000] = matmul(x=%y, w=%emb) {"transpose_w": true} name="lm_head"
  output %z
}
"""


def _plan(graph, defects=None, **kw):
    return plan_wafers(graph, WSE3, PlanOptions(**kw), Device(WSE3, defects, 0))


def _tiles(graph, options=None, **kw):
    plan = _plan(graph, **kw)
    return plan, tile_plan(graph, plan, WSE3, options or TileOptions())


def _check_budget_and_bytes(plan, tp):
    """Every core within SRAM, every planned byte placed (sub-byte rounding aside)."""
    assert [w.index for w in tp.wafers] == [w.index for w in plan.wafers]
    for w, load in zip(tp.wafers, plan.wafers):
        c = tp.core_arrays(w.index)
        held = c["data"] + c["extra"]
        assert w.cores_min <= len(held) == w.cores_needed <= w.core_budget
        assert (held + c["buffer"] <= FREE).all()
        assert (c["buffer"] >= WSE3.core.receive_buffer).all()
        plain = c["buffer"] == WSE3.core.receive_buffer
        assert (held[plain] <= BUDGET).all()
        ops = [tp.ops[i] for i in w.ops]
        rounding = sum(o.rounding_bytes for o in ops)
        assert int(held.sum()) == w.placed_bytes == w.plan_bytes + rounding
        assert w.plan_bytes == load.weight_bytes + load.kv_bytes + load.act_bytes
        for o in ops:
            if o.grids:
                assert o.placed_bytes == o.plan_bytes + o.hosted_bytes + o.rounding_bytes
            else:
                assert o.placed_bytes == o.hosted_bytes == 0 and o.role == "rider"
            if o.role == "rider" and o.host:
                assert not o.grids and tp.op(o.host, o.wafer).grids
    riders = sum(o.plan_bytes for o in tp.ops if o.role == "rider" and o.host)
    assert riders == sum(o.hosted_bytes for o in tp.ops)


def test_tiny_graph_roles_orientation_and_conservation():
    g = parse_graph(TINY)
    verify(g)
    plan, tp = _tiles(g, context=1024)
    _check_budget_and_bytes(plan, tp)
    assert {o.node for o in tp.ops} == {n.name for n in g.nodes}     # no op dropped
    roles = {o.node: o.role for o in tp.ops}
    assert roles["embed"] == "lookup" and roles["attn"] == "kv"
    assert {roles[n] for n in ("q", "k", "v", "o", "up", "down", "lm_head")} == {"gemv"}
    assert {roles[n] for n in ("norm0", "rope", "res", "act", "final_norm")} == {"rider"}
    assert tp.op("rope").host == "q" and tp.op("act").host == "up" and tp.op("res").host == "o"
    assert tp.op("norm0").host == "embed" and tp.op("final_norm").host == "down"
    # GEMV orientation: grid rows split the input (reduction) dim, columns the outputs
    for name, k, n in (("q", 256, 256), ("k", 256, 64), ("down", 1024, 256), ("lm_head", 256, 1000)):
        (gr,) = tp.op(name).grids
        assert (gr.k, gr.n) == (k, n)
        assert gr.rows == math.ceil(k / gr.tile_k) and gr.cols == math.ceil(n / gr.tile_n)
        assert gr.row_sizes().sum() == k and gr.col_sizes().sum() == n
        # receive buffer: double-buffered input slice and fp32 partial sums
        assert 2 * gr.tile_k * 2 + 4 * gr.tile_n <= gr.buffer_bytes == WSE3.core.receive_buffer
    # the bias of "up" and the riders' vectors sit on the host's cores, not in its tiles
    up = tp.op("up")
    assert up.grids[0].data_bytes == 256 * 1024 * 2
    assert up.grids[0].extra_bytes == 1024 * 2 + up.act_bytes + up.hosted_bytes
    # KV: rows = sequence x kv head, columns = context chunks, K and V rows of a position together
    (kv,) = tp.op("attn").grids
    assert (kv.k, kv.n, kv.rows, kv.tile_k) == (2, 1024, 2, 1) and kv.unit_bits == 8 * 2 * 32 * 2
    assert kv.data_bytes == plan.memory.ops[[o.node for o in plan.memory.ops].index("attn")].kv_bytes


def test_deterministic(reference_graph):
    g = reference_graph("mixtral-8x7b")
    a, b = _tiles(g)[1], _tiles(g)[1]
    for k, v in a.table().items():
        assert np.array_equal(v, b.table()[k])
    for w in range(len(a.wafers)):
        ca, cb = a.core_arrays(w), b.core_arrays(w)
        assert all(np.array_equal(ca[k], cb[k]) for k in ca)


@pytest.mark.parametrize("key", ["llama-3.1-8b", "mixtral-8x7b", "llama-3.1-70b"])
def test_reference_models_fit_and_conserve(reference_graph, key):
    plan, tp = _tiles(reference_graph(key))
    _check_budget_and_bytes(plan, tp)
    for w in tp.wafers:
        assert w.padding_bytes < 0.01 * w.plan_bytes
    assert all(o.rounding_bytes == 0 for o in tp.ops)


def test_moe_experts_tiled_separately(reference_graph):
    _, tp = _tiles(reference_graph("mixtral-8x7b"))
    moe = next(o for o in tp.ops if o.op == "moe")
    grids = {gr.operand: gr for gr in moe.grids}
    assert set(grids) == {"router_w", "gate_up_w", "down_w"}
    gu, down = grids["gate_up_w"], grids["down_w"]
    assert gu.experts == down.experts == 8 and grids["router_w"].experts == 1
    assert (gu.k, gu.n) == (4096, 2 * 14336) and (down.k, down.n) == (14336, 4096)
    assert gu.tile_bytes().shape == (8, gu.rows, gu.cols) and gu.cores == 8 * gu.rows * gu.cols
    assert gu.data_bytes == 8 * 4096 * 28672 * 2
    assert moe.cores == sum(gr.cores for gr in moe.grids)


def test_sub_byte_weights_count_rounding(reference_graph):
    plan, tp = _tiles(reference_graph("llama-3.2-1b"), dtype=DType.F4E2M1)
    _check_budget_and_bytes(plan, tp)      # placed == plan + rounding, every core within budget
    gemv = [gr for o in tp.ops if o.role == "gemv" for gr in o.grids]
    assert gemv and all(gr.unit_bits == 4 for gr in gemv)
    assert all(0 <= o.rounding_bytes <= sum(gr.cores for gr in o.grids) for o in tp.ops)


def test_more_wafers_shorten_each_stage(reference_graph):
    g = reference_graph("llama-3.1-8b")
    one = _tiles(g)[1].wafers[0]
    two = _tiles(g, wafers=2)[1].wafers
    assert max(w.cycles for w in two) < one.cycles


def test_dedicated_kv_wafers(reference_graph):
    plan, tp = _tiles(reference_graph("llama-3.1-8b"), kv_placement="dedicated", context=131072)
    _check_budget_and_bytes(plan, tp)
    kv_wafers = [w for w in tp.wafers if w.role == "kv"]
    assert kv_wafers and all(tp.ops[i].role == "kv" for w in kv_wafers for i in w.ops)
    pipe_attn = [o for o in tp.ops if o.op == "attention" and tp.wafers[o.wafer].role == "pipeline"]
    assert pipe_attn and all(o.role == "rider" and o.kv_bytes == 0 for o in pipe_attn)


HUGE_HEAD = """wafercc.ir 1
graph "huge" {
  input %q : bf16[batch, seq, 16384]
  input %k : bf16[batch, seq, 16384]
  input %v : bf16[batch, seq, 16384]
  kv %kc : bf16[batch, 1, context, 16384]
  kv %vc : bf16[batch, 1, context, 16384]
  %a : bf16[batch, seq, 16384] = attention(q=%q, k=%k, v=%v, k_cache=%kc, v_cache=%vc) {"causal": true, "head_dim": 16384, "num_heads": 1, "num_kv_heads": 1} name="attn"
  output %a
}
"""


def test_untileable_op_is_named():
    # one position of K and V (2 x 16384 x 2 B) is larger than a core
    with pytest.raises(TileError, match="op 'attn' \\(attention\\): no tile"):
        _tiles(parse_graph(HUGE_HEAD), context=64)


def test_wafer_overflow_and_plan_mismatch_are_errors():
    g = parse_graph(TINY)
    with pytest.raises(TileError, match="wafer 0: its tiles need at least"):
        _tiles(g, TileOptions(fill=1e-6), context=1024)
    plan = _plan(g, context=1024)
    g.nodes = [n for n in g.nodes if n.name != "act"]
    with pytest.raises(TileError, match="op 'act'"):
        tile_plan(g, plan, WSE3)


def test_tile_pass_in_pass_manager():
    g = parse_graph(TINY)
    p = TilePass(_plan(g, context=1024), WSE3)
    g.meta["properties"] = ["partitioned"]
    PassManager([p]).run(g)
    assert len(p.results) == 1 and "tiled" in g.meta["properties"]
    assert p.name == "tile" and p.requires == frozenset({"partitioned"})
