"""Output is all or nothing: a compile's files are staged and moved in together, a previous
compile's files are replaced (never kept beside the new ones), a foreign directory is refused."""
from __future__ import annotations

import json
import os

import pytest

import wafercc
from wafercc.cli import main
from wafercc.errors import WaferccError
from wafercc.outdir import MANIFEST, OutputDirError, check_outdir

TINY = "models/onnx/tiny-llama.onnx"
SCHEDULE = {"schedule.json", "defects.npz", "wafer0.npz"}


def _manifest(d) -> set[str]:
    return set(json.loads((d / MANIFEST).read_text())["files"])


def _snapshot(d) -> dict[str, bytes]:
    return {n: (d / n).read_bytes() for n in sorted(os.listdir(d)) if (d / n).is_file()}


@pytest.fixture(scope="module")
def placed(tmp_path_factory):
    base = tmp_path_factory.mktemp("placed")
    assert main(["compile", TINY, "-o", str(base / "o"), "--no-curve", "--dump", "plan"]) == 0
    return base / "o"


def test_a_compile_writes_its_manifest_and_nothing_beside(placed):
    names = set(os.listdir(placed))
    assert SCHEDULE | {"report.json", "model.ir", "model.ir.json", "summary.json", "compile.json", "dump", MANIFEST} == names
    assert _manifest(placed) == names - {MANIFEST}
    assert not [n for n in os.listdir(placed.parent) if n.startswith(".wafercc-")]   # no staging left


def test_no_place_into_an_old_output_replaces_the_old_schedule(placed, tmp_path, capsys):
    old = tmp_path / "o"
    os.system(f"cp -r {placed} {old}")
    (old / "notes.txt").write_text("mine")                     # the user's file is kept
    assert main(["compile", TINY, "-o", str(old), "--no-place"]) == 0
    names = set(os.listdir(old))
    assert not names & SCHEDULE and "dump" not in names
    assert {"report.json", "notes.txt"} <= names and "placement" not in json.loads((old / "report.json").read_text())
    assert _manifest(old) == names - {MANIFEST, "notes.txt"}


def test_a_foreign_directory_is_refused_before_compiling(tmp_path, capsys, monkeypatch):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "thesis.tex").write_text("x")
    monkeypatch.setattr("wafercc.frontend.load.lower_model", lambda *a, **k: pytest.fail("compiled"))
    assert main(["compile", TINY, "-o", str(d)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not empty and not a wafercc output" in err[0]
    assert os.listdir(d) == ["thesis.tex"] and sorted(os.listdir(tmp_path)) == ["mine"]
    with pytest.raises(OutputDirError, match="is a file"):
        check_outdir(str(d / "thesis.tex"))


def test_unresolvable_draft_fails_before_anything_is_written(placed, tmp_path, capsys, monkeypatch):
    before = _snapshot(placed)
    monkeypatch.setattr("wafercc.plan.planner.plan_wafers", lambda *a, **k: pytest.fail("planned"))
    for out in (tmp_path / "new", placed):
        assert main(["compile", TINY, "-o", str(out), "--speculative", "no-such-draft"]) == 2
        assert "unknown model 'no-such-draft'" in capsys.readouterr().err
    assert not (tmp_path / "new").exists() and _snapshot(placed) == before


def test_a_late_failure_leaves_the_old_output_untouched(placed, tmp_path, capsys, monkeypatch):
    before = _snapshot(placed)

    def fail(*a, **k):
        raise WaferccError("the timing model refuses")
    monkeypatch.setattr("wafercc.perf.report.performance_section", fail)
    assert main(["compile", TINY, "-o", str(placed), "--no-curve", "--context", "256"]) == 2
    assert "the timing model refuses" in capsys.readouterr().err
    assert _snapshot(placed) == before
    assert not [n for n in os.listdir(placed.parent) if n.startswith(".wafercc-")]


def test_placement_failure_report_says_so_and_has_no_schedule(tmp_path, capsys, monkeypatch):
    from wafercc.passes.route import RoutingError

    def fail(*a, **k):
        raise RoutingError("wafer 0: 3 transfers unroutable")
    monkeypatch.setattr("wafercc.passes.place_route.route_wafer", fail)
    out = tmp_path / "o"
    assert main(["compile", TINY, "-o", str(out), "--no-curve"]) == 3
    assert "placement failed: wafer 0: 3 transfers unroutable" in capsys.readouterr().err
    rep = json.loads((out / "report.json").read_text())
    assert rep["placement_failed"] == {"stage": "route", "reason": "wafer 0: 3 transfers unroutable"}
    assert "placement" not in rep and not set(os.listdir(out)) & SCHEDULE


def test_api_save_twice_and_refusal(tmp_path):
    c = wafercc.compile(TINY, curve=False)
    a, b = c.save(str(tmp_path / "a")), c.save(str(tmp_path / "b"))
    assert (tmp_path / "a" / "schedule.json").read_bytes() == (tmp_path / "b" / "schedule.json").read_bytes()
    assert set(a) == set(b) and all(os.path.isfile(p) for p in b.values())
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x").write_text("")
    with pytest.raises(OutputDirError):
        c.save(str(tmp_path / "c"))
