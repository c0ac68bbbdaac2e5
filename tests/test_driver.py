"""The compile driver: named stages, until / resume, requires and produces checked (naming the
stage), dumps, the checks after each stage, and failures that keep what was compiled."""
from __future__ import annotations

import json
import os

import pytest

from wafercc import Infeasible, PlacementError, StageError, WaferccError
from wafercc.driver import PIPELINE, Compilation, StageManager
from wafercc.options import STAGES, build_options

TINY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models", "onnx", "tiny-llama.onnx")
PRODUCT = {"frontend": "graph", "plan": "plan", "tile": "tiles", "floorplan": "floorplans", "route": "routed",
           "schedule": "program", "timing": "performance_section", "report": "report_dict"}


def _compile(**kw):
    return Compilation(TINY, build_options(**kw)).run()


@pytest.fixture(scope="module")
def full():
    return _compile()


@pytest.mark.parametrize("until", STAGES)
def test_until_runs_exactly_the_stages_up_to_it(until):
    c = _compile(until=until)
    upto = STAGES[: STAGES.index(until) + 1]
    assert c.ran == list(upto) and list(c.seconds) == list(upto)
    assert all(v >= 0 for v in c.seconds.values())
    for stage, field in PRODUCT.items():
        # the per-wafer stages before the last one asked for stream their products (one wafer at a time)
        streamed = stage in ("floorplan", "route") and stage != until
        assert (getattr(c, field) is not None) == (stage in upto and not streamed), (until, stage)


@pytest.mark.parametrize("alias,stage", [("ir", "frontend"), ("place", "schedule"), ("perf", "timing")])
def test_until_aliases(alias, stage):
    assert build_options(until=alias).last_stage == stage


def test_kept_floorplans_are_one_per_wafer_and_resume_routes_them(full):
    c = _compile(until="floorplan")
    assert [lw.index for lw in c.floorplans] == list(range(c.plan.used))
    c.run(until="report")                         # resumes at route, from the kept floorplans
    assert c.ran == list(STAGES) and c.floorplans is None
    assert json.dumps(c.report, sort_keys=True) == json.dumps(full.report, sort_keys=True)


def test_a_missing_requirement_names_the_stage():
    c = _compile(until="plan")
    c.plan = None
    with pytest.raises(StageError, match="stage 'tile' requires plan"):
        StageManager().run(c, "tile")


def test_a_missing_product_names_the_stage(monkeypatch):
    tile = next(s for s in PIPELINE if s.name == "tile")
    monkeypatch.setattr(type(tile), "run", lambda self, c: None)
    with pytest.raises(StageError, match="stage 'tile' did not produce tiles"):
        _compile(until="tile")


def test_dump_after_every_stage(tmp_path):
    c = Compilation(TINY, build_options()).run(dump_dir=str(tmp_path), dump=("all",))
    names = sorted(os.listdir(tmp_path))
    assert names == ["00-frontend-model.ir", "01-plan-plan.json", "02-tile-tiles.json",
                     "03-floorplan-floorplan.json", "04-route-route.json", "05-schedule-placement.json",
                     "06-timing-performance.json", "07-report-report.json"]
    fp = json.loads((tmp_path / "03-floorplan-floorplan.json").read_text())
    assert [w["wafer"] for w in fp] == list(range(c.plan.used)) and all(w["transfers"] > 0 for w in fp)
    assert json.loads((tmp_path / "07-report-report.json").read_text()) == c.report
    from wafercc.ir import parse_graph, print_graph
    text = (tmp_path / "00-frontend-model.ir").read_text()
    assert print_graph(parse_graph(text)) == print_graph(c.graph) == text


