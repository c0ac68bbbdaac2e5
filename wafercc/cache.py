"""On-disk cache of lowered IR graphs.

Location: ``$WAFERCC_CACHE_DIR`` if set, else ``~/.cache/wafercc``; entries live
in ``<dir>/ir/<key>.ir.json``.  ``WAFERCC_NO_CACHE=1`` (or ``cache=False`` in
:func:`wafercc.compile`) disables reads and writes.  The key is the sha256 of
the wafercc version, the source identity (file content hash for ONNX and
config files, canonical JSON for config dicts and reference configs) and the
compile options.  Entries are IR JSON (:func:`wafercc.ir.to_json`) written to a
temporary name and moved into place with ``os.replace``, so a reader never
sees a partial entry; an unreadable entry counts as a miss.
"""
from __future__ import annotations

import hashlib
import json
import functools
import os
import tempfile
from pathlib import Path
from typing import Any

from .ir import Graph, from_json, to_json

ENV_DIR = "WAFERCC_CACHE_DIR"
ENV_DISABLE = "WAFERCC_NO_CACHE"


def cache_dir() -> Path:
    d = os.environ.get(ENV_DIR)
    return Path(d).expanduser() if d else Path.home() / ".cache" / "wafercc"


def enabled(requested: bool = True) -> bool:
    return bool(requested) and os.environ.get(ENV_DISABLE, "").strip().lower() not in ("1", "true", "yes", "on")


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


@functools.lru_cache(maxsize=None)
def code_digest() -> str:
    """Digest of the frontend and IR sources: a development build whose lowering code
    changed (same version number) never reads IR an older build cached."""
    import hashlib

    from . import frontend, ir
    h = hashlib.sha256()
    for pkg in (frontend, ir):  # ir/ is wafercc.ir: located by import, not by path
        for f in sorted(Path(pkg.__file__).resolve().parent.glob("*.py")):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def make_key(kind: str, identity: str, options: dict[str, Any] | None = None) -> str:
    from . import __version__
    payload = canonical_json({"wafercc": __version__, "code": code_digest(), "kind": kind, "source": identity,
                              "options": options or {}})
    return hashlib.sha256(payload.encode()).hexdigest()


def _path(key: str) -> Path:
    return cache_dir() / "ir" / f"{key}.ir.json"


def load(key: str) -> Graph | None:
    p = _path(key)
    try:
        text = p.read_text(encoding="utf-8")
        return from_json(text)
    except (OSError, UnicodeDecodeError):
        return None
    except Exception:  # corrupt entry: a miss (it is overwritten by the next store)
        return None


def store(key: str, graph: Graph) -> Path | None:
    """Write an entry atomically; cache write failures never fail a compile."""
    p = _path(key)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(p, to_json(graph))
        return p
    except OSError:
        return None


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, then ``os.replace`` it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def clear() -> int:
    """Delete all cache entries; returns how many were removed."""
    n = 0
    d = cache_dir() / "ir"
    if d.is_dir():
        for p in d.glob("*.ir.json"):
            try:
                p.unlink()
                n += 1
            except OSError:
                pass
    return n
