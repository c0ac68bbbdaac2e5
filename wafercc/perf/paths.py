"""Critical fabric paths of every grid on a placed wafer, from its tiles and routed transfers.

A grid's broadcast routes (kind 0) form a forest: each tile receives its input slice from one
tile.  Its reduction routes (kind 1) form an in-forest: each tile sends its partial sums to one
tile (binomial trees down the grid's columns, passes/transfers.py; a KV row's broadcast tree
reversed).  The timing model needs, per grid, the longest root-to-tile path of each forest in
routed hops, and its steps: for a broadcast the links of the path (each a re-send of the input
slice), for a reduction the receive-add-forward steps of the root, a tile adding its children's
partials one per step as they arrive (``_reduce_steps``: a chain of R tiles takes R-1, a binomial
tree ceil(log2 R)).  Computed for all tiles at once by pointer jumping (log2(depth) vectorised
rounds) and one pass per tree level, so a wafer of seven million routes takes well under a second.

A grid hosting a norm's or softmax's all-reduce as a tree (kind 4 routes: the binomial tree over
its output row's columns, passes/transfers.py) also gets ``allreduce_hops`` and ``allreduce_links``
(that in-forest's longest path and root steps, as for a reduction) and ``allreduce_down_hops``
(the longest broadcast path to a tile of those trees: the result's way back, cut-through).  A grid
without kind-4 routes gets none of the three: its all-reduce is the chain over its broadcast
routes reversed (``--reduction chain``; wafercc/perf/model.py).
"""
from __future__ import annotations

import numpy as np

KINDS = {"broadcast": 0, "reduction": 1}
KIND_ALLREDUCE = 4
ALLREDUCE_FIELDS = ("allreduce_hops", "allreduce_links", "allreduce_down_hops")


def _in_depths(n: int, src: np.ndarray, dst: np.ndarray, hops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hops, links) from each tile to its in-forest root; a tile sending on two routes is an error."""
    if len(np.unique(src)) != len(src):
        raise ValueError("reduction transfers: a tile sends its partial sums on more than one route")
    return _jump(n, src, dst, hops)


def _depths(n: int, src: np.ndarray, dst: np.ndarray, hops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hops, links) between each tile and its forest's root.  The edges form an out-forest (one
    sender per tile: broadcasts) or an in-forest (one receiver per tile); either way the longest
    path ends at some tile."""
    if len(np.unique(dst)) == len(dst):
        child, up = dst, src
    elif len(np.unique(src)) == len(src):
        child, up = src, dst
    else:
        raise ValueError("transfers of one kind form neither an in- nor an out-forest")
    return _jump(n, child, up, hops)


