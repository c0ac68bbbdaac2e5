"""Run fuzz cases under limits and classify each outcome.

    cases = [Case("target", "call", {...}), Case("cli", "cli", {"argv": [...], "files": {...}})]
    outcomes = execute(cases, jobs=2, root="/tmp/fuzz")    # one Outcome per case, in order

A ``call`` case runs a family's in-process function (wafercc.fuzz families: the frontends, the
target loader, the defect generator, a compile through the Python API) in a forked child; a ``cli``
case runs the ``wafercc`` command line in a new interpreter.  Both get the same limits: a wall
clock (60 s) and an address space (6 GB, ``RLIMIT_AS``), and the parent kills the process group on
either.  Forking keeps a case as cheap as a call (the parent has imported wafercc once) while a
hang, a runaway allocation or a native abort (onnxruntime's SIGABRT) stays the child's.

Each outcome is one class of ``CLASSES``:

  ok              the case finished (exit 0; for the CLI its outputs are complete: manifest and files)
  clean_error     a WaferccError (exit 2 or 3 with one ``wafercc: error:`` line on stderr, nothing
                  else but an argparse usage block, and no traceback)
  traceback       any other exception, an exit status other than 0/2/3 (1, 70...), a Python
                  traceback on stderr, or death by a signal
  hang            the wall clock or the memory limit was hit (MemoryError counts)
  partial_output  a CLI compile that failed left files (or a staging directory) behind, or one that
                  finished left an incomplete output directory
"""
from __future__ import annotations

import base64
import dataclasses
import faulthandler
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

WALL_SECONDS = 60.0
MEMORY_BYTES = 6 * 2 ** 30
CLASSES = ("ok", "clean_error", "traceback", "hang", "partial_output")
FAILURES = ("traceback", "hang", "partial_output")
MANIFEST = ".wafercc-manifest.json"
_CLI = "import sys; from wafercc.cli import main; sys.exit(main(sys.argv[1:]))"
_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


@dataclasses.dataclass
class Case:
    family: str
    kind: str                 # "call" (a family function, forked) or "cli" (the wafercc command line)
    payload: dict             # call: the family's input; cli: {"argv", "files": {name: bytes}, "ok": [codes]}


@dataclasses.dataclass
class Outcome:
    family: str
    klass: str
    detail: str = ""          # one line: the error line, the exception, the signal, the limit
    signature: str = ""       # what distinguishes causes: exception type and innermost wafercc frame
    top: str = ""             # the traceback's last lines
    seconds: float = 0.0
    case_dir: str | None = None   # kept for failures: the inputs, case.json, stdout/stderr

    @property
    def failed(self) -> bool:
        return self.klass in FAILURES


def signature(exc_type: str, tb_text: str) -> str:
    """``Type@file:function`` of the innermost frame in wafercc's own code (else the innermost)."""
    frames = _FRAME.findall(tb_text)
    own = [f for f in frames if re.search(r"/(wafercc|ir|passes)/", f[0]) and "/tests/" not in f[0]]
    f = (own or frames or [("?", "0", "?")])[-1]
    path = f[0]
    for root in ("wafercc/", "ir/", "passes/"):
        if f"/{root}" in path:
            path = root + path.rsplit(f"/{root}", 1)[1]
            break
    return f"{exc_type}@{path}:{f[2]}"


def _tail(text: str, lines: int = 8) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


# ---- the child of a call case ----
def _limit(memory: int) -> None:
    os.setsid()                                   # its own process group: a kill reaches its children
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _call_child(case: Case, workdir: str, memory: int) -> None:
    """Runs in the forked child: never returns."""
    code = 0
    try:
        faulthandler.disable()                     # pytest's handler would dump a native abort on its terminal
        _limit(memory)
        os.chdir(workdir)
        out = os.open("stdout.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err = os.open("stderr.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, 1)
        os.dup2(err, 2)
        sys.stdout = os.fdopen(1, "w", closefd=False)
        sys.stderr = os.fdopen(2, "w", closefd=False)
        result = _classify_call(case)
        with open("result.json", "w", encoding="utf-8") as f:
            json.dump(result, f)
    except BaseException:                          # noqa: BLE001 - the child must reach os._exit
        code = 1
    finally:
        os._exit(code)


