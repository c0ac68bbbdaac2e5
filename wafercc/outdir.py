"""The output directory contract: all or nothing, and only wafercc's own files are replaced.

    check_outdir(d)               # before compiling: a missing, empty or wafercc-written directory
    stage = staging_dir(d)        # a hidden sibling of d (same file system: moves are renames)
    ... write every file into stage ...
    commit(stage, d, names)       # d now holds exactly this compile's files

A compile writes ``MANIFEST`` (the names of the files it wrote) beside its outputs.  ``commit``
replaces a previous compile's files, those its manifest names, and leaves any other file alone, so
a ``--no-place`` compile into an old output directory does not keep the old schedule beside the new
report.  A non-empty directory without a manifest is refused (it may hold the user's own files),
except an output of a wafercc older than the manifest, recognised by its compile.json.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile

from .errors import InputFileError

MANIFEST = ".wafercc-manifest.json"
SCHEMA = "wafercc.outputs/1"
# what a wafercc without a manifest wrote (recognised only beside its compile.json)
_LEGACY = ("model.ir", "model.ir.json", "summary.json", "compile.json", "report.json", "schedule.json",
           "defects.npz", "dump")


class OutputDirError(InputFileError):
    """The output directory cannot be used: a file, unwritable, or holding files wafercc did not write."""


def _listing(outdir: str) -> list[str]:
    try:
        return sorted(os.listdir(outdir))
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        if os.path.isdir(os.path.dirname(os.path.abspath(outdir))):
            raise OutputDirError("is a file, expected an output directory", where=outdir) from None
        return []                                    # a parent is a file: check_outdir names it
    except OSError as e:
        raise OutputDirError(f"cannot read output directory: {e.strerror}", where=outdir) from None


def owned_files(outdir: str) -> list[str]:
    """Names in ``outdir`` a previous compile wrote (its manifest's, or a legacy output's); raises
    OutputDirError when the directory holds files and is not a wafercc output."""
    entries = _listing(outdir)
    if not entries:
        return []
    path = os.path.join(outdir, MANIFEST)
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
            names = doc["files"] if isinstance(doc, dict) and doc.get("schema") == SCHEMA else None
        except (OSError, ValueError, KeyError):
            names = None
        if not isinstance(names, list) or not all(_plain(n) for n in names):
            raise OutputDirError(f"unreadable {MANIFEST}: remove the directory or choose another -o", where=outdir)
        return sorted({*names, MANIFEST} & set(entries))
    if _legacy(outdir):
        return [e for e in entries if e in _LEGACY or (e.startswith("wafer") and e.endswith(".npz"))]
    raise OutputDirError(f"not empty and not a wafercc output ({len(entries)} entries, no {MANIFEST}); "
                         f"choose an empty or new directory", where=outdir)


def _plain(name) -> bool:
    """A manifest entry names a file directly inside the directory (never a path out of it)."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and os.sep not in name


def _legacy(outdir: str) -> bool:
    try:
        with open(os.path.join(outdir, "compile.json"), encoding="utf-8") as f:
            return json.load(f).get("schema") == "wafercc.compile/1"
    except (OSError, ValueError, AttributeError):
        return False


def check_outdir(outdir: str) -> None:
    """Refuse, before anything is compiled, an output directory the compile could not replace."""
    owned_files(outdir)
    parent = os.path.dirname(os.path.abspath(outdir))
    probe = parent
    while not os.path.isdir(probe):                  # the nearest existing ancestor must be writable
        if os.path.exists(probe):
            raise OutputDirError(f"cannot create output directory: {probe} is a file", where=outdir)
        probe = os.path.dirname(probe)
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputDirError(f"cannot create output directory: {probe} is not writable", where=outdir)


def staging_dir(outdir: str) -> str:
    """A new hidden directory beside ``outdir`` (created with its parents)."""
    parent = os.path.dirname(os.path.abspath(outdir))
    try:
        os.makedirs(parent, exist_ok=True)
        return tempfile.mkdtemp(prefix=".wafercc-", dir=parent)
    except OSError as e:
        raise OutputDirError(f"cannot create output directory: {e.strerror}", where=outdir) from None


def write_manifest(stage: str, names: list[str]) -> None:
    from .cache import atomic_write_text
    atomic_write_text(os.path.join(stage, MANIFEST),
                      json.dumps({"schema": SCHEMA, "files": sorted(names)}, indent=1) + "\n")


@contextlib.contextmanager
def _no_sigint():
    """Ctrl-C waits until the outputs are moved in (a commit takes milliseconds): a half-replaced
    directory is the one outcome the contract forbids."""
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    except (AttributeError, ValueError, OSError):    # no signal masks here (not the main thread, Windows)
        old = None
    try:
        yield
    finally:
        if old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def commit(stage: str, outdir: str) -> list[str]:
    """Move every file of ``stage`` into ``outdir``, replacing a previous compile's files; returns
    the names moved in.  A new ``outdir`` is the staging directory renamed."""
    names = [n for n in sorted(os.listdir(stage)) if n != MANIFEST]
    with _no_sigint():
        try:
            old = owned_files(outdir)
            if not os.path.lexists(outdir):
                write_manifest(stage, names)
                os.chmod(stage, 0o777 & ~_umask())       # mkdtemp's 0700 was for staging only
                os.rename(stage, outdir)
                return names
            # the union first: an interrupted commit still leaves a directory its next compile owns
            write_manifest_in = os.path.join(outdir, MANIFEST)
            write_manifest(stage, sorted({*names, *(n for n in old if n != MANIFEST)}))
            os.replace(os.path.join(stage, MANIFEST), write_manifest_in)
            for n in old:
                if n != MANIFEST:
                    _remove(os.path.join(outdir, n))
            for n in names:
                os.replace(os.path.join(stage, n), os.path.join(outdir, n))
            write_manifest(stage, names)
            os.replace(os.path.join(stage, MANIFEST), write_manifest_in)
            os.rmdir(stage)
            return names
        except OSError as e:
            raise OutputDirError(f"cannot write outputs: {e.strerror}", where=outdir) from None


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def discard(stage: str | None) -> None:
    if stage:
        shutil.rmtree(stage, ignore_errors=True)