def test_checks_after_stages_run_the_independent_verifier(monkeypatch):
    import wafercc.verify as v
    seen = []
    real = v.verify_dir
    monkeypatch.setattr(v, "verify_dir", lambda outdir, limit=50: seen.append(real(outdir, limit)) or seen[-1])
    Compilation(TINY, build_options(until="schedule")).run(verify=True)     # a correct schedule passes
    assert len(seen) == 1 and seen[0].ok and seen[0].wafers

    def tampered(outdir, limit=50):
        r = real(outdir, limit)
        r.counts["route-disconnected"] = 1
        r.violations.append({"check": "route-disconnected", "detail": "tampered"})
        return r
    monkeypatch.setattr(v, "verify_dir", tampered)
    with pytest.raises(StageError, match="stage 'schedule': the independent verifier found 1 violation"):
        Compilation(TINY, build_options(until="schedule")).run(verify=True)


def test_infeasible_carries_levers_and_the_compilation():
    with pytest.raises(Infeasible) as e:
        _compile(context=10 ** 8, max_wafers=1)
    err = e.value
    assert isinstance(err, WaferccError) and err.compilation.plan.infeasible is not None
    assert err.compilation.ran == ["frontend"] and err.levers
    assert any("context" in lv.change for lv in err.levers)
    assert "no plan fits 1 wafer(s)" in str(err)


def test_placement_failure_keeps_no_schedule_files(monkeypatch, tmp_path):
    import wafercc.passes.place_route as pr
    from wafercc.passes.route import RoutingError

    def fail(*a, **k):
        raise RoutingError("no route (test)")
    monkeypatch.setattr(pr, "route_wafer", fail)
    c = Compilation(TINY, build_options(), stage_dir=str(tmp_path))
    with pytest.raises(PlacementError) as e:
        c.run()
    assert e.value.compilation is c and c.ran == ["frontend", "plan", "tile"]
    assert c.schedule_files is None
    staged = [os.path.join(r, f) for r, _, fs in os.walk(tmp_path) for f in fs]
    assert staged == []                           # the staged schedule was dropped


def test_save_writes_the_cli_files_and_moves_the_schedule(full, tmp_path):
    files = full.save(str(tmp_path / "a"))
    assert {"ir", "ir_json", "summary", "report", "compile", "schedule", "defects", "wafer0"} <= set(files)
    assert all(os.path.isfile(p) for p in files.values())
    again = full.save(str(tmp_path / "b"))         # a second save copies from the first
    for k in ("schedule", "wafer0", "report"):
        assert open(files[k], "rb").read() == open(again[k], "rb").read()


def test_cli_driver_flags_reject_bad_input(tmp_path, capsys):
    from wafercc.cli import main
    assert main(["compile", TINY, "--dump", "plan"]) == 2                       # --dump needs -o
    assert "--dump plan: expected -o OUTDIR" in capsys.readouterr().err
    assert main(["compile", TINY, "-o", str(tmp_path / "o"), "--dump", "lunch"]) == 2
    assert "stage names from frontend, plan" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()                                           # nothing half-written
    with pytest.raises(SystemExit) as e:                                            # argparse: usage + exit 2
        main(["compile", TINY, "--until", "lunch"])
    assert e.value.code == 2 and "invalid choice: 'lunch'" in capsys.readouterr().err
    assert main(["regress", "tiny-llama", "--jobs", "0"]) == 2
    assert "--jobs 0: expected at least 1" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["compile", TINY, "--until", "ir", "-o", str(blocker / "out")]) == 2
    assert "cannot create output directory" in capsys.readouterr().err


def test_cli_dump_and_until_write_what_was_asked(tmp_path, capsys):
    from wafercc.cli import main
    out = tmp_path / "o"
    assert main(["compile", TINY, "-o", str(out), "--until", "tile", "--dump", "plan,tile", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert sorted(os.listdir(out / "dump")) == ["01-plan-plan.json", "02-tile-tiles.json"]
    assert "schedule" not in doc["outputs"] and "report" in doc["outputs"]
    assert [s["name"] for s in json.loads((out / "compile.json").read_text())["stages"]] == ["frontend", "plan", "tile"]