def _classify_call(case: Case) -> dict:
    from wafercc.errors import StageError, WaferccError
    from .families import FAMILIES

    try:
        FAMILIES[case.family].run(case.payload)
        return {"klass": "ok"}
    except MemoryError:
        return {"klass": "hang", "detail": "memory limit (MemoryError)"}
    except WaferccError as e:
        if not isinstance(e, StageError) and str(e).strip():
            return {"klass": "clean_error", "detail": _one_line(str(e).splitlines()[0])}
        reason = "StageError (an internal error)" if isinstance(e, StageError) else "empty message"
        tb = traceback.format_exc()
        return {"klass": "traceback", "detail": f"{reason}: {_one_line(e)}", "top": _tail(tb),
                "signature": signature(type(e).__name__, tb)}
    except BaseException as e:                     # noqa: BLE001 - every other exception is the finding
        tb = traceback.format_exc()
        return {"klass": "traceback", "detail": _one_line(f"{type(e).__name__}: {e}"), "top": _tail(tb),
                "signature": signature(type(e).__name__, tb)}


# ---- classification of a CLI run ----
def _new_entries(workdir: str, inputs: set[str]) -> list[str]:
    return sorted(set(os.listdir(workdir)) - inputs - {"stdout.txt", "stderr.txt", "result.json", "case.json"})


def _staging_dirs(workdir: str) -> list[str]:
    found = []
    for d, dirs, _files in os.walk(workdir):
        found += [os.path.join(d, x) for x in dirs if x.startswith(".wafercc-")]
    return found


def _incomplete_outdirs(workdir: str, entries: list[str]) -> list[str]:
    """Output directories of a finished compile whose manifest is missing or names absent files."""
    bad = []
    for d, _dirs, files in os.walk(workdir):
        if any(f in ("compile.json", "report.json", "schedule.json") for f in files):
            if MANIFEST not in files:
                bad.append(f"{d}: no {MANIFEST}")
                continue
            try:
                with open(os.path.join(d, MANIFEST), encoding="utf-8") as f:
                    names = json.load(f)["files"]
            except (OSError, ValueError, KeyError, TypeError):
                bad.append(f"{d}: unreadable {MANIFEST}")
                continue
            missing = [n for n in names if not os.path.exists(os.path.join(d, n))]
            if missing:
                bad.append(f"{d}: manifest names missing {missing[:3]}")
    return bad


def _crash_traceback(line: str) -> str:
    m = re.search(r"traceback saved to (\S+)$", line)
    if m and os.path.isfile(m.group(1)):
        with open(m.group(1), encoding="utf-8", errors="replace") as f:
            return f.read()
    return ""


