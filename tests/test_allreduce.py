"""The norms' (and softmax riders') all-reduce: a binomial tree over the host's output row (route
kind 4) with ``--reduction tree``, the chain up the broadcast routes reversed with ``--reduction
chain``; the transfer builder, the paths, the estimate, the model, the verifier and the replay
follow the same tree."""
from __future__ import annotations

import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from verify_tamper import drop_routes, load, save

from wafercc.cli import main
from wafercc.passes import cost_kernel as ck
from wafercc.passes.transfers import KIND_ALLREDUCE, allreduce_transfers, grid_transfers, wafer_transfers
from wafercc.perf.eventsim import compare_with_analytic
from wafercc.perf.model import allreduce_paths
from wafercc.perf.paths import grid_paths
from wafercc.perf.records import _row_broadcasts, estimate_paths
from wafercc.verify import verify_dir

TINY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models", "onnx", "tiny-llama.onnx")


@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 2), (4, 7), (2, 16)])
def test_tree_over_the_last_row(rows, cols):
    s, d = allreduce_transfers(10, 2, rows, cols)
    assert len(s) == 2 * (cols - 1)
    loc = lambda x: ((x - 10) // (rows * cols), (x - 10) // cols % rows, (x - 10) % cols)   # noqa: E731
    for a, b in zip(s.tolist(), d.tolist()):
        (ea, ra, ca), (eb, rb, cb) = loc(a), loc(b)
        assert ea == eb and ra == rb == rows - 1 and cb == ca - (ca & -ca)
    # a KV host: every row is an output row
    s, _ = allreduce_transfers(0, 1, rows, cols, along_row=True)
    assert len(s) == rows * (cols - 1)


def test_only_trees_get_kind_4():
    grids = [[(1, 4, 6)], [(1, 2, 5), (1, 3, 8)]]
    tree = wafer_transfers(grids, True, True, allreduce={1})
    sel = tree.kind == KIND_ALLREDUCE
    assert sel.sum() == 7 and (tree.op_src[sel] == 1).all()
    assert (tree.src[sel] >= 4 * 6 + 2 * 5 + 2 * 8).all()          # the op's last grid, its last row
    chain = wafer_transfers(grids, True, True, reduction="chain", allreduce={1})
    assert not (chain.kind == KIND_ALLREDUCE).any()


def test_paths_of_the_tree():
    rows, cols = 3, 8
    bs, bd, rs, rd = grid_transfers(0, 1, rows, cols)
    ts, td = allreduce_transfers(0, 1, rows, cols)
    src, dst = np.concatenate([bs, rs, ts]), np.concatenate([bd, rd, td])
    kind = np.concatenate([np.zeros(len(bs)), np.ones(len(rs)), np.full(len(ts), 4)]).astype(np.int8)
    hops = np.concatenate([np.ones(len(bs)), np.ones(len(rs)), (ts - td)]).astype(np.int64)   # along the row
    n = rows * cols
    p = grid_paths(np.zeros(n, np.int32), np.zeros(n, np.int16), src, dst, kind, hops)[(0, 0)]
    assert p["allreduce_links"] == ck.tree_steps(cols) == 3
    assert p["allreduce_hops"] == cols - 1 and p["allreduce_down_hops"] == cols - 1
    # without kind-4 routes: no all-reduce figures, the model falls back to the chain
    q = grid_paths(np.zeros(n, np.int32), np.zeros(n, np.int16), src[kind < 4], dst[kind < 4], kind[kind < 4],
                   hops[kind < 4])[(0, 0)]
    assert "allreduce_links" not in q
    assert allreduce_paths(q) == (q["broadcast_hops"], q["broadcast_links"], q["broadcast_hops"])
    assert allreduce_paths(p) == (cols - 1, 3, cols - 1)
    r = ck.Rates(1, 2, 1.0, 4, 1.0, 35.0)
    assert ck.allreduce(*allreduce_paths(p), r) < ck.allreduce(*allreduce_paths(q), r)


@pytest.mark.parametrize("rows,cols,width", [(7, 23, 8), (108, 114, 58), (5, 9, 4), (3, 6, 8)])
def test_estimated_broadcast_links_follow_the_builder(rows, cols, width):
    """Links (transfers on the longest path) do not depend on the router: the estimate must equal
    the builder's trees exactly, per row (llama-3.2-1b down_proj: 108 x 114 on 58-wide chunks)."""
    bs, bd, _, _ = grid_transfers(0, 1, rows, cols, chunk=width if cols > width else 0)
    n = rows * cols
    row_of = np.arange(n) // cols
    links, _ = _row_broadcasts(rows, cols, width)
    for i in range(rows):
        m = row_of[bs] == i
        p = grid_paths(np.zeros(n, np.int32), row_of.astype(np.int16), bs[m], bd[m], np.zeros(m.sum(), np.int8),
                       np.ones(m.sum(), np.int64))[(0, i)]
        assert p["broadcast_links"] == links[i]
    g = SimpleNamespace(rows=rows, cols=cols, operand="w")
    est = estimate_paths(g, width, allreduce=True)
    assert est["broadcast_links"] == links.max()
    assert est["allreduce_links"] == ck.tree_steps(cols)
    assert "allreduce_links" not in estimate_paths(g, width, "chain", allreduce=True)
    if (rows, cols, width) == (108, 114, 58):
        assert est["broadcast_links"] == 111


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    base = tmp_path_factory.mktemp("allreduce")
    out = {}
    for red in ("tree", "chain"):
        d = base / red
        assert main(["compile", TINY, "-o", str(d), "--context", "128", "--reduction", red, "--no-curve",
                     "--format", "json"]) == 0
        out[red] = str(d)
    return out


def _norm_hosts(doc):
    for k, w in enumerate(doc["wafers"]):
        for o in w["ops"]:
            if o["op"] in ck.ALLREDUCE_RIDERS and o["host"] is not None:
                yield k, o["host"], w["ops"][o["host"]]


def test_schedules_carry_the_tree_and_verify(compiled):
    tree = json.load(open(os.path.join(compiled["tree"], "schedule.json")))
    chain = json.load(open(os.path.join(compiled["chain"], "schedule.json")))
    hosts = list(_norm_hosts(tree))
    assert hosts
    for _, _, h in hosts:
        g = h["grids"][-1]
        assert g["allreduce_links"] == ck.tree_steps(g["cols"])
    assert not any("allreduce_links" in h["grids"][-1] for _, _, h in _norm_hosts(chain))
    with np.load(os.path.join(compiled["chain"], "wafer0.npz")) as z:
        assert not (z["route_kind"] == KIND_ALLREDUCE).any()
    for red in ("tree", "chain"):
        assert verify_dir(compiled[red]).ok
        c = compare_with_analytic(compiled[red])
        assert abs(c["relative_difference"]) < 0.10, c
    tps = {r: json.load(open(os.path.join(compiled[r], "report.json")))["performance"]
           ["decode_tokens_per_s_per_user"] for r in compiled}
    assert tps["tree"] > tps["chain"]


def _tampered(compiled, tmp_path, edit):
    doc, arrs, defects = load(compiled["tree"])
    edit(doc, arrs)
    return verify_dir(save(tmp_path / "t", doc, arrs, defects))


def _kind4(arrs):
    return np.flatnonzero(arrs[0]["route_kind"] == KIND_ALLREDUCE)


def test_dropped_allreduce_route_fails(compiled, tmp_path):
    res = _tampered(compiled, tmp_path, lambda doc, a: drop_routes(doc, a, 0, [_kind4(a)[-1]]))
    assert "allreduce-tree" in res.counts and "trees, not one" in str(res.violations)


def test_allreduce_route_to_another_row_fails(compiled, tmp_path):
    def edit(doc, a):
        ops = doc["wafers"][0]["ops"]
        i = next(i for i in _kind4(a) if ops[a[0]["route_op_src"][i]]["grids"][-1]["rows"] > 1)
        a[0]["route_dst_tile"][i] -= ops[a[0]["route_op_src"][i]]["grids"][-1]["cols"]   # the row above
    res = _tampered(compiled, tmp_path, edit)
    assert "allreduce-tree" in res.counts


def test_record_without_routes_and_routes_without_record_fail(compiled, tmp_path):
    def strip_routes(doc, a):
        drop_routes(doc, a, 0, _kind4(a))
    res = _tampered(compiled, tmp_path, strip_routes)
    assert "allreduce-tree" in res.counts                         # records claim trees no route builds

    def strip_records(doc, a):
        for _, _, h in _norm_hosts(doc):
            for f in ("allreduce_hops", "allreduce_links", "allreduce_down_hops"):
                h["grids"][-1].pop(f, None)
    res = _tampered(compiled, tmp_path, strip_records)
    assert "allreduce-tree" in res.counts                         # routes no record claims

    def claim_elsewhere(doc, a):
        o = next(o for o in doc["wafers"][0]["ops"] if o["op"] == "attention")
        o["grids"][-1].update(allreduce_hops=1, allreduce_links=1, allreduce_down_hops=1)
    res = _tampered(compiled, tmp_path, claim_elsewhere)
    assert "allreduce-record" in res.counts


def test_replay_walks_the_tree(compiled):
    """The replay's norm times follow the kind-4 routes: the tree's steps, not the chain's."""
    from wafercc.perf.eventsim import simulate_timing
    from wafercc.perf.model import CostParams, Machine, Workload, op_cycles
    from wafercc.target import load_target

    t = load_target("wse3")
    mc, p = Machine.of(t), CostParams.of(t)
    took = {}
    for red, d in compiled.items():
        ops = json.load(open(os.path.join(d, "schedule.json")))["wafers"][0]["ops"]
        w = simulate_timing(d).wafers[0]
        took[red] = [(w["op_end"][i] - w["op_start"][i], op_cycles(o, ops, mc, p, Workload(2, 128))["total"])
                     for i, o in enumerate(ops) if o["op"] == "norm" and o["host"] is not None]
    assert len(took["tree"]) == len(took["chain"]) > 0
    for (ev_t, an_t), (ev_c, an_c) in zip(took["tree"], took["chain"]):
        assert ev_t < ev_c and an_t < an_c
        assert abs(ev_t - an_t) <= 0.1 * an_t + 5          # the replay and the model agree per norm


def test_simulator_sums_the_norms_along_the_tree(compiled, tmp_path):
    from wafercc.sim.errors import SimulationError
    from wafercc.sim.placed import Placement
    from wafercc.sim.run import compare_with_onnxruntime

    for red in ("tree", "chain"):
        cmp = compare_with_onnxruntime(compiled[red], TINY, [1, 2, 3, 4], 3)
        assert max(cmp.errors) <= 1e-4 and cmp.tokens_match
        assert bool(cmp.simulation.calls.get("norm")) == (red == "tree"), cmp.simulation.calls
    doc, arrs, defects = load(compiled["tree"])
    drop_routes(doc, arrs, 0, [_kind4(arrs)[-1]])
    out = save(tmp_path / "t", doc, arrs, defects)
    shutil.copy(os.path.join(compiled["tree"], "model.ir"), out)
    with pytest.raises(SimulationError, match="all-reduce route is missing"):
        Placement.load(out)
