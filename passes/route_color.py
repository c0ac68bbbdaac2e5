"""Color assignment (docs/routing.md): one color per route, used on every link it crosses.

Resources of a route with at least one hop: each directed link it takes (= the output port of the
core it leaves and the input port of the core it enters), the ramp input of its source core
(resource id ``4N + src``) and the ramp output of its destination core (``5N + dst``), N = rows*cols.
Each (resource, color) carries at most ``cap`` routes.  Greedy in a fixed order (longest route
first, then index); a route left without a free color is ripped up and re-searched per color on
the links where that color is still free (unit-cost A*, bbox grown up to ``repair_margin``).
"""
from __future__ import annotations

from .route_astar import astar, covers_all, grow_bbox


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
