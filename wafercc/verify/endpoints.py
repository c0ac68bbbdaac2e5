"""Route kinds and op ends, the inter-wafer edge ends and the inter-wafer table.

- kind 0/1/4 (broadcast, reduction, all-reduce): ``route_op_src == route_op_dst >= 0``; kind 2 (activation): both
  ends are ops; kind 3 (inter-wafer): at least one end is -1 (the edge), on the west or east edge
  column (where the I/O columns are), and the route is listed by an ``inter_wafer`` entry.

Ends that name an op are checked against the tiles they name in trees.py.
"""
from __future__ import annotations

import numpy as np

from .checks import Sink


def check_endpoints(w, ops: list, rstats: dict, nwafers: int, sink: Sink) -> None:
    ro, k = w.routes, w.index
    cols = w.alive.shape[1]
    nops = len(ops)
    kind, osrc, odst = ro["route_kind"], ro["route_op_src"], ro["route_op_dst"]
    n = kind.size

    bad_op = np.flatnonzero((osrc < -1) | (osrc >= nops) | (odst < -1) | (odst >= nops))
    sink.add("route-op", k, bad_op, lambda i: f"route {i} names op {int(osrc[i])} -> {int(odst[i])}, "
             f"expected ids in -1..{nops - 1}")
    within = (kind == 0) | (kind == 1) | (kind == 4)
    bad = (kind < 0) | (kind > 4) | (within & ((osrc != odst) | (osrc < 0)))
    bad |= (kind == 2) & ((osrc < 0) | (odst < 0))
    bad |= (kind == 3) & (osrc >= 0) & (odst >= 0)
    sink.add("route-kind", k, np.flatnonzero(bad),
             lambda i: f"route {i} of kind {int(kind[i])} has op ends {int(osrc[i])} -> {int(odst[i])} "
             "(0/1/4: one op at both ends, 2: two ops, 3: an edge (-1) at one end at least)")

    # the -1 end of an inter-wafer route: on an edge column (the ends naming tiles: trees.py)
    for end, op, label in ((rstats["src"], osrc, "source"), (rstats["dst"], odst, "destination")):
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
        ok_dir = ok_ids and all((osrc[i] == -1) == (dw == k) for i in ids)    # into wafer k from its edge
        if not (ok_ids and ok_w and ok_dir):
            sink.one("inter-wafer", k, f"inter_wafer[{j}] {e!r}: expected src_wafer != dst_wafer (one of them "
                     f"{k}), and 'route' the index (or list) of kind-3 routes of wafer {k}, entering it "
                     f"(from the edge) when dst_wafer is {k}, leaving it when src_wafer is {k}")
        if isinstance(ids, list):
            listed[[i for i in ids if isinstance(i, int) and 0 <= i < n]] = True
    sink.add("inter-wafer", k, np.flatnonzero((kind == 3) & ~listed),
             lambda i: f"route {i} is inter-wafer (kind 3) but no inter_wafer entry lists it")
