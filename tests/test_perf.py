"""The timing model: paths, the analytic op model, pipeline/speculative formulas, the report section,
the schedule's timeline and its save / load round trip."""
from __future__ import annotations

import filecmp
import json
import math
import os

import numpy as np
import pytest

from wafercc.options import STAGES

from report_fields import check_report_fields
from target_util import preset_text, write_variant
from wafercc.backend.schedule_io import load_schedule, save_schedule
from wafercc.cli import main
from wafercc.errors import InputFileError
from wafercc.perf.model import (CostModelError, CostParams, Machine, Workload, deferred_deps, expected_accepted,
                                op_cycles, pipeline_round, wafer_time)
from wafercc.perf.paths import grid_paths
from wafercc.passes.cost_kernel import tree_steps
from wafercc.passes.transfers import grid_transfers
from wafercc.target import load_target

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "models", "onnx", "tiny-llama.onnx")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("perf") / "out"
    rc = main(["compile", TINY, "--target", "wse3", "-o", str(out), "--context", "128", "--batch", "2",
               "--prompt-tokens", "32", "--speculative", TINY, "--spec-tokens", "3", "--spec-acceptance", "0.6",
               "--format", "json"])
    assert rc == 0
    return out


def test_paths_out_and_in_forests():
    # one grid of 4 tiles: a broadcast chain 0->1->2->3 with 1, 2, 3 hops; a reduction in-tree 1,2,3 -> 0
    op = np.zeros(4, np.int32)
    grid = np.zeros(4, np.int16)
    src = np.array([0, 1, 2, 1, 2, 3])
    dst = np.array([1, 2, 3, 0, 0, 0])
    kind = np.array([0, 0, 0, 1, 1, 1])
    hops = np.array([1, 2, 3, 4, 5, 6])
    p = grid_paths(op, grid, src, dst, kind, hops)[(0, 0)]
    assert (p["broadcast_hops"], p["broadcast_links"]) == (6, 3)
    # the root adds its three partials one step each, all three ready at once: 3 steps over 1 link
    assert (p["reduction_hops"], p["reduction_links"]) == (6, 3)


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 7, 8, 9, 31, 32, 33, 200])
def test_reduction_steps_of_column_trees_and_chains(rows):
    # the transfer builder's binomial column trees take ceil(log2 rows) steps; a chain rows - 1
    bs, bd, rs, rd = grid_transfers(0, 1, rows, 2)
    n = rows * 2
    op, grid = np.zeros(n, np.int32), np.zeros(n, np.int16)
    src, dst = np.r_[bs, rs], np.r_[bd, rd]
    kind = np.r_[np.zeros(len(bs)), np.ones(len(rs))].astype(np.int8)
    hops = np.abs(src // 2 - dst // 2) + np.abs(src % 2 - dst % 2)
    p = grid_paths(op, grid, src, dst, kind, hops)[(0, 0)]
    assert p["reduction_links"] == math.ceil(math.log2(rows)) == tree_steps(rows)
    assert p["reduction_hops"] == rows - 1                     # every edge runs down the column to its root
    assert (rd // 2 == rows - 1).sum() == 2 * tree_steps(rows)  # the root row's fan-in: one child per step
    chain = np.arange(rows - 1)
    c = grid_paths(np.zeros(rows, np.int32), np.zeros(rows, np.int16), chain, chain + 1,
                   np.ones(rows - 1, np.int8), np.ones(rows - 1))[(0, 0)]
    assert c["reduction_links"] == rows - 1


def test_paths_reject_a_non_forest():
    op, grid = np.zeros(3, np.int32), np.zeros(3, np.int16)
    with pytest.raises(ValueError, match="forest"):   # tile 2 receives from two, tile 0 sends to two
        grid_paths(op, grid, np.array([0, 0, 1]), np.array([1, 2, 2]), np.zeros(3, np.int8), np.ones(3))


def _gemv(i, deps, tile=(64, 64), rows=4, cols=4, hops=3):
    g = {"grid": 0, "operand": "w", "experts": 1, "rows": rows, "cols": cols, "k": tile[0] * rows,
         "n": tile[1] * cols, "tile_k": tile[0], "tile_n": tile[1], "unit_bits": 16,
         "broadcast_hops": hops, "broadcast_links": cols - 1, "reduction_hops": hops, "reduction_links": rows - 1}
    return {"id": i, "name": f"op{i}", "op": "matmul", "role": "gemv", "host": None, "flops": 0.0,
            "grids": [g], "act_in_hops": 0, "deps": deps}


def test_independent_ops_overlap_and_dependent_ops_add():
    t = load_target("wse3")
    mc, p = Machine.of(t), CostParams.of(t)
    w = Workload(2.0, 64)
    one = wafer_time(0, [_gemv(0, [])], mc, p, w).cycles
    par = wafer_time(0, [_gemv(0, []), _gemv(1, []), _gemv(2, [0, 1])], mc, p, w)   # q, k in parallel, then o
    assert par.cycles == pytest.approx(2 * one)
    seq = wafer_time(0, [_gemv(0, []), _gemv(1, [0]), _gemv(2, [1])], mc, p, w)
    assert seq.cycles == pytest.approx(3 * one)
    assert par.compute + par.fabric == pytest.approx(par.cycles)


@pytest.mark.parametrize("deferred", [True, False])
def test_a_gemv_overlaps_the_rms_norm_it_reads(deferred):
    """RMS norm -> GEMV: the GEMV starts with the norm on the raw input and applies 1 / rms at its
    roots once the norm's all-reduce is done (records.scale_deferred); a norm whose scale does not
    commute (a layer norm's mean) makes it wait, as does a norm read by an op that is not a GEMV."""
    t = load_target("wse3")
    mc, p = Machine.of(t), CostParams.of(t)
    w = Workload(2.0, 64)
    g = _gemv(1, [0], hops=40)
    g["grids"][0].update(allreduce_hops=30, allreduce_links=5, allreduce_down_hops=30)
    norm = {"id": 0, "name": "norm", "op": "norm", "role": "rider", "host": 1, "flops": 64.0, "grids": [],
            "act_in_hops": 0, "deps": [], "scale_deferred": deferred}
    g2 = dict(_gemv(2, [1]), act_in_hops=7)
    ops = [norm, g, g2]
    wt = wafer_time(0, ops, mc, p, w)
    n = op_cycles(norm, ops, mc, p, w)["total"]
    m = op_cycles(g, ops, mc, p, w)["total"]
    assert n > 100 and m > n                   # the norm's all-reduce is hidden under the GEMV when deferred
    assert wt.end[1] == pytest.approx(m if deferred else n + m)
    assert wt.compute + wt.fabric == pytest.approx(wt.cycles)
    # the norm longer than the GEMV: the GEMV ends when 1 / rms has come over its activation route
    slow = dict(norm, flops=64.0 * 1e6)
    wt2 = wafer_time(0, [slow, dict(g, act_in_hops=5), g2], mc, p, w)
    ns = op_cycles(slow, ops, mc, p, w)["total"]
    assert wt2.end[1] == pytest.approx(ns + 5 * mc.hop if deferred else ns + m + 5 * mc.hop)
    assert wt2.compute + wt2.fabric == pytest.approx(wt2.cycles)
    assert deferred_deps(g2, ops) == set()     # it reads a GEMV, not a norm


def test_only_whole_dim_rms_norms_defer_their_scale():
    from wafercc.ir import DType, Graph, ValueKind
    from wafercc.perf.records import scale_deferred
    g = Graph("n")
    g.add_value("x", (1, 8), DType.BF16, ValueKind.INPUT)
    for v, n in (("s", 8), ("b", 8), ("s4", 4)):
        g.add_value(v, (n,), DType.BF16, ValueKind.WEIGHT)
    cases = [({"x": "x", "scale": "s"}, {"kind": "rms"}, True),
             ({"x": "x", "scale": "s4"}, {"kind": "rms", "group": 4}, False),     # per-group statistics
             ({"x": "x", "scale": "s", "bias": "b"}, {"kind": "rms"}, False),     # a bias: W b
             ({"x": "x", "scale": "s", "bias": "b"}, {"kind": "layer"}, False)]   # the mean
    for ins, attrs, want in cases:
        n = g.add_node("norm", ins, attrs=dict(attrs, eps=1e-6))
        assert scale_deferred(n) is want, attrs


def test_the_launch_style_mapping_waits_for_its_norms():
    """--reduction chain is the launch-style mapping the served rows are fitted with (docs/cost-model.md):
    it defers no norm's scale; the default tree mapping defers tiny-llama's RMS norms."""
    from wafercc.frontend.load import lower_model
    from wafercc.perf.estimate import estimate_program
    from wafercc.plan.options import PlanOptions
    from wafercc.target.device import Device
    t = load_target("wse3")
    g = lower_model(os.path.join(ROOT, "models", "onnx", "tiny-llama.onnx")).graph
    got = {}
    for red in ("tree", "chain"):
        _, prog = estimate_program(g, t, PlanOptions(reduction=red, context=128), Device(t, None, 0))
        got[red] = [r["scale_deferred"] for ops in prog.wafers for r in ops if r["op"] == "norm"]
    assert got["tree"] and all(got["tree"])
    assert len(got["chain"]) == len(got["tree"]) and not any(got["chain"])


def test_bigger_tiles_cost_more_compute():
    t = load_target("wse3")
    mc, p = Machine.of(t), CostParams.of(t)
    w = Workload(2.0, 64)
    small = wafer_time(0, [_gemv(0, [], (32, 32))], mc, p, w)
    big = wafer_time(0, [_gemv(0, [], (128, 128))], mc, p, w)
    assert big.compute == pytest.approx(16 * small.compute)
    # 128 x 128 MACs at 8 MACs/cycle and the calibrated efficiency
    assert big.compute == pytest.approx(128 * 128 / (mc.macs_per_cycle * p.compute_efficiency))


def test_expected_accepted_tokens():
    assert expected_accepted(4, 0.0) == 1.0
    assert expected_accepted(4, 1.0) == 5.0
    assert expected_accepted(4, 0.7) == pytest.approx(1 + 0.7 + 0.49 + 0.343 + 0.2401)


def test_pipeline_round_fills_the_stages():
    # 4 equal stages of 1 s, no boundaries: one user gets a token every 4 s; 4 users share the round
    assert pipeline_round([1.0] * 4, [0.0] * 3, 1)[0] == pytest.approx(4.0)
    r, groups, per = pipeline_round([1.0] * 4, [0.0] * 3, 4)
    assert (r, groups, per) == (pytest.approx(4.0), 4, 1)
    r, groups, per = pipeline_round([1.0] * 4, [0.0] * 3, 8)   # stages at 2 users each: same latency model
    assert (groups, per) == (4, 2)


def test_cost_params_need_every_parameter(tmp_path):
    lines = {ln.split(" =")[0]: ln for ln in preset_text("wse3").splitlines() if " = { value" in ln}
    path = write_variant(tmp_path, lines["op_sync"] + "\n", "")
    with pytest.raises(CostModelError, match="op_sync"):
        CostParams.of(load_target(path))
    bad = write_variant(tmp_path, lines["reduce_step"], lines["reduce_step"].replace('"cycles"', '"ns"'),
                        name="unit.toml")
    with pytest.raises(CostModelError, match="expected 'cycles'"):
        CostParams.of(load_target(bad))


def test_report_has_every_field(compiled):
    r = json.loads((compiled / "report.json").read_text())
    check_report_fields(r)
    perf = r["performance"]
    assert perf["time_per_output_token_s"] > 0
    assert perf["decode_tokens_per_s_per_user"] == pytest.approx(1 / perf["time_per_output_token_s"], rel=1e-6)
    assert sum(perf["breakdown_s"].values()) == pytest.approx(perf["time_per_output_token_s"], rel=1e-6)
    assert perf["prompt_tokens"] == 32 and perf["ttft_s"] > perf["time_per_output_token_s"]
    assert perf["decode_tokens_per_s_aggregate"] >= perf["decode_tokens_per_s_per_user_at_batch"]
    curve = perf["wafers_curve"]
    assert curve[0]["wafers"] == r["wafers"]["required"] and curve[-1]["wafers"] >= 2 * r["wafers"]["required"]
    assert [c["source"] for c in curve].count("schedule") == 1
    s = perf["speculative"]
    assert s["proposed_tokens"] == 3 and s["acceptance"] == 0.6
    assert s["expected_tokens_per_step"] == pytest.approx(expected_accepted(3, 0.6))
    assert s["decode_tokens_per_s_per_user"] == pytest.approx(s["expected_tokens_per_step"] / s["step_s"], rel=1e-3)
    rec = json.loads((compiled / "compile.json").read_text())     # wall times: not in the report
    assert [p["name"] for p in rec["stages"]] == list(STAGES) and "compile" not in r
    assert rec["seconds"] == pytest.approx(sum(p["seconds"] for p in rec["stages"]), abs=0.01)


def test_timeline_matches_the_report(compiled):
    doc = json.loads((compiled / "schedule.json").read_text())
    rep = json.loads((compiled / "report.json").read_text())
    tl = doc["timeline"]
    assert tl["prompt_tokens"] == 32 and tl["batch"] == 2 and tl["context"] == 128
    w = tl["wafers"][0]
    ops = doc["wafers"][0]["ops"]
    assert len(w["ops"]) == len(ops)
    for (s, e), op in zip(w["ops"], ops):
        assert 0 <= s <= e <= w["cycles"]
        late = deferred_deps(op, ops)             # a GEMV reading an RMS norm starts with it, ends after it
        assert all(w["ops"][d][1] <= s for d in op["deps"] if d not in late)
        assert all(w["ops"][d][0] <= s and w["ops"][d][1] <= e for d in late)
    assert any(deferred_deps(op, ops) for op in ops)  # tiny-llama's norms are RMS norms
    # one wafer: the token's time is the wafer's cycles at the clock
    assert w["cycles"] / tl["clock_hz"] == pytest.approx(rep["performance"]["time_per_output_token_s"], rel=1e-3)


def test_round_trip_is_byte_identical(compiled, tmp_path):
    s = load_schedule(str(compiled))
    save_schedule(s, str(tmp_path))
    for name in ("schedule.json", "defects.npz", "wafer0.npz"):
        assert filecmp.cmp(compiled / name, tmp_path / name, shallow=False), name
    assert s.wafers[0]["route_src_tile"].shape == s.wafers[0]["route_kind"].shape


def test_load_rejects_a_wrong_schema(compiled, tmp_path):
    s = load_schedule(str(compiled))
    s.doc["schema"] = "wafercc.schedule/1"
    save_schedule(s, str(tmp_path))
    with pytest.raises(InputFileError, match="expected one of 'wafercc.schedule/2', 'wafercc.schedule/3'"):
        load_schedule(str(tmp_path))


def test_timeline_transfers_cross_each_wafer_boundary():
    from wafercc.perf.evaluate import Boundary, Program, timeline, tpot_seconds
    t = load_target("wse3")
    mc, p = Machine.of(t), CostParams.of(t)
    prog = Program(((_gemv(0, []),), (_gemv(0, []), _gemv(1, [0]))), (Boundary(0, 16384, 40),), 2.0, 128, 1)
    tl = timeline(prog, mc, p, 32)
    w0, w1 = tl["wafers"]
    (x,) = tl["transfers"]
    assert (x["src_wafer"], x["dst_wafer"], x["bytes"]) == (0, 1, 16384)
    assert x["start_cycle"] == w0["cycles"] and x["end_cycle"] == w1["arrive_cycle"] > x["start_cycle"]
    # latency + bytes / bandwidth + edge hops, in cycles
    want = (p.inter_wafer_latency_s + 16384 / mc.off_wafer_bandwidth) * mc.clock_hz + 40 * mc.hop
    assert x["end_cycle"] - x["start_cycle"] == pytest.approx(want, abs=1)
    assert (w1["arrive_cycle"] + w1["cycles"]) / mc.clock_hz == pytest.approx(tpot_seconds(prog, mc, p, 32), rel=1e-4)   # integer cycles


