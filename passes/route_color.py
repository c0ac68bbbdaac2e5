"""Color assignment (docs/routing.md): one color per route, used on every link it crosses.

Resources of a route with at least one hop: each directed link it takes (= the output port of the
core it leaves and the input port of the core it enters), the ramp input of its source core
(resource id ``4N + src``) and the ramp output of its destination core (``5N + dst``), N = rows*cols.
Each (resource, color) carries at most ``cap`` routes.  Greedy in a fixed order (longest route
first, then index); a route left without a free color is ripped up and re-searched per color on
the links where that color is still free (unit-cost A*, bbox grown up to ``repair_margin``); one
that still finds none takes a color a single other route holds on its path, and that route is
re-searched instead (``bump``).
"""
from __future__ import annotations

import numpy as np

from .route_astar import astar, covers_all, grow_bbox


class Masks(dict):
    """resource -> bitmask of colors at capacity; 0 for a resource not in it (``full[r]``, the
    protocol ``ColorState.full`` and the color search share with a memoryview over an array)."""

    def __missing__(self, r):
        return 0


def _link_entries(offs, links, routes):
    """Link ids of ``routes`` back to back (in the given order), each route's start in them, and
    its length."""
    lens = offs[routes + 1] - offs[routes]
    starts = np.zeros(len(routes), np.int64)
    np.cumsum(lens[:-1], out=starts[1:])
    idx = np.repeat(offs[routes] - starts, lens) + np.arange(int(lens.sum()), dtype=np.int64)
    return links[idx], starts, lens


def color_rounds(offs, links, src, dst, n_nodes: int, colors: int, order: np.ndarray, prefer=None):
    """Vectorised first-fit coloring for link capacity 1.  Each round every uncolored route takes
    the lowest color free on all its resources (its links, its source's ramp input ``4N + src``,
    its destination's ramp output ``5N + dst``); where routes of one round pick the same color on
    a shared resource, the earliest in ``order`` keeps it and the others retry next round.
    Returns (color int16 [R], used uint32 [6N] bitmask per resource, routes left without a free
    color (by round, ascending index within a round), rounds).  ``prefer`` (int [R]): the color
    each route tries first in round 1 when it is free (e.g. its kind, so that the broadcast and
    reduction chains leaving a core do not collide)."""
    full = np.uint32((1 << colors) - 1)
    used = np.zeros(6 * n_nodes, np.uint32)
    n = len(offs) - 1
    color = np.zeros(n, np.int16)
    order = np.asarray(order, np.int64)
    pending = order[np.diff(offs)[order] > 0]     # in ``order``: a route's position is its priority
    pref = None if prefer is None else np.asarray(prefer, np.int64) % colors
    failed = []
    rounds = 0
    m_big = np.iinfo(np.int64).max
    first = np.full(6 * n_nodes, m_big, np.int64)      # scratch: first route (by position) per resource
    while len(pending):
        rounds += 1
        m = len(pending)
        ramp_in, ramp_out = 4 * n_nodes + src[pending], 5 * n_nodes + dst[pending]
        blocked = used[ramp_in] | used[ramp_out]
        if rounds > 1:                                 # nothing is used before the first round
            lk, starts, _ = _link_entries(offs, links, pending)
            blocked |= np.bitwise_or.reduceat(used[lk], starts)
        free = ~blocked & full
        none = free == 0
        if none.any():
            failed.extend(np.sort(pending[none]).tolist())
        low = free & (~free + np.uint32(1))                    # lowest free bit
        pick = np.zeros(m, np.int64)
        pick[~none] = np.log2(low[~none].astype(np.float64)).astype(np.int64)
        if rounds == 1 and pref is not None:
            pr = pref[pending]
            take = (free >> pr.astype(np.uint32)) & np.uint32(1) != 0
            pick[take] = pr[take]
        # a route wins if it is the first (by position) to pick its color on each of its
        # resources: routes grouped by color (one stable sort keeps their order), then per color
        # a minimum over positions on every resource
        live = np.flatnonzero(~none)
        by = live[np.argsort(pick[live].astype(np.uint8), kind="stable")]
        rb = np.concatenate([[0], np.cumsum(np.bincount(pick[by], minlength=colors))])
        blk, bstart, blen = _link_entries(offs, links, pending[by])
        lb = np.append(bstart, int(blen.sum()))[rb]
        bown = np.repeat(by, blen)
        rin, rout = ramp_in[by], ramp_out[by]
        lost = np.zeros(m, bool)
        groups = []
        for c in range(colors):
            if rb[c] == rb[c + 1]:
                continue
            w = by[rb[c]:rb[c + 1]]
            parts = ((blk[lb[c]:lb[c + 1]], bown[lb[c]:lb[c + 1]]), (rin[rb[c]:rb[c + 1]], w),
                     (rout[rb[c]:rb[c + 1]], w))
            for r, o in parts:
                np.minimum.at(first, r, o)
            for r, o in parts:
                lost[o[first[r] != o]] = True
            for r, _ in parts:
                first[r] = m_big
            groups.append((c, parts))
        win = ~none & ~lost
        color[pending[win]] = pick[win]
        for c, parts in groups:
            bit = np.uint32(1 << c)
            for r, o in parts:
                used[r[win[o]]] |= bit
        pending = pending[lost & ~none]
    return color, used, failed, rounds


