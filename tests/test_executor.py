"""The per-wafer executors (wafercc/executor.py): serial, a process pool and Ray give byte-identical
outputs; errors and interrupts in workers reach the caller; the progress events and displays."""
from __future__ import annotations

import io
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest

import wafercc
from wafercc.errors import PlacementError
from wafercc.executor import ExecOptions, ProcessPool, Serial, executor_for
from wafercc.options import OptionError, build_options
from wafercc.progress import DONE, STARTED, WAFER, PlainProgress, ProgressEvent
from wafercc.target import load_target

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = os.path.join(HERE, "..", "models", "onnx", "tiny-llama.onnx")
ARGS = dict(wafers=3, cache=False, curve=False)


def _files(outdir: str) -> dict[str, bytes]:
    # compile.json (wall times, the executor) and summary.json (its seconds) are the two files that
    # differ between identical runs (docs/metrics.md)
    return {n: open(os.path.join(outdir, n), "rb").read() for n in sorted(os.listdir(outdir))
            if n not in ("compile.json", "summary.json")}


def _compile(tmp_path, name, **kw):
    c = wafercc.compile(TINY, **ARGS, **kw)
    c.save(str(tmp_path / name))
    return c, _files(str(tmp_path / name))


def test_serial_and_pooled_runs_write_the_same_bytes(tmp_path):
    serial, a = _compile(tmp_path, "serial", jobs=1)
    pooled, b = _compile(tmp_path, "pooled", jobs=2)
    assert serial.executor == ("serial", 1) and pooled.executor == ("processes", 2)
    assert a.keys() == b.keys() and {"wafer0.npz", "wafer2.npz", "schedule.json", "report.json"} <= a.keys()
    assert a == b


def test_ray_run_writes_the_same_bytes(tmp_path):
    ray = pytest.importorskip("ray")
    _, a = _compile(tmp_path, "serial", jobs=1)
    try:
        c, b = _compile(tmp_path, "ray", ray="local")
    finally:
        ray.shutdown()
    assert c.executor[0] == "ray"
    assert a == b


def test_a_workers_error_reaches_the_caller_with_its_type_and_attributes():
    for ex in (Serial(), ProcessPool(2)):
        with pytest.raises(PlacementError, match="wafer 1: no color free") as info:
            list(ex.ordered(_fail_on_one, None, range(3)))
        assert info.value.stage == "route"


def _fail_on_one(ctx, k):
    if k == 1:
        e = PlacementError(f"wafer {k}: no color free")
        e.stage = "route"
        raise e
    return k, {}


def test_results_come_in_wafer_order_with_a_bounded_window():
    out = [k for k, _, _ in ProcessPool(2).ordered(_slow_first, None, range(6))]
    assert out == list(range(6))


def _slow_first(ctx, k):
    if k == 0:
        time.sleep(0.5)             # wafer 0 finishes last: the results still come 0, 1, ...
    return k, {"route": 0.0}


def test_executor_choice():
    assert isinstance(executor_for(ExecOptions(jobs=4), 1), Serial)       # one wafer: no pool
    assert executor_for(ExecOptions(jobs=4), 3).workers == 3              # never more workers than wafers
    assert isinstance(executor_for(ExecOptions(jobs=1), 9), Serial)
    with pytest.raises(OptionError, match="jobs 0"):
        build_options(jobs=0)


def test_targets_and_errors_survive_pickling():
    t = load_target("wse3")
    u = pickle.loads(pickle.dumps(t))
    assert u.core.clock == t.core.clock and dict(u.quantities).keys() == dict(t.quantities).keys()
    from wafercc.passes.route import RoutingError
    e = pickle.loads(pickle.dumps(RoutingError("no color", index=3, src=(1, 2))))
    assert type(e) is RoutingError and str(e) == "no color" and e.index == 3 and e.src == (1, 2)


