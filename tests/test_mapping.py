"""Layer-group mappings (docs/mapping.md): ``--mapping regions | groups:G | wafer | auto``.

A four-layer tiny llama (models/make_tiny.py with four layers) is compiled with each mapping; every
schedule must verify, match onnxruntime through the placed simulator, and replay within 10 % of the
analytic model; tampering a shared tile or route must fail; the search must pick the fastest
candidate it priced.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys

import numpy as np
import pytest

from wafercc.cli import main
from wafercc.options import OptionError, build_options
from wafercc.perf.eventsim import compare_with_analytic
from wafercc.perf.mapping_search import mapping_candidates, search_mapping
from wafercc.sim import SimulationError
from wafercc.sim.placed import Placement
from wafercc.sim.run import compare_with_onnxruntime
from wafercc.verify import verify_dir

import verify_tamper as vt
from target_util import tiny_target

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
STEPS = 3
MAPPINGS = ("regions", "groups:2", "wafer")


@pytest.fixture(scope="module")
def tiny4(tmp_path_factory):
    """tiny-llama with four layers (two groups of two under groups:2)."""
    sys.path.insert(0, ROOT)
    import models.make_tiny as mt
    path = str(tmp_path_factory.mktemp("tiny4") / "tiny4.onnx")
    saved = mt.COMMON
    mt.COMMON = dict(saved, num_hidden_layers=4)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            mt.export("tiny-llama", path)
    finally:
        mt.COMMON = saved
    return path


def _compile(model, out, *args) -> str:
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["compile", str(model), "-o", str(out), "--context", "128", "--no-cache", "--no-curve",
                     "--format", "json", *args]) == 0
    return str(out)


@pytest.fixture(scope="module")
def compiled(tiny4, tmp_path_factory):
    base = tmp_path_factory.mktemp("mapping")
    return {m: _compile(tiny4, base / m.replace(":", "-"), "--mapping", m) for m in MAPPINGS}


def _ops(outdir, k=0):
    with open(os.path.join(outdir, "schedule.json")) as f:
        return json.load(f)["wafers"][k]["ops"]


def _arrays(outdir, k=0):
    with np.load(os.path.join(outdir, f"wafer{k}.npz")) as z:
        return {n: z[n] for n in z.files}


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_each_mapping_verifies_and_matches_onnxruntime(compiled, tiny4, mapping):
    out = compiled[mapping]
    res = verify_dir(out)
    assert res.ok, res.violations[:3]
    cmp = compare_with_onnxruntime(out, tiny4, np.random.default_rng(0).integers(0, 256, (1, 5)), STEPS)
    assert max(cmp.errors) <= 1e-4, cmp.errors
    np.testing.assert_array_equal(cmp.tokens, cmp.ref_tokens)
    c = compare_with_analytic(out)
    assert abs(c["relative_difference"]) < 0.10, c


@pytest.mark.parametrize("mapping,group", [("groups:2", 2), ("wafer", 4)])
def test_shared_ops_sit_on_their_templates_cores(compiled, mapping, group):
    out = compiled[mapping]
    ops, a = _ops(out), _arrays(out)
    shared = [o for o in ops if o.get("routes_of") is not None]
    gemv = [o for o in ops if o["role"] in ("gemv", "kv") and o["layer"] is not None]
    assert len(shared) == len(gemv) * (group - 1) // group
    for o in shared:
        t = ops[o["routes_of"]]
        assert t.get("routes_of") is None and t["layer"] % group == 0 and o["layer"] // group == t["layer"] // group
        mine, theirs = a["tile_op"] == o["id"], a["tile_op"] == t["id"]
        for key in ("tile_core_row", "tile_core_col", "tile_grid", "tile_row", "tile_col"):
            np.testing.assert_array_equal(a[key][mine], a[key][theirs])
        own = (a["route_kind"] <= 1) & (a["route_op_src"] == o["id"])
        assert not own.any()                      # it uses the template's trees
    # several tiles per core, the bytes summed within the budget (the verifier checks the sum)
    cores = a["tile_core_row"].astype(np.int64) * 10_000 + a["tile_core_col"]
    assert len(np.unique(cores)) < len(cores)
    # fewer cores than regions: the group's layers share one floorplan
    r = _arrays(compiled["regions"])
    assert len(np.unique(cores)) < len(r["tile_op"])


def test_groups_on_two_defective_wafers(tiny4, tmp_path):
    tiny_target(tmp_path, 40, 40)
    out = _compile(tiny4, tmp_path / "out", "--mapping", "groups:2", "--target", str(tmp_path / "tiny-40x40.toml"),
                   "--defects", "random:0.01", "--wafers", "2")
    assert verify_dir(out).ok
    assert any(o.get("routes_of") is not None for k in range(2) for o in _ops(out, k))
    cmp = compare_with_onnxruntime(out, tiny4, np.random.default_rng(1).integers(0, 256, (1, 5)), STEPS)
    assert max(cmp.errors) <= 1e-4
    assert abs(compare_with_analytic(out)["relative_difference"]) < 0.10


def _tampered(outdir, tmp_path, fn) -> str:
    doc, arrs, defects = vt.load(outdir)
    fn(doc, arrs, defects)
    dst = tmp_path / "tampered"
    shutil.copytree(outdir, dst)                 # model.ir and report beside the tampered files
    return vt.save(str(dst), doc, arrs, defects)


def _codes(outdir) -> set[str]:
    return set(verify_dir(outdir).counts)


def test_tampered_shared_tile_fails(compiled, tmp_path):
    def move(doc, arrs, defects):
        a, ops = arrs[0], doc["wafers"][0]["ops"]
        o = next(o for o in ops if o.get("routes_of") is not None and o["role"] == "gemv")
        i = int(np.flatnonzero(a["tile_op"] == o["id"])[0])
        used = set(zip(a["tile_core_row"].tolist(), a["tile_core_col"].tolist()))
        alive = defects["alive_0"]
        free = next((r, c) for r, c in zip(*np.nonzero(alive)) if (r, c) not in used)
        a["tile_core_row"][i], a["tile_core_col"][i] = free
    out = _tampered(compiled["groups:2"], tmp_path, move)
    assert "shared-routes" in _codes(out)
    with pytest.raises(SimulationError, match="core of its template"):
        Placement.load(out)


def test_tampered_template_reference_fails(compiled, tmp_path):
    def retarget(doc, arrs, defects):
        ops = doc["wafers"][0]["ops"]
        o = next(o for o in ops if o.get("routes_of") is not None and o["op"] == "matmul")
        # an op of another shape (the embedding's lookup grid)
        o["routes_of"] = next(p["id"] for p in ops if p["role"] == "lookup")
    assert "shared-routes" in _codes(_tampered(compiled["groups:2"], tmp_path, retarget))


def test_dropped_layer_to_layer_route_fails(compiled, tmp_path):
    def drop(doc, arrs, defects):
        a, ops = arrs[0], doc["wafers"][0]["ops"]
        tmpl = [o.get("routes_of") if o.get("routes_of") is not None else o["id"] for o in ops]
        act = np.flatnonzero(a["route_kind"] == 2)
        # the route from a group's first layer's last op back to its first op (feeding the next layer)
        loop = [i for i in act if tmpl[a["route_op_dst"][i]] < tmpl[a["route_op_src"][i]]]
        assert loop
        vt.drop_routes(doc, arrs, 0, loop[:1])
    codes = _codes(_tampered(compiled["groups:2"], tmp_path, drop))
    assert codes & {"activation-missing", "dataflow-unreached"}


def test_dropped_template_broadcast_fails(compiled, tmp_path):
    def drop(doc, arrs, defects):
        a, ops = arrs[0], doc["wafers"][0]["ops"]
        t = next(o["routes_of"] for o in ops if o.get("routes_of") is not None and o["op"] == "matmul")
        vt.drop_routes(doc, arrs, 0, np.flatnonzero((a["route_kind"] == 0) & (a["route_op_src"] == t))[:1])
    assert "broadcast-tree" in _codes(_tampered(compiled["groups:2"], tmp_path, drop))


def test_search_picks_the_fastest_priced(tiny4):
    from wafercc.frontend.load import lower_model
    from wafercc.target import load_target
    from wafercc.target.device import Device
    graph = lower_model(tiny4).graph
    target = load_target("wse3")
    opts = build_options(context=128, mapping="auto")
    dev = Device(target, opts.defects, opts.seed)
    a = search_mapping(graph, target, opts.plan, dev, 128)
    assert a == search_mapping(graph, target, opts.plan, dev, 128)            # deterministic
    assert [(r["mapping"], r["reduction"]) for r in a["alternatives"]] == [
        (m, red) for m in mapping_candidates(4) for red in ("tree", "chain")]
    assert mapping_candidates(4) == ["regions", "groups:2", "wafer"]
    fits = [r for r in a["alternatives"] if r["fits"]]
    best = max(r["tokens_per_s_per_user"] for r in fits)
    first = next(r for r in fits if r["tokens_per_s_per_user"] == best)
    assert (a["chosen"]["mapping"], a["chosen"]["reduction"]) == (first["mapping"], first["reduction"])
    assert len({r["tokens_per_s_per_user"] for r in fits}) > 1        # the candidates are priced apart


def test_auto_reports_its_choice(tiny4, tmp_path):
    out = _compile(tiny4, tmp_path / "auto", "--mapping", "auto")
    with open(os.path.join(out, "report.json")) as f:
        m = json.load(f)["mapping"]
    assert m["method"] == "enumeration" and m["alternatives"] and m["why"]
    assert verify_dir(out).ok
    ops = _ops(out)
    shared = any(o.get("routes_of") is not None for o in ops)
    assert shared == (m["chosen"]["mapping"] != "regions")


def test_given_mapping_is_reported(compiled):
    with open(os.path.join(compiled["groups:2"], "report.json")) as f:
        m = json.load(f)["mapping"]
    assert m["chosen"] == {"mapping": "groups:2", "reduction": "tree"} and m["alternatives"] is None


@pytest.mark.parametrize("bad", ["groups:0", "groups:x", "layers", ""])
def test_bad_mapping_is_one_line(bad):
    with pytest.raises(OptionError, match="mapping"):
        build_options(mapping=bad)


def test_stream_bottleneck_adds_shared_ops():
    from wafercc.perf.model import Workload, bottleneck_cycles
    from wafercc.perf.model import CostParams, Machine
    from wafercc.target import load_target
    t = load_target("wse3")
    mc, p = Machine.of(t), CostParams.of(t)
    g = {"grid": 0, "operand": "w", "experts": 1, "rows": 4, "cols": 4, "k": 512, "n": 512, "tile_k": 128,
         "tile_n": 128, "unit_bits": 16, "broadcast_hops": 3, "broadcast_links": 3, "reduction_hops": 3,
         "reduction_links": 2}
    op = {"id": 0, "name": "a", "op": "matmul", "role": "gemv", "host": None, "flops": 0.0, "grids": [g],
          "deps": [], "act_in_hops": 0}
    w = Workload(2.0, 128, 1)
    one = bottleneck_cycles([op], mc, p, w)
    apart = bottleneck_cycles([op, dict(op, id=1, name="b")], mc, p, w)
    shared = bottleneck_cycles([op, dict(op, id=1, name="b", routes_of=0)], mc, p, w)
    assert apart == pytest.approx(one) and shared == pytest.approx(2 * one)


def test_moe_experts_share_a_group(tmp_path):
    moe = os.path.join(ROOT, "models", "onnx", "tiny-moe.onnx")
    out = _compile(moe, tmp_path / "moe", "--mapping", "groups:2")
    assert verify_dir(out).ok
    shared = {o["op"] for o in _ops(out) if o.get("routes_of") is not None}
    assert "moe" in shared and "attention" in shared
    cmp = compare_with_onnxruntime(out, moe, np.random.default_rng(2).integers(0, 256, (1, 5)), STEPS)
    assert max(cmp.errors) <= 1e-4 and cmp.simulation.calls.get("moe")
    assert abs(compare_with_analytic(out)["relative_difference"]) < 0.10


@pytest.mark.parametrize("mapping,field", [("regions", "reduction_load"), ("regions", "broadcast_hops"),
                                           ("groups:2", "reduction_hops"), ("wafer", "broadcast_load")])
def test_recorded_paths_must_be_the_routed_ones(compiled, tmp_path, mapping, field):
    """The timing model reads each grid's recorded paths: one that disagrees with the routes is
    caught (``path-record``), also on an op that uses its template's routes."""
    shared = mapping != "regions"

    def edit(doc, arrs, defects):
        ops = doc["wafers"][0]["ops"]
        o = next(o for o in ops if o["role"] == "gemv" and (o.get("routes_of") is not None) == shared)
        o["grids"][0][field] += 1
        edit.label = f"op {o['id']} '{o['name']}' grid 0: {field} {o['grids'][0][field]} recorded, its routes give " \
                     f"{o['grids'][0][field] - 1}"

    res = verify_dir(_tampered(compiled[mapping], tmp_path, edit))
    assert res.counts == {"path-record": 1}, res.violations[:3]
    assert edit.label in str(res.violations[0])


