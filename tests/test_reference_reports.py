"""The reference reports (benchmarks/reports/, written by benchmarks/bench_reports.py): every field the
cost report promises, filled and consistent, for every reference model; and the checked-in reports
are current (a fresh compile of the smallest reproduces its figures)."""
from __future__ import annotations

import contextlib
import io
import json
import math
import os

import pytest

from report_fields import check_report_fields
from wafercc import models_registry
from wafercc.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPORTS = os.path.join(ROOT, "benchmarks", "reports")

def _load(name):
    path = os.path.join(REPORTS, f"{name}.json")
    assert os.path.exists(path), f"{path}: run python benchmarks/bench_reports.py --models {name}"
    with open(path) as f:
        return json.load(f)


@pytest.mark.parametrize("name", models_registry.names())
def test_reference_report_has_every_field(name):
    r = _load(name)
    check_report_fields(r, name)
    assert r["model"]["name"] == name and r["model"]["params"] > 0 and r["model"]["layers"] > 0
    w = r["wafers"]
    assert w["used"] >= w["required"] >= w["lower_bound"] >= 1
    assert [p["index"] for p in w["per_wafer"]] == list(range(w["used"]))
    for p in w["per_wafer"]:
        assert 0 < p["sram_used_bytes"] <= p["sram_usable_bytes"] and p["cores_used"] > 0 and p["dead_cores"] >= 0
    perf = r["performance"]
    tpot = perf["time_per_output_token_s"]
    assert tpot > 0 and perf["decode_tokens_per_s_per_user"] == pytest.approx(1 / tpot, rel=1e-6)
    assert perf["ttft_s"] >= tpot and perf["energy_j_per_token"] > 0 and perf["prompt_tokens"] >= 1
    b = perf["breakdown_s"]
    assert set(b) == {"compute", "fabric", "inter_wafer"} and all(v >= 0 for v in b.values())
    assert sum(b.values()) == pytest.approx(tpot, rel=1e-6)
    assert (b["inter_wafer"] > 0) == (w["used"] > 1)
    curve = perf["wafers_curve"]
    counts = [c["wafers"] for c in curve]
    assert counts == sorted(counts) and counts[0] == w["used"] and counts[-1] >= 2 * counts[0]
    assert all(c["decode_tokens_per_s_per_user"] > 0 and math.isfinite(c["decode_tokens_per_s_per_user"])
               for c in curve)
    assert [c for c in curve if c["source"] == "schedule"] == [
        {"wafers": w["used"], "decode_tokens_per_s_per_user": perf["decode_tokens_per_s_per_user"],
         "source": "schedule"}]
    pl = r["placement"]
    assert pl["routed_hops"] >= pl["hops_lower_bound"] > 0 and pl["max_link_load"] >= 1
    assert {p["name"] for p in r["compile"]["passes"]} >= {"frontend", "timing"}


def test_reference_reports_are_current(tmp_path):
    """gpt2 compiled now with bench_reports.py's options gives the checked-in figures (all but times)."""
    out = tmp_path / "out"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["compile", "gpt2", "--target", "wse3", "--dtype", "bf16", "-o", str(out), "--format",
                     "json"]) == 0
    with open(out / "report.json") as f:
        fresh = json.load(f)
    golden = _load("gpt2")
    for section in ("model", "options", "wafers", "performance", "placement"):
        assert fresh[section] == golden[section], f"{section} differs: rerun benchmarks/bench_reports.py"
