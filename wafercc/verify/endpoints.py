"""Route ends against ops (kinds, source/destination regions) and the inter-wafer table.

- kind 0/1 (broadcast, reduction): ``route_op_src == route_op_dst >= 0``; kind 2 (activation): both
  ends are ops; kind 3 (inter-wafer): at least one end is -1 (the edge), on the west or east edge
  column (where the I/O columns are), and the route is listed by an ``inter_wafer`` entry.
- an end that names op ``o`` lies on a core holding a tile of ``o`` or inside one of ``o``'s
  ``region`` rectangles.
"""
from __future__ import annotations

import numpy as np

from .checks import Sink, op_label, sorted_unique


def _in_regions(ops: list, op: np.ndarray, core: np.ndarray, cols: int) -> np.ndarray:
    """bool: core inside one of op's region rectangles (one pass per distinct op, not per route)."""
    out = np.zeros(op.size, dtype=bool)
    r, c = core // cols, core % cols
    for o in np.unique(op).tolist():
        sel = np.flatnonzero(op == o)
        for r0, c0, nr, nc in ops[o].get("region", []):
            out[sel] |= (r[sel] >= r0) & (r[sel] < r0 + nr) & (c[sel] >= c0) & (c[sel] < c0 + nc)
    return out


def check_endpoints(w, ops: list, tiles: dict, rstats: dict, nwafers: int, sink: Sink) -> None:
    ro, k = w.routes, w.index
    cols = w.alive.shape[1]
    nops = len(ops)
    kind, osrc, odst = ro["route_kind"], ro["route_op_src"], ro["route_op_dst"]
    n = kind.size

    bad_op = np.flatnonzero((osrc < -1) | (osrc >= nops) | (odst < -1) | (odst >= nops))
    sink.add("route-op", k, bad_op, lambda i: f"route {i} names op {int(osrc[i])} -> {int(odst[i])}, "
             f"expected ids in -1..{nops - 1}")
    within = (kind == 0) | (kind == 1)
    bad = (kind < 0) | (kind > 3) | (within & ((osrc != odst) | (osrc < 0)))
    bad |= (kind == 2) & ((osrc < 0) | (odst < 0))
    bad |= (kind == 3) & (osrc >= 0) & (odst >= 0)
    sink.add("route-kind", k, np.flatnonzero(bad),
             lambda i: f"route {i} of kind {int(kind[i])} has op ends {int(osrc[i])} -> {int(odst[i])} "
             "(0/1: one op at both ends, 2: two ops, 3: an edge (-1) at one end at least)")

    # ends that name an op: on a core holding one of its tiles, or inside its region
    held = tiles["on"] & tiles["valid_op"]
    pairs = sorted_unique(tiles["core"][held] * max(nops, 1) + tiles["op"][held])
    for end, op, label in ((rstats["src"], osrc, "source"), (rstats["dst"], odst, "destination")):
        sel = np.flatnonzero((op >= 0) & (op < nops) & (end >= 0))
        keys = end[sel] * nops + op[sel]
        pos = np.minimum(np.searchsorted(pairs, keys), max(pairs.size - 1, 0))
        found = (pairs[pos] == keys) if pairs.size else np.zeros(sel.size, bool)
        miss = sel[~found]
        if miss.size:
            miss = miss[~_in_regions(ops, op[miss], end[miss], cols)]
        sink.add("route-endpoint", k, miss,
                 lambda i, end=end, op=op, label=label: f"route {i}: {label} core ({int(end[i]) // cols}, "
                 f"{int(end[i]) % cols}) holds no tile of {op_label(ops, int(op[i]))} and is outside its region")
        edge = np.flatnonzero((kind == 3) & (op == -1) & (end >= 0) & (end % cols != 0) & (end % cols != cols - 1))
        sink.add("route-endpoint", k, edge,
                 lambda i, end=end, label=label: f"route {i} (inter-wafer): {label} core ({int(end[i]) // cols}, "
                 f"{int(end[i]) % cols}) is not on the west or east edge column")

    listed = np.zeros(n, dtype=bool)
    for j, e in enumerate(w.meta.get("inter_wafer", [])):
        ids = e.get("route") if isinstance(e, dict) else None
        ids = [ids] if isinstance(ids, int) and not isinstance(ids, bool) else ids
        sw, dw = (e.get("src_wafer"), e.get("dst_wafer")) if isinstance(e, dict) else (None, None)
        ok_ids = isinstance(ids, list) and all(isinstance(i, int) and 0 <= i < n and kind[i] == 3 for i in ids)
        ok_w = all(isinstance(x, int) and 0 <= x < nwafers for x in (sw, dw)) and sw != dw and k in (sw, dw)
        if not (ok_ids and ok_w):
            sink.one("inter-wafer", k, f"inter_wafer[{j}] {e!r}: expected src_wafer != dst_wafer (one of them "
                     f"{k}), and 'route' the index (or list) of kind-3 routes of wafer {k}")
        if isinstance(ids, list):
            listed[[i for i in ids if isinstance(i, int) and 0 <= i < n]] = True
    sink.add("inter-wafer", k, np.flatnonzero((kind == 3) & ~listed),
             lambda i: f"route {i} is inter-wafer (kind 3) but no inter_wafer entry lists it")
