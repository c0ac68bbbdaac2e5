"""The fuzz harness tells the outcome classes apart (a harness that calls everything ok would make
the fuzz tests pass vacuously): each class from a family made to produce it."""
from __future__ import annotations

import os
import time

import pytest

from fuzz import families
from fuzz.harness import Case, classify_cli, execute
from wafercc.errors import InputFileError


def _behave(p):
    how = p["how"]
    if how == "ok":
        return
    if how == "clean":
        raise InputFileError("bad input", where="x.onnx")
    if how == "bug":
        raise ValueError("a bug")
    if how == "sleep":
        time.sleep(30)
    if how == "allocate":
        bytearray(8 * 2 ** 30)
    if how == "abort":
        os.abort()


@pytest.fixture()
def probe(monkeypatch):
    monkeypatch.setitem(families.FAMILIES, "probe", families.Family("probe", "call", lambda: None, _behave))


def test_call_cases_are_classified(probe, tmp_path):
    hows = ["ok", "clean", "bug", "sleep", "allocate", "abort"]
    outs = execute([Case("probe", "call", {"how": h}) for h in hows], jobs=2, root=str(tmp_path), wall=3)
    got = {h: o.klass for h, o in zip(hows, outs)}
    assert got == {"ok": "ok", "clean": "clean_error", "bug": "traceback", "sleep": "hang", "allocate": "hang",
                   "abort": "traceback"}, got
    bug = outs[2]
    assert bug.signature.startswith("ValueError@") and "a bug" in bug.detail
    assert os.path.isfile(os.path.join(bug.case_dir, "case.json"))
    assert outs[5].detail == "killed by SIGABRT"
    assert outs[0].case_dir is None and not os.path.exists(os.path.join(str(tmp_path), "probe-00000"))


def test_cli_runs_are_classified(tmp_path):
    d = str(tmp_path)
    one = "wafercc: error: x.onnx: no such file\n"
    assert classify_cli(2, one, d, set())["klass"] == "clean_error"
    usage = "usage: wafercc compile [-h] MODEL\nwafercc: error: argument --until: invalid choice\n"
    assert classify_cli(2, usage, d, set())["klass"] == "clean_error"
    assert classify_cli(2, one + one, d, set())["klass"] == "traceback"
    assert classify_cli(2, "Traceback (most recent call last):\n  File \"/x/wafercc/cli.py\", line 1, in main\n"
                           "KeyError: 'a'\n", d, set())["signature"] == "KeyError@wafercc/cli.py:main"
    assert classify_cli(70, "wafercc: internal error (a bug, please report it): ...\n", d, set())["klass"] == "traceback"
    assert classify_cli(1, "", d, set())["klass"] == "traceback"
    assert classify_cli(-6, "", d, set())["detail"] == "killed by SIGABRT"
    (tmp_path / "model.onnx").write_bytes(b"x")
    assert classify_cli(2, one, d, {"model.onnx"})["klass"] == "clean_error"      # its own input is no output
    out = tmp_path / "out"
    out.mkdir()
    (out / "schedule.json").write_text("{}")
    assert classify_cli(2, one, d, {"model.onnx"})["klass"] == "partial_output"   # a failed compile left a file
    assert classify_cli(0, "", d, {"model.onnx"})["klass"] == "partial_output"    # no manifest
    (out / ".wafercc-manifest.json").write_text('{"files": ["schedule.json", "report.json"]}')
    assert classify_cli(0, "", d, {"model.onnx"})["klass"] == "partial_output"    # report.json missing
    (out / "report.json").write_text("{}")
    assert classify_cli(0, "", d, {"model.onnx"})["klass"] == "ok"
    (tmp_path / ".wafercc-abc").mkdir()
    assert classify_cli(0, "", d, {"model.onnx"})["klass"] == "partial_output"    # a staging directory left
