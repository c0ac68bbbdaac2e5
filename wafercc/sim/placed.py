"""The placed program of a ``wafercc compile`` output directory as per-op views, validated.

``Placement.load(outdir)`` reads ``schedule.json``, ``wafer{k}.npz``, ``defects.npz`` and
``model.ir`` and gives, per op name, its role and grids; each grid knows the npz index and the core
of every tile and the two forests its routes form over the tiles:

* reduction (route kind 1): a tile's parent is the tile it sends its partial to.  The tiled
  kernels combine partials along these routed trees (leaves to roots), never along assumed ones;
* broadcast (route kind 0): a tile's parent is the tile it receives its input from;
* all-reduce (route kind 4, on the last grid of a norm's host whose record claims it): a tile of
  the output row sends its partial statistic to its parent; one tree per output row (the last row
  per expert, every row of a KV grid), rooted at the row's broadcast root.  The tiled norm sums
  the statistic along it (wafercc/sim/tiled.py).

Everything the kernels rely on is checked here, failing with a one-line :class:`SimulationError`
that names the op and the tile: every tile of a gemv/lookup/kv grid placed exactly once, on a live
core, one tile per core; every tile sends its partial at most once and the reduction routes of a
gemv/lookup grid form exactly one tree per output column (per expert), those of a KV grid one tree
per grid row; the broadcast routes reach every tile of a grid row from one entry tile.

Layer groups (docs/mapping.md): an op naming ``routes_of`` (a template op) has its tiles on the
template's tiles' cores (checked: same grids, tile for tile the same core; those are the only cores
holding two tiles) and its kernels combine partials along the template's routed trees.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from ..ir import Graph, from_json, parse_graph
from .errors import SimulationError

KIND_BROADCAST, KIND_REDUCTION, KIND_ALLREDUCE = 0, 1, 4
SCHEMAS = ("wafercc.schedule/1", "wafercc.schedule/2", "wafercc.schedule/3")
TILE_ARRAYS = ("tile_op", "tile_grid", "tile_expert", "tile_row", "tile_col", "tile_core_row", "tile_core_col")
ROUTE_ARRAYS = ("route_kind", "route_src_tile", "route_dst_tile", "route_op_src", "route_op_dst")
CHECKED_ROLES = ("gemv", "lookup", "kv")


@dataclasses.dataclass(frozen=True, eq=False)
class Forest:
    """Trees over a grid's tiles (local index (e * rows + r) * cols + c)."""
    parent: np.ndarray          # int64 [N]: next tile towards the root, -1 at a root
    root: np.ndarray            # int64 [N]: the root of each tile's tree
    batches: tuple              # ((src, dst), ...) leaves first; each dst at most once per batch

    def restrict(self, lo: int, hi: int) -> Forest:
        """The trees of tiles lo..hi-1 (they must not leave the range: one expert's tiles)."""
        keep = []
        for s, d in self.batches:
            m = (s >= lo) & (s < hi)
            if m.any():
                keep.append((s[m] - lo, d[m] - lo))
        p = self.parent[lo:hi]
        return Forest(np.where(p >= 0, p - lo, -1), self.root[lo:hi] - lo, tuple(keep))


@dataclasses.dataclass(frozen=True, eq=False)
class GridView:
    op: str
    index: int
    operand: str
    experts: int
    rows: int
    cols: int
    k: int
    n: int
    tile_k: int
    tile_n: int
    unit_bits: int
    wafer: int
    tiles: np.ndarray            # int64 [E, R, C]: tile index in wafer{k}.npz
    cores: np.ndarray            # int64 [E, R, C, 2]: (row, col) of the core holding the tile
    reduction: Forest | None     # None for grids whose routes are not checked (flat ops)
    broadcast: Forest | None
    roots: np.ndarray | None     # int64: local root of each output column [E, C] (gemv, lookup) or row [E, R] (kv)
    allreduce: Forest | None = None   # a norm host's all-reduce trees over its output rows (kind 4)

    def tile_name(self, local: int) -> str:
        e, r, c = np.unravel_index(int(local), (self.experts, self.rows, self.cols))
        cr, cc = self.cores[e, r, c]
        return f"tile (e={e}, r={r}, c={c}) on core ({cr}, {cc})"

    def expert_reduction(self, e: int) -> Forest:
        n = self.rows * self.cols
        return self.reduction.restrict(e * n, (e + 1) * n)