def classify_cli(rc: int, stderr: str, workdir: str, inputs: set[str], ok_codes=(0,)) -> dict:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("wafercc: error:")]
    entries = _new_entries(workdir, inputs)
    staging = _staging_dirs(workdir)
    if rc < 0:
        name = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
        return {"klass": "traceback", "detail": f"killed by {name}", "signature": f"signal {name}",
                "top": _tail(stderr)}
    if "Traceback (most recent call last)" in stderr:
        exc = lines[-1].split(":")[0] if lines else "?"
        if exc == "MemoryError":
            return {"klass": "hang", "detail": "memory limit (MemoryError)"}
        return {"klass": "traceback", "detail": _one_line(lines[-1] if lines else ""),
                "signature": signature(exc, stderr), "top": _tail(stderr)}
    if rc == 70:
        tb = _crash_traceback(lines[-1] if lines else "")
        exc = (tb.rstrip().splitlines() or ["?"])[-1].split(":")[0]
        if exc == "MemoryError":
            return {"klass": "hang", "detail": "memory limit (MemoryError, exit 70)"}
        return {"klass": "traceback", "detail": _one_line(lines[-1] if lines else "exit 70"),
                "signature": signature(exc, tb) if tb else "exit 70", "top": _tail(tb or stderr)}
    if rc in ok_codes or rc == 3:
        bad = staging + _incomplete_outdirs(workdir, entries)
        if bad:
            return {"klass": "partial_output", "detail": _one_line(f"exit {rc}, incomplete output: {bad[0]}"),
                    "signature": f"partial exit {rc}"}
        if rc in ok_codes:
            return {"klass": "ok"}
    if rc in (2, 3):
        others = [ln for ln in lines if ln not in errors and not ln.startswith(("usage:", " "))]
        if len(errors) != 1 or others:
            return {"klass": "traceback", "detail": _one_line(f"exit {rc} with {len(errors)} error lines and "
                                                              f"{len(others)} other stderr lines: "
                                                              f"{(others or errors or [''])[0]}"),
                    "signature": f"exit {rc} stderr not one line", "top": _tail(stderr)}
        if rc == 2 and (entries or staging):
            return {"klass": "partial_output", "detail": _one_line(f"exit 2 left {(entries + staging)[:4]}"),
                    "signature": "partial exit 2"}
        return {"klass": "clean_error", "detail": _one_line(errors[0])}
    return {"klass": "traceback", "detail": _one_line(f"exit {rc}: {lines[-1] if lines else ''}"),
            "signature": f"exit {rc}", "top": _tail(stderr)}


# ---- the scheduler ----
@dataclasses.dataclass
class _Running:
    index: int
    case: Case
    workdir: str
    inputs: set
    start: float
    pid: int
    proc: subprocess.Popen | None = None
    killed: str | None = None


def _write_inputs(case: Case, workdir: str) -> set[str]:
    files = case.payload.get("files", {}) if case.kind == "cli" else {}
    for name, data in files.items():
        with open(os.path.join(workdir, name), "wb") as f:
            f.write(data if isinstance(data, bytes) else str(data).encode("utf-8"))
    return set(files)


