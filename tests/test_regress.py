"""wafercc regress: the fast set matches its goldens (the CI regression), and the comparison catches
what it should: worse figures, changed exact metrics, slow stages, failed compiles; goldens change
only with --update."""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET

import pytest

from report_fields import check_report_invariants
from wafercc import regress as rg
from wafercc.cli import main


@pytest.fixture(scope="module")
def tiny_now():
    return rg.measure("tiny-llama", rg.default_options("tiny-llama"))


@pytest.fixture
def gdir(tmp_path, tiny_now):
    d = tmp_path / "golden"
    d.mkdir()
    doc = rg.new_golden("tiny-llama", rg.default_options("tiny-llama"), tiny_now, None)
    (d / "tiny-llama.json").write_text(json.dumps(doc))
    return d


def _edit(gdir, metric, value=None, tolerance=None):
    p = gdir / "tiny-llama.json"
    doc = json.loads(p.read_text())
    if value is not None:
        doc["metrics"][metric]["value"] = value
    if tolerance is not None:
        doc["metrics"][metric]["tolerance"] = tolerance
    p.write_text(json.dumps(doc))
    return doc


def test_fast_set_matches_the_checked_in_goldens(tmp_path, capsys):
    """The CI regression: every fast-set model compiled through the driver, within its golden."""
    junit = tmp_path / "qor.xml"
    rc = main(["regress", "--fast", "--jobs", "2", "--junit", str(junit), "--format", "json",
               "--reports", str(tmp_path / "reports")])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0, [(m["model"], [r for r in m["rows"] if r["verdict"] in rg.FAILING], m["error"])
                     for m in doc["models"]]
    suite = ET.parse(junit).getroot()
    fast = {m["model"] for m in doc["models"]}
    assert {c.get("name") for c in suite.iter("testcase")} == fast and suite.get("failures") == "0"
    assert fast >= {"tiny-llama", "gpt2"}
    for name in fast:                         # each report complete and self-consistent
        check_report_invariants(json.loads((tmp_path / "reports" / f"{name}.json").read_text()), name)


def test_verdicts(tiny_now):
    g = rg.new_golden("tiny-llama", {}, tiny_now, None)
    assert {r["verdict"] for r in rg.compare(g, tiny_now)} == {"ok"}
    tps = "performance.tokens_per_s_per_user"
    worse = dict(tiny_now, **{tps: tiny_now[tps] * 0.9})
    better = dict(tiny_now, **{tps: tiny_now[tps] * 1.1})
    within = dict(tiny_now, **{tps: tiny_now[tps] * 0.99})
    verdict = {r["metric"]: r["verdict"] for r in rg.compare(g, worse)}
    assert verdict[tps] == "REGRESSED"
    assert {r["metric"]: r["verdict"] for r in rg.compare(g, better)}[tps] == "improved"
    assert {r["metric"]: r["verdict"] for r in rg.compare(g, within)}[tps] == "ok"
    fewer = dict(tiny_now, **{"wafers.used": tiny_now["wafers.used"] - 1})      # exact: any change fails
    assert {r["metric"]: r["verdict"] for r in rg.compare(g, fewer)}["wafers.used"] == "REGRESSED"
    hops = dict(tiny_now, **{"placement.routed_hops": tiny_now["placement.routed_hops"] * 1.05})
    assert {r["metric"]: r["verdict"] for r in rg.compare(g, hops)}["placement.routed_hops"] == "REGRESSED"


def test_regression_exits_1_and_leaves_the_golden(gdir, capsys):
    tps = "performance.tokens_per_s_per_user"
    doc = _edit(gdir, tps, value=1e9)
    before = (gdir / "tiny-llama.json").read_text()
    assert main(["regress", "tiny-llama", "--golden-dir", str(gdir), "--format", "json"]) == 1
    out = json.loads(capsys.readouterr().out)
    row = next(r for r in out["models"][0]["rows"] if r["metric"] == tps)
    assert row["verdict"] == "REGRESSED" and row["golden"] == 1e9 and out["failed"] == ["tiny-llama"]
    assert (gdir / "tiny-llama.json").read_text() == before             # no silent rewrite
    assert doc["metrics"][tps]["value"] == 1e9


def test_update_rewrites_values_and_keeps_tolerances(gdir, tiny_now, capsys):
    tps = "performance.tokens_per_s_per_user"
    _edit(gdir, tps, value=1e9, tolerance={"rel": 0.05, "abs": 0, "better": "higher"})
    assert main(["regress", "tiny-llama", "--golden-dir", str(gdir), "--update"]) == 0
    g = json.loads((gdir / "tiny-llama.json").read_text())
    assert g["metrics"][tps] == {"value": tiny_now[tps], "tolerance": {"rel": 0.05, "abs": 0, "better": "higher"}}
    capsys.readouterr()
    assert main(["regress", "tiny-llama", "--golden-dir", str(gdir)]) == 0


def test_slow_stage_fails_past_its_band(gdir, capsys):
    _edit(gdir, "seconds.route", tolerance={"band": [0.0, 0.0]})
    assert main(["regress", "tiny-llama", "--golden-dir", str(gdir), "--format", "junit"]) == 1
    suite = ET.fromstring(capsys.readouterr().out)
    (case,) = suite.iter("testcase")
    assert "seconds.route slow" in case.find("failure").get("message")


def test_bad_input_is_exit_2(gdir, tmp_path, capsys):
    assert main(["regress", "no-such-model", "--golden-dir", str(gdir)]) == 2
    assert "unknown regress model 'no-such-model'" in capsys.readouterr().err
    assert main(["regress", "gpt2", "--golden-dir", str(gdir)]) == 2            # no golden, no --update
    assert "no golden file" in capsys.readouterr().err
    (gdir / "tiny-llama.json").write_text("{")
    assert main(["regress", "tiny-llama", "--golden-dir", str(gdir)]) == 2
    assert "unreadable golden file" in capsys.readouterr().err
    assert main(["regress", "--golden-dir", str(tmp_path / "empty")]) == 2


def test_compile_error_is_a_failure(gdir, capsys):
    doc = json.loads((gdir / "tiny-llama.json").read_text())
    doc["options"]["max_wafers"] = 1
    doc["options"]["context"] = 10 ** 8
    (gdir / "tiny-llama.json").write_text(json.dumps(doc))
    assert main(["regress", "tiny-llama", "--golden-dir", str(gdir), "--format", "json"]) == 1
    m = json.loads(capsys.readouterr().out)["models"][0]
    assert m["error"].startswith("Infeasible: no plan fits 1 wafer(s)")


def test_checked_in_goldens_are_well_formed():
    d = rg.golden_dir()
    names = sorted(f[:-5] for f in os.listdir(d) if f.endswith(".json"))
    assert set(rg.FAST) <= set(names)
    for n in names:
        g = rg.load_golden(os.path.join(d, f"{n}.json"))
        assert g["model"] == n and rg.model_source(n)
        assert {m.name for m in rg.METRICS} <= set(g["metrics"])
        assert all(isinstance(v["tolerance"], dict) for v in g["metrics"].values())
