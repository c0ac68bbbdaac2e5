"""Partition below the layer (docs/planning.md, "Partition units"): block and op units, the values
live across a cut inside a layer, and the whole pipeline (plan, tiles, routes, verify, timing,
the tiled simulator against onnxruntime) on tiny-llama with a wafer boundary inside a layer."""
from __future__ import annotations

import contextlib
import io
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wafercc.cli import main
from wafercc.frontend.load import lower_model
from wafercc.passes.partition import balance_cpsat, balance_dp, partition, stage_latencies
from wafercc.plan.memory import merge_units, plan_memory, units_at
from wafercc.plan.options import PlanError, PlanOptions, SolverOptions
from wafercc.plan.planner import plan_wafers
from wafercc.target import load_target
from wafercc.target.device import Device

HERE = os.path.dirname(os.path.abspath(__file__))
LLAMA = os.path.join(HERE, "..", "models", "onnx", "tiny-llama.onnx")
SOLVER = SolverOptions(seed=0, workers=1, time_limit_s=5.0)


def _graph():
    g = lower_model(LLAMA)
    return getattr(g, "graph", g)


def small_target(tmp_path, height: int):
    """A 20 x (height - 2) core wse3-like target with 8 KiB of SRAM per core (2 KiB of it for data
    after the reserve and buffers): tiny-llama's layers (185 KB) then fill most of a wafer."""
    from target_util import tiny_target
    tiny_target(tmp_path, 27, height)
    src = tmp_path / f"tiny-27x{height}.toml"
    text = src.read_text(encoding="utf-8")
    assert "sram = { value = 48," in text
    dst = tmp_path / f"small-27x{height}.toml"
    dst.write_text(text.replace("sram = { value = 48,", "sram = { value = 8,", 1), encoding="utf-8")
    return str(dst)


def test_units_below_the_layer():
    mem = plan_memory(_graph(), PlanOptions(context=128))
    layer, block, op = (units_at(mem, g) for g in ("layer", "block", "op"))
    assert [u.name for u in layer] == ["embed", "layer 0", "layer 1", "head"]
    for atoms in (block, op):   # the same ops and bytes, cut finer
        assert sum((u.nodes for u in atoms), ()) == sum((u.nodes for u in layer), ())
        assert sum(u.total_bytes for u in atoms) == mem.total_bytes
    # blocks: attention and MLP, cut where only the residual stream is live
    l0 = [u for u in block if u.base == "layer 0"]
    assert [u.name for u in l0] == ["layer 0 ops 0-8", "layer 0 ops 9-15"]
    residual = layer[1].out_bytes
    assert residual > 0 and all(u.out_bytes == residual for u in l0)
    # ops: a cut between two projections of one input carries that input, the residual and more
    l0 = [u for u in op if u.base == "layer 0"]
    assert len(l0) == 10 and max(u.out_bytes for u in l0) >= 3 * residual
    # merged back on one wafer they are the layer again; split, named by their ops
    merged = merge_units(op, [0] * len(op), {u.name: len(u.nodes) for u in layer})
    assert [u.name for u in merged] == [u.name for u in layer]
    cut = [0] * 3 + [1] * (len(op) - 3)
    names = [u.name for u in merge_units(op, cut, {u.name: len(u.nodes) for u in layer})]
    assert names == ["embed", "layer 0 ops 0-1", "layer 0 ops 2-15", "layer 1", "head"]


def test_partition_option_is_checked():
    with pytest.raises(PlanError, match="partition 'expert'"):
        PlanOptions(partition="expert")


cut_instances = st.integers(2, 8).flatmap(lambda n: st.tuples(
    st.lists(st.integers(1, 20), min_size=n, max_size=n),
    st.lists(st.integers(1, 9), min_size=n, max_size=n),
    st.lists(st.integers(0, 12), min_size=n, max_size=n),
    st.integers(1, n)))


@settings(max_examples=40, deadline=None)
@given(cut_instances)
def test_balance_with_cut_costs_dp_matches_cpsat(inst):
    sizes, lat, cuts, w = inst
    caps = [max(sizes) * 3] * w
    dp = balance_dp(sizes, lat, caps, w, cuts)
    cp, st_ = balance_cpsat(sizes, lat, caps, w, SOLVER, None, cuts)
    if dp is None:
        assert cp is None
        return
    assert st_.status == "OPTIMAL"
    assert max(stage_latencies(cp, lat, cuts)) == max(stage_latencies(dp, lat, cuts)) == st_.objective


def test_cut_costs_move_the_boundary():
    # two equal halves, but cutting after unit 1 is dear: the balance cuts elsewhere
    sizes, lat, caps = [1] * 4, [10, 10, 10, 10], [10, 10]
    cheap = partition(sizes, lat, caps, SOLVER, wafers=2, cuts=[0, 0, 0, 0])
    dear = partition(sizes, lat, caps, SOLVER, wafers=2, cuts=[0, 25, 0, 0])
    assert cheap.wafer_of_unit == (0, 0, 1, 1) and cheap.max_stage_latency_ns == 20
    assert dear.wafer_of_unit in ((0, 1, 1, 1), (0, 0, 0, 1)) and dear.max_stage_latency_ns == 30