def _jump(n: int, child: np.ndarray, up: np.ndarray, hops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _reduce_steps(n: int, src: np.ndarray, dst: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Steps until each tile of an in-forest (``src`` sends to ``dst``; ``level``: links to the
    root) holds its subtree's sum: a leaf 0; a tile adds its children's partials one step each in
    order of readiness, t = max(t, ready) + 1, i.e. the maximum over its children sorted by
    readiness s_1 <= .. <= s_m of s_k + (m - k + 1).  The event replay (eventsim.py) adds the same way."""
    ready = np.zeros(n, np.int64)
    lev = level[src]
    order = np.argsort(-lev, kind="stable")
    src, dst, lev = src[order], dst[order], lev[order]
    bounds = np.flatnonzero(np.diff(lev)) + 1
    for a, b in zip([0, *bounds.tolist()], [*bounds.tolist(), len(src)]):
        s, d = src[a:b], dst[a:b]             # the children one level up from the deepest unsettled
        v = ready[s]
        o = np.lexsort((v, d))                # by parent, then readiness
        s, d, v = s[o], d[o], v[o]
        first = np.r_[0, np.flatnonzero(np.diff(d)) + 1]
        count = np.diff(np.r_[first, len(d)])
        rank = np.arange(len(d)) - np.repeat(first, count)          # k - 1
        after = np.repeat(count, count) - rank                      # m - k + 1
        np.maximum.at(ready, d, v + after)
    return ready


def link_loads(inv: np.ndarray, ngrids: int, src: np.ndarray, m: np.ndarray, offsets: np.ndarray,
               links: np.ndarray) -> np.ndarray:
    """int64 [ngrids]: per grid (``inv`` of each tile), the most routes of the selection ``m``
    (route indices, sources ``src[m]`` on the grid's tiles) that cross one directed link."""
    out = np.zeros(ngrids, np.int64)
    if not len(m):
        return out
    start, lens = offsets[m], offsets[m + 1] - offsets[m]
    total = int(lens.sum())
    if not total:
        return out
    first = np.repeat(np.cumsum(lens) - lens, lens)
    at = np.repeat(start, lens) + np.arange(total, dtype=np.int64) - first
    g = np.repeat(inv[src[m]], lens).astype(np.int64)
    span = int(links.max(initial=0)) + 1
    pair, count = np.unique(g * span + links[at].astype(np.int64), return_counts=True)
    np.maximum.at(out, pair // span, count)
    return out


def grid_paths(tile_op: np.ndarray, tile_grid: np.ndarray, src: np.ndarray, dst: np.ndarray,
               kind: np.ndarray, hops: np.ndarray, offsets: np.ndarray | None = None,
               links: np.ndarray | None = None) -> dict[tuple[int, int], dict[str, int]]:
    """{(op, grid): {broadcast_hops, broadcast_links, reduction_hops, reduction_links}}: the longest
    path of each kind over the grid's tiles.  ``src``/``dst`` are tile indices (-1 for a wafer edge),
    ``hops`` the routed length of each transfer.  With the routes' directed links (``offsets`` into
    ``links``, wafer{k}.npz ``route_offsets`` / ``route_links``) also ``broadcast_load`` and
    ``reduction_load``: the most routes of that kind of the grid crossing one directed link (at
    least 1), whose messages serialise there (passes/cost_kernel.py).  The all-reduce's 1-wavelet
    partials are bound by their receive-add steps, not by links, so it has none."""
    n = len(tile_op)
    key = tile_op.astype(np.int64) * 65536 + tile_grid.astype(np.int64)
    ukeys, inv = np.unique(key, return_inverse=True)
    out = {(int(k // 65536), int(k % 65536)): {} for k in ukeys}
    if offsets is not None:
        offsets, links = np.asarray(offsets, np.int64), np.asarray(links, np.int64)
        for name, k in KINDS.items():
            m = np.flatnonzero((kind == k) & (src >= 0) & (dst >= 0))
            for kk, v in zip(ukeys.tolist(), link_loads(inv, len(ukeys), src, m, offsets, links).tolist()):
                out[(kk // 65536, kk % 65536)][f"{name}_load"] = max(int(v), 1)
    depth = {}
    for name, k in KINDS.items():
        m = (kind == k) & (src >= 0) & (dst >= 0)
        ms, md = src[m].astype(np.int64), dst[m].astype(np.int64)
        if name == "reduction":             # partials flow src -> dst: an in-forest, steps at the roots
            d, lev = _in_depths(n, ms, md, hops[m].astype(np.int64))
            s = _reduce_steps(n, ms, md, lev)
        else:
            d, s = _depths(n, ms, md, hops[m].astype(np.int64))
        depth[name] = d
        dmax = np.zeros(len(ukeys), np.int64)
        smax = np.zeros(len(ukeys), np.int64)
        np.maximum.at(dmax, inv, d)
        np.maximum.at(smax, inv, s)
        for i, kk in enumerate(ukeys):
            e = out[(int(kk // 65536), int(kk % 65536))]
            e[f"{name}_hops"] = int(dmax[i])
            e[f"{name}_links"] = int(smax[i])
    m = (kind == KIND_ALLREDUCE) & (src >= 0) & (dst >= 0)
    if m.any():
        ms, md = src[m].astype(np.int64), dst[m].astype(np.int64)
        d, lev = _in_depths(n, ms, md, hops[m].astype(np.int64))
        s = _reduce_steps(n, ms, md, lev)
        member = np.zeros(n, bool)
        member[ms] = member[md] = True
        g = np.unique(inv[member])
        for name, v in (("hops", d), ("links", s), ("down_hops", depth["broadcast"])):
            vmax = np.zeros(len(ukeys), np.int64)
            np.maximum.at(vmax, inv[member], v[member])
            for i in g.tolist():
                out[(int(ukeys[i] // 65536), int(ukeys[i] % 65536))][f"allreduce_{name}"] = int(vmax[i])
    return out


def op_edges(kind: np.ndarray, op_src: np.ndarray, op_dst: np.ndarray, hops: np.ndarray, k: int) -> dict:
    """{op: hops} of the transfers of kind ``k`` into each op (activation or inter-wafer routes);
    op -1 keys the routes leaving the wafer."""
    out: dict[int, int] = {}
    for i in np.flatnonzero(kind == k):
        o = int(op_dst[i]) if op_dst[i] >= 0 else -1
        out[o] = max(out.get(o, 0), int(hops[i]))
    return out
