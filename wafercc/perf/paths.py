"""Critical fabric paths of every grid on a placed wafer, from its tiles and routed transfers.

A grid's broadcast routes (kind 0) form a forest: each tile receives its input slice from one
tile.  Its reduction routes (kind 1) form chains down the grid's columns.  The timing model needs,
per grid, the longest root-to-tile path of each forest in routed hops and in links (each link of
a chain is one store-and-forward step: a partial-sum add, or a re-send of the input slice).
Computed for all tiles at once by pointer jumping (log2(depth) vectorised rounds), so a wafer of
seven million routes takes well under a second.
"""
from __future__ import annotations

import numpy as np

KINDS = {"broadcast": 0, "reduction": 1}


def _depths(n: int, src: np.ndarray, dst: np.ndarray, hops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hops, links) between each tile and its forest's root.  The edges form an out-forest (one
    sender per tile: broadcasts, column chains) or an in-forest (one receiver per tile: a KV row's
    partials going back up its broadcast tree); either way the longest path ends at some tile."""
    if len(np.unique(dst)) == len(dst):
        child, up = dst, src
    elif len(np.unique(src)) == len(src):
        child, up = src, dst
    else:
        raise ValueError("transfers of one kind form neither an in- nor an out-forest")
    parent = np.full(n, -1, np.int64)
    parent[child] = up
    dist = np.zeros(n, np.int64)
    dist[child] = hops
    steps = np.zeros(n, np.int64)
    steps[child] = 1
    for _ in range(64):
        live = np.flatnonzero(parent >= 0)
        if not len(live):
            return dist, steps
        p = parent[live]
        dist[live] += dist[p]           # fancy indexing reads before it writes: one jump per round
        steps[live] += steps[p]
        parent[live] = parent[p]
    raise ValueError("transfer forest deeper than 2**64 or cyclic")


def grid_paths(tile_op: np.ndarray, tile_grid: np.ndarray, src: np.ndarray, dst: np.ndarray,
               kind: np.ndarray, hops: np.ndarray) -> dict[tuple[int, int], dict[str, int]]:
    """{(op, grid): {broadcast_hops, broadcast_links, reduction_hops, reduction_links}}: the longest
    path of each kind over the grid's tiles.  ``src``/``dst`` are tile indices (-1 for a wafer edge),
    ``hops`` the routed length of each transfer."""
    n = len(tile_op)
    key = tile_op.astype(np.int64) * 65536 + tile_grid.astype(np.int64)
    ukeys, inv = np.unique(key, return_inverse=True)
    out = {(int(k // 65536), int(k % 65536)): {} for k in ukeys}
    for name, k in KINDS.items():
        m = (kind == k) & (src >= 0) & (dst >= 0)
        d, s = _depths(n, src[m].astype(np.int64), dst[m].astype(np.int64), hops[m].astype(np.int64))
        dmax = np.zeros(len(ukeys), np.int64)
        smax = np.zeros(len(ukeys), np.int64)
        np.maximum.at(dmax, inv, d)
        np.maximum.at(smax, inv, s)
        for i, kk in enumerate(ukeys):
            e = out[(int(kk // 65536), int(kk % 65536))]
            e[f"{name}_hops"] = int(dmax[i])
            e[f"{name}_links"] = int(smax[i])
    return out


def op_edges(kind: np.ndarray, op_src: np.ndarray, op_dst: np.ndarray, hops: np.ndarray, k: int) -> dict:
    """{op: hops} of the transfers of kind ``k`` into each op (activation or inter-wafer routes);
    op -1 keys the routes leaving the wafer."""
    out: dict[int, int] = {}
    for i in np.flatnonzero(kind == k):
        o = int(op_dst[i]) if op_dst[i] >= 0 else -1
        out[o] = max(out.get(o, 0), int(hops[i]))
    return out
