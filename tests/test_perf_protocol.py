"""The one-layer research protocol (wafercc.perf.protocol): square grids, layer scaling, fail loudly."""
from __future__ import annotations

import pytest

from wafercc.perf.evaluate import Program
from wafercc.perf.model import CostModelError, CostParams, Machine, Workload, kernel_phases, rates
from wafercc.perf.protocol import attention_grids, layer_records, one_layer_seconds, square_grid, tree_depth
from wafercc.target import load_target


def _grid(operand="w", k=4096, n=1024, rows=20, cols=49):
    return {"grid": 0, "operand": operand, "experts": 1, "rows": rows, "cols": cols, "k": k, "n": n,
            "tile_k": -(-k // rows), "tile_n": -(-n // cols), "unit_bits": 16, "broadcast_hops": 60,
            "broadcast_links": 48, "reduction_hops": 19, "reduction_links": 19}


def _op(i, layer, grids, deps=(), host=None, op="matmul", role="gemv"):
    return {"id": i, "name": f"op{i}", "op": op, "role": role, "layer": layer, "host": host, "flops": 1e4,
            "grids": grids, "act_in_hops": 7, "deps": list(deps)}


def _program(layers_on_wafer=((None, 0, 0, 0, 1, 1),)):
    """Wafer ops: embedding (layer None), norm riding on it, q, k (parallel), o after both; layer 1 the same."""
    ops = [_op(0, None, [_grid("table")], role="lookup", op="embedding")]
    for layer in (0, 1):
        b = len(ops)
        ops += [_op(b, layer, [], deps=[b - 1], host=b - 1 if layer == 0 else b - 1, op="norm", role="rider"),
                _op(b + 1, layer, [_grid(k=4096, n=4096)], deps=[b]),
                _op(b + 2, layer, [_grid()], deps=[b]),
                _op(b + 3, layer, [_grid(k=4096, n=4096)], deps=[b + 1, b + 2])]
    return Program((tuple(ops),), (), 2.0, 8192, 1)


def test_square_grid_pads_to_the_side_and_reduces_in_a_tree():
    g = square_grid(_grid(k=4096, n=1024), 720)
    assert (g["rows"], g["cols"], g["tile_k"], g["tile_n"]) == (720, 720, 6, 2)   # 4096 / 720 padded up
    assert (g["broadcast_hops"], g["reduction_hops"]) == (719, 719)
    assert g["reduction_links"] == tree_depth(720) == 10
    small = square_grid(_grid(k=64, n=32), 720)      # a dimension below the side keeps one element per core
    assert (small["rows"], small["cols"], small["tile_k"], small["tile_n"]) == (64, 32, 1, 1)
    with pytest.raises(CostModelError, match="attention_grids"):
        square_grid(_grid("kv", k=8, n=8192, rows=8, cols=482), 720)


ATT = {"group": 4, "head_dim": 128, "score_flops": 5}


def test_attention_is_two_mesh_gemvs_with_small_partials():
    """Llama-3-8B's KV (8 kv heads x 128 dims) at 1,024 positions on 720 x 720: QK^T reduces each
    core's scores (its 2 positions x 4 query heads) over the 64 cores of its head's dimensions, P V
    each core's outputs (its 2 dimensions x 4 heads) over the 720 position cores (both dimensions
    padded to the side, 1,024 -> 1,440): tiny messages instead of one (head_dim + 2) x group
    partial per core."""
    qk, pv = attention_grids(_grid("kv", k=8, n=8192, rows=8, cols=482), ATT, 720, 1024)
    assert (qk["tile_k"], qk["tile_n"], qk["rows"], qk["cols"], qk["experts"]) == (2, 2, 64, 720, 12)
    assert (qk["reduction_hops"], qk["reduction_links"], qk["broadcast_hops"]) == (63, 6, 719)
    assert (pv["tile_k"], pv["tile_n"], pv["rows"], pv["cols"]) == (2, 2, 720, 720)
    assert (pv["reduction_hops"], pv["reduction_links"], pv["broadcast_hops"]) == (719, 10, 63)
    assert qk["vectors"] == pv["vectors"] == 4
    r = rates(Machine.of(load_target("wse2")), CostParams(1.0, 0.0, 0.0, 0.0))
    w = Workload(2.0, 1024)
    op = {"role": "kv"}
    ph_qk, ph_pv = kernel_phases(qk, op, r, w), kernel_phases(pv, op, r, w)
    assert ph_qk.reduce_bytes == 4 * 2 * 4 and ph_pv.reduce_bytes == 4 * 2 * 4     # group x tile x fp32
    assert ph_qk.bcast_bytes == 4 * 2 * 2 and ph_pv.bcast_bytes == 4 * 2 * 2       # group x tile x bf16
    # both products on the whole padded grid: 720 x 720 cores each, every K and V element on one
    assert qk["experts"] * qk["rows"] * qk["cols"] >= 720 * 720 and pv["rows"] * pv["cols"] == 720 * 720
    assert 720 * 720 * qk["tile_k"] * qk["tile_n"] >= 1024 * 8 * 128
    long = attention_grids(_grid("kv", k=8, n=8192), ATT, 720, 8192)[0]
    assert (long["cols"], long["tile_n"]) == (720, 12)          # past the side, positions stack per core


def test_each_attention_gets_its_softmax_all_reduce_on_the_chain():
    ops = [_op(0, 0, [_grid(k=4096, n=4096)]),
           dict(_op(1, 0, [_grid("kv", k=8, n=8192, rows=8, cols=482)], deps=[0], op="attention", role="kv"),
                attention=ATT),
           _op(2, 0, [_grid(k=4096, n=4096)], deps=[1])]
    recs = layer_records(Program((tuple(ops),), (), 2.0, 8192, 1), 720, positions=1024)
    assert [(r["op"], r["deps"]) for r in recs] == [("matmul", []), ("attention", [0]), ("softmax", [1]),
                                                   ("matmul", [2])]
    sm = recs[2]
    assert sm["host"] == 1 and sm["flops"] == 5 * 1024 * 4 * 8
    assert recs[1]["grids"][-1]["allreduce_links"] == tree_depth(720)


def test_square_grid_has_its_own_link_loads_not_the_placed_grids():
    """The protocol's grid is straight: its loads are its tree's, whatever the routed wafer measured."""
    placed = dict(_grid(k=4096, n=1024), broadcast_load=7, reduction_load=16)
    g = square_grid(placed, 720)
    assert (g["broadcast_load"], g["reduction_load"]) == (1, tree_depth(720))
    assert square_grid(dict(placed, k=1), 720)["reduction_load"] == 1     # one row: nothing queues


def test_layer_records_keep_dataflow_within_the_layer():
    recs = layer_records(_program(), 720)
    assert [r["id"] for r in recs] == [0, 1, 2, 3]
    assert [r["deps"] for r in recs] == [[], [0], [0], [1, 2]]   # the embedding dependency is dropped
    assert recs[0]["host"] == 1                        # the norm rode on the embedding: now on the first grid
    assert all(r["act_in_hops"] == 0 for r in recs)


def test_one_layer_time_scales_with_layers_and_trades_hops_for_macs():
    t = load_target("wse2")
    mc, p = Machine.of(t), CostParams.of(t)
    prog = _program()
    one = one_layer_seconds(prog, 1, 720, mc, p, 1024)
    assert one_layer_seconds(prog, 32, 720, mc, p, 1024) == pytest.approx(32 * one)
    # 4096-wide matrices: an 8 x 8 grid is MAC-bound (512 x 512 tiles), 720 x 720 hop-bound (719-hop
    # paths), 64 x 64 between the two and the fastest
    free = CostParams(1.0, 0.0, 0.0, 0.0)
    t8, t64, t720 = (one_layer_seconds(prog, 1, s, mc, free, 1024) for s in (8, 64, 720))
    assert t8 > t720 > t64


def test_protocol_fails_loudly():
    t = load_target("wse2")
    mc, p = Machine.of(t), CostParams.of(t)
    with pytest.raises(CostModelError, match="layer 5 is on 0 wafers"):
        one_layer_seconds(_program(), 1, 720, mc, p, 1024, layer=5)
    with pytest.raises(CostModelError, match="must be positive"):
        one_layer_seconds(_program(), 0, 720, mc, p, 1024)
