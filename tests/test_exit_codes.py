"""Every exception reaching the CLI ends as one line and an exit status: 2 bad input, 3 does not
fit, 70 an internal error (its traceback saved to a file the line names), 130 interrupted."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from wafercc.cli import main
from wafercc.errors import StageError

TINY = "models/onnx/tiny-llama.onnx"


@pytest.fixture
def crash_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("WAFERCC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "crashes"


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize("exc", [ValueError("boom"), KeyError("k"), RecursionError(), StageError("contract")])
def test_internal_error_is_one_line_70_with_a_saved_traceback(exc, crash_dir, tmp_path, capsys, monkeypatch):
    def broken(*a, **k):
        raise exc
    monkeypatch.setattr("wafercc.plan.planner.plan_wafers", broken)
    assert main(["compile", TINY, "--no-place", "-o", str(tmp_path / "o")]) == 70
    line = _one_line(capsys)
    assert line.startswith("wafercc: internal error (a bug") and type(exc).__name__ in line
    saved = list(crash_dir.iterdir())
    assert len(saved) == 1 and str(saved[0]) in line
    text = saved[0].read_text()
    assert "Traceback (most recent call last)" in text and "broken" in text and "--no-place" in text
    assert not (tmp_path / "o").exists()


def test_unwritable_crash_dir_still_one_line(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("WAFERCC_CACHE_DIR", str(blocker))          # crashes/ cannot be made: the temp dir
    monkeypatch.setattr("wafercc.cli.cmd_models", lambda args: 1 / 0)
    assert main(["models"]) == 70
    line = _one_line(capsys)
    path = line.rsplit("traceback saved to ", 1)[1]
    assert os.path.isfile(path) and "ZeroDivisionError" in open(path).read()
    os.remove(path)


def test_bad_input_is_2_and_does_not_fit_is_3(tmp_path, capsys):
    assert main(["compile", str(tmp_path / "missing.onnx")]) == 2
    assert _one_line(capsys).startswith("wafercc: error: ")
    assert main(["compile", TINY, "--no-place", "-o", str(tmp_path / "o"), "--context", str(10**8),
                 "--max-wafers", "1"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("wafercc: error: no plan fits 1 wafer(s)")


def test_keyboard_interrupt_in_process_is_130_and_writes_nothing(tmp_path, capsys, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr("wafercc.passes.place_route.route_wafer", interrupted)
    assert main(["compile", TINY, "-o", str(tmp_path / "o"), "--no-curve"]) == 130
    assert _one_line(capsys) == "wafercc: interrupted (no output written)"
    assert os.listdir(tmp_path) == []                               # no output, no staging left behind


_RUNNER = textwrap.dedent("""
    import sys, time
    import wafercc.passes.place_route as pr
    real = pr.route_wafer
    def slow(*a, **k):                     # after the plan's CP-SAT solves: SIGINT must still reach Python
        print("ROUTING", flush=True)
        time.sleep(60)
        return real(*a, **k)
    pr.route_wafer = slow
    from wafercc.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_sigint_mid_compile_exits_130_and_leaves_nothing(tmp_path):
    out = tmp_path / "out" / "o"
    out.parent.mkdir()                      # the schedule is staged here, beside the output directory
    env = dict(os.environ, WAFERCC_CACHE_DIR=str(tmp_path / "cache"))
    p = subprocess.Popen([sys.executable, "-c", _RUNNER, "compile", TINY, "-o", str(out), "--no-curve"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         cwd=os.getcwd())
    try:
        for line in p.stdout:
            if line.startswith("ROUTING"):
                break
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 130, err
    assert err.strip().splitlines() == ["wafercc: interrupted (no output written)"]
    assert not out.exists() and os.listdir(out.parent) == []       # nothing staged is left either