def _norm_hosts(ops):
    hosts = {o["host"] for o in ops if o["op"] == "norm" and o.get("host") is not None}
    return [o for o in ops if o["id"] in hosts and o["grids"]]


@pytest.mark.parametrize("mapping", ("groups:2", "wafer"))
def test_shared_norm_hosts_reduce_on_their_templates_tree(compiled, mapping):
    """A later layer's norm rides on a shared op: it all-reduces on the template's kind-4 tree, so
    its record carries the template's figures (not the chain fallback of a host without a tree)."""
    from wafercc.perf.eventsim import analytic_program
    from wafercc.perf.evaluate import Workload
    from wafercc.perf.model import CostParams, Machine, op_cycles
    out = compiled[mapping]
    ops = _ops(out)
    shared = [o for o in _norm_hosts(ops) if o.get("routes_of") is not None]
    assert shared
    for o in shared:
        t = ops[o["routes_of"]]
        assert "allreduce_links" in t["grids"][-1]
        for f in ("allreduce_hops", "allreduce_links", "allreduce_down_hops"):
            assert o["grids"][-1][f] == t["grids"][-1][f]
    from wafercc.target import load_target
    with open(os.path.join(out, "schedule.json")) as f:
        doc = json.load(f)
    target = load_target(doc["target"])
    mc, p = Machine.of(target), CostParams.of(target)
    prog = analytic_program(out)
    recs = list(prog.wafers[0])
    w = Workload(prog.act_bytes, 16)
    norms = [r for r in recs if r["op"] == "norm" and r.get("host") is not None]
    by_tmpl = {}
    for r in norms:                 # every layer's input norm costs what the template layer's does
        h = recs[r["host"]]
        by_tmpl.setdefault(h.get("routes_of") if h.get("routes_of") is not None else r["host"], set()).add(
            round(op_cycles(r, recs, mc, p, w)["fabric"], 6))
    assert all(len(v) == 1 for v in by_tmpl.values()), by_tmpl


