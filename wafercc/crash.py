"""Internal errors: the traceback goes to a file and the user sees one line that says it is a bug.

    path = save_traceback(exc)      # ~/.cache/wafercc/crashes/<time>-<pid>.txt, else the temp dir
    internal_error_line(exc, path)  # "wafercc: internal error (a bug): ValueError: ...; traceback in PATH"

The CLI exits with EXIT_INTERNAL (70, sysexits' EX_SOFTWARE) after printing that line; bad input is
a ``WaferccError`` and never lands here.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback

EXIT_INTERNAL = 70


def _dirs() -> list[str]:
    from .cache import cache_dir
    return [os.path.join(str(cache_dir()), "crashes"), tempfile.gettempdir()]


def save_traceback(exc: BaseException, argv: list[str] | None = None) -> str | None:
    """Write ``exc``'s traceback (and the command line) to a new file; its path, or None when no
    directory is writable (the line then says so: the crash report must never crash)."""
    from . import __version__
    text = (f"wafercc {__version__}, python {sys.version.split()[0]}\n"
            f"argv: {argv if argv is not None else sys.argv}\n\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for d in _dirs():
        try:
            os.makedirs(d, exist_ok=True)
            fd, path = tempfile.mkstemp(prefix=f"wafercc-crash-{stamp}-", suffix=".txt", dir=d)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            return path
        except OSError:
            continue
    return None


def internal_error_line(exc: BaseException, path: str | None) -> str:
    from .errors import one_line
    where = f"traceback saved to {path}" if path else "the traceback could not be saved"
    return f"wafercc: internal error (a bug, please report it): {one_line(exc, 200)}; {where}"