def _start(index: int, case: Case, root: str, memory: int, env: dict) -> _Running:
    workdir = tempfile.mkdtemp(prefix=f"{case.family}-{index:05d}-", dir=root)
    inputs = _write_inputs(case, workdir)
    if case.kind == "call":
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.environ.update(env)
            _call_child(case, workdir, memory)
        return _Running(index, case, workdir, inputs, time.monotonic(), pid)
    out = open(os.path.join(workdir, "stdout.txt"), "wb")
    err = open(os.path.join(workdir, "stderr.txt"), "wb")
    proc = subprocess.Popen([sys.executable, "-c", _CLI, *case.payload["argv"]], cwd=workdir, stdout=out,
                            stderr=err, stdin=subprocess.DEVNULL, env={**os.environ, **env},
                            preexec_fn=lambda: _limit(memory))
    out.close()
    err.close()
    return _Running(index, case, workdir, inputs, time.monotonic(), proc.pid, proc)


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _kill(r: _Running, why: str) -> None:
    r.killed = why
    try:
        os.killpg(r.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _poll(r: _Running) -> int | None:
    """The exit status (negative: a signal) once the process ended, else None."""
    if r.proc is not None:
        return r.proc.poll()
    pid, status = os.waitpid(r.pid, os.WNOHANG)
    if pid == 0:
        return None
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _finish(r: _Running, rc: int, keep_all: bool) -> Outcome:
    seconds = time.monotonic() - r.start
    try:                                             # the case's own children (a forked checker)
        os.killpg(r.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    read = lambda n: open(os.path.join(r.workdir, n), encoding="utf-8", errors="replace").read() \
        if os.path.exists(os.path.join(r.workdir, n)) else ""
    if r.killed:
        res = {"klass": "hang", "detail": r.killed, "signature": r.killed.split(" after")[0]}
    elif r.case.kind == "call":
        path = os.path.join(r.workdir, "result.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                res = json.load(f)
        elif rc < 0:
            name = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
            res = {"klass": "traceback", "detail": f"killed by {name}", "signature": f"signal {name}",
                   "top": _tail(read("stderr.txt"))}
        else:
            res = {"klass": "traceback", "detail": f"child exited {rc} without a result",
                   "signature": f"child exit {rc}", "top": _tail(read("stderr.txt"))}
    else:
        res = classify_cli(rc, read("stderr.txt"), r.workdir, r.inputs, tuple(r.case.payload.get("ok", (0,))))
    out = Outcome(r.case.family, res["klass"], res.get("detail", ""), res.get("signature", ""), res.get("top", ""),
                  round(seconds, 3))
    if out.failed or keep_all:
        save_case(r.case, out, r.workdir)
        out.case_dir = r.workdir
    else:
        shutil.rmtree(r.workdir, ignore_errors=True)
    return out


def execute(cases: list[Case], *, jobs: int = 1, root: str | None = None, wall: float = WALL_SECONDS,
            memory: int = MEMORY_BYTES, keep_all: bool = False, progress=None) -> list[Outcome]:
    """Run ``cases`` ``jobs`` at a time; one Outcome per case, in order.  ``root`` holds each case's
    directory (failures' are kept) and the shared cache (``WAFERCC_CACHE_DIR``: the IR cache makes
    repeated lowering of the same tiny model cheap; crash files land there too)."""
    root = root or tempfile.mkdtemp(prefix="wafercc-fuzz-")
    os.makedirs(root, exist_ok=True)
    env = {"WAFERCC_CACHE_DIR": os.path.join(root, "cache"), "PYTHONHASHSEED": "0",
           "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    outcomes: list[Outcome | None] = [None] * len(cases)
    pending = list(range(len(cases)))[::-1]
    running: list[_Running] = []
    while pending or running:
        while pending and len(running) < jobs:
            i = pending.pop()
            running.append(_start(i, cases[i], root, memory, env))
        time.sleep(0.005)
        for r in list(running):
            rc = _poll(r)
            if rc is None:
                now = time.monotonic()
                if now - r.start > wall:
                    _kill(r, f"wall limit after {wall:.0f} s")
                elif _rss(r.pid) > memory:
                    _kill(r, f"memory limit after {now - r.start:.0f} s")
                continue
            running.remove(r)
            outcomes[r.index] = _finish(r, rc, keep_all)
            if progress:
                progress(r.index, outcomes[r.index])
    return outcomes


def _jsonable(v):
    if isinstance(v, bytes):
        return {"base64": base64.b64encode(v).decode("ascii")}
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and v != v:
        return "NaN"
    return v if isinstance(v, (str, int, float, bool, type(None))) else repr(v)


def save_case(case: Case, outcome: Outcome, workdir: str) -> str:
    """``workdir/case.json``: the family, the payload (bytes as base64) and the outcome; with the
    input files beside it, enough to re-run the case (``python benchmarks/fuzz_long.py --replay``)."""
    path = os.path.join(workdir, "case.json")
    doc = {"family": case.family, "kind": case.kind, "payload": _jsonable(case.payload),
           "outcome": {k: v for k, v in dataclasses.asdict(outcome).items() if k != "case_dir"}}
    if case.kind == "cli":
        doc["command"] = "wafercc " + " ".join(case.payload["argv"])
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
    return path


def load_case(path: str) -> Case:
    """The Case a ``case.json`` saved (for replaying a failure)."""
    def back(v):
        if isinstance(v, dict):
            return base64.b64decode(v["base64"]) if set(v) == {"base64"} else {k: back(x) for k, x in v.items()}
        if isinstance(v, list):
            return [back(x) for x in v]
        return v
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    return Case(doc["family"], doc["kind"], back(doc["payload"]))
