"""Tile, SRAM, partition and configuration checks (docs/schedule-format.md), vectorised.

Every check reports through a :class:`Sink`: the total count of each violation code is exact,
the messages are formatted for the first ``limit`` occurrences of each code only (so a schedule
with a million bad tiles still verifies in seconds).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Violation:
    code: str            # e.g. "tile-dead-core", "route-broken", "color-reuse"
    wafer: int | None
    message: str

    def __str__(self) -> str:
        where = f"wafer {self.wafer}: " if self.wafer is not None else ""
        return f"[{self.code}] {where}{self.message}"


class Sink:
    def __init__(self, limit: int = 50):
        self.limit = limit
        self.violations: list[Violation] = []
        self.counts: dict[str, int] = {}
        self.by_wafer: dict[int | None, int] = {}

    def add(self, code: str, wafer: int | None, idx, fmt) -> None:
        """Record len(idx) violations of ``code``; format ``fmt(i)`` for the first few."""
        idx = np.asarray(idx).ravel()
        if idx.size == 0:
            return
        shown = sum(1 for v in self.violations if v.code == code)
        self.counts[code] = self.counts.get(code, 0) + int(idx.size)
        self.by_wafer[wafer] = self.by_wafer.get(wafer, 0) + int(idx.size)
        for i in idx[:max(0, self.limit - shown)].tolist():
            self.violations.append(Violation(code, wafer, fmt(i)))

    def one(self, code: str, wafer: int | None, message: str) -> None:
        self.add(code, wafer, [0], lambda _i: message)


def sorted_unique(a: np.ndarray) -> np.ndarray:
    """np.unique by sorting (numpy 2's hash-based unique is ~10x slower on 1M int64)."""
    s = np.sort(a, kind="stable")
    return s[np.concatenate([[True], s[1:] != s[:-1]])] if s.size else s


def op_label(ops: list, o: int) -> str:
    return f"op {o} '{ops[o]['name']}'" if 0 <= o < len(ops) else f"op {o} (no such op)"


class GridIndex:
    """Flat ids of the tiles every op's grids expect: grid gi of op o covers
    [base[gi], base[gi] + experts * rows * cols); ``kv[gi]``: a KV grid (reduces along its rows)."""

    def __init__(self, ops: list):
        self.op = np.array([o for o, op in enumerate(ops) for _ in op["grids"]], dtype=np.int64)
        self.num = np.array([j for op in ops for j in range(len(op["grids"]))], dtype=np.int64)
        dims = [(g["experts"], g["rows"], g["cols"]) for op in ops for g in op["grids"]]
        self.dims = np.array(dims, dtype=np.int64).reshape(-1, 3)
        sizes = self.dims.prod(axis=1) if len(dims) else np.zeros(0, np.int64)
        self.base = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.total = int(self.base[-1])
        ngrids = np.array([len(op["grids"]) for op in ops], dtype=np.int64)
        self.first = np.concatenate([[0], np.cumsum(ngrids)[:-1]]).astype(np.int64)
        self.ngrids = ngrids
        self.kv = np.array([g.get("operand") == "kv" for op in ops for g in op["grids"]], dtype=bool)

    def decode(self, flat: int) -> tuple[int, int, int, int, int]:
        gi = int(np.searchsorted(self.base, flat, side="right") - 1)
        _e, r_, c_ = (int(x) for x in self.dims[gi])
        rem = flat - int(self.base[gi])
        return int(self.op[gi]), int(self.num[gi]), rem // (r_ * c_), (rem // c_) % r_, rem % c_


def check_tiles(w, ops: list, sink: Sink) -> dict:
    """Check 1 (each expected tile exactly once), 2 (no tile on a dead core or off the mesh) and 3
    (per-core bytes).  Returns per-core bytes and counts for the QoR table."""
    t, k = w.tiles, w.index
    rows, cols = w.alive.shape
    top, tg, te, tr, tc = t["tile_op"], t["tile_grid"], t["tile_expert"], t["tile_row"], t["tile_col"]
    gx = GridIndex(ops)
    nops = len(ops)
    valid = (top >= 0) & (top < nops)
    opc = np.where(valid, top, 0)
    valid &= (tg >= 0) & (tg < (gx.ngrids[opc] if nops else 0))
    gi = np.where(valid, (gx.first[opc] if nops else 0) + tg, 0)
    dims = gx.dims[gi] if gx.dims.shape[0] else np.ones((top.size, 3), np.int64)
    valid &= (te >= 0) & (te < dims[:, 0]) & (tr >= 0) & (tr < dims[:, 1]) & (tc >= 0) & (tc < dims[:, 2])

    def tdesc(i: int) -> str:
        return (f"tile {i} ({op_label(ops, int(top[i]))} grid {int(tg[i])} "
                f"[expert {int(te[i])}, row {int(tr[i])}, col {int(tc[i])}])")

    sink.add("tile-out-of-grid", k, np.flatnonzero(~valid), lambda i: f"{tdesc(i)} is not a tile of any op grid")
    flat = np.where(valid, gx.base[gi] + (te * dims[:, 1] + tr) * dims[:, 2] + tc, -1)
    counts = np.bincount(flat[valid], minlength=gx.total)

    def missing(f: int) -> str:
        o, g, e, r, c = gx.decode(f)
        return f"{op_label(ops, o)} grid {g} tile [expert {e}, row {r}, col {c}] is not placed"

    def dup(f: int) -> str:
        o, g, e, r, c = gx.decode(f)
        where = np.flatnonzero(flat == f)[:8].tolist()
        return (f"{op_label(ops, o)} grid {g} tile [expert {e}, row {r}, col {c}] placed {int(counts[f])} times "
                f"(tiles {', '.join(map(str, where))})")

    sink.add("tile-missing", k, np.flatnonzero(counts == 0), missing)
    sink.add("tile-duplicate", k, np.flatnonzero(counts > 1), dup)

    cr, cc, nbytes = t["tile_core_row"], t["tile_core_col"], t["tile_bytes"]
    on = (cr >= 0) & (cr < rows) & (cc >= 0) & (cc < cols)
    sink.add("tile-off-mesh", k, np.flatnonzero(~on),
             lambda i: f"{tdesc(i)} on core ({int(cr[i])}, {int(cc[i])}) outside the {rows} x {cols} rectangle")
    core = np.where(on, cr * cols + cc, 0)
    alive = w.alive.ravel()
    sink.add("tile-dead-core", k, np.flatnonzero(on & ~alive[core]),
             lambda i: f"{tdesc(i)} on dead core ({int(cr[i])}, {int(cc[i])})")
    sink.add("tile-bytes", k, np.flatnonzero(nbytes < 0), lambda i: f"{tdesc(i)} has negative bytes {int(nbytes[i])}")
    per_core = np.bincount(core[on], weights=nbytes[on].astype(np.float64), minlength=rows * cols)
    per_core = np.rint(per_core).astype(np.int64)
    # the tree groups (docs: "Trees"): a broadcast spans one grid row (expert, row), a reduction one
    # grid column (expert, col), or one row for a KV grid; a group's id is the flat id of its first tile
    row_group = np.where(valid, flat - tc, -1)
    col_group = np.where(valid, flat - tr * dims[:, 2], -1)
    kv = gx.kv[gi] if gx.kv.size else np.zeros(top.size, bool)
    return {"per_core": per_core, "core": core, "on": on, "op": top, "valid_op": (top >= 0) & (top < nops),
            "desc": tdesc, "grid_index": gx, "bcast_group": row_group, "flat": flat, "counts": counts,
            "reduce_group": np.where(kv, row_group, col_group), "kv": kv,
            "max_group": int(dims[:, 1:].max()) if dims.size else 1}


def check_sram(w, tiles: dict, budget: int, sink: Sink) -> None:
    per_core, core, on = tiles["per_core"], tiles["core"], tiles["on"]
    cols = w.alive.shape[1]
    over = np.flatnonzero(per_core > budget)

    def msg(c: int) -> str:
        held = np.flatnonzero(on & (core == c))
        return (f"core ({c // cols}, {c % cols}) holds {int(per_core[c])} B > budget {budget} B "
                f"({held.size} tiles: {', '.join(map(str, held[:6].tolist()))}{', ...' if held.size > 6 else ''})")

    sink.add("sram-over-budget", w.index, over, msg)


# a whole layer, or ops a..b of one (a wafer boundary inside the layer: docs/planning.md)
_LAYER_UNIT = re.compile(r"^layer (\d+)(?: ops (\d+)-(\d+))?$")


def check_partition(w, sink: Sink) -> None:
    """Check 6: each op's layer inside the wafer's [first, last] range and among its units."""
    meta, k = w.meta, w.index
    if meta.get("index", k) != k:
        sink.one("wafer-index", k, f"wafers[{k}] has index {meta.get('index')!r}, expected {k}")
    ops, layers, units = meta["ops"], meta.get("layers"), [str(u) for u in meta.get("units", [])]
    unit_layers = {int(m.group(1)) for u in units if (m := _LAYER_UNIT.match(u))}
    other_units = [u for u in units if not _LAYER_UNIT.match(u)]
    rng = f"layers {layers[0]}-{layers[1]}" if layers else "no layers"
    if layers is not None and layers[0] > layers[1]:
        sink.one("partition-units", k, f"layers {layers} is not a [first, last] range")
    expected = set(range(layers[0], layers[1] + 1)) if layers else set()
    if units and unit_layers != expected:
        sink.one("partition-units", k, f"units {sorted(unit_layers)} disagree with {rng}")
    pieces: dict[int, int] = {}             # layer -> ops its parts on this wafer hold
    for u in units:
        m = _LAYER_UNIT.match(u)
        if m and m.group(2) is not None:
            pieces[int(m.group(1))] = pieces.get(int(m.group(1)), 0) + int(m.group(3)) - int(m.group(2)) + 1
    count: dict[int, int] = {}
    for op in ops:
        if isinstance(op.get("layer"), int):
            count[op["layer"]] = count.get(op["layer"], 0) + 1
    for lay, n in sorted(pieces.items()) if meta.get("role", "pipeline") == "pipeline" else ():
        if count.get(lay, 0) != n:
            sink.one("layer-wrong-wafer", k, f"wafer {k} holds {count.get(lay, 0)} op(s) of layer {lay}, its units "
                     f"name {n} of them (the part of the layer the partition gave it)")
    for i, op in enumerate(ops):
        if op.get("id", i) != i:
            sink.one("op-id", k, f"ops[{i}] '{op['name']}' has id {op.get('id')!r}, expected {i}")
        lay = op.get("layer")
        if lay is None:
            if units and not other_units:
                sink.one("layer-wrong-wafer", k, f"{op_label(ops, i)} (no layer: embed/head) on wafer {k}, "
                         f"which holds only {rng}")
        elif layers is None or not (layers[0] <= lay <= layers[1]) or (units and lay not in unit_layers):
            sink.one("layer-wrong-wafer", k, f"{op_label(ops, i)} of layer {lay} on wafer {k}, which holds {rng}")


def target_fabric(doc: dict, target) -> tuple[list[int], int]:
    """(colors routes may use, routes per directed link and color): the schedule's colors that the
    target frees, and the target's capacity (the schedule's own figures are claims, not facts)."""
    from ..target.device import LINK_CAPACITY

    free = set(target.free_colors)
    return sorted({c for c in doc["colors"] if c in free}), LINK_CAPACITY


def check_config(doc: dict, target, sink: Sink) -> None:
    """The schedule's budget, colors and link capacity against the target (the hardware truth)."""
    _colors, cap = target_fabric(doc, target)
    if doc["link_capacity"] > cap:
        sink.one("link-capacity", None, f"link_capacity {doc['link_capacity']} exceeds the target's {cap} "
                 "route(s) per directed link and color")
    usable = target.usable_bytes_per_core
    if doc["budget_bytes_per_core"] > usable:
        sink.one("budget", None, f"budget_bytes_per_core {doc['budget_bytes_per_core']} exceeds the target's "
                 f"sram - sram_reserved = {usable} B")
    free = set(target.free_colors)
    bad = [c for c in doc["colors"] if c not in free]
    if bad or len(set(doc["colors"])) != len(doc["colors"]):
        sink.one("color-config", None, f"colors {doc['colors']} must be distinct colors of the target's free "
                 f"colors {sorted(free)} (not allowed: {bad})")
