"""Layer groups (docs/mapping.md): ops that use another op's cores and routes (``ops[i].routes_of``).

On a statically routed fabric a route is a path configuration on a color; an op whose grids are the
template's grids on the template's cores can use the template's broadcast and reduction routes (one
configuration, the data differs in time).  Checked here (``shared-routes``):

- the template is an earlier op of the wafer that names no template itself, and the op's grids have
  the template's shapes (operand, experts, rows, cols), grid by grid;
- every tile of the op sits on the core of the template's tile of the same (grid, expert, row, col).

The template's own trees are checked by the tree checks; a shared op's tiles are left out of them
(they have no routes of their own) and are broadcast roots where the template's tile is one.
"""
from __future__ import annotations

import numpy as np

from .checks import Sink, op_label

SHAPE = ("operand", "experts", "rows", "cols")


def _ok_id(v, n: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < n


def check_shared(w, ops: list, tiles: dict, sink: Sink) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(template id of every op (itself when it shares nothing), per tile: the index of the template's
    tile on whose core it must sit (-1: none), per tile: whether its op uses a template's routes)."""
    k, n = w.index, len(ops)
    tmpl = list(range(n))
    for o, op in enumerate(ops):
        t = op.get("routes_of")
        if t is None:
            continue
        if not _ok_id(t, n) or t >= o or ops[t].get("routes_of") is not None:
            sink.one("shared-routes", k, f"{op_label(ops, o)} uses the routes of op {t!r}: expected an earlier "
                     f"op of wafer {k} that uses its own routes")
            continue
        a, b = op["grids"], ops[t]["grids"]
        if len(a) != len(b) or any(ga.get(f) != gb.get(f) for ga, gb in zip(a, b) for f in SHAPE):
            sink.one("shared-routes", k, f"{op_label(ops, o)} uses the routes of {op_label(ops, t)}, but its "
                     f"grids {[[g.get(f) for f in SHAPE] for g in a]} are not the template's "
                     f"{[[g.get(f) for f in SHAPE] for g in b]}")
            continue
        tmpl[o] = t
    gx, flat, counts = tiles["grid_index"], tiles["flat"], tiles["counts"]
    ntiles = flat.size
    partner = np.full(ntiles, -1, np.int64)
    shared_tile = np.zeros(ntiles, bool)
    if all(t == o for o, t in enumerate(tmpl)) or not ntiles:
        return tmpl, partner, shared_tile
    tile_of = np.full(gx.total, -1, np.int64)            # the tile placed at each expected id (once)
    placed = flat >= 0
    tile_of[flat[placed]] = np.flatnonzero(placed)
    # expected id of each tile in its template's numbering: same grid index, same offset
    gi_op = gx.first[np.clip(tiles["op"], 0, max(n - 1, 0))] if n else np.zeros(ntiles, np.int64)
    top = tiles["op"]
    shared_op = np.array([t != o for o, t in enumerate(tmpl)], bool)
    sel = np.flatnonzero(placed & (top >= 0) & (top < n))
    sel = sel[shared_op[top[sel]]]
    t_of = np.array(tmpl, np.int64)[top[sel]]
    g_local = w.tiles["tile_grid"][sel].astype(np.int64)
    off = flat[sel] - gx.base[gi_op[sel] + g_local]
    twin = gx.base[gx.first[t_of] + g_local] + off
    ok_twin = counts[twin] == 1
    ti = np.where(ok_twin, tile_of[twin], -1)
    partner[sel] = ti
    shared_tile[sel] = True
    cr, cc = w.tiles["tile_core_row"], w.tiles["tile_core_col"]
    bad = sel[(ti < 0) | (cr[sel] != cr[np.maximum(ti, 0)]) | (cc[sel] != cc[np.maximum(ti, 0)])]
    desc = tiles["desc"]
    sink.add("shared-routes", k, bad, lambda i: (
        f"{desc(int(i))} on core ({int(cr[i])}, {int(cc[i])}) is not on the core of its template's tile "
        + (f"{desc(int(partner[i]))}" if partner[i] >= 0 else "(not placed once)")
        + ": a shared op's tiles must sit on the cores of the routes it uses"))
    return tmpl, partner, shared_tile


def effective_edges(fwd_src: list[int], fwd_dst: list[int], holders: list[int], tmpl: list[int]):
    """The activation edges the routes serve: each route, and between consecutive ops holding tiles
    (p, o) with no route of their own, the route joining their templates' pair (a layer group's later
    layers use the first layer's routes: the same cores, another time)."""
    pairs = {(tmpl[a], tmpl[b]) for a, b in zip(fwd_src, fwd_dst)}
    have = set(zip(fwd_src, fwd_dst))
    src, dst = list(fwd_src), list(fwd_dst)
    for p, o in zip(holders, holders[1:]):
        if (p, o) not in have and (tmpl[p], tmpl[o]) in pairs and (tmpl[p] != p or tmpl[o] != o):
            src.append(p)
            dst.append(o)
    return src, dst
