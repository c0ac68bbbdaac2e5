"""benchmarks/bench_targets.py: each of issue 15's targets read from reports and the calibration
file, met or not by the issue's thresholds (not by a previous run's figures)."""
from __future__ import annotations

import importlib.util
import json
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def _module():
    spec = importlib.util.spec_from_file_location("bench_targets", os.path.join(ROOT, "benchmarks", "bench_targets.py"))
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


def _report(path, tps, used, frac, required=None, bound=None):
    doc = {"performance": {"decode_tokens_per_s_per_user": tps}, "speed_of_light": {"prediction_fraction": frac},
           "wafers": {"used": used, "required": required or used, "lower_bound": bound or used}}
    path.write_text(json.dumps(doc))


def test_targets_are_judged_by_the_issue_thresholds(tmp_path):
    bt = _module()
    rep = tmp_path / "reports"
    rep.mkdir()
    _report(rep / "llama-3.1-8b.json", 2250.0, 1, 0.51)
    _report(rep / "llama-3.1-70b.json", 2500.0, 5, 0.2)             # fast, but on more wafers than 4
    _report(rep / "llama-3.1-405b.json", 900.0, 23, 0.6, required=23, bound=22)
    cal = tmp_path / "cal.json"
    cal.write_text(json.dumps({
        "rows": [{"row": "A", "protocol": "placed", "fit": True, "published": 1800, "predicted": 2100, "error": 0.1667},
                 {"row": "B", "protocol": "placed", "fit": True, "published": 450, "predicted": 400, "error": -0.111},
                 {"row": "C", "protocol": "one-layer", "fit": True, "published": 2700, "predicted": 1, "error": -0.99}],
        "leave_one_out": [{"row": "A", "held_out_error": 0.199}, {"row": "B", "held_out_error": -0.201}]}))
    got = {what: met for what, _goal, _m, met in bt.rows(str(rep), str(cal))}
    assert got["launch-style A"] is False and got["launch-style B"] is True
    assert "launch-style C" not in got                 # research rows are not launch-style rows
    assert got["leave-one-out A"] is True and got["leave-one-out B"] is False
    assert got["Llama-3.1-8B on 1 wafer"] is True and got["Llama-3.1-70B on 4 wafers"] is False
    assert got["llama-3.1-8b against its speed of light"] is True
    assert got["llama-3.1-70b against its speed of light"] is False
    assert got["Llama-3.1-405B wafers required"] is False


def test_missing_reports_are_targets_not_met(tmp_path):
    got = _module().rows(str(tmp_path / "none"), str(tmp_path / "none.json"))
    assert [(w, m) for w, _g, _x, m in got] == [("Llama-3.1-8B on 1 wafer", False), ("Llama-3.1-70B on 4 wafers", False)]
