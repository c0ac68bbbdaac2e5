"""The timing inputs against the routes (``path-record``): every op grid's recorded critical paths
and link loads (schedule.json ``ops[i].grids[j]``: ``broadcast_hops``, ``broadcast_links``,
``broadcast_load``, ``reduction_hops``, ``reduction_load``) are what its routed trees give.

The timing model prices a grid from these fields alone (wafercc/perf/model.py), so a record that
disagrees with the routes is a silently wrong tokens/s.  Recomputed here from wafer{k}.npz only:

- ``*_hops``: the longest path, in routed links, between a tile and its tree's root (broadcast
  routes of a grid form out-trees, reduction routes in-trees: the tree checks);
- ``broadcast_links``: the routes (re-sends) on that longest broadcast path;
- ``*_load``: the most routes of that kind of the grid crossing one directed link (at least 1).

An op using its template's routes (``routes_of``) must carry the template's figures.  The
receive-add steps (``reduction_links``) and the all-reduce figures are not rechecked here.  Run
only when the tree checks passed (a cycle has no longest path).
"""
from __future__ import annotations

import numpy as np

from .checks import Sink, op_label

FIELDS = ("broadcast_hops", "broadcast_links", "broadcast_load", "reduction_hops", "reduction_load")


def _depths(n: int, child: np.ndarray, parent: np.ndarray, hops: np.ndarray, rounds: int):
    """(hops, routes) from every tile to its tree's root by pointer doubling."""
    par = np.arange(n, dtype=np.int64)
    par[child] = parent
    dist = np.zeros(n, np.int64)
    dist[child] = hops
    cnt = np.zeros(n, np.int64)
    cnt[child] = 1
    for _ in range(rounds):           # a root is no route's child: its dist and cnt stay 0
        dist, cnt, par = dist + dist[par], cnt + cnt[par], par[par]
    return dist, cnt


def routed_paths(w, tiles: dict, good_src: np.ndarray, good_dst: np.ndarray) -> np.ndarray:
    """int64 [grids, 5]: the FIELDS of every grid (GridIndex order) from its routes."""
    ro, gx = w.routes, tiles["grid_index"]
    kind, st, dt = ro["route_kind"], ro["route_src_tile"], ro["route_dst_tile"]
    off, links = ro["offsets"], ro["links"]
    flat = tiles["flat"]
    n, ng = flat.size, len(gx.op)
    grid = np.where(flat >= 0, np.searchsorted(gx.base, np.maximum(flat, 0), side="right") - 1, -1)
    rounds = int(np.ceil(np.log2(tiles["max_group"] + 1))) + 1
    out = np.zeros((ng, len(FIELDS)), np.int64)
    out[:, 2] = out[:, 4] = 1
    hops_all = np.diff(off)
    for kd, (ch, cl, cload) in ((0, (0, 1, 2)), (1, (3, None, 4))):
        sel = np.flatnonzero((kind == kd) & good_src & good_dst)
        sel = sel[(grid[st[sel]] >= 0) & (grid[st[sel]] == grid[dt[sel]])]
        s, d = st[sel], dt[sel]
        child, parent = (d, s) if kd == 0 else (s, d)
        dist, cnt = _depths(n, child, parent, hops_all[sel], rounds)
        tg = grid >= 0
        np.maximum.at(out[:, ch], grid[tg], dist[tg])
        if cl is not None:
            np.maximum.at(out[:, cl], grid[tg], cnt[tg])
        lens = hops_all[sel]
        if lens.sum():
            g = np.repeat(grid[s], lens)
            at = np.repeat(off[sel], lens) + np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
            span = int(links.max(initial=0)) + 1
            pair, count = np.unique(g * span + links[at].astype(np.int64), return_counts=True)
            np.maximum.at(out[:, cload], pair // span, count)
    return out


def check_path_records(w, ops: list, tiles: dict, good_src: np.ndarray, good_dst: np.ndarray,
                       tmpl: list[int], sink: Sink) -> None:
    gx = tiles["grid_index"]
    if not len(gx.op):
        return
    got = routed_paths(w, tiles, good_src, good_dst)
    bad = []
    for i, (o, j) in enumerate(zip(gx.op.tolist(), gx.num.tolist())):
        rec = ops[o]["grids"][j]
        src = gx.first[tmpl[o]] + j if tmpl[o] != o else i     # a shared op carries its template's figures
        for f, v in zip(FIELDS, got[src].tolist()):
            if f in rec and rec[f] != v:
                bad.append((o, j, f, rec[f], v))
    sink.add("path-record", w.index, np.arange(len(bad)), lambda x: (
        f"{op_label(ops, bad[x][0])} grid {bad[x][1]}: {bad[x][2]} {bad[x][3]} recorded, its routes give "
        f"{bad[x][4]} (the timing model reads the record)"))
