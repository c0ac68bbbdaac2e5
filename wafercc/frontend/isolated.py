"""Native third-party code run where a crash cannot kill the compiler.

onnx's checker and shape inference and onnxruntime are C++; on a hostile node attribute they can
abort or segfault the process (onnx's GatherND inference segfaults on ``batch_dims=-5``,
onnxruntime aborts on ``batch_dims=-2**63``), which no ``except`` catches.  :func:`call` runs such
a call in a forked child (it inherits the model, so nothing is serialised on the way in) and sends
back only the small result.  A child that dies, overruns its time or its memory becomes a
:class:`NativeFailure` the caller words as a one-line error.  Without ``os.fork`` (Windows) the
call runs in-process, unprotected.
"""
from __future__ import annotations

import math
import mmap
import os
import pickle
import select
import signal
import time
from typing import Any, Callable

import numpy as np

GiB = 1024 ** 3


class NativeFailure(Exception):
    """The call raised (its exception's first line), crashed (the signal) or ran out of time."""


def call(fn: Callable[[], Any], *, timeout: float = 60.0, memory: int = 4 * GiB) -> Any:
    """``fn()`` in a forked child: its return value, or :class:`NativeFailure`.  ``memory`` bounds
    the address space the child may add to what it inherits."""
    if not hasattr(os, "fork"):
        try:
            return fn()
        except Exception as e:
            raise NativeFailure(_first_line(e)) from None
    # the result comes back through a memory file, not a pipe: a 64 MB probe mask then costs one
    # copy; the pipe only tells the parent that the child has ended (its end closes)
    with _result_file() as out:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: never returns into the caller's stack
            status = 1
            try:
                os.close(r)
                _quiet_and_bounded(memory)
                try:
                    result = ("ok", fn())
                except BaseException as e:  # noqa: BLE001 - every failure goes back as a message
                    result = ("error", _first_line(e))
                _dump(result, out)
                status = 0
            finally:
                os._exit(status)
        os.close(w)
        reaped = False
        try:
            _wait_closed(r, timeout)
            try:
                _, st = os.waitpid(pid, 0)
            except ChildProcessError:  # SIGCHLD ignored: the system reaped it; the result file tells
                st = None
            reaped = True
        finally:
            os.close(r)
            if not reaped:  # timed out, or the caller was interrupted: the child goes too
                _kill(pid)
        if st is not None and os.WIFSIGNALED(st):
            raise NativeFailure(f"crashed ({_signame(os.WTERMSIG(st))})")
        try:
            kind, value = _load(out)
        except (EOFError, ValueError, pickle.UnpicklingError):
            code = os.WEXITSTATUS(st) if st is not None else "unknown"
            raise NativeFailure(f"exited with status {code} without a result (out of memory?)") from None
    if kind == "error":
        raise NativeFailure(value)
    return value


def _dump(result: tuple, out) -> None:
    """A length-prefixed pickle; an array's bytes follow it raw, to be mapped, not copied, back."""
    kind, value = result
    raw = None
    if isinstance(value, np.ndarray) and value.dtype != object:
        raw = np.ascontiguousarray(value)
        result = ("array", (raw.dtype.str, raw.shape))
    head = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(len(head).to_bytes(8, "little") + head)
    if raw is not None:
        out.write(memoryview(raw).cast("B"))
    out.flush()


def _load(out) -> tuple:
    out.seek(0)
    size = int.from_bytes(out.read(8), "little")
    kind, value = pickle.loads(out.read(size))
    if kind != "array":
        return kind, value
    dtype, shape = np.dtype(value[0]), value[1]
    count = math.prod(shape)
    if count == 0:
        return "ok", np.empty(shape, dtype)
    mapped = mmap.mmap(out.fileno(), 0, access=mmap.ACCESS_READ)  # outlives the file: the array holds it
    return "ok", np.frombuffer(mapped, dtype, count, offset=8 + size).reshape(shape)


def _result_file():
    if hasattr(os, "memfd_create"):
        return open(os.memfd_create("wafercc-native-result"), "w+b")
    import tempfile
    return tempfile.TemporaryFile()


def _wait_closed(fd: int, timeout: float) -> None:
    """Until the child's end of the pipe closes (it exited or died), at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise NativeFailure(f"did not finish in {timeout:.0f} s")
        ready, _, _ = select.select([fd], [], [], left)
        if ready and not os.read(fd, 4096):
            return


def _quiet_and_bounded(memory: int) -> None:
    """The child's stderr goes nowhere (a native abort prints its own lines; the user gets one), and
    its address space may grow by ``memory`` only."""
    import faulthandler
    faulthandler.disable()   # pytest's and -X faulthandler's dump goes to a copy of stderr
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C: the parent cleans up, the child just ends
    try:
        import resource
        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (used + memory, resource.getrlimit(resource.RLIMIT_AS)[1]))
    except (ImportError, OSError, ValueError):
        pass  # no /proc or no rlimits: the timeout still bounds the child


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__