@dataclasses.dataclass(frozen=True, eq=False)
class OpView:
    name: str
    op: str
    role: str
    wafer: int
    op_id: int
    host: int | None
    grids: tuple

    def grid(self, operand: str) -> GridView | None:
        return next((g for g in self.grids if g.operand == operand), None)


class Placement:
    """The validated placed program of one output directory."""

    def __init__(self, outdir: str, schedule: dict, graph: Graph, ops: dict, alive: list):
        self.outdir, self.schedule, self.graph, self.ops, self.alive = outdir, schedule, graph, ops, alive
        tl = schedule.get("timeline") or {}
        kv = [g.n for v in ops.values() for g in v.grids if g.operand == "kv"]
        self.context = int(tl.get("context") or max(kv, default=0)) or None
        self.batch = int(tl.get("batch") or 1)

    def op(self, name: str) -> OpView | None:
        return self.ops.get(name)

    @classmethod
    def load(cls, outdir: str, draft: bool = False) -> Placement:
        """The target's placed program, or (``draft``) its speculative draft's: the ``role: "draft"``
        wafers, with the draft's IR (schedule.json ``draft.ir``) and timeline."""
        outdir = os.fspath(outdir)
        sched = _read_schedule(outdir)
        if draft:
            d = sched.get("draft")
            if not isinstance(d, dict) or not isinstance(d.get("ir"), str):
                raise SimulationError("the schedule holds no speculative draft (compile with --speculative)",
                                      where=outdir)
            graph = _read_ir(os.path.join(outdir, d["ir"]))
            sched = dict(sched, timeline=d.get("timeline"), source=d.get("source"))
        else:
            graph = _read_graph(outdir)
        defects = _npz(outdir, "defects.npz")
        nodes = {n.name: n for n in graph.nodes}
        ops: dict[str, OpView] = {}
        alive = []
        for k, w in ((w.get("index", i), w) for i, w in enumerate(sched["wafers"])
                     if (w.get("role") == "draft") == draft):
            key = f"alive_{k}"
            if key not in defects or defects[key].dtype != np.bool_ or defects[key].ndim != 2:
                raise SimulationError(f"defects.npz: '{key}' missing or not a bool [rows, cols] array", where=outdir)
            alive.append(defects[key])
            for view in _wafer_views(outdir, k, w, _npz(outdir, f"wafer{k}.npz"), defects[key]):
                node = nodes.get(view.name)
                if node is None:
                    raise SimulationError(f"op '{view.name}' of wafer {k} is not a node of model.ir", where=outdir)
                if node.op != view.op:
                    raise SimulationError(f"op '{view.name}' is a {view.op} in the schedule, a {node.op} in "
                                          "model.ir", where=outdir)
                old = ops.get(view.name)
                if old is not None and old.grids and view.grids:
                    raise SimulationError(f"op '{view.name}' has tiles on wafers {old.wafer} and {k}", where=outdir)
                if old is None or view.grids:  # a dedicated KV wafer's grid beats the pipeline rider
                    ops[view.name] = view
        missing = [n for n in nodes if n not in ops]
        if missing:
            raise SimulationError(f"node '{missing[0]}' of model.ir is on no wafer of the schedule "
                                  f"({len(missing)} nodes missing)", where=outdir)
        return cls(outdir, sched, graph, ops, alive)


# --- reading ---------------------------------------------------------------------------------

def _read_schedule(outdir: str) -> dict:
    path = os.path.join(outdir, "schedule.json")
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise SimulationError("no schedule.json (not a placed output directory: compile with a target)",
                              where=outdir) from None
    except (OSError, ValueError) as e:
        raise SimulationError(f"cannot read: {e}", where=path) from None
    if not isinstance(doc, dict) or doc.get("schema") not in SCHEMAS or not isinstance(doc.get("wafers"), list):
        raise SimulationError(f"schema {doc.get('schema') if isinstance(doc, dict) else None!r} is not one of "
                              f"{', '.join(SCHEMAS)} with a 'wafers' list", where=path)
    return doc


def _read_ir(path: str) -> Graph:
    try:
        with open(path, encoding="utf-8") as f:
            return parse_graph(f.read())
    except OSError as e:
        raise SimulationError(f"cannot read the draft's IR: {e.strerror}", where=path) from None


