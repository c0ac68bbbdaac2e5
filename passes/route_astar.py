"""A* on the mesh and the PathFinder negotiation loop (docs/routing.md).

Only the transfers the vectorised fast path could not settle come here, so the search is plain
Python over flat lists: ``ok`` (bytes, one per directed link), ``load`` and ``hist`` (lists indexed by
link id).  Cost of taking link l when it already carries ``occ`` routes (capacity ``cap``):

    (1 + hist[l]) * (1 + pres_fac * max(0, occ + 1 - cap)) + soft_fac * max(0, occ + 1 - soft)

so every link costs at least 1 and the Manhattan distance is an admissible heuristic.  The soft
term (``soft`` = a fraction of the capacity) spreads searched routes before links fill up, so
that the coloring that follows has colors to spare on them.
"""
from __future__ import annotations

from heapq import heappop, heappush

import numpy as np

INF = float("inf")


class NoPath(Exception):
    """Route ``index`` has no path at all (its ends are in different components)."""

    def __init__(self, index: int):
        self.index = index
        super().__init__(f"route {index}: no path")


def astar(s: int, t: int, bbox, cols: int, ok: bytes, load, hist, cap: int, pf: float,
          full=None, color: int = -1, soft: int = 1 << 30, soft_fac: float = 0.0):
    """Cheapest path of directed link ids from node s to node t inside bbox (r0, r1, c0, c1,
    inclusive), or None.  With ``color >= 0`` the search is unit-cost and only takes links whose
    ``full`` mask (``full[link]``: bitmask of colors at capacity, 0 if none) leaves that color free."""
    if color >= 0:
        return _search(s, t, bbox, cols, ok, None, None, 0, 0.0, full, 1 << color, soft, soft_fac)
    return _search(s, t, bbox, cols, ok, load, hist, cap, pf, None, 0, soft, soft_fac)


def _search(s, t, bbox, cols, ok, load, hist, cap, pf, full, bit, soft, soft_fac):
    # The router's hot loop.  The four directions are unrolled in the order E, S, W, N (the order
    # ties are broken in); a link's weight is the cost formula of the module docstring with the
    # same float arithmetic, or 1 in the unit-cost (color) search.
    r0, r1, c0, c1 = bbox
    tr, tc = divmod(t, cols)
    sr, sc = divmod(s, cols)
    g = {s: 0.0}
    gget = g.get
    prev = {}
    closed = set()
    h0 = abs(sr - tr) + abs(sc - tc)
    heap = [(h0, h0, s)]
    pop, push = heappop, heappush
    found = False
    while heap:
        u = pop(heap)[2]
        if u == t:
            found = True
            break
        if u in closed:
            continue
        closed.add(u)
        gu = g[u]
        ur, uc = divmod(u, cols)
        hr, hc = abs(ur - tr), abs(uc - tc)
        base = u * 4
        # east
        link = base + 0
        if uc < c1 and ok[link]:
            if bit:
                ng = INF if full[link] & bit else gu + 1.0
            else:
                occ, hl = load[link], hist[link]
                w = 1.0 + hl if occ < cap else (1.0 + hl) * (1.0 + pf * (occ + 1 - cap))
                if occ >= soft:
                    w += soft_fac * (occ + 1 - soft)
                ng = gu + w
            v = u + 1
            if ng < gget(v, INF):
                g[v] = ng
                prev[v] = link
                hv = hr + abs(uc + 1 - tc)
                push(heap, (ng + hv, hv, v))
        # south
        link = base + 1
        if ur < r1 and ok[link]:
            if bit:
                ng = INF if full[link] & bit else gu + 1.0
            else:
                occ, hl = load[link], hist[link]
                w = 1.0 + hl if occ < cap else (1.0 + hl) * (1.0 + pf * (occ + 1 - cap))
                if occ >= soft:
                    w += soft_fac * (occ + 1 - soft)
                ng = gu + w
            v = u + cols
            if ng < gget(v, INF):
                g[v] = ng
                prev[v] = link
                hv = abs(ur + 1 - tr) + hc
                push(heap, (ng + hv, hv, v))
        # west
        link = base + 2
        if uc > c0 and ok[link]:
            if bit:
                ng = INF if full[link] & bit else gu + 1.0
            else:
                occ, hl = load[link], hist[link]
                w = 1.0 + hl if occ < cap else (1.0 + hl) * (1.0 + pf * (occ + 1 - cap))
                if occ >= soft:
                    w += soft_fac * (occ + 1 - soft)
                ng = gu + w
            v = u - 1
            if ng < gget(v, INF):
                g[v] = ng
                prev[v] = link
                hv = hr + abs(uc - 1 - tc)
                push(heap, (ng + hv, hv, v))
        # north
        link = base + 3
        if ur > r0 and ok[link]:
            if bit:
                ng = INF if full[link] & bit else gu + 1.0
            else:
                occ, hl = load[link], hist[link]
                w = 1.0 + hl if occ < cap else (1.0 + hl) * (1.0 + pf * (occ + 1 - cap))
                if occ >= soft:
                    w += soft_fac * (occ + 1 - soft)
                ng = gu + w
            v = u - cols
            if ng < gget(v, INF):
                g[v] = ng
                prev[v] = link
                hv = abs(ur - 1 - tr) + hc
                push(heap, (ng + hv, hv, v))
    if not found:
        return None
    path = []
    v = t
    while v != s:
        link = prev[v]
        path.append(link)
        v = link >> 2
    path.reverse()
    return path