def test_shared_norm_host_with_other_tree_figures_fails(compiled, tmp_path):
    def edit(doc, arrs, defects):
        ops = doc["wafers"][0]["ops"]
        o = next(o for o in _norm_hosts(ops) if o.get("routes_of") is not None)
        o["grids"][-1]["allreduce_links"] += 1
    assert "allreduce-record" in _codes(_tampered(compiled["groups:2"], tmp_path, edit))


@pytest.mark.parametrize("mapping", ("groups:2", "wafer"))
def test_groups_across_a_cut_inside_a_layer(tiny4, tmp_path, mapping):
    """--partition op cuts a layer between two wafers: the cut layer's head (end of wafer 0) and tail
    (start of wafer 1) take cores of their own, the whole layers still share (the search listed
    such a plan as not fitting: 'layer 19 has other ops than layer 0' on Llama-3.1-70B)."""
    tiny_target(tmp_path, 40, 40)
    out = _compile(tiny4, tmp_path / "out", "--mapping", mapping, "--target", str(tmp_path / "tiny-40x40.toml"),
                   "--partition", "op", "--wafers", "2")
    with open(os.path.join(out, "schedule.json")) as f:
        wafers = json.load(f)["wafers"]
    assert any(" ops " in u for w in wafers for u in w["units"]), [w["units"] for w in wafers]   # a cut layer
    assert any(o.get("routes_of") is not None for o in wafers[0]["ops"])
    assert verify_dir(out).ok
    cmp = compare_with_onnxruntime(out, tiny4, np.random.default_rng(2).integers(0, 256, (1, 5)), STEPS)
    assert max(cmp.errors) <= 1e-4
    assert abs(compare_with_analytic(out)["relative_difference"]) < 0.10


def test_shared_norm_host_whose_template_has_no_tree_fails_in_the_simulator(compiled, tmp_path):
    def edit(doc, arrs, defects):
        ops = doc["wafers"][0]["ops"]
        o = next(o for o in _norm_hosts(ops) if o.get("routes_of") is not None)
        for f in ("allreduce_hops", "allreduce_links", "allreduce_down_hops"):
            ops[o["routes_of"]]["grids"][-1].pop(f)
    out = _tampered(compiled["groups:2"], tmp_path, edit)
    with pytest.raises(SimulationError, match="claims an all-reduce tree, but its template"):
        Placement.load(out)
    assert "allreduce-record" in _codes(out)
