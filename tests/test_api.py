"""The Python API: the whole compiler from Python, the same report as the CLI, the budget check,
and errors that are all WaferccError subclasses."""
from __future__ import annotations

import os

import pytest

import wafercc
from wafercc.cli import main
from wafercc.options import OptionError

TINY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models", "onnx", "tiny-llama.onnx")


def test_api_and_cli_write_byte_identical_reports(tmp_path):
    assert main(["compile", TINY, "-o", str(tmp_path / "cli"), "--context", "512", "--batch", "2",
                 "--layout", "spares", "--seed", "3", "--format", "json"]) == 0
    c = wafercc.compile(TINY, context=512, batch=2, layout="spares", seed=3)
    files = c.save(str(tmp_path / "api"))
    for name in ("report.json", "schedule.json", "model.ir", "defects.npz", "wafer0.npz"):
        assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "api" / name).read_bytes(), name
    assert set(os.listdir(tmp_path / "cli")) == set(os.listdir(tmp_path / "api"))
    assert files["report"] == str(tmp_path / "api" / "report.json")


def test_compilation_fields():
    c = wafercc.compile(TINY, prompt_tokens=64)
    assert c.wafers == 1 and c.report["wafers"]["used"] == 1
    p = c.performance
    assert p.tokens_per_s_per_user == c.report["performance"]["decode_tokens_per_s_per_user"] > 0
    assert p.time_per_output_token_s == pytest.approx(1 / p.tokens_per_s_per_user, rel=1e-3)
    assert set(p.breakdown_s) == {"compute", "fabric", "inter_wafer"} and p.prompt_tokens == 64
    assert c.placement["routed_hops"] >= c.placement["hops_lower_bound"] > 0
    assert c.facts.layers == 2 and c.graph.name == "tiny-llama" and c.source == "onnx"


def test_ir_only_callers_keep_graph_and_facts():
    c = wafercc.compile(TINY, until="ir")
    assert c.ran == ["frontend"] and c.plan is None and c.wafers is None and c.report is None
    assert c.facts.params == 106816


def test_unknown_or_bad_options_raise_one_documented_error():
    with pytest.raises(OptionError, match="unknown compile option.*contxt"):
        wafercc.compile(TINY, contxt=10)
    with pytest.raises(OptionError, match="layout 'diagonal'"):
        wafercc.compile(TINY, layout="diagonal")
    with pytest.raises(OptionError, match="seed -1"):
        wafercc.compile(TINY, seed=-1)
    with pytest.raises(wafercc.WaferccError, match="context 0"):
        wafercc.compile(TINY, context=0)


def test_every_error_is_a_wafercc_error():
    from wafercc.ir.ops import ShapeError
    from wafercc.passes.assign import AssignError
    from wafercc.passes.floorplan import FloorplanError
    from wafercc.passes.route import RoutingError
    from wafercc.passes.tile_shapes import TileError
    for e in (ShapeError, wafercc.Infeasible, wafercc.PlacementError, wafercc.StageError, OptionError):
        assert issubclass(e, wafercc.WaferccError), e
    for e in (TileError, FloorplanError, AssignError, RoutingError):
        assert issubclass(e, wafercc.PlacementError), e


def test_check_passes_and_fails_budgets():
    ok = wafercc.check(TINY, max_wafers=1, min_tokens_per_s=1.0)
    assert ok.ok and ok.wafers == 1 and ok.reasons == () and ok.source == "estimate"
    assert ok.compilation.ran == ["frontend", "plan"]            # no placement by default
    slow = wafercc.check(TINY, min_tokens_per_s=ok.tokens_per_s_per_user * 10)
    assert not slow.ok and "below the budget" in slow.reasons[0]
    big = wafercc.check(TINY, max_wafers=1, context=10 ** 8)
    assert not big.ok and (big.wafers is None or big.wafers > 1)
    assert "no plan fits 1 wafer(s)" in big.reasons[0]


def test_check_estimate_tracks_the_routed_schedule():
    est = wafercc.check(TINY)
    placed = wafercc.check(TINY, place=True)
    assert placed.source == "schedule" and placed.compilation.ran[-1] == "report"
    assert placed.tokens_per_s_per_user == placed.compilation.performance.tokens_per_s_per_user
    assert est.tokens_per_s_per_user == pytest.approx(placed.tokens_per_s_per_user, rel=0.25)