def grow_bbox(s: int, t: int, cols: int, rows: int, margin: int):
    sr, sc = divmod(s, cols)
    tr, tc = divmod(t, cols)
    return (max(0, min(sr, tr) - margin), min(rows - 1, max(sr, tr) + margin),
            max(0, min(sc, tc) - margin), min(cols - 1, max(sc, tc) + margin))


def covers_all(bbox, rows: int, cols: int) -> bool:
    return bbox == (0, rows - 1, 0, cols - 1)


def loop_erase(s: int, links: list[int], cols: int) -> list[int]:
    """The path with every cycle cut out (a route never visits a core twice)."""
    step = (1, cols, -1, -cols)
    nodes, out, idx = [s], [], {s: 0}
    for link in links:
        v = (link >> 2) + step[link & 3]
        j = idx.get(v)
        if j is None:
            idx[v] = len(nodes)
            nodes.append(v)
            out.append(link)
        else:
            for u in nodes[j + 1:]:
                del idx[u]
            del nodes[j + 1:]
            del out[j:]
    return out


class Negotiator:
    """PathFinder over the routes that need search.  ``paths`` maps a route index to its list of
    link ids for every route that left the fast path; the fast-path routes stay in the CSR arrays
    (``dor_offsets``/``dor_links``) until ripped up."""

    def __init__(self, rows, cols, ok, load, cap, src, dst, dor_offsets, dor_links, dor_mask, opts):
        self.rows, self.cols, self.cap, self.opts = rows, cols, cap, opts
        self.soft = max(1, int(opts.soft_load * cap))
        self.ok = ok
        self.load = load                                # list, shared with the caller
        self.hist = [0.0] * len(load)
        self.src, self.dst = src, dst                   # node ids (lists)
        self.dor_offsets, self.dor_links = dor_offsets, dor_links
        self.dor_mask = dor_mask                        # bool [n]: route still on its fast path
        self.paths: dict[int, list[int]] = {}
        self.margin: dict[int, int] = {}
        self.over: set[int] = set()
        self.iterations = 0
        self.searches = 0
        over = np.flatnonzero(np.asarray(load) > cap)
        self.over.update(over.tolist())

    # ---- occupancy ----
    def _remove(self, i):
        if self.dor_mask[i]:
            a, b = self.dor_offsets[i], self.dor_offsets[i + 1]
            links = self.dor_links[a:b].tolist()
            self.dor_mask[i] = False
        else:
            links = self.paths.pop(i)
        load, cap = self.load, self.cap
        for link in links:
            load[link] -= 1
            if load[link] <= cap:
                self.over.discard(link)

    def _add(self, i, links):
        self.paths[i] = links
        load, cap = self.load, self.cap
        for link in links:
            load[link] += 1
            if load[link] > cap:
                self.over.add(link)

    def route_one(self, i, pf):
        s, t = self.src[i], self.dst[i]
        m = self.margin.get(i, self.opts.bbox_margin)
        while True:
            bbox = grow_bbox(s, t, self.cols, self.rows, m)
            self.searches += 1
            p = astar(s, t, bbox, self.cols, self.ok, self.load, self.hist, self.cap, pf, soft=self.soft,
                      soft_fac=self.opts.soft_fac)
            if p is not None:
                self.margin[i] = m
                return p
            if covers_all(bbox, self.rows, self.cols):
                return None                             # disconnected (checked earlier by the caller)
            m = max(2 * m, 1)

    def splice(self, i, pf):
        """The route's dimension-ordered path with a small A* detour around each stretch of unusable
        links, loop-erased; None if a detour needs more than a small box (the caller then searches
        the whole route)."""
        base = self.dor_links[self.dor_offsets[i]:self.dor_offsets[i + 1]].tolist()
        ok, cols, rows = self.ok, self.cols, self.rows
        out, k, n = [], 0, len(base)
        while k < n:
            if ok[base[k]]:
                out.append(base[k])
                k += 1
                continue
            q = k
            while q + 1 < n and not ok[base[q + 1]]:
                q += 1
            a = base[k] >> 2                            # alive: end of an usable link, or the source
            b = base[q + 1] >> 2 if q + 1 < n else self.dst[i]
            for m in (1, 3):
                self.searches += 1
                p = astar(a, b, grow_bbox(a, b, cols, rows, m), cols, ok, self.load, self.hist, self.cap, pf,
                          soft=self.soft, soft_fac=self.opts.soft_fac)
                if p is not None:
                    break
            else:
                return None
            out.extend(p)
            k = q + 1
        return loop_erase(self.src[i], out, cols)

    def routes_on(self, links: set[int]) -> list[int]:
        """Routes (fast-path or searched) that use any of ``links``."""
        out = set()
        if links:
            arr = np.fromiter(links, dtype=np.int64)
            hit = np.isin(self.dor_links, arr)
            if hit.any():
                rid = np.searchsorted(self.dor_offsets, np.flatnonzero(hit), side="right") - 1
                out.update(int(r) for r in np.unique(rid) if self.dor_mask[r])
            for i, p in self.paths.items():
                if not links.isdisjoint(p):
                    out.add(i)
        return sorted(out)

    def run(self, pending: list[int]):
        """Negotiate until no link is over capacity; returns the routes still overusing links at the
        iteration limit (empty on success)."""
        o = self.opts
        rng = np.random.default_rng(o.seed)
        pf = o.pres_fac
        todo = sorted(set(pending))
        while todo:
            self.iterations += 1
            order = [todo[k] for k in rng.permutation(len(todo))] if self.iterations > 1 else todo
            for i in order:
                blocked = not self.dor_mask[i] and i not in self.paths
                if not blocked:
                    self._remove(i)
                if self.iterations > 1:
                    self.margin[i] = 2 * self.margin.get(i, o.bbox_margin)
                p = self.splice(i, pf) if blocked else None
                if p is None:
                    p = self.route_one(i, pf)
                if p is None:
                    raise NoPath(i)
                self._add(i, p)
            if not self.over:
                return []
            if self.iterations >= o.max_iterations:
                return self.routes_on(set(self.over))
            for link in self.over:
                self.hist[link] += o.hist_fac * (self.load[link] - self.cap)
            pf *= o.pres_mult
            todo = self.routes_on(set(self.over))
        return []
