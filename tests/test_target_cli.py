"""`wafercc targets` and `wafercc targets show`: tables, JSON, and one-line errors with exit 2."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from target_util import write_variant

from wafercc.cli import main


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *needles):
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("wafercc: error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_targets_list(capsys):
    code, out, err = run(["targets"], capsys)
    assert code == 0 and err == ""
    assert "wse2" in out and "wse3" in out and "883,350" in out and "745,500" in out


def test_targets_list_json(capsys):
    code, out, _ = run(["targets", "--format", "json"], capsys)
    rows = json.loads(out)
    assert code == 0 and [r["name"] for r in rows] == ["wse2", "wse3"]
    assert rows[1]["usable_cores"] == 883_350 and rows[1]["sram_total_bytes"] == 883_350 * 49152


def test_targets_show(capsys):
    code, out, _ = run(["targets", "show", "wse3"], capsys)
    assert code == 0
    for s in ("core.sram", "48 KiB", "io.off_wafer_latency", "assumed", "clock_research", "usable_cores",
              "755", "1,170", "sources"):
        assert s in out, s


def test_targets_show_json(capsys):
    code, out, _ = run(["targets", "show", "wse2", "--format", "json"], capsys)
    d = json.loads(out)
    assert code == 0 and d["name"] == "wse2"
    assert d["fields"]["core.simd_lanes_fp16"]["value"] == 4
    assert d["fields"]["fabric.reserved_colors"]["value"] == [21, 22, 23]
    assert d["derived"]["usable_cores"]["value"] == 745_500


def test_targets_show_user_file(tmp_path, capsys):
    path = write_variant(tmp_path, 'name = "wse3"', 'name = "my-wafer"')
    code, out, _ = run(["targets", "show", path], capsys)
    assert code == 0 and "my-wafer" in out


@pytest.mark.parametrize("argv,needles", [
    (["targets", "show", "wse9"], ["unknown target 'wse9'", "wse2, wse3"]),
    (["targets", "show", "/nonexistent/t.toml"], ["/nonexistent/t.toml", "no such target file"]),
])
def test_targets_errors(argv, needles, capsys):
    code, _, err = run(argv, capsys)
    assert_one_line_error(code, err, *needles)


def test_targets_show_needs_a_target(capsys):
    with pytest.raises(SystemExit) as ei:
        main(["targets", "show"])
    assert ei.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("wafercc: error: ")


def test_targets_subprocess_exit_code():
    proc = subprocess.run([sys.executable, "-m", "wafercc.cli", "targets", "show", "nope"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == ["wafercc: error: unknown target 'nope' (expected one of wse2, wse3 or a .toml file)"]


def test_targets_show_bad_file(tmp_path, capsys):
    path = write_variant(tmp_path, 'simd_lanes_fp16 = { value = 8', 'simd_lanes_fp16 = { value = -8')
    code, _, err = run(["targets", "show", path], capsys)
    assert_one_line_error(code, err, path, "core.simd_lanes_fp16", "-8", "positive")
