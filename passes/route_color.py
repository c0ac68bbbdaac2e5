"""Color assignment (docs/routing.md): one color per route, used on every link it crosses.

Resources of a route with at least one hop: each directed link it takes (= the output port of the
core it leaves and the input port of the core it enters), the ramp input of its source core
(resource id ``4N + src``) and the ramp output of its destination core (``5N + dst``), N = rows*cols.
Each (resource, color) carries at most ``cap`` routes.  Greedy in a fixed order (longest route
first, then index); a route left without a free color is ripped up and re-searched per color on
the links where that color is still free (unit-cost A*, bbox grown up to ``repair_margin``).
"""
from __future__ import annotations

import numpy as np

from .route_astar import astar, covers_all, grow_bbox


class MaskView:
    """Dict-like view (``get``/``[]``) of a per-resource color bitmask array, for the Python search."""

    def __init__(self, mask: np.ndarray):
        self.mask = mask

    def get(self, r, default=0):
        return int(self.mask[r])

    def __getitem__(self, r):
        return int(self.mask[r])

    def __setitem__(self, r, v):
        self.mask[r] = v


def _link_entries(offs, links, routes, everything: bool):
    """Link ids of ``routes`` (sorted) back to back, and each route's start in them."""
    lens = offs[routes + 1] - offs[routes]
    starts = np.zeros(len(routes), np.int64)
    np.cumsum(lens[:-1], out=starts[1:])
    if everything:
        return links, starts, lens
    idx = np.repeat(offs[routes] - starts, lens) + np.arange(int(lens.sum()), dtype=np.int64)
    return links[idx], starts, lens


def color_rounds(offs, links, src, dst, n_nodes: int, colors: int, order: np.ndarray, prefer=None):
    """Vectorised first-fit coloring for link capacity 1.  Each round every uncolored route takes
    the lowest color free on all its resources (its links, its source's ramp input ``4N + src``,
    its destination's ramp output ``5N + dst``); where routes of one round pick the same color on
    a shared resource, the earliest in ``order`` keeps it and the others retry next round.
    Returns (color int16 [R], used uint32 [6N] bitmask per resource, routes left without a free
    color, rounds).  ``prefer`` (int [R]): the color each route tries first in round 1 when it is
    free (e.g. its kind, so that the broadcast and reduction chains leaving a core do not collide)."""
    full = np.uint32((1 << colors) - 1)
    used = np.zeros(6 * n_nodes, np.uint32)
    n = len(offs) - 1
    color = np.zeros(n, np.int16)
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    pending = np.flatnonzero(np.diff(offs) > 0)
    everything = len(pending) == n
    failed = []
    rounds = 0
    m_big = np.iinfo(np.int64).max
    first = np.full(6 * n_nodes, m_big, np.int64)      # scratch: first route (by rank) per resource
    while len(pending):
        rounds += 1
        m = len(pending)
        lk, starts, lens = _link_entries(offs, links, pending, everything and rounds == 1)
        ramp_in, ramp_out = 4 * n_nodes + src[pending], 5 * n_nodes + dst[pending]
        blocked = np.bitwise_or.reduceat(used[lk], starts) | used[ramp_in] | used[ramp_out]
        free = ~blocked & full
        none = free == 0
        if none.any():
            failed.extend(pending[none].tolist())
        low = free & (~free + np.uint32(1))                    # lowest free bit
        pick = np.zeros(m, np.int64)
        pick[~none] = np.log2(low[~none].astype(np.float64)).astype(np.int64)
        if rounds == 1 and prefer is not None:
            pr = np.asarray(prefer, np.int64)[pending] % colors
            take = (free >> pr.astype(np.uint32)) & np.uint32(1) != 0
            pick[take] = pr[take]
        res = np.concatenate([lk, ramp_in, ramp_out])
        owner = np.concatenate([np.repeat(np.arange(m), lens), np.arange(m), np.arange(m)])
        prio = rank[pending]
        # a route wins if it is the first (by rank) to pick its color on each of its resources;
        # entries grouped by color (one radix sort), then per color a minimum over ranks
        e_ok = np.flatnonzero(~none[owner])
        epick = pick[owner[e_ok]].astype(np.uint8)
        by_color = e_ok[np.argsort(epick, kind="stable")]
        bounds = np.concatenate([[0], np.cumsum(np.bincount(epick, minlength=colors))])
        lost = np.zeros(m, bool)
        groups = []
        for c in range(colors):
            e = by_color[bounds[c]:bounds[c + 1]]
            if not len(e):
                continue
            r, w = res[e], prio[owner[e]]
            np.minimum.at(first, r, w)
            lost[owner[e][first[r] != w]] = True
            first[r] = m_big
            groups.append((c, e))
        win = ~none & ~lost
        color[pending[win]] = pick[win]
        for c, e in groups:
            used[res[e[win[owner[e]]]]] |= np.uint32(1 << c)
        pending = pending[lost & ~none]
    return color, used, failed, rounds


class ColorState:
    def __init__(self, n_nodes: int, colors: int, cap: int):
        self.N, self.colors, self.cap = n_nodes, colors, cap
        self.all = (1 << colors) - 1
        self.full: dict[int, int] = {}                  # resource -> bitmask of colors at capacity
        self.cnt: dict[tuple[int, int], int] = {}       # (resource, color) -> routes, when cap > 1

    def resources(self, links, s, t):
        return (*links, 4 * self.N + s, 5 * self.N + t) if links else ()

    def blocked(self, res) -> int:
        full, m = self.full, 0
        for r in res:
            m |= full.get(r, 0)
        return m

    def take(self, res, c):
        bit, full = 1 << c, self.full
        if self.cap == 1:
            for r in res:
                full[r] = full.get(r, 0) | bit
            return
        cnt = self.cnt
        for r in res:
            k = cnt.get((r, c), 0) + 1
            cnt[(r, c)] = k
            if k >= self.cap:
                full[r] = full.get(r, 0) | bit

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


def repair(i, paths, src, dst, state: ColorState, color, rows, cols, ok, load, margin_limit):
    """Re-routes route i on links where one color is still free; the shortest such path wins (lowest
    color on ties).  Returns True on success (paths, color, load updated)."""
    s, t = src[i], dst[i]
    ramps = state.full.get(4 * state.N + s, 0) | state.full.get(5 * state.N + t, 0)
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
