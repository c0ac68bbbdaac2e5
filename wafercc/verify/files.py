"""Read an output directory (docs/schedule-format.md) into plain dicts and NumPy arrays.

Only the emitted files are read: ``schedule.json``, ``defects.npz``, ``wafer{k}.npz``, and the
target named in ``schedule.json`` (through ``wafercc.target.load_target``).  Anything that stops
the checks from running at all (missing file, bad JSON, missing key or array, wrong type, arrays
of different lengths, broken CSR offsets) raises :class:`ScheduleFileError` (exit status 2).
Everything else is a violation found by the checks (exit status 1).
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np

from ..errors import WaferccError

SCHEMAS = ("wafercc.schedule/2", "wafercc.schedule/3")   # 3: paths as hops and directions
TILE_ARRAYS = ("tile_op", "tile_grid", "tile_expert", "tile_row", "tile_col",
               "tile_core_row", "tile_core_col", "tile_bytes")
ROUTE_ARRAYS = ("route_src_row", "route_src_col", "route_dst_row", "route_dst_col", "route_kind",
                "route_src_tile", "route_dst_tile", "route_op_src", "route_op_dst", "route_color")

# arrays whose values (cores, rows, cols, op ids, kinds, colors) the checks combine only into ids
# below 2**31 (core * cols + col, core * colors + color): read as int32, the rest as int64
KEEP32 = frozenset({"tile_op", "tile_grid", "tile_core_row", "tile_core_col", "route_src_row", "route_src_col",
                    "route_dst_row", "route_dst_col", "route_kind", "route_op_src", "route_op_dst", "route_color"})


class ScheduleFileError(WaferccError):
    """An output directory is missing, unreadable or structurally malformed."""


@dataclass
class WaferData:
    index: int
    meta: dict                       # schedule.json wafers[k]
    alive: np.ndarray                # bool [rows, cols]
    dead_links: np.ndarray           # int64 [L, 3] (row, col, 0 east / 1 south)
    tiles: dict = field(default_factory=dict)    # name -> int64 [T]
    routes: dict = field(default_factory=dict)   # name -> int64 [R]; plus offsets [R+1], links [sum]


@dataclass
class Schedule:
    outdir: str
    doc: dict
    target: object                   # wafercc.target.Target
    defects: dict                    # defects.npz members

    @property
    def nwafers(self) -> int:
        return len(self.doc["wafers"])

    def wafer(self, k: int) -> WaferData:
        """Wafer k's arrays, read on demand (one wafer in memory at a time)."""
        shape = (self.target.usable_rows, self.target.usable_cols)
        return _read_wafer(self.outdir, k, self.doc["wafers"][k], self.defects, shape)


def _fail(msg: str, where: str) -> None:
    raise ScheduleFileError(msg, where=where)


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_doc(doc, path: str) -> None:
    if not isinstance(doc, dict):
        _fail("expected a JSON object at the top level", path)
    if doc.get("schema") not in SCHEMAS:
        _fail(f"'schema': got {doc.get('schema')!r}, expected one of {', '.join(map(repr, SCHEMAS))}", path)
    for key, ok, exp in (("target", lambda v: isinstance(v, str) and v, "a target name or path"),
                         ("budget_bytes_per_core", lambda v: _int(v) and v >= 0, "a non-negative integer"),
                         ("colors", lambda v: isinstance(v, list) and all(_int(c) for c in v), "a list of integers"),
                         ("link_capacity", lambda v: _int(v) and v >= 1, "a positive integer"),
                         ("wafers", lambda v: isinstance(v, list), "a list"),
                         ("units", lambda v: v is None or (isinstance(v, list) and all(isinstance(u, str) for u in v)),
                          "a list of unit names")):
        if (key not in doc and key != "units") or not ok(doc.get(key)):   # units: optional (older files)
            _fail(f"'{key}': got {doc.get(key)!r}, expected {exp}", path)
    for k, w in enumerate(doc["wafers"]):
        where = f"wafers[{k}]"
        if not isinstance(w, dict) or not isinstance(w.get("ops"), list):
            _fail(f"'{where}': expected an object with an 'ops' list", path)
        lay = w.get("layers")
        if lay is not None and not (isinstance(lay, list) and len(lay) == 2 and all(_int(x) for x in lay)):
            _fail(f"'{where}.layers': got {lay!r}, expected [first, last] or null", path)
        if not isinstance(w.get("units", []), list) or not isinstance(w.get("inter_wafer", []), list):
            _fail(f"'{where}.units' / '{where}.inter_wafer': expected lists", path)
        for i, op in enumerate(w["ops"]):
            _check_op(op, f"{where}.ops[{i}]", path)


