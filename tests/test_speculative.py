"""Speculative decoding as a compiled configuration: the draft placed and routed on its own wafers
after the target's, verified, simulated and timed from its routed schedule; the target's k+1-column
verify pass; the k sweep; plain and speculative figures side by side; bad inputs."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from wafercc.cli import main
from wafercc.perf.evaluate import (MAX_PROPOSED, DEFAULT_ACCEPTANCE, Speculative, speculative_ceiling,
                                   speculative_figures, token_seconds, verify_pass_seconds)
from wafercc.perf.eventsim import analytic_program, compare_with_analytic
from wafercc.perf.model import CostParams, Machine, Workload, expected_accepted, kernel_phases, rates
from wafercc.target import load_target
from wafercc.verify import verify_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "models", "onnx", "tiny-llama.onnx")
MOE = os.path.join(ROOT, "models", "onnx", "tiny-moe.onnx")


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    """tiny-moe as the target, tiny-llama as its draft (two models: their node names differ)."""
    out = tmp_path_factory.mktemp("spec") / "out"
    assert main(["compile", MOE, "--target", "wse3", "-o", str(out), "--context", "128", "--prompt-tokens", "32",
                 "--speculative", TINY, "--no-curve", "--format", "json"]) == 0
    return out


def _doc(d):
    return json.loads((d / "schedule.json").read_text())


def test_draft_is_placed_on_its_own_wafers(spec):
    doc = _doc(spec)
    roles = [w.get("role") for w in doc["wafers"]]
    n = roles.index("draft")
    assert n >= 1 and all(r == "draft" for r in roles[n:]) and "draft" not in roles[:n]
    d = doc["draft"]
    assert d["wafers"] == list(range(n, len(roles))) and d["model"] == "tiny-llama"
    assert len(d["timeline"]["wafers"]) == len(roles) - n and len(doc["timeline"]["wafers"]) == n
    for k in d["wafers"]:
        assert (spec / f"wafer{k}.npz").is_file()
        assert doc["wafers"][k]["index"] == k and doc["wafers"][k]["ops"]
    assert (spec / "draft.ir").is_file()
    rep = json.loads((spec / "report.json").read_text())
    s = rep["performance"]["speculative"]
    assert s["draft_wafers"] == len(roles) - n and s["placement"]["first_wafer"] == n
    assert s["placement"]["draft_cores_used"] > 0


def test_verify_accepts_the_merged_schedule(spec):
    res = verify_dir(str(spec))
    assert res.ok, res.violations[:3]
    assert len(res.wafers) == len(_doc(spec)["wafers"])


def _tampered(spec, tmp_path, edit) -> list[str]:
    d = tmp_path / "t"
    shutil.copytree(spec, d)
    doc = _doc(d)
    edit(doc)
    (d / "schedule.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return sorted(verify_dir(str(d)).counts)


def _draft_wafer(doc):
    return next(w for w in doc["wafers"] if w.get("role") == "draft")


@pytest.mark.parametrize("edit,code", [
    (lambda doc: _draft_wafer(doc).update(units=[u for u in _draft_wafer(doc)["units"] if u != "embed"]),
     "layer-missing"),                                                    # a draft unit on no wafer
    (lambda doc: doc["draft"].update(units=doc["draft"]["units"] + ["layer.99"]), "layer-missing"),
    (lambda doc: doc["draft"].update(wafers=[0]), "draft"),               # the section names a target wafer
    (lambda doc: doc.pop("draft"), "draft"),                              # draft wafers without the section
    (lambda doc: _draft_wafer(doc).update(role="pipeline"), "layer-duplicate"),   # its layers collide
])
def test_tampered_draft_fails(spec, tmp_path, edit, code):
    assert code in _tampered(spec, tmp_path, edit)


def test_simulate_compare_target_and_draft(spec, capsys):
    assert main(["simulate", str(spec), "--inputs", "1,2,3", "--steps", "2", "--compare"]) == 0
    assert main(["simulate", str(spec), "--inputs", "1,2,3", "--steps", "2", "--compare", "--draft"]) == 0
    out = capsys.readouterr().out
    assert out.count("ok: max relative error") == 2


def test_simulate_draft_without_one_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "plain"
    assert main(["compile", TINY, "-o", str(out), "--no-curve"]) == 0
    capsys.readouterr()
    assert main(["simulate", str(out), "--inputs", "1,2", "--steps", "1", "--draft"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no speculative draft" in err[0]


def test_draft_timed_from_its_routed_schedule_and_replay(spec):
    rep = json.loads((spec / "report.json").read_text())
    s = rep["performance"]["speculative"]
    t = load_target("wse3")
    mc, p = Machine.of(t), CostParams.of(t)
    from wafercc.perf.evaluate import tpot_seconds
    prog = analytic_program(str(spec), role="draft")
    assert tpot_seconds(prog, mc, p, 32) == pytest.approx(s["draft_time_per_token_s"], rel=1e-3)
    c = compare_with_analytic(str(spec), role="draft")
    assert abs(c["relative_difference"]) < 0.10
    assert c["analytic_seconds"] == pytest.approx(s["draft_time_per_token_s"], rel=1e-3)
    # the target's replay is unchanged by the draft's wafers (same wafers as its own timeline)
    assert len(analytic_program(str(spec)).wafers) == len(_doc(spec)["timeline"]["wafers"])


def test_figures_side_by_side_and_sweep(spec):
    perf = json.loads((spec / "report.json").read_text())["performance"]
    s = perf["speculative"]
    assert s["plain_decode_tokens_per_s_per_user"] == perf["decode_tokens_per_s_per_user"]
    assert perf["decode_tokens_per_s_per_user"] == pytest.approx(1 / perf["time_per_output_token_s"], rel=1e-5)
    assert [r["proposed_tokens"] for r in s["sweep"]] == list(range(1, MAX_PROPOSED + 1))
    best = max(r["decode_tokens_per_s_per_user"] for r in s["sweep"])
    assert s["decode_tokens_per_s_per_user"] == best and s["proposed_tokens_from"].startswith("sweep")
    assert s["acceptance"] == DEFAULT_ACCEPTANCE and "Leviathan" in s["acceptance_source"]
    for r in s["sweep"]:
        k = r["proposed_tokens"]
        assert r["expected_tokens_per_step"] == pytest.approx(expected_accepted(k, DEFAULT_ACCEPTANCE))
        assert r["step_s"] == pytest.approx(k * s["draft_time_per_token_s"] + r["verify_pass_s"]
                                            + 2 * CostParams.of(load_target("wse3")).inter_wafer_latency_s, rel=1e-3)
        assert r["verify_pass_s"] > perf["time_per_output_token_s"]
        # the streamed bound: latency + k intervals, never slower than the k+1-column pass
        assert r["streamed_bound_verify_pass_s"] == pytest.approx(
            perf["time_per_output_token_s"] + k * perf["stream_interval_s"])
        assert r["streamed_bound_verify_pass_s"] <= r["verify_pass_s"] * (1 + 1e-9)
        assert r["streamed_bound_tokens_per_s_per_user"] >= r["decode_tokens_per_s_per_user"]
    passes = [r["verify_pass_s"] for r in s["sweep"]]
    assert passes == sorted(passes)
    assert s["faster_than_plain"] == (s["speedup"] > 1)
    assert s["speedup"] == pytest.approx(s["decode_tokens_per_s_per_user"] / s["plain_decode_tokens_per_s_per_user"],
                                         rel=1e-3)


def test_fixed_k_is_reported_with_the_sweep(tmp_path):
    out = tmp_path / "k3"
    assert main(["compile", TINY, "-o", str(out), "--context", "128", "--prompt-tokens", "32", "--no-curve",
                 "--speculative", TINY, "--spec-tokens", "3", "--spec-acceptance", "0.5"]) == 0
    s = json.loads((out / "report.json").read_text())["performance"]["speculative"]
    assert s["proposed_tokens"] == 3 and s["proposed_tokens_from"] == "option" and s["acceptance"] == 0.5
    assert s["decode_tokens_per_s_per_user"] == s["sweep"][2]["decode_tokens_per_s_per_user"]


def test_verify_pass_is_the_k_plus_1_column_cost():
    # two ops on one wafer: a GEMV and an attention read over the cache
    from test_perf import _gemv
    from wafercc.perf.evaluate import Program
    t = load_target("wse3")
    mc, p = Machine.of(t), CostParams.of(t)
    kv = {"name": "attn", "op": "attention", "role": "kv", "layer": 0, "host": None, "deps": [0], "flops": 0,
          "act_in_hops": 0, "attention": {"group": 4, "head_dim": 64},
          "grids": [{"experts": 1, "rows": 2, "cols": 8, "operand": "kv", "tile_k": 64, "tile_n": 64, "n": 512,
                     "broadcast_hops": 10, "broadcast_links": 8, "reduction_hops": 10, "reduction_links": 3,
                     "unit_bits": 16}]}
    prog = Program(((_gemv(0, []), kv),), (), 2.0, 512, 1)
    for k in (1, 4):
        st, bd, _ = token_seconds(prog, mc, p, 256, k + 1, k + 1)
        assert verify_pass_seconds(prog, mc, p, 256, k) == pytest.approx(sum(st) + sum(bd))
    # k+1 queries on the same KV rows: as many query heads against the same K and V
    r = rates(mc, p)
    g = kv["grids"][0]
    one = kernel_phases(g, kv, r, Workload(2.0, 256, 1, 1))
    four = kernel_phases(g, kv, r, Workload(2.0, 256, 4, 4))
    assert four.compute == pytest.approx(4 * one.compute)
    assert four.bcast_bytes == pytest.approx((4 * 4 + 2 * 4) * 64 * 2.0)
    # the ceiling bounds every acceptance
    best = speculative_ceiling("d", 1e-6, prog, mc, p, 256)
    for acc in (0.0, 0.5, 0.9):
        f = speculative_figures(Speculative("d", None, acc), prog, 1e-6, mc, p, 256)
        assert f["decode_tokens_per_s_per_user"] <= best["decode_tokens_per_s_per_user"]


@pytest.mark.parametrize("args,words", [
    (["--speculative", "no-such-draft"], ["no-such-draft"]),
    (["--speculative", TINY, "--spec-tokens", "9"], ["spec_tokens 9", "1..8"]),
    (["--speculative", TINY, "--spec-tokens", "0"], ["spec_tokens 0"]),
    (["--speculative", TINY, "--spec-acceptance", "1.0"], ["acceptance 1.0", "[0, 1)"]),
    (["--speculative", TINY, "--spec-acceptance", "-0.1"], ["spec_acceptance -0.1"]),
])
def test_bad_speculative_inputs_exit_2_with_one_line(tmp_path, capsys, args, words):
    assert main(["compile", TINY, "-o", str(tmp_path / "o"), "--no-curve", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(w in err[0] for w in words), err
    assert not (tmp_path / "o").exists()


def _plan_doc(draft_layers):
    from wafercc.verify.checks import Sink
    from wafercc.verify.plan import check_plan
    units = ["embed", "layer 0", "layer 1", "head"]
    wafers = [{"index": 0, "layers": [0, 1], "units": units, "ops": []}]
    for i, (lo, hi, extra) in enumerate(draft_layers):
        wafers.append({"index": 1 + i, "role": "draft", "layers": [lo, hi], "ops": [],
                       "units": [*extra, *(f"layer {j}" for j in range(lo, hi + 1))]})
    doc = {"units": units, "wafers": wafers,
           "draft": {"units": units, "wafers": list(range(1, len(wafers)))}}
    sink = Sink()
    check_plan(doc, sink)
    return sorted(sink.counts)


def test_a_two_wafer_draft_runs_its_layers_in_order():
    assert _plan_doc([(0, 0, ["embed"]), (1, 1, ["head"])]) == []
    assert "layer-order" in _plan_doc([(1, 1, ["head"]), (0, 0, ["embed"])])
    assert "layer-missing" in _plan_doc([(0, 0, ["embed", "head"])])           # the draft's layer 1 on no wafer


def test_draft_pipeline_is_checked_on_its_own_wafer_numbers():
    from wafercc.verify.checks import Sink
    from wafercc.verify.plan import check_pipelines

    def end(k, out=None, inc=None):
        return {"entry": 0, "exit": 3, "out": {(k, k + 1): (3, 64)} if out else {},
                "in": {(k - 1, k): (0, 64)} if inc else {}}

    roles = ["pipeline", "draft", "draft"]
    ok = [end(0), end(1, out=True), end(2, inc=True)]        # the target's last wafer sends nothing on
    sink = Sink()
    check_pipelines(ok, roles, sink)
    assert sink.counts == {}
    sink = Sink()
    check_pipelines([end(0), end(1), end(2, inc=True)], roles, sink)
    assert sink.counts == {"pipeline": 1} and sink.violations[0].wafer == 1


@pytest.fixture(scope="module")
def spec3(tmp_path_factory):
    """A draft larger than its target: tiny-moe needs 3 wafers of a 5 x 6-core mesh, tiny-llama 1."""
    from target_util import tiny_target
    base = tmp_path_factory.mktemp("spec3")
    t = tiny_target(base, 12, 8, die_cols=1, die_rows=1)
    out = base / "out"
    assert main(["compile", TINY, "--target", str(t.path), "-o", str(out), "--context", "128",
                 "--speculative", MOE, "--no-curve"]) == 0
    return out


def test_a_multi_wafer_draft_is_a_verified_pipeline_of_its_own(spec3, tmp_path, capsys):
    doc = _doc(spec3)
    assert [w.get("role") for w in doc["wafers"]] == ["pipeline", "draft", "draft", "draft"]
    assert doc["draft"]["wafers"] == [1, 2, 3]
    hops = sorted({(e["src_wafer"], e["dst_wafer"]) for w in doc["wafers"] for e in w["inter_wafer"]})
    assert hops == [(1, 2), (2, 3)]                     # none between the target and the draft
    assert verify_dir(str(spec3)).ok
    assert abs(compare_with_analytic(str(spec3), role="draft")["relative_difference"]) < 0.10
    assert main(["simulate", str(spec3), "--inputs", "1,2,3", "--steps", "2", "--compare", "--draft"]) == 0

    def drop_hop(doc):
        w = doc["wafers"][2]
        w["inter_wafer"] = [e for e in w["inter_wafer"] if e["src_wafer"] != 1]
    assert "pipeline" in _tampered(spec3, tmp_path, drop_hop)

    def swap(doc):                                      # the draft's wafers 1 and 2 claim each other's layers
        a, b = doc["wafers"][1], doc["wafers"][2]
        a["layers"], b["layers"] = b["layers"], a["layers"]
        a["units"], b["units"] = b["units"], a["units"]
    assert "layer-order" in _tampered(spec3, tmp_path / "2", swap)