def test_progress_events_of_a_compile():
    events: list[ProgressEvent] = []
    wafercc.compile(TINY, **ARGS, jobs=2, progress=events.append)
    seen = [(e.stage, e.state) for e in events]
    for stage in ("frontend", "plan", "floorplan", "route", "schedule", "timing", "report"):
        assert seen.index((stage, STARTED)) < seen.index((stage, DONE)), stage
    routed = [e for e in events if e.stage == "route" and e.state == WAFER]
    assert [e.wafer for e in routed] == [0, 1, 2] and all(e.wafers == 3 and e.routes > 0 for e in routed)
    assert all(b.elapsed_s >= a.elapsed_s for a, b in zip(events, events[1:]))


def test_a_progress_callback_that_raises_stops_the_compile(tmp_path):
    def stop(ev):
        if ev.stage == "route" and ev.state == WAFER:
            raise KeyboardInterrupt
    c = wafercc.driver.Compilation(TINY, build_options(**ARGS, jobs=2))
    with pytest.raises(KeyboardInterrupt):
        c.run(progress=stop)
    assert c.schedule_files is None and "schedule" not in c.ran


def test_plain_progress_reports_slow_steps_only():
    out = io.StringIO()
    p = PlainProgress(out)
    p(ProgressEvent("route", STARTED, wafers=3))
    p(ProgressEvent("route", WAFER, wafer=0, wafers=3, routes=1234, elapsed_s=9.6, step_s=2.5))
    p(ProgressEvent("route", WAFER, wafer=1, wafers=3, routes=10, elapsed_s=9.7, step_s=0.1))
    p(ProgressEvent("timing", DONE, elapsed_s=12.0, step_s=1.5))
    assert out.getvalue().splitlines() == [
        "wafercc: route wafer 1/3 done in 2.5 s (1,234 routes; 10 s elapsed)",
        "wafercc: timing done in 1.5 s (12 s elapsed)"]


def _run_on_pty(args, tmp_path, interrupt_after: float | None = None):
    """Run the CLI with stdout and stderr on a pseudo-terminal: (exit status, everything it drew)."""
    import pty
    import select
    main, sub = pty.openpty()
    env = dict(os.environ, COLUMNS="100", TERM="xterm")
    proc = subprocess.Popen([sys.executable, "-m", "wafercc.cli", "compile", *args], stdin=sub, stdout=sub, stderr=sub,
                            cwd=str(tmp_path), env=env, start_new_session=True)
    os.close(sub)
    out, t0, sent = b"", time.monotonic(), False
    while True:
        if interrupt_after is not None and not sent and time.monotonic() - t0 > interrupt_after:
            os.killpg(proc.pid, signal.SIGINT)      # what Ctrl-C on the terminal does
            sent = True
        r, _, _ = select.select([main], [], [], 0.2)
        if r:
            try:
                chunk = os.read(main, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=120)
    os.close(main)
    return proc.returncode, out.decode(errors="replace")


def test_the_terminal_shows_live_progress(tmp_path):
    code, text = _run_on_pty([TINY, "-o", "out", "--wafers", "3", "--no-cache", "--no-curve"], tmp_path)
    assert code == 0, text
    assert "\x1b[" in text                     # a live display: cursor movement and colour
    assert "route" in text and "3/3" in text and "wafers, " in text     # the bar's "wafers, N routes"
    assert "Traceback" not in text


def test_quiet_shows_no_progress(tmp_path):
    code, text = _run_on_pty([TINY, "-o", "out", "--wafers", "3", "--no-cache", "--no-curve", "--quiet"], tmp_path)
    assert code == 0, text
    assert "3/3" not in text and "wafers, " not in text


def test_ctrl_c_exits_130_and_leaves_no_output(tmp_path):
    code, text = _run_on_pty(["llama-3.2-1b", "-o", "out", "--wafers", "2", "--no-cache", "--no-curve"],
                             tmp_path, interrupt_after=6.0)
    assert code == 130, text
    assert "interrupted (no output written)" in text and "Traceback" not in text
    assert not os.path.exists(tmp_path / "out")
    assert [n for n in os.listdir(tmp_path) if n.startswith(".wafercc-")] == []     # nothing staged is left


def _executor_in_a_daemon(_):
    return type(executor_for(ExecOptions(jobs=4), 8)).__name__


def test_a_daemonic_process_runs_its_wafers_itself():
    import multiprocessing
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.map(_executor_in_a_daemon, [0]) == ["Serial"]