class ColorState:
    def __init__(self, n_nodes: int, colors: int, cap: int):
        self.N, self.colors, self.cap = n_nodes, colors, cap
        self.all = (1 << colors) - 1
        # resource -> bitmask of colors at capacity: Masks, or (cap 1, after color_rounds) a
        # memoryview over its uint32 array, which the Python search indexes fast
        self.full = Masks()
        self.cnt: dict[tuple[int, int], int] = {}       # (resource, color) -> routes, when cap > 1

    def resources(self, links, s, t):
        return (*links, 4 * self.N + s, 5 * self.N + t) if links else ()

    def blocked(self, res) -> int:
        full, m = self.full, 0
        for r in res:
            m |= full[r]
        return m

    def take(self, res, c):
        bit, full = 1 << c, self.full
        if self.cap == 1:
            for r in res:
                full[r] = full[r] | bit
            return
        cnt = self.cnt
        for r in res:
            k = cnt.get((r, c), 0) + 1
            cnt[(r, c)] = k
            if k >= self.cap:
                full[r] = full[r] | bit

    def release(self, res, c):
        """Capacity 1: color ``c`` free again on ``res``."""
        keep, full = self.all ^ (1 << c), self.full
        for r in res:
            full[r] = full[r] & keep

    def pick(self, res) -> int:
        free = ~self.blocked(res) & self.all
        return (free & -free).bit_length() - 1 if free else -1


def greedy(order, paths, src, dst, state: ColorState, color):
    """Colors routes in ``order``; returns the routes that found no free color."""
    failed = []
    for i in order:
        p = paths[i]
        if not p:
            color[i] = 0
            continue
        res = state.resources(p, src[i], dst[i])
        c = state.pick(res)
        if c < 0:
            failed.append(i)
            continue
        color[i] = c
        state.take(res, c)
    return failed


def holders(i, paths, src, dst, color) -> dict[int, set[int]]:
    """{color: the routes other than i holding that color on one of route i's resources (its links,
    its source's ramp input, its destination's ramp output)}, from the CSR arrays of ``paths`` and
    its re-routed overrides."""
    mine = np.asarray(paths[i], np.int64)
    offs, links, over = paths.offs, paths.links, paths.overrides
    at = np.flatnonzero(np.isin(links, mine))
    routes = set((np.searchsorted(offs, at, side="right") - 1).tolist())
    routes = {j for j in routes if j not in over}            # their CSR entries are stale
    routes |= {j for j, p in over.items() if not set(p).isdisjoint(mine.tolist())}
    sa, da = np.asarray(src), np.asarray(dst)
    moving = np.diff(offs) > 0
    routes |= set(np.flatnonzero(((sa == sa[i]) | (da == da[i])) & moving).tolist())
    routes.discard(i)
    out: dict[int, set[int]] = {}
    for j in routes:
        if paths[j]:
            out.setdefault(int(color[j]), set()).add(j)
    return out


def bump(i, paths, src, dst, state: ColorState, color, rows, cols, ok, load, margin_limit) -> bool:
    """Route i found no color on any path: take a color that one other route alone holds on its
    path, and move that route instead (``repair``: another path or another color).  Colors in
    order; True on success, the state as it was otherwise.  Capacity 1 per (resource, color)."""
    if state.cap != 1 or not paths[i]:
        return False
    mine = state.resources(paths[i], src[i], dst[i])
    for c, js in sorted(holders(i, paths, src, dst, color).items()):
        if len(js) != 1:
            continue
        j = next(iter(js))
        theirs = state.resources(paths[j], src[j], dst[j])
        state.release(theirs, c)
        if state.blocked(mine) >> c & 1:          # someone else holds c there too
            state.take(theirs, c)
            continue
        state.take(mine, c)
        color[i] = c
        if repair(j, paths, src, dst, state, color, rows, cols, ok, load, margin_limit):
            return True
        state.release(mine, c)
        state.take(theirs, c)
        color[j] = c
    return False


def repair(i, paths, src, dst, state: ColorState, color, rows, cols, ok, load, margin_limit):
    """Re-routes route i on links where one color is still free; the shortest such path wins (lowest
    color on ties).  Returns True on success (paths, color, load updated)."""
    s, t = src[i], dst[i]
    ramps = state.full[4 * state.N + s] | state.full[5 * state.N + t]
    manhattan = abs(s // cols - t // cols) + abs(s % cols - t % cols)
    best = None
    for c in range(state.colors):
        if ramps >> c & 1:
            continue
        m = 2
        while True:
            bbox = grow_bbox(s, t, cols, rows, m)
            p = astar(s, t, bbox, cols, ok, None, None, 0, 0.0, full=state.full, color=c)
            if p is not None or covers_all(bbox, rows, cols) or m >= margin_limit:
                break
            m *= 4
        if p is not None and (best is None or len(p) < len(best[1])):
            best = (c, p)
            if len(p) == manhattan:
                break
    if best is None:
        return False
    c, p = best
    for link in paths[i]:
        load[link] -= 1
    for link in p:
        load[link] += 1
    paths[i] = p
    color[i] = c
    state.take(state.resources(p, s, t), c)
    return True
