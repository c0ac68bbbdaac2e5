"""The build cache: a compile's whole output, kept so the same compile again takes a copy.

Like GroqFlow's build cache, an entry is keyed on everything that decides the output: the wafercc
version and the digest of every source file of wafercc (so a changed compiler never reads an old
entry), the model's content (an ONNX or config file's sha256, a config's canonical JSON; the same
identity as the IR cache, wafercc.frontend.load), the target file's bytes, the defect spec (a
defect file by its bytes), the seed and every compile option except where the work runs
(``--jobs``, ``--ray``: wafercc/executor.py, never part of an output).  ``wafercc compile`` looks
the key up before compiling; on a hit it copies the entry's files into OUTDIR (staged and moved in,
as a compile's own) and prints the summary the compile printed.

    <cache>/builds/<key>/entry.json     schema, key inputs, model, files with sizes and sha256, stdout
    <cache>/builds/<key>/<files>        exactly the files the compile wrote (its manifest's)

``<cache>`` is wafercc.cache.cache_dir() (``$WAFERCC_CACHE_DIR`` or ``~/.cache/wafercc``).  An entry
is written to a temporary directory and renamed into place, so a reader never sees half of one.
Stale entries are detected: a file whose size or sha256 no longer matches entry.json (edited in
place, truncated) makes the entry a miss, and the compile runs and replaces it.  ``--rebuild``
ignores a hit, ``--no-cache`` neither reads nor writes.  The cache holds at most
``$WAFERCC_BUILD_CACHE_MB`` (default 4096) MB: after each store the least recently used entries are
removed until it fits; 0 turns the build cache off (the IR cache stays on).  ``wafercc cache list`` and ``wafercc cache clear`` show and empty it.
Only compiles that succeed with an output directory and without ``--dump`` / ``--verify-stages``
are stored.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from .cache import cache_dir, canonical_json, file_digest

SCHEMA = "wafercc.build/1"
ENV_LIMIT = "WAFERCC_BUILD_CACHE_MB"
DEFAULT_LIMIT_MB = 4096


def builds_dir() -> Path:
    return cache_dir() / "builds"


def limit_bytes() -> int:
    raw = os.environ.get(ENV_LIMIT, "").strip()
    try:
        mb = float(raw) if raw else DEFAULT_LIMIT_MB
    except ValueError:
        mb = DEFAULT_LIMIT_MB
    return max(0, int(mb * 2 ** 20))


@functools.lru_cache(maxsize=None)
def source_digest() -> str:
    """sha256 over every .py file of the installed wafercc (with ir/ and passes/), once per process
    (as wafercc.cache.code_digest, which covers only the frontend and the IR for the IR cache)."""
    from . import ir, passes
    h = hashlib.sha256()
    roots = [Path(__file__).resolve().parent, Path(ir.__file__).resolve().parent, Path(passes.__file__).resolve().parent]
    for root in roots:
        for f in sorted(root.rglob("*.py")):
            h.update(str(f.relative_to(root.parent)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def build_key(model, options) -> tuple[str, dict] | None:
    """(key, its inputs) of compiling ``model`` with ``options``; None when the model cannot be
    keyed by content (an nn.Module: its weights are not part of its identity)."""
    from . import __version__
    from .frontend.load import _identity, classify
    from .target.defects import parse_defect_spec
    from .target.loader import resolve

    source = classify(model)
    if source == "module":
        return None
    identity, _ = _identity(source, model)
    spec = parse_defect_spec(options.defects)
    defects = [{"kind": t.kind, "file_sha256": file_digest(t.params["path"])} if t.kind == "file"
               else {"kind": t.kind, **t.params} for t in spec.terms]
    opts = dataclasses.asdict(dataclasses.replace(options, defects=None))
    opts.pop("execution")                   # where the work runs never changes an output
    opts["frontend"].pop("cache")
    draft = opts["perf"].get("speculative")
    if draft:
        d = classify(draft["draft"])
        draft["identity"] = _identity(d, draft["draft"])[0] if d != "module" else None
    inputs = {"wafercc": __version__, "sources": source_digest(), "model": identity,
              "target_sha256": file_digest(resolve(options.target)), "defects": defects, "options": opts}
    return hashlib.sha256(canonical_json(inputs).encode()).hexdigest(), inputs


@dataclasses.dataclass(frozen=True)
class Entry:
    key: str
    path: Path
    doc: dict

    @property
    def files(self) -> dict[str, dict]:
        return self.doc["files"]

    @property
    def size(self) -> int:
        return sum(f["size"] for f in self.files.values())


def lookup(key: str) -> Entry | None:
    """The entry of ``key`` if present and every file intact (size and sha256), else None."""
    if limit_bytes() == 0:
        return None
    path = builds_dir() / key
    try:
        doc = json.loads((path / "entry.json").read_text(encoding="utf-8"))
        if doc.get("schema") != SCHEMA or doc.get("key") != key:
            return None
        for name, f in doc["files"].items():
            p = path / name
            if p.stat().st_size != f["size"] or file_digest(p) != f["sha256"]:
                return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    os.utime(path / "entry.json")           # least recently used: the order eviction goes by
    return Entry(key, path, doc)


def store(key: str, inputs: dict, outdir: str, names: list[str], model: str, stdout: dict) -> Entry | None:
    """Copy ``names`` from ``outdir`` into a new entry; failures never fail a compile (None)."""
    root = builds_dir()
    if limit_bytes() == 0:
        return None
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}.", dir=root))
    except OSError:
        return None
    try:
        files = {}
        for name in names:
            shutil.copyfile(os.path.join(outdir, name), tmp / name)
            files[name] = {"size": (tmp / name).stat().st_size, "sha256": file_digest(tmp / name)}
        doc = {"schema": SCHEMA, "key": key, "model": model, "created": time.time(), "inputs": inputs,
               "files": files, "stdout": stdout}
        (tmp / "entry.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        dest = root / key
        if dest.exists():
            shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        return None
    evict(limit_bytes())
    return lookup(key)


def entries() -> list[Entry]:
    """Every readable entry, most recently used first."""
    out = []
    root = builds_dir()
    if not root.is_dir():
        return out
    for p in root.iterdir():
        if p.name.startswith("."):
            continue
        try:
            doc = json.loads((p / "entry.json").read_text(encoding="utf-8"))
            out.append((os.stat(p / "entry.json").st_mtime, Entry(p.name, p, doc)))
        except (OSError, ValueError):
            continue
    return [e for _, e in sorted(out, key=lambda t: (-t[0], t[1].key))]


def evict(limit: int) -> int:
    """Remove the least recently used entries until the rest fit ``limit`` bytes; how many went."""
    kept, gone, total = entries(), 0, 0
    for e in kept:
        total += e.size
        if total > limit:
            shutil.rmtree(e.path, ignore_errors=True)
            gone += 1
    return gone


def clear() -> int:
    """Remove every entry (and any half-written one); how many entries were removed."""
    root = builds_dir()
    if not root.is_dir():
        return 0
    n = 0
    for p in root.iterdir():
        n += not p.name.startswith(".")
        shutil.rmtree(p, ignore_errors=True)
    return n


def restore(entry: Entry, outdir: str, replace: dict[str, str] | None = None) -> list[str]:
    """Copy the entry's files into ``outdir`` (staged beside it and moved in: wafercc.outdir),
    those named in ``replace`` with the text given instead."""
    from .cache import atomic_write_text
    from .outdir import check_outdir, commit, discard, staging_dir
    check_outdir(outdir)
    stage = staging_dir(outdir)
    try:
        for name in entry.files:
            if replace and name in replace:
                atomic_write_text(os.path.join(stage, name), replace[name])
            else:
                shutil.copyfile(entry.path / name, os.path.join(stage, name))
        commit(stage, outdir)
    except BaseException:
        discard(stage)
        raise
    return list(entry.files)

