"""wafercc compile with a target: wafer table, report.json, infeasibility, bad options."""
import json

import pytest

from wafercc.cli import main


@pytest.fixture(autouse=True)
def _no_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("WAFERCC_CACHE_DIR", str(tmp_path / "cache"))


def test_plan_table_and_report(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["compile", "llama-3.1-8b", "--target", "wse3", "--context", "8192", "--batch", "1",
                 "--defects", "random:0.01", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "on wse3: 1 wafer(s)" in " ".join(text.split()) and "dead" in text
    report = json.loads((out / "report.json").read_text())
    assert report["schema"] == "wafercc.report/1"
    assert report["wafers"]["required"] == report["wafers"]["used"] == report["wafers"]["lower_bound"] == 1
    w = report["wafers"]["per_wafer"][0]
    assert w["layers"] == [0, 31] and w["dead_cores"] > 0 and w["sram_used_bytes"] <= w["sram_usable_bytes"]
    opts = dict(report["options"])
    assert opts.pop("defects").startswith("random")
    assert opts == {"dtype": "bf16", "kv_dtype": "bf16", "context": 8192, "batch": 1, "wafers_requested": None,
                    "max_wafers": None, "kv_placement": "beside", "seed": 0, "dtype_overrides": []}


def test_infeasible_exit_3_with_levers(tmp_path, capsys):
    out = tmp_path / "o"
    code = main(["compile", "llama-3.1-70b", "--max-wafers", "3", "-o", str(out), "--format", "json"])
    assert code == 3
    plan = json.loads(capsys.readouterr().out)["plan"]
    inf = plan["infeasible"]
    assert inf["max_wafers"] == 3 and inf["needed_wafers"] == 4 and inf["short_bytes"] > 0
    assert any(lv["change"] == "f8e4m3 weights" and lv["wafers"] == 2 for lv in inf["levers"])
    assert json.loads((out / "report.json").read_text())["infeasible"]["needed_wafers"] == 4


@pytest.mark.parametrize("args,msg", [
    (["--dtype", "fp7"], "unknown dtype 'fp7'"),
    (["--context", "0"], "context 0"),
    (["--target", "wse9"], "wse9"),
    (["--defects", "cosmic:7"], "cosmic"),
    (["--dtype-override", "moe"], "PATTERN=DTYPE"),
])
def test_bad_plan_options_exit_2(tmp_path, capsys, args, msg):
    out = tmp_path / "o"
    assert main(["compile", "llama-3.2-1b", "-o", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0] and "Traceback" not in err[0]
    assert not out.exists()


def test_target_none_gives_ir_only(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["compile", "llama-3.2-1b", "--target", "none", "-o", str(out)]) == 0
    assert not (out / "report.json").exists() and (out / "model.ir").exists()