def _check_op(op, where: str, path: str) -> None:
    if not isinstance(op, dict) or not isinstance(op.get("name"), str) or not isinstance(op.get("grids"), list):
        _fail(f"'{where}': expected an object with 'name' and 'grids'", path)
    if not (op.get("layer") is None or _int(op.get("layer"))):
        _fail(f"'{where}.layer': got {op.get('layer')!r}, expected an integer or null", path)
    for j, g in enumerate(op["grids"]):
        if not isinstance(g, dict) or not all(_int(g.get(k)) and g[k] >= 0 for k in ("experts", "rows", "cols")):
            _fail(f"'{where}.grids[{j}]': got {g!r}, expected experts, rows, cols (integers >= 0)", path)
    deps, host = op.get("deps", []), op.get("host")
    if not (isinstance(deps, list) and all(_int(d) for d in deps)) or not (host is None or _int(host)):
        _fail(f"'{where}.deps' / '{where}.host': got {deps!r} / {host!r}, expected a list of op ids / an op "
              "id or null", path)
    if not (op.get("routes_of") is None or _int(op.get("routes_of"))):
        _fail(f"'{where}.routes_of': got {op.get('routes_of')!r}, expected an op id or null", path)
    reg = op.get("region", [])
    if not (isinstance(reg, list) and all(isinstance(r, list) and len(r) == 4 and all(_int(x) for x in r)
                                          for r in reg)):
        _fail(f"'{where}.region': got {reg!r}, expected [[r0, c0, rows, cols], ...]", path)


def _load_npz(path: str) -> dict:
    if not os.path.isfile(path):
        _fail("no such file", path)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        _fail(f"cannot read npz: {e}", path)


def _ints(arrs: dict, name: str, path: str, length: int | None = None, keep32: bool = False) -> np.ndarray:
    if name not in arrs:
        _fail(f"missing array '{name}'", path)
    a = arrs[name]
    if a.ndim != 1 or not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
        _fail(f"'{name}': got {a.dtype} {list(a.shape)}, expected a 1-D integer array", path)
    if length is not None and a.shape[0] != length:
        _fail(f"'{name}': got length {a.shape[0]}, expected {length}", path)
    if keep32 and np.issubdtype(a.dtype, np.signedinteger) and a.dtype.itemsize <= 4:
        return a.astype(np.int32, copy=False)    # ids below 2**31: no copy to int64 of millions of entries
    return a.astype(np.int64, copy=False)


