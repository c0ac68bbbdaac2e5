"""Route ends against the tiles they name, and the broadcast / reduction trees (vectorised).

A route's ``route_src_tile`` / ``route_dst_tile`` are tile indices of the wafer (-1 only for the edge
end of an inter-wafer route); the route's end cores must be those tiles' cores.  Within a grid:

- broadcast (kind 0) routes of one (expert, row) form one tree from a root tile that reaches every
  tile of the row exactly once: each tile has at most one incoming broadcast, one tile none, no cycle;
- reduction (kind 1) routes of one (expert, column) (of one (expert, row) in a KV grid) form one
  in-tree from every tile of the column to its root: each tile sends on at most one, one tile (the
  root) on none, no cycle.

Trees are checked with parent pointers over all tiles at once: per-tile degrees by bincount, roots
per group by bincount, cycles by pointer doubling (log2 of the largest group steps).
"""
from __future__ import annotations

import numpy as np

from .checks import GridIndex, Sink, op_label


def check_route_tiles(w, ops: list, tiles: dict, sink: Sink) -> tuple[np.ndarray, np.ndarray]:
    """``route-tile`` / ``route-endpoint``; returns, per route, whether each end names a tile of its op."""
    ro, t, k = w.routes, w.tiles, w.index
    ntiles, desc = t["tile_op"].size, tiles["desc"]
    good = []
    for label, tl, op, r, c in (("source", ro["route_src_tile"], ro["route_op_src"], ro["route_src_row"],
                                 ro["route_src_col"]),
                                ("destination", ro["route_dst_tile"], ro["route_op_dst"], ro["route_dst_row"],
                                 ro["route_dst_col"])):
        edge = op == -1
        inr = (tl >= 0) & (tl < ntiles)
        ti = np.where(inr, tl, 0)
        bad_idx = np.flatnonzero(np.where(edge, tl != -1, ~inr))
        sink.add("route-tile", k, bad_idx, lambda i, tl=tl, op=op, label=label: (
            f"route {i}: {label} tile {int(tl[i])} " + (
                "named at the edge end (op -1), expected -1" if op[i] == -1 else
                f"is not a tile index of the wafer (0..{ntiles - 1})")))
        tile_op = t["tile_op"][ti] if ntiles else np.full(ti.size, -1)
        wrong_op = ~edge & inr & (tile_op != op)
        sink.add("route-tile", k, np.flatnonzero(wrong_op), lambda i, ti=ti, op=op, label=label: (
            f"route {i}: {label} tile {int(ti[i])} is a tile of {op_label(ops, int(t['tile_op'][ti[i]]))}, "
            f"the route names {op_label(ops, int(op[i]))}"))
        ok = ~edge & inr & ~wrong_op
        cr = t["tile_core_row"][ti] if ntiles else ti
        cc = t["tile_core_col"][ti] if ntiles else ti
        moved = ok & ((r != cr) | (c != cc))
        sink.add("route-endpoint", k, np.flatnonzero(moved), lambda i, ti=ti, r=r, c=c, label=label: (
            f"route {i}: {label} core ({int(r[i])}, {int(c[i])}) is not the core "
            f"({int(t['tile_core_row'][ti[i]])}, {int(t['tile_core_col'][ti[i]])}) of its {label} "
            f"{desc(int(ti[i]))}"))
        good.append(ok)             # a moved end is its own violation: the trees still follow the tiles
    return good[0], good[1]


def _group_label(ops: list, gx: GridIndex, g: int, along: str) -> str:
    o, gi, e, r, c = gx.decode(g)
    where = f"row {r}" if along == "row" else f"column {c}"
    return f"{op_label(ops, o)} grid {gi} expert {e} {where}"


def check_trees(w, ops: list, tiles: dict, good_src: np.ndarray, good_dst: np.ndarray, sink: Sink,
                shared_tile: np.ndarray | None = None) -> np.ndarray:
    """``broadcast-tree`` / ``reduction-tree``; returns, per tile, whether it is a broadcast root
    (where an activation may enter).  ``shared_tile``: tiles of ops using a template's routes (left
    out: a route joining one is not of a tree of its own grid)."""
    ro, k = w.routes, w.index
    kind, st, dt = ro["route_kind"], ro["route_src_tile"], ro["route_dst_tile"]
    ntiles, gx, desc = w.tiles["tile_op"].size, tiles["grid_index"], tiles["desc"]
    ar = np.arange(ntiles, dtype=np.int64)
    steps = max(1, int(np.ceil(np.log2(tiles["max_group"] + 1)))) + 1
    bcast_root = np.ones(ntiles, dtype=bool)
    for kd, name, grp in ((0, "broadcast", tiles["bcast_group"]), (1, "reduction", tiles["reduce_group"])):
        if shared_tile is not None and shared_tile.any():
            grp = np.where(shared_tile, -1, grp)
        code = f"{name}-tree"
        sel = np.flatnonzero((kind == kd) & good_src & good_dst)
        s, d = st[sel], dt[sel]
        inside = (grp[s] >= 0) & (grp[s] == grp[d]) & (s != d)
        along = "row" if kd == 0 else "column"
        sink.add(code, k, sel[~inside], lambda i: (
            f"route {i} ({name}) joins {desc(int(st[i]))} to {desc(int(dt[i]))}: not two tiles of one "
            f"grid {along if kd == 0 else 'column (a row in a KV grid)'}"))
        s, d, rid = s[inside], d[inside], sel[inside]
        child, parent = (d, s) if kd == 0 else (s, d)
        deg = np.bincount(child, minlength=ntiles)
        many = np.flatnonzero(deg > 1)
        verb = "receives its broadcast on" if kd == 0 else "sends its partial sums on"
        sink.add(code, k, many, lambda x, child=child, rid=rid: (
            f"{desc(int(x))} {verb} {int(deg[x])} routes "
            f"({', '.join(map(str, rid[child == x][:6].tolist()))}): a tree gives each tile one"))
        par = ar.copy()
        par[child] = parent
        in_grp = grp >= 0
        root = (par == ar) & in_grp
        if kd == 0:
            bcast_root = root
        nroots = np.bincount(grp[root], minlength=gx.total)
        size = np.bincount(grp[in_grp], minlength=gx.total)
        anc = par
        for _ in range(steps):
            anc = anc[anc]
        looped = np.flatnonzero(in_grp & ~root[anc])       # tiles that never reach a root
        cyc = np.zeros(gx.total, dtype=bool)
        cyc[grp[looped]] = True
        bad = np.flatnonzero((size > 0) & ((nroots != 1) | cyc))
        along_g = "row" if kd == 0 else None

        def tree_msg(g: int, grp=grp, root=root, anc=anc, nroots=nroots, size=size, along_g=along_g) -> str:
            members = np.flatnonzero(grp == g)
            roots = members[root[members]]
            lab = _group_label(ops, gx, g, along_g or ("row" if tiles["kv"][members[0]] else "column"))
            if roots.size == 0:
                return f"{lab}: its {name} routes form a cycle (no root tile)"
            first = roots[0]
            reached = members[anc[members] == first]
            lost = np.setdiff1d(members, reached)[:6].tolist()
            what = (f"{int(nroots[g])} trees, not one" if nroots[g] > 1 else "a tree and a cycle")
            return (f"{lab}: its {int(size[g])} tiles form {what}; from root tile {int(first)} the {name} "
                    f"{'reaches' if kd == 0 else 'collects'} {reached.size} (not tiles {', '.join(map(str, lost))})")

        sink.add(code, k, bad, tree_msg)
    return bcast_root
