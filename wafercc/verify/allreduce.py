"""The norm / softmax all-reduce trees (route kind 4) against the op records (vectorised).

A grid record with ``allreduce_links`` claims a routed all-reduce tree (passes/transfers.py): it
must be the last grid of an op hosting a ``norm`` or ``softmax`` rider (``allreduce-record``), and
over each of its output rows (the last row of each expert; every row of a KV grid) the kind-4 routes
must form one in-tree that every tile of the row joins, rooted at the row's broadcast root, where
the result goes back down the broadcast tree (``allreduce-tree``).  A kind-4 route anywhere else
(another row, another grid, a grid whose record claims no all-reduce) is an ``allreduce-tree``
violation too.  Without the claim the all-reduce is the chain up the broadcast routes reversed
(``--reduction chain``), which the broadcast-tree check already covers.  A shared op (layer
groups, ``routes_of``) hosting a rider reduces on its template's tree: its claim must be the
template's figures, and its own tiles own no kind-4 routes.
"""
from __future__ import annotations

import numpy as np

from .checks import Sink, op_label

ALLREDUCE_RIDERS = ("norm", "softmax")      # wafercc.passes.cost_kernel (the verifier imports no pass)
KIND = 4
FIELDS = ("allreduce_hops", "allreduce_links", "allreduce_down_hops")   # wafercc.perf.paths.ALLREDUCE_FIELDS


def check_allreduce(w, ops: list, tiles: dict, good_src: np.ndarray, good_dst: np.ndarray,
                    bcast_root: np.ndarray, sink: Sink) -> None:
    ro, k, t = w.routes, w.index, w.tiles
    gx, desc, grp = tiles["grid_index"], tiles["desc"], tiles["bcast_group"]
    hosts = {op.get("host") for op in ops if op.get("op") in ALLREDUCE_RIDERS}
    claimed = np.zeros(len(gx.op), dtype=bool)                     # per grid of the GridIndex
    for o, op in enumerate(ops):
        for gi, g in enumerate(op["grids"]):
            if "allreduce_links" not in g:
                continue
            if o not in hosts or gi != len(op["grids"]) - 1:
                sink.one("allreduce-record", k, f"{op_label(ops, o)} grid {gi} claims an all-reduce tree but is "
                         "not the last grid of an op hosting a norm or softmax rider")
                continue
            tm = op.get("routes_of")
            if tm is not None:             # a shared host reduces on its template's tree (checked there)
                tg = ops[tm]["grids"][gi] if isinstance(tm, int) and 0 <= tm < len(ops) and \
                    gi < len(ops[tm]["grids"]) else {}
                if any(g.get(f) != tg.get(f) for f in FIELDS):
                    sink.one("allreduce-record", k, f"{op_label(ops, o)} grid {gi} claims an all-reduce tree "
                             "other than its template's (routes_of), whose routes it uses")
                continue
            claimed[gx.first[o] + gi] = True
    ntiles = t["tile_op"].size
    valid = grp >= 0
    gid = np.where(valid, np.searchsorted(gx.base, np.maximum(grp, 0), side="right") - 1, 0)
    if len(gx.op):
        member = valid & claimed[gid] & (tiles["kv"] | (t["tile_row"] == gx.dims[gid, 1] - 1))
    else:
        member = np.zeros(ntiles, dtype=bool)

    kind, st, dt = ro["route_kind"], ro["route_src_tile"], ro["route_dst_tile"]
    sel = np.flatnonzero((kind == KIND) & good_src & good_dst)
    s, d = st[sel], dt[sel]
    inside = member[s] & member[d] & (grp[s] == grp[d]) & (s != d)
    sink.add("allreduce-tree", k, sel[~inside], lambda i: (
        f"route {i} (all-reduce) joins {desc(int(st[i]))} to {desc(int(dt[i]))}: not two tiles of one output "
        "row of a grid whose record claims an all-reduce tree"))
    s, d, rid = s[inside], d[inside], sel[inside]
    deg = np.bincount(s, minlength=ntiles)
    sink.add("allreduce-tree", k, np.flatnonzero(deg > 1), lambda x: (
        f"{desc(int(x))} sends its all-reduce partial on {int(deg[x])} routes "
        f"({', '.join(map(str, rid[s == x][:6].tolist()))}): a tree gives each tile one"))
    ar = np.arange(ntiles, dtype=np.int64)
    par = ar.copy()
    par[s] = d
    root = (par == ar) & member
    anc = par
    for _ in range(max(1, int(np.ceil(np.log2(tiles["max_group"] + 1)))) + 1):
        anc = anc[anc]
    total = int(gx.total)
    nroots = np.bincount(grp[root], minlength=total)
    size = np.bincount(grp[member], minlength=total)
    lost = np.zeros(total, dtype=bool)
    lost[grp[member & ~root[anc]]] = True                          # tiles that never reach a root
    off_root = np.zeros(total, dtype=bool)
    off_root[grp[root & ~bcast_root]] = True
    bad = np.flatnonzero((size > 0) & ((nroots != 1) | lost | off_root))

    def msg(g: int) -> str:
        o, gi, e, r, _c = gx.decode(g)
        tiles_g = np.flatnonzero(member & (grp == g))
        roots = tiles_g[root[tiles_g]]
        lab = f"{op_label(ops, o)} grid {gi} expert {e} row {r}"
        if roots.size == 0:
            return f"{lab}: its all-reduce routes form a cycle (no root tile)"
        if roots.size == 1 and not bcast_root[roots[0]]:
            return f"{lab}: the all-reduce tree's root {desc(int(roots[0]))} is not the row's broadcast root"
        reached = tiles_g[anc[tiles_g] == roots[0]]
        miss = np.setdiff1d(tiles_g, reached)[:6].tolist()
        return (f"{lab}: its {tiles_g.size} tiles form {int(nroots[g])} all-reduce trees, not one; the tree of "
                f"{desc(int(roots[0]))} collects {reached.size} (not tiles {', '.join(map(str, miss))})")

    sink.add("allreduce-tree", k, bad, msg)