def test_planner_goes_below_the_layer_only_when_it_saves_wafers(tmp_path):
    t = load_target(small_target(tmp_path, 8))
    g, dev = _graph(), Device(t, "none", 0)
    layer = plan_wafers(g, t, PlanOptions(context=128, partition="layer"), dev)
    auto = plan_wafers(g, t, PlanOptions(context=128), dev)
    assert auto.required < layer.required and auto.partition in ("block", "op")
    assert any(" ops " in u for w in auto.wafers for u in w.units)
    assert any(f"whole layers need {layer.required}" in e for e in auto.explanation)
    assert dict(auto.tried)["layer"] == layer.required
    # every op on exactly one wafer, in graph order
    assert [n for u in auto.memory.units for n in u.nodes] == [n.name for n in g.nodes]
    wsh = load_target("wse3")
    big = plan_wafers(g, wsh, PlanOptions(context=128), Device(wsh, "none", 0))
    assert big.partition == "layer" and big.tried == (("layer", 1),)


def _compile(out, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(["compile", LLAMA, "-o", str(out), "--no-curve", "--format", "json", "--context", "128",
                   "--defects", "random:rate=0.01", *args])
    assert rc == 0
    return str(out)


@pytest.fixture(scope="module")
def split_dirs(tmp_path_factory):
    d = tmp_path_factory.mktemp("sublayer")
    return {"auto": _compile(d / "auto", "--target", small_target(d, 8)),
            "op": _compile(d / "op", "--target", small_target(d, 10), "--partition", "op"),
            "kv": _compile(d / "kv", "--target", small_target(d, 10), "--partition", "op",
                           "--kv-placement", "dedicated")}


@pytest.mark.parametrize("kind", ["auto", "op", "kv"])
def test_cut_inside_a_layer_verifies_and_simulates(split_dirs, kind):
    from wafercc.perf.eventsim import compare_with_analytic
    from wafercc.sim.run import compare_with_onnxruntime
    from wafercc.verify import verify_dir
    import numpy as np

    out = split_dirs[kind]
    doc = json.load(open(os.path.join(out, "schedule.json")))
    units = [u for w in doc["wafers"] if w.get("role", "pipeline") == "pipeline" for u in w["units"]]
    assert any(" ops " in u for u in units) and units == doc["units"]
    residual = 64 * 4    # hidden 64 at f32
    sent = [e["bytes_per_token"] for w in doc["wafers"] for e in w["inter_wafer"] if e["src_wafer"] == w["index"]]
    assert sent and min(sent) >= residual
    if kind != "auto":   # a cut between projections of one input carries it and the residual too
        assert max(sent) > residual
    rep = verify_dir(out)
    assert not rep.violations, rep.violations[:3]
    cmp = compare_with_onnxruntime(out, LLAMA, np.random.default_rng(0).integers(0, 256, (1, 5)), 5)
    assert max(cmp.errors) <= 1e-4
    np.testing.assert_array_equal(cmp.tokens, cmp.ref_tokens)
    r = compare_with_analytic(out)
    assert abs(r["event_seconds"] - r["analytic_seconds"]) <= 0.1 * r["analytic_seconds"]


def test_verifier_refuses_parts_out_of_order(split_dirs, tmp_path):
    import shutil
    from wafercc.verify import verify_dir

    out = str(tmp_path / "bad")
    shutil.copytree(split_dirs["op"], out)
    path = os.path.join(out, "schedule.json")
    doc = json.load(open(path))
    k = next(i for i, w in enumerate(doc["wafers"]) if any(" ops " in u for u in w["units"]))
    w = doc["wafers"][k]
    i = next(j for j, u in enumerate(w["units"]) if " ops " in u)
    lay, rng = w["units"][i].split(" ops ")
    a, b = map(int, rng.split("-"))
    w["units"][i] = f"{lay} ops {a + 1}-{b}" if b > a else f"{lay} ops {a}-{b + 1}"
    with open(path, "w") as f:
        json.dump(doc, f)
    codes = {v.code for v in verify_dir(out).violations}
    assert codes & {"layer-order", "layer-missing", "layer-wrong-wafer"}, codes


def test_tile_shortfall_derates_every_wafer(tmp_path):
    from wafercc.plan.planner import TileShortfall

    t = load_target(small_target(tmp_path, 9))       # two wafers at 88 % of their bytes
    g, dev = _graph(), Device(t, "none", 0)
    calls = []

    def check(p):               # the first plan's wafer 0 is 5 % short of cores, the next one fits
        calls.append(p)
        if len(calls) == 1:
            w = p.wafers[0]
            return TileShortfall("wafer 0: short", 0, int(w.usable_cores * 1.05), w.usable_cores)
        return None

    p = plan_wafers(g, t, PlanOptions(context=128), dev, tile_check=check)
    first = calls[0].wafers[0].utilisation
    assert len(calls) == 2 and calls[0].used >= 2 and p.used >= calls[0].used
    share = first / 1.05 * (1 - 1e-3)
    assert share > 0.8 and all(w.utilisation <= share + 1e-9 for w in p.wafers)
    assert any(f"at most {share:.1%}" in e for e in p.explanation)