def _read_wafer(outdir: str, k: int, meta: dict, defects: dict, shape: tuple) -> WaferData:
    dpath = os.path.join(outdir, "defects.npz")
    alive = defects.get(f"alive_{k}")
    if alive is None or alive.dtype != np.bool_ or alive.shape != shape:
        got = "missing" if alive is None else f"{alive.dtype} {list(alive.shape)}"
        _fail(f"'alive_{k}': got {got}, expected bool {list(shape)} (the target's usable rectangle)", dpath)
    dl = defects.get(f"dead_links_{k}", np.zeros((0, 3), np.int64))
    if dl.ndim != 2 or dl.shape[1] != 3 or not (np.issubdtype(dl.dtype, np.integer) or dl.size == 0):
        _fail(f"'dead_links_{k}': got {dl.dtype} {list(dl.shape)}, expected int [L, 3]", dpath)
    path = os.path.join(outdir, f"wafer{k}.npz")
    arrs = _load_npz(path)
    w = WaferData(k, meta, alive, dl.astype(np.int64))
    n_t = arrs["tile_op"].shape[0] if "tile_op" in arrs else None
    w.tiles = {n: _ints(arrs, n, path, n_t, keep32=n in KEEP32) for n in TILE_ARRAYS}
    n_r = arrs["route_kind"].shape[0] if "route_kind" in arrs else None
    w.routes = {n: _ints(arrs, n, path, n_r, keep32=n in KEEP32) for n in ROUTE_ARRAYS}
    if "route_offsets" in arrs or "route_links" in arrs:      # CSR link ids (schema 2, or written by hand)
        off = _ints(arrs, "route_offsets", path, None if n_r is None else n_r + 1)
        links = _ints(arrs, "route_links", path, keep32=True)
        if off.size == 0 or off[0] != 0 or off[-1] != links.size or np.any(np.diff(off) < 0):
            _fail("'route_offsets': expected non-decreasing CSR offsets from 0 to len(route_links)", path)
    else:                                                     # hops and directions (schema 3)
        hops = _ints(arrs, "route_hops", path, n_r)
        dirs = _ints(arrs, "route_dirs", path)
        if np.any(hops < 0):
            _fail("'route_hops': expected hop counts >= 0", path)
        off = np.concatenate([[0], np.cumsum(hops)]).astype(np.int64)
        if dirs.size != off[-1] or (dirs.size and (dirs.min() < 0 or dirs.max() > 3)):
            _fail(f"'route_dirs': expected {int(off[-1])} directions 0..3 (the sum of route_hops), "
                  f"got {dirs.size}" + (f" in {int(dirs.min())}..{int(dirs.max())}" if dirs.size else ""), path)
        links = _walk(off, dirs, w.routes["route_src_row"], w.routes["route_src_col"], shape)
    w.routes["offsets"], w.routes["links"] = off, links
    return w


def _walk(off: np.ndarray, dirs: np.ndarray, src_row: np.ndarray, src_col: np.ndarray, shape: tuple) -> np.ndarray:
    """The directed link ids of schema-3 paths, read here on their own (the verifier shares no code
    with the writer): hop j of route i leaves the source core moved by route i's earlier hops.  A
    hop leaving a core outside the rectangle gets id -1, which the route checks report."""
    rows, cols = shape
    rid = np.repeat(np.arange(len(off) - 1), np.diff(off))
    d = dirs.astype(np.int64)

    def position(step: np.ndarray, src: np.ndarray) -> np.ndarray:
        before = np.concatenate([[0], np.cumsum(step)])            # steps before each hop, all routes
        return src[rid] + before[:-1] - before[off[:-1]][rid]

    r = position((d == 1).astype(np.int64) - (d == 3), src_row)    # south +1, north -1
    c = position((d == 0).astype(np.int64) - (d == 2), src_col)    # east +1, west -1
    inside = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
    return np.where(inside, (r * cols + c) * 4 + d, -1)


def _resolve_target(name: str, outdir: str):
    from ..target import load_target

    if not os.path.isabs(name) and (name.endswith(".toml") or os.sep in name) and not os.path.exists(name):
        beside = os.path.join(outdir, name)
        if os.path.exists(beside):
            name = beside
    return load_target(name)


def read_schedule(outdir: str) -> Schedule:
    """Read and structurally validate OUTDIR; raises ScheduleFileError / TargetError (exit 2)."""
    if not os.path.isdir(outdir):
        _fail("no such output directory" if not os.path.exists(outdir) else "not a directory", outdir)
    spath = os.path.join(outdir, "schedule.json")
    if not os.path.isfile(spath):
        _fail("no such file", spath)
    try:
        with open(spath, encoding="utf-8") as f:
            doc = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        _fail(f"not valid JSON: {e}", spath)
    except OSError as e:
        _fail(f"cannot read: {e.strerror}", spath)
    _check_doc(doc, spath)
    target = _resolve_target(doc["target"], outdir)
    defects = _load_npz(os.path.join(outdir, "defects.npz"))
    for k in range(len(doc["wafers"])):
        if not os.path.isfile(os.path.join(outdir, f"wafer{k}.npz")):
            _fail("no such file", os.path.join(outdir, f"wafer{k}.npz"))
    return Schedule(outdir, doc, target, defects)
