"""The router's restructured kernels equal straightforward references on random small inputs:
``color_rounds`` (routes grouped by color in rank order) and the unrolled A* (``astar``)."""
from __future__ import annotations

from heapq import heappop, heappush

import numpy as np
import pytest

from wafercc.passes.route_astar import astar, grow_bbox
from wafercc.passes.route_color import Masks, color_rounds
from wafercc.passes.route_grid import polyline_links


def _rounds_reference(paths, src, dst, n_nodes, colors, order, prefer):
    """First-fit rounds in plain Python: every uncolored route picks its lowest free color (its
    preferred one in round 1 if free); on each (resource, color) the route earliest in ``order``
    wins, the others retry next round."""
    rank = {int(r): k for k, r in enumerate(order)}
    used = {}
    color = [0] * len(paths)
    pending = [i for i in range(len(paths)) if paths[i]]
    failed, rounds = [], 0
    while pending:
        rounds += 1
        res = {i: [*paths[i], 4 * n_nodes + src[i], 5 * n_nodes + dst[i]] for i in pending}
        pick = {}
        for i in pending:
            blocked = 0
            for r in res[i]:
                blocked |= used.get(r, 0)
            free = [c for c in range(colors) if not blocked >> c & 1]
            if not free:
                failed.append(i)
                continue
            p = prefer[i] % colors if prefer is not None else -1
            pick[i] = p if rounds == 1 and p in free else free[0]
        best = {}
        for i, c in pick.items():
            for r in res[i]:
                if (r, c) not in best or rank[i] < rank[best[(r, c)]]:
                    best[(r, c)] = i
        lost = [i for i, c in pick.items() if any(best[(r, c)] != i for r in res[i])]
        for i, c in pick.items():
            if i not in lost:
                color[i] = c
                for r in res[i]:
                    used[r] = used.get(r, 0) | 1 << c
        pending = sorted(lost)
    return color, used, failed, rounds


@pytest.mark.parametrize("seed", range(6))
def test_color_rounds_equals_reference(seed):
    rng = np.random.default_rng(seed)
    rows, cols, n = 5, 6, 60
    N = rows * cols
    sr, sc, dr, dc = (rng.integers(0, m, n) for m in (rows, cols, rows, cols))
    offs, links = polyline_links(cols, sr, sc, sr, dc, sr, dc, dr, dc)        # XY routes
    src, dst = sr * cols + sc, dr * cols + dc
    colors = int(rng.integers(2, 6))
    order = rng.permutation(n)
    prefer = rng.integers(0, 5, n) if seed % 2 else None
    color, used, failed, rounds = color_rounds(offs, links, src, dst, N, colors, order, prefer=prefer)
    paths = [links[offs[i]:offs[i + 1]].tolist() for i in range(n)]
    rc, rused, rfailed, rrounds = _rounds_reference(paths, src.tolist(), dst.tolist(), N, colors, order,
                                                    None if prefer is None else prefer.tolist())
    assert color.tolist() == rc and failed == rfailed and rounds == rrounds
    assert {int(r): int(m) for r, m in enumerate(used) if m} == rused
    assert failed or rounds > 1 or colors >= n       # the inputs do contend


def _astar_reference(s, t, bbox, cols, ok, load, hist, cap, pf, full=None, color=-1, soft=1 << 30,
                     soft_fac=0.0):
    """The loop form of the search (directions E, S, W, N), as it was before the unrolling."""
    r0, r1, c0, c1 = bbox
    tr, tc = divmod(t, cols)
    steps = ((0, 1, 1), (1, 0, cols), (0, -1, -1), (-1, 0, -cols))
    g, prev, closed = {s: 0.0}, {}, set()
    h0 = abs(s // cols - tr) + abs(s % cols - tc)
    heap = [(h0, h0, s)]
    bit = 1 << color if color >= 0 else 0
    while heap:
        u = heappop(heap)[2]
        if u == t:
            path, v = [], t
            while v != s:
                path.append(prev[v])
                v = prev[v] >> 2
            return path[::-1]
        if u in closed:
            continue
        closed.add(u)
        ur, uc = divmod(u, cols)
        for d in range(4):
            link = u * 4 + d
            dr_, dc_, du = steps[d]
            vr, vc = ur + dr_, uc + dc_
            if not ok[link] or vr < r0 or vr > r1 or vc < c0 or vc > c1:
                continue
            if bit:
                if full[link] & bit:
                    continue
                w = 1.0
            else:
                occ, hl = load[link], hist[link]
                w = 1.0 + hl if occ < cap else (1.0 + hl) * (1.0 + pf * (occ + 1 - cap))
                if occ >= soft:
                    w += soft_fac * (occ + 1 - soft)
            ng = g[u] + w
            if ng < g.get(u + du, float("inf")):
                g[u + du], prev[u + du] = ng, link
                hv = abs(vr - tr) + abs(vc - tc)
                heappush(heap, (ng + hv, hv, u + du))
    return None


@pytest.mark.parametrize("seed", range(4))
def test_astar_equals_loop_reference(seed):
    rng = np.random.default_rng(seed)
    rows, cols = 24, 30
    N = rows * cols
    ok = (rng.random(4 * N) > 0.08).astype(np.uint8).tobytes()
    load = rng.integers(0, 8, 4 * N).tolist()
    hist = (rng.random(4 * N) * (rng.random(4 * N) < 0.2)).tolist()
    masks = rng.integers(0, 8, 4 * N).astype(np.uint32) & rng.integers(0, 8, 4 * N).astype(np.uint32)
    dict_masks = Masks({i: int(m) for i, m in enumerate(masks) if m})
    found = 0
    for _ in range(25):
        s, t = int(rng.integers(N)), int(rng.integers(N))
        bbox = grow_bbox(s, t, cols, rows, int(rng.integers(0, 4)))
        p = astar(s, t, bbox, cols, ok, load, hist, 5, 0.7, soft=3, soft_fac=0.05)
        assert p == _astar_reference(s, t, bbox, cols, ok, load, hist, 5, 0.7, soft=3, soft_fac=0.05)
        c = int(rng.integers(3))
        q = astar(s, t, bbox, cols, ok, None, None, 0, 0.0, full=memoryview(masks), color=c)
        assert q == astar(s, t, bbox, cols, ok, None, None, 0, 0.0, full=dict_masks, color=c)
        assert q == _astar_reference(s, t, bbox, cols, ok, None, None, 0, 0.0, full=masks, color=c)
        found += (p is not None) + (q is not None)
    assert 0 < found < 50            # some searches succeed, some are cut off by dead links or masks