def _read_graph(outdir: str) -> Graph:
    for name, parse in (("model.ir", parse_graph), ("model.ir.json", from_json)):
        path = os.path.join(outdir, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                return parse(f.read())
    raise SimulationError("no model.ir or model.ir.json", where=outdir)


def _npz(outdir: str, name: str) -> dict:
    path = os.path.join(outdir, name)
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise SimulationError(f"no {name}", where=outdir) from None
    except (OSError, ValueError) as e:
        raise SimulationError(f"cannot read: {e}", where=path) from None


# --- one wafer -------------------------------------------------------------------------------

def _wafer_views(outdir: str, k: int, w: dict, arr: dict, alive: np.ndarray) -> list[OpView]:
    where = f"{outdir}/wafer{k}.npz"
    for a in (*TILE_ARRAYS, *ROUTE_ARRAYS):
        if a not in arr:
            raise SimulationError(f"array '{a}' missing", where=where)
    t = {a: np.asarray(arr[a], np.int64) for a in TILE_ARRAYS}
    ops = w.get("ops") or []
    n_t = len(t["tile_op"])
    if any(len(v) != n_t for v in t.values()):
        raise SimulationError("tile arrays of different lengths", where=where)
    # per (op, grid): the expected tile count, then each tile's local index
    grid_of, base, total = {}, {}, 0
    for i, o in enumerate(ops):
        for gi, g in enumerate(o.get("grids") or []):
            grid_of[(i, gi)] = g
            base[(i, gi)] = total
            total += g["experts"] * g["rows"] * g["cols"]
    bad = np.flatnonzero((t["tile_op"] < 0) | (t["tile_op"] >= len(ops)))
    if bad.size:
        raise SimulationError(f"tile {bad[0]} names op {t['tile_op'][bad[0]]}, the wafer has {len(ops)} ops",
                              where=where)
    # ids of (op, grid, e, r, c) in one flat numbering
    keys = np.array(sorted(grid_of), np.int64).reshape(-1, 2)
    kcode = keys[:, 0] * 65536 + keys[:, 1]
    dims = np.array([[grid_of[tuple(kk)][f] for f in ("experts", "rows", "cols")] for kk in keys.tolist()],
                    np.int64).reshape(-1, 3)
    first_id = np.array([base[tuple(kk)] for kk in keys.tolist()], np.int64)
    code = t["tile_op"] * 65536 + t["tile_grid"]
    at = np.minimum(np.searchsorted(kcode, code), max(len(kcode) - 1, 0))
    e, r, c = t["tile_expert"], t["tile_row"], t["tile_col"]
    known = (kcode[at] == code) if len(kcode) else np.zeros(n_t, bool)
    d = dims[at] if len(kcode) else np.zeros((n_t, 3), np.int64)
    ok = known & (e >= 0) & (e < d[:, 0]) & (r >= 0) & (r < d[:, 1]) & (c >= 0) & (c < d[:, 2])
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise SimulationError(f"op '{ops[t['tile_op'][i]]['name']}': tile {i} (grid {t['tile_grid'][i]}, e={e[i]}, "
                              f"r={r[i]}, c={c[i]}) is outside the op's grids", where=where)
    gid = first_id[at] + (e * d[:, 1] + r) * d[:, 2] + c if n_t else np.zeros(0, np.int64)
    slot = np.full(total, -1, np.int64)
    uniq, first, counts = np.unique(gid, return_index=True, return_counts=True)
    slot[uniq] = first
    shared = np.array([o.get("routes_of") is not None for o in ops], bool)
    _check_cores(where, ops, t, alive, gid, counts, uniq, shared[t["tile_op"]] if n_t else np.zeros(0, bool))

    rk = np.asarray(arr["route_kind"], np.int64)
    rs, rd = np.asarray(arr["route_src_tile"], np.int64), np.asarray(arr["route_dst_tile"], np.int64)
    ros, rod = np.asarray(arr["route_op_src"], np.int64), np.asarray(arr["route_op_dst"], np.int64)
    inner = np.flatnonzero(rk <= KIND_REDUCTION)
    if inner.size and ((rs[inner] < 0) | (rd[inner] < 0) | (rs[inner] >= n_t) | (rd[inner] >= n_t)).any():
        j = inner[((rs[inner] < 0) | (rd[inner] < 0) | (rs[inner] >= n_t) | (rd[inner] >= n_t))][0]
        raise SimulationError(f"route {j} (kind {rk[j]}) has end tiles {rs[j]} -> {rd[j]} outside the "
                              f"{n_t} tiles", where=where)
    views = []
    for i, o in enumerate(ops):
        grids = []
        for gi, g in enumerate(o.get("grids") or []):
            lo = base[(i, gi)]
            n = g["experts"] * g["rows"] * g["cols"]
            idx = slot[lo:lo + n]
            if (idx < 0).any():
                miss = int(np.flatnonzero(idx < 0)[0])
                e, r, c = np.unravel_index(miss, (g["experts"], g["rows"], g["cols"]))
                raise SimulationError(f"op '{o['name']}' grid {gi} ({g['operand']}): tile (e={e}, r={r}, c={c}) "
                                      "is not placed", where=where)
            shape = (g["experts"], g["rows"], g["cols"])
            cores = np.stack([t["tile_core_row"][idx], t["tile_core_col"][idx]], axis=1).reshape(*shape, 2)
            view = GridView(o["name"], gi, g["operand"], *(int(g[f]) for f in (
                "experts", "rows", "cols", "k", "n", "tile_k", "tile_n", "unit_bits")), k,
                idx.reshape(shape), cores, None, None, None)
            tm = o.get("routes_of")
            if tm is not None:
                view = _shared_view(where, view, o, ops, views, tm, gi)
            elif o.get("role") in CHECKED_ROLES:
                view = _with_forests(where, view, lo, gid, rk, rs, rd, ros, rod, i)
            if "allreduce_links" in g and tm is None:
                view = _with_allreduce(where, view, lo, gid, rk, rs, rd, ros, rod, i)
            grids.append(view)
        views.append(OpView(o["name"], o.get("op"), o.get("role"), k, i, o.get("host"), tuple(grids)))
    return views


def _shared_view(where, view: GridView, o: dict, ops: list, views: list, tm, gi: int) -> GridView:
    """A shared op's grid: the template's grid of the same index, on the same cores, its forests."""
    if not (isinstance(tm, int) and 0 <= tm < len(views)) or ops[tm].get("routes_of") is not None:
        raise SimulationError(f"op '{o['name']}': routes_of {tm!r} is not an earlier op with routes of its own",
                              where=where)
    tg = views[tm].grids[gi] if gi < len(views[tm].grids) else None
    if tg is None or (tg.operand, tg.experts, tg.rows, tg.cols) != (view.operand, view.experts, view.rows, view.cols):
        raise SimulationError(f"op '{o['name']}' grid {gi}: not shaped like grid {gi} of '{ops[tm]['name']}', "
                              "whose routes it uses", where=where)
    if not np.array_equal(tg.cores, view.cores):
        bad = np.argwhere((tg.cores != view.cores).any(axis=-1))[0]
        raise SimulationError(f"op '{o['name']}' grid {gi}: {view.tile_name(np.ravel_multi_index(bad, tg.tiles.shape))} "
                              f"is not on the core of its template's tile (op '{ops[tm]['name']}')", where=where)
    if "allreduce_links" in o["grids"][gi] and tg.allreduce is None:
        raise SimulationError(f"op '{o['name']}' grid {gi}: claims an all-reduce tree, but its template "
                              f"'{ops[tm]['name']}' has none", where=where)
    return dataclasses.replace(view, reduction=tg.reduction, broadcast=tg.broadcast, roots=tg.roots,
                               allreduce=tg.allreduce if "allreduce_links" in o["grids"][gi] else None)


def _tile(ops, t, i) -> str:
    return (f"op '{ops[t['tile_op'][i]]['name']}': tile (grid {t['tile_grid'][i]}, e={t['tile_expert'][i]}, "
            f"r={t['tile_row'][i]}, c={t['tile_col'][i]})")


def _check_cores(where, ops, t, alive, gid, counts, uniq, shared_tile):
    dup = uniq[counts > 1]
    if dup.size:
        i = int(np.flatnonzero(gid == dup[0])[1])
        raise SimulationError(f"{_tile(ops, t, i)} is placed {int(counts[counts > 1][0])} times", where=where)
    cr, cc = t["tile_core_row"], t["tile_core_col"]
    rows, cols = alive.shape
    off = (cr < 0) | (cr >= rows) | (cc < 0) | (cc >= cols)
    dead = np.zeros_like(off)
    dead[~off] = ~alive[cr[~off], cc[~off]]
    for bad, what in ((off, "outside the program rectangle"), (dead, "dead")):
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise SimulationError(f"{_tile(ops, t, i)} is on core ({cr[i]}, {cc[i]}), which is {what}", where=where)
    core = np.where(shared_tile, -1 - np.arange(len(cr)), cr * cols + cc)   # shared tiles: checked by their template
    u, n = np.unique(core, return_counts=True)
    if (n > 1).any():
        a, b = np.flatnonzero(core == u[n > 1][0])[:2]
        raise SimulationError(f"{_tile(ops, t, b)} is on core ({cr[b]}, {cc[b]}), which already holds "
                              f"{_tile(ops, t, a)[:-1]}): two tiles on one core", where=where)


def _with_forests(where, view: GridView, lo, gid, rk, rs, rd, ros, rod, op_id) -> GridView:
    n = view.experts * view.rows * view.cols
    what = f"op '{view.op}' grid {view.index} ({view.operand})"
    edges = {}
    for kind in (KIND_BROADCAST, KIND_REDUCTION):
        sel = np.flatnonzero(rk == kind)
        ls, ld = gid[rs[sel]] - lo, gid[rd[sel]] - lo
        mine = ((ls >= 0) & (ls < n)) | ((ld >= 0) & (ld < n))
        sel, ls, ld = sel[mine], ls[mine], ld[mine]
        stray = (ls < 0) | (ls >= n) | (ld < 0) | (ld >= n) | (ros[sel] != op_id) | (rod[sel] != op_id)
        if stray.any():
            j = int(np.flatnonzero(stray)[0])
            name = "reduction" if kind == KIND_REDUCTION else "broadcast"
            raise SimulationError(f"{what}: {name} route {sel[j]} joins a tile of the grid with another grid or op",
                                  where=where)
        edges[kind] = (ls, ld)
    return with_forests(view, edges[KIND_REDUCTION], edges[KIND_BROADCAST], where)


def _with_allreduce(where, view: GridView, lo, gid, rk, rs, rd, ros, rod, op_id) -> GridView:
    """``view`` with its all-reduce forest: every tile of an output row in one tree rooted at the
    row's broadcast root; the other tiles take no part (each its own root, keyed apart)."""
    n = view.experts * view.rows * view.cols
    what = f"op '{view.op}' grid {view.index} ({view.operand})"
    sel = np.flatnonzero((rk == KIND_ALLREDUCE) & (ros == op_id))
    ok = (rs[sel] >= 0) & (rd[sel] >= 0)
    sel = sel[ok]
    ls, ld = gid[rs[sel]] - lo, gid[rd[sel]] - lo
    mine = (ls >= 0) & (ls < n) & (ld >= 0) & (ld < n)
    ls, ld = ls[mine], ld[mine]
    e, r, _c = np.unravel_index(np.arange(n), (view.experts, view.rows, view.cols))
    member = np.ones(n, bool) if view.operand == "kv" else r == view.rows - 1
    if (~member[ls] | ~member[ld]).any():
        j = int(np.flatnonzero(~member[ls] | ~member[ld])[0])
        raise SimulationError(f"{what}: all-reduce route from {view.tile_name(ls[j])} to {view.tile_name(ld[j])} "
                              "leaves the grid's output rows", where=where)
    key = np.where(member, e * view.rows + r, n + np.arange(n))
    f = _forest(view, what, "all-reduce", "row", n, ls, ld, key, where)
    if view.broadcast is not None:
        roots = np.flatnonzero(member & (f.parent < 0))
        off = roots[view.broadcast.parent[roots] >= 0]
        if off.size:
            raise SimulationError(f"{what}: the all-reduce tree's root {view.tile_name(off[0])} is not its row's "
                                  "broadcast root", where=where)
    return dataclasses.replace(view, allreduce=f)


def with_forests(view: GridView, reduction, broadcast, where: str | None = None) -> GridView:
    """``view`` with its validated forests, from its routes as (src, dst) arrays of local tile
    indices (e * rows + r) * cols + c, for the reduction and the broadcast routes."""
    n = view.experts * view.rows * view.cols
    e, r, c = (a.ravel() for a in np.meshgrid(np.arange(view.experts), np.arange(view.rows),
                                              np.arange(view.cols), indexing="ij"))
    kv = view.operand == "kv"
    what = f"op '{view.op}' grid {view.index} ({view.operand})"
    row, col = e * view.rows + r, e * view.cols + c
    # reduction: a tile's parent is where its partial goes (a KV row's partials stay in the row,
    # gemv partials in their output column); broadcast: where its input comes from (along a row)
    red = _forest(view, what, "reduction", "row" if kv else "column", n, *(np.asarray(a, np.int64) for a in reduction),
                  row if kv else col, where)
    bsrc, bdst = (np.asarray(a, np.int64) for a in broadcast)
    bc = _forest(view, what, "broadcast", "row", n, bdst, bsrc, row, where)
    shape = (view.experts, view.rows) if kv else (view.experts, view.cols)
    roots = np.full(int(np.prod(shape)), -1, np.int64)
    isroot = red.parent < 0
    roots[(row if kv else col)[isroot]] = np.flatnonzero(isroot)
    return dataclasses.replace(view, reduction=red, broadcast=bc, roots=roots.reshape(shape))


def _forest(view, what, name, unit, n, child, parent_of, key, where) -> Forest:
    verb = "receives its input" if name == "broadcast" else "sends its partial"
    if (child == parent_of).any():
        j = int(np.flatnonzero(child == parent_of)[0])
        raise SimulationError(f"{what}: {view.tile_name(child[j])} has a {name} route to itself", where=where)
    cnt = np.bincount(child, minlength=n)
    if (cnt > 1).any():
        j = int(np.flatnonzero(cnt > 1)[0])
        raise SimulationError(f"{what}: {view.tile_name(j)} {verb} {cnt[j]} times ({name} routes)", where=where)
    parent = np.full(n, -1, np.int64)
    parent[child] = parent_of
    # roots by pointer jumping; a pointer that never settles is a cycle
    root = np.where(parent < 0, np.arange(n), parent)
    for _ in range(max(1, int(n).bit_length()) + 1):
        root = root[root]
    if (parent[root] >= 0).any():
        j = int(np.flatnonzero(parent[root] >= 0)[0])
        raise SimulationError(f"{what}: the {name} routes through {view.tile_name(j)} form a cycle", where=where)
    cross = key[root] != key
    if cross.any():
        j = int(np.flatnonzero(cross)[0])
        raise SimulationError(f"{what}: the {name} tree of {view.tile_name(j)} ends at {view.tile_name(root[j])}, "
                              f"in another grid {unit}", where=where)
    roots = np.flatnonzero(parent < 0)
    per = np.bincount(key[roots], minlength=int(key.max()) + 1 if n else 0)
    if (per > 1).any():
        kk = int(np.flatnonzero(per > 1)[0])
        rr = roots[key[roots] == kk]
        detail = (f"the partial sums of one tree never reach the other's root (a {name} route is missing)"
                  if name != "broadcast" else "the input never reaches one of them (a broadcast route is missing)")
        raise SimulationError(f"{what}: grid {unit} has {len(rr)} {name} roots, {view.tile_name(rr[0])} and "
                              f"{view.tile_name(rr[1])}: {detail}", where=where)
    return Forest(parent, root, _batches(parent, n))


def _batches(parent: np.ndarray, n: int) -> tuple:
    """Edges (child -> parent) in rounds: a child is sent once all of its own children arrived;
    inside a round, children of one parent in increasing tile order, one per batch."""
    pending = np.bincount(parent[parent >= 0], minlength=n)
    ready = np.flatnonzero((pending == 0) & (parent >= 0))
    out = []
    while ready.size:
        dst = parent[ready]
        order = np.lexsort((ready, dst))
        s, d = ready[order], dst[order]
        rank = np.arange(len(d)) - np.searchsorted(d, d)       # position among the siblings of this round
        for k in range(int(rank.max()) + 1):
            out.append((s[rank == k], d[rank == k]))
        np.subtract.at(pending, d, 1)
        done = np.unique(d)
        ready = done[(pending[done] == 0) & (parent[done] >= 0)]
    return tuple(out)
