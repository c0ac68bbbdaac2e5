"""Route: every transfer of one wafer gets a path of directed links and a color (docs/routing.md).

    res = route(alive, dead_links, Transfers(sr, sc, dr, dc, kind, tag), colors=21)
    res.offsets, res.links, res.color        # CSR paths (link id = ((row*cols)+col)*4 + dir) and colors

Dimension-ordered (XY, then YX) routes first, checked against defects with prefix sums and against
capacity with one bincount; PathFinder (A* with present-congestion and history costs in a growing
bounding box) for the few that are blocked or overused; greedy coloring in a fixed order with a
per-color re-search for the routes left without a color.  A transfer that cannot be routed raises
RoutingError naming it and the overused resources: a route is never dropped.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from ..errors import PlacementError
from .route_astar import Negotiator, NoPath
from .route_color import ColorState, bump, color_rounds, greedy, repair
from .route_grid import (
    components,
    dor_feasible,
    dor_corners,
    link_name,
    polyline_clear,
    polyline_links,
    segment_clear,
    usable_links,
)

KINDS = ("broadcast", "reduction", "activation", "inter-wafer", "all-reduce")


class RoutingError(PlacementError):
    """A transfer could not be routed; names it and the overused resources."""

    def __init__(self, message: str, *, index: int = -1, src=None, dst=None, tag=None,
                 overused: list | None = None):
        self.index, self.src, self.dst, self.tag = index, src, dst, tag
        self.overused = overused or []
        super().__init__(message)


@dataclasses.dataclass(frozen=True)
class Transfers:
    """One transfer per entry: a path from (src_row, src_col) to (dst_row, dst_col).  ``kind`` as in
    docs/schedule-format.md (0 broadcast, 1 reduction, 2 activation, 3 inter-wafer, 4 all-reduce); ``tag`` is the
    caller's id (reported in errors)."""
    src_row: np.ndarray
    src_col: np.ndarray
    dst_row: np.ndarray
    dst_col: np.ndarray
    kind: np.ndarray | None = None
    tag: np.ndarray | None = None

    def __post_init__(self):
        n = len(np.asarray(self.src_row))
        for f in ("src_row", "src_col", "dst_row", "dst_col"):
            object.__setattr__(self, f, np.asarray(getattr(self, f), dtype=np.int32).reshape(-1))
        kind = np.zeros(n, np.int8) if self.kind is None else np.asarray(self.kind, np.int8).reshape(-1)
        tag = np.arange(n, dtype=np.int64) if self.tag is None else np.asarray(self.tag, np.int64).reshape(-1)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "tag", tag)
        if any(len(getattr(self, f)) != n for f in ("src_col", "dst_row", "dst_col", "kind", "tag")):
            raise ValueError("Transfers: all arrays must have the same length")

    def __len__(self) -> int:
        return len(self.src_row)


@dataclasses.dataclass(frozen=True)
class RouteOptions:
    seed: int = 0                 # orders the re-routed nets of PathFinder iterations > 1
    max_iterations: int = 50      # PathFinder iterations before RoutingError
    pres_fac: float = 0.5         # present-congestion factor of the first iteration
    pres_mult: float = 1.6        # its growth per iteration
    hist_fac: float = 0.5         # history cost added per unit of overuse per iteration
    bbox_margin: int = 3          # A* bounding box: the transfer's box grown by this (doubled as needed)
    repair_margin: int = 64       # largest margin of the per-color re-search of uncolored routes
    soft_load: float = 0.6        # searched routes pay soft_fac per route above this fraction of a
    soft_fac: float = 0.05        # link's capacity (spare colors for the coloring)


@dataclasses.dataclass(frozen=True, eq=False)
class RouteResult:
    offsets: np.ndarray           # int64 [R+1]
    links: np.ndarray             # int32 [offsets[-1]]
    color: np.ndarray             # int16 [R]
    link_load: np.ndarray         # int32 [rows, cols, 4]: routes per directed link
    ramp_in: np.ndarray           # int32 [rows, cols]: routes starting at the core (ramp input)
    ramp_out: np.ndarray          # int32 [rows, cols]: routes ending at the core (ramp output)
    total_hops: int
    lower_bound: int              # sum of |dr| + |dc|
    max_link_load: int
    colors_used: int
    iterations: int               # PathFinder iterations (0: the fast path sufficed)
    stats: dict                   # routes per stage, searches, seconds

    def path(self, i: int) -> np.ndarray:
        return self.links[self.offsets[i]:self.offsets[i + 1]]


def _fail(t: Transfers, i: int, why: str, overused=()):
    src = (int(t.src_row[i]), int(t.src_col[i]))
    dst = (int(t.dst_row[i]), int(t.dst_col[i]))
    kind = KINDS[t.kind[i]] if 0 <= t.kind[i] < len(KINDS) else int(t.kind[i])
    msg = f"transfer {i} ({kind}, tag {int(t.tag[i])}) {src} -> {dst}: {why}"
    if overused:
        msg += "; overused: " + ", ".join(s for _, s in list(overused)[:8])
        if len(overused) > 8:
            msg += f" (+{len(overused) - 8} more)"
    return RoutingError(msg, index=i, src=src, dst=dst, tag=int(t.tag[i]), overused=list(overused))


def _check_inputs(alive, t: Transfers, colors: int, cap: int, ok):
    rows, cols = alive.shape
    if not 1 <= colors <= 32767 or cap < 1:
        raise ValueError(f"colors must be 1..32767 and link_capacity >= 1, got {colors}, {cap}")
    for i in np.flatnonzero((t.src_row < 0) | (t.src_row >= rows) | (t.src_col < 0) | (t.src_col >= cols)
                            | (t.dst_row < 0) | (t.dst_row >= rows) | (t.dst_col < 0) | (t.dst_col >= cols))[:1]:
        raise _fail(t, int(i), f"endpoint outside the {rows} x {cols} mesh")
    for i in np.flatnonzero(~alive[t.src_row, t.src_col] | ~alive[t.dst_row, t.dst_col])[:1]:
        raise _fail(t, int(i), "endpoint on a dead core")
    moving = (t.src_row != t.dst_row) | (t.src_col != t.dst_col)
    for name, r, c in (("ramp input", t.src_row, t.src_col), ("ramp output", t.dst_row, t.dst_col)):
        node = (r.astype(np.int64) * cols + c)[moving]
        cnt = np.bincount(node, minlength=rows * cols)
        over = np.flatnonzero(cnt > colors * cap)
        if len(over):
            k = int(over[0])
            i = int(np.flatnonzero(moving & ((r.astype(np.int64) * cols + c) == k))[colors * cap])
            raise _fail(t, i, f"{cnt[k]} routes share the {name} of core {divmod(k, cols)} "
                              f"(limit {colors} colors x {cap})")


class PathView:
    """``paths[i]`` (list of link ids) over CSR arrays, with ``overrides`` for re-routed paths."""

    def __init__(self, offs, links, overrides):
        self.offs, self.links, self.overrides = offs, links, overrides

    def __getitem__(self, i):
        p = self.overrides.get(i)
        return p if p is not None else self.links[self.offs[i]:self.offs[i + 1]].tolist()

    def __setitem__(self, i, p):
        self.overrides[i] = list(p)


def splice(offs: np.ndarray, links: np.ndarray, overrides: dict) -> tuple[np.ndarray, np.ndarray]:
    """CSR paths with the routes in ``overrides`` (index -> list of link ids) replaced."""
    if not overrides:
        return offs, links
    n = len(offs) - 1
    lens = np.diff(offs)
    idx = np.fromiter(overrides.keys(), np.int64, len(overrides))
    new_lens = lens.copy()
    new_lens[idx] = [len(overrides[i]) for i in idx.tolist()]
    new_offs = np.zeros(n + 1, np.int64)
    np.cumsum(new_lens, out=new_offs[1:])
    out = np.empty(int(new_offs[-1]), np.int32)
    keep = np.ones(n, bool)
    keep[idx] = False
    kl = np.repeat(keep, lens)
    shift = np.repeat(new_offs[:-1] - offs[:-1], lens)
    out[(np.arange(len(links), dtype=np.int64) + shift)[kl]] = links[kl]
    for i in idx.tolist():
        out[new_offs[i]:new_offs[i + 1]] = overrides[i]
    return new_offs, out


def _detour(pE, pS, sr, sc, dr, dc, fast, corners) -> int:
    """U / Z patterns via a row or column up to 3 away from either end for the routes whose XY and
    YX paths both hit a defect; updates ``fast`` and the ``corners`` arrays in place."""
    r1, c1, r2, c2 = corners
    before = int(fast.sum())
    for d in (1, -1, 2, -2, 3, -3):
        for via_row, base in ((True, sr), (False, sc), (True, dr), (False, dc)):
            b = np.flatnonzero(~fast)
            if not len(b):
                return int(fast.sum()) - before
            m = base[b] + d
            cr1, cc1, cr2, cc2 = (m, sc[b], m, dc[b]) if via_row else (sr[b], m, dr[b], m)
            okb = polyline_clear(pE, pS, sr[b], sc[b], cr1, cc1, cr2, cc2, dr[b], dc[b])
            g = b[okb]
            r1[g], c1[g], r2[g], c2[g] = cr1[okb], cc1[okb], cr2[okb], cc2[okb]
            fast[g] = True
    return int(fast.sum()) - before


def _on_hot(offs, links, load, cap, mask):
    """bool [n]: routes in ``mask`` that cross a link loaded above ``cap``."""
    rid = np.repeat(np.arange(len(offs) - 1), np.diff(offs))
    hot = np.zeros(len(offs) - 1, bool)
    hot[rid[(load[links] > cap) & mask[rid]]] = True
    return hot


def route(alive, dead_links, transfers: Transfers, colors: int, link_capacity: int = 1,
          options: RouteOptions | None = None) -> RouteResult:
    t0 = time.perf_counter()
    o = options or RouteOptions()
    alive = np.asarray(alive, dtype=bool)
    rows, cols = alive.shape
    N, cap = rows * cols, int(link_capacity)
    capT = colors * cap
    t = transfers
    n = len(t)
    ok = usable_links(alive, dead_links)
    _check_inputs(alive, t, colors, cap, ok)
    sr, sc, dr, dc = (a.astype(np.int64) for a in (t.src_row, t.src_col, t.dst_row, t.dst_col))

    # ---- fast path: three-segment patterns, vectorised ----
    # XY, else YX; around defects U / Z patterns via a nearby row or column; on overused links the
    # other order, then U / Z patterns spreading the crowd over nearby rows.  PathFinder gets the rest.
    pE, pS = segment_clear(ok)
    xy_ok, yx_ok = dor_feasible(pE, pS, sr, sc, dr, dc)
    fast = xy_ok | yx_ok
    r1, c1, r2, c2 = dor_corners(sr, sc, dr, dc, xy_ok)
    detoured = _detour(pE, pS, sr, sc, dr, dc, fast, (r1, c1, r2, c2))
    offs, links = polyline_links(cols, sr, sc, r1, c1, r2, c2, dr, dc)
    load = np.bincount(links[np.repeat(fast, np.diff(offs))], minlength=4 * N).astype(np.int32)
    flipped = jogged = 0
    jogged_idx = np.zeros(0, np.int64)
    if (load > capT).any():                  # flip the plain routes on overused links to the other order
        hot = _on_hot(offs, links, load, capT, fast)
        flip = np.flatnonzero(hot & xy_ok & yx_ok & (r1 == sr) & (c1 == dc) & (r2 == sr) & (c2 == dc))
        flipped = len(flip)
        r1[flip], c1[flip], r2[flip], c2[flip] = dr[flip], sc[flip], dr[flip], sc[flip]
        offs, links = polyline_links(cols, sr, sc, r1, c1, r2, c2, dr, dc)
        load = np.bincount(links[np.repeat(fast, np.diff(offs))], minlength=4 * N).astype(np.int32)
    if (load > capT).any():                  # spread the rest over nearby rows
        hot = np.flatnonzero(_on_hot(offs, links, load, capT, fast))
        hot = hot[np.lexsort((sc[hot], sr[hot]))]
        soft = max(1, int(o.soft_load * capT))
        spread = int(min(16, -(-int(load.max()) // soft)))
        d = 1 + np.arange(len(hot)) % spread
        m = np.where(sr[hot] >= rows // 2, sr[hot] - d, sr[hot] + d)
        okp = polyline_clear(pE, pS, sr[hot], sc[hot], m, sc[hot], m, dc[hot], dr[hot], dc[hot])
        hot, m = hot[okp], m[okp]
        jogged, jogged_idx = len(hot), hot
        r1[hot], c1[hot], r2[hot], c2[hot] = m, sc[hot], m, dc[hot]
        offs, links = polyline_links(cols, sr, sc, r1, c1, r2, c2, dr, dc)
        load = np.bincount(links[np.repeat(fast, np.diff(offs))], minlength=4 * N).astype(np.int32)
    dor = fast
    t1 = time.perf_counter()

    # ---- PathFinder for the blocked transfers and those still on overused links ----
    pending = set(np.flatnonzero(~dor).tolist())
    dor_mask = dor.copy()
    src_node = (sr * cols + sc).tolist()
    dst_node = (dr * cols + dc).tolist()
    neg = Negotiator(rows, cols, ok.reshape(-1).astype(np.uint8).tobytes(), load.tolist(), capT,
                     src_node, dst_node, offs, links, dor_mask, o)
    if neg.over:
        pending.update(neg.routes_on(set(neg.over)))
    try:
        stuck = neg.run(sorted(pending))
    except NoPath as e:                      # find the first transfer whose ends defects separate
        lab = components(ok)
        cut = np.flatnonzero(lab[t.src_row, t.src_col] != lab[t.dst_row, t.dst_col])
        raise _fail(t, int(cut[0]) if len(cut) else e.index,
                    "no path: defects disconnect the source from the destination") from None
    if stuck:
        over = sorted(neg.over)
        raise _fail(t, stuck[0], f"congestion not resolved in {o.max_iterations} PathFinder iterations "
                                 f"({len(stuck)} routes on {len(over)} overused links)",
                    [(lk, f"{link_name(lk, cols)} load {neg.load[lk]}/{capT}") for lk in over])
    t2 = time.perf_counter()

    # ---- colors ----
    offs, links = splice(offs, links, neg.paths)
    lens = np.diff(offs)
    # routes moved off crowded links (searched or jogged) first, then the rest, longest first
    crowded = np.zeros(n, bool)
    crowded[list(neg.paths)] = True
    crowded[jogged_idx] = True
    order = np.lexsort((np.arange(n), -lens, ~crowded))
    src_a, dst_a = sr * cols + sc, dr * cols + dc
    if cap == 1:
        color, used, failed, rounds = color_rounds(offs, links, src_a, dst_a, N, colors, order,
                                                   prefer=t.kind)
        state = ColorState(N, colors, cap)
        state.full = memoryview(used)
    else:                      # several routes per (link, color): the plain greedy
        paths_all = PathView(offs, links, {})
        state = ColorState(N, colors, cap)
        color = np.zeros(n, dtype=np.int16)
        failed = greedy(order.tolist(), paths_all, src_node, dst_node, state, color)
        rounds = 1
    paths = PathView(offs, links, {})
    load_l = np.bincount(links, minlength=4 * N).astype(np.int64)
    okb = neg.ok
    for i in failed:
        if not (repair(i, paths, src_node, dst_node, state, color, rows, cols, okb, load_l, o.repair_margin)
                or bump(i, paths, src_node, dst_node, state, color, rows, cols, okb, load_l, o.repair_margin)):
            res = state.resources(paths[i], src_node[i], dst_node[i])
            hot = [r for r in res if state.full[r] == state.all]
            names = [(r, (f"{link_name(r, cols)} load {int(load_l[r])}" if r < 4 * N else
                          f"{'ramp in' if r < 5 * N else 'ramp out'} of core {divmod(r % N, cols)}")
                      + f", all {colors} colors taken") for r in hot]
            raise _fail(t, i, f"no color free on its path and no path with a free color "
                              f"({colors} colors x {cap} per link)", names)
    offs, out = splice(offs, links, paths.overrides)
    t3 = time.perf_counter()

    # ---- result ----
    lens = np.diff(offs)
    offsets = offs
    load = np.bincount(out, minlength=4 * N).astype(np.int32)
    moving = lens > 0
    ramp_in = np.bincount((sr * cols + sc)[moving], minlength=N).astype(np.int32).reshape(rows, cols)
    ramp_out = np.bincount((dr * cols + dc)[moving], minlength=N).astype(np.int32).reshape(rows, cols)
    if (load > capT).any() or (~ok.reshape(-1)[out]).any():
        raise AssertionError("router produced an overused or unusable link")   # internal invariant
    stats = {"routes": n, "fast_path": int(dor_mask.sum()), "detoured": detoured, "flipped": flipped, "jogged": jogged,
             "searched": len(neg.paths), "searches": neg.searches, "color_rounds": rounds,
             "color_repaired": len(failed),
             "seconds_fast": t1 - t0, "seconds_pathfinder": t2 - t1, "seconds_color": t3 - t2,
             "seconds": time.perf_counter() - t0}
    return RouteResult(offsets=offsets, links=out, color=color, link_load=load.reshape(rows, cols, 4),
                       ramp_in=ramp_in, ramp_out=ramp_out, total_hops=int(offsets[-1]),
                       lower_bound=int((np.abs(dr - sr) + np.abs(dc - sc)).sum()),
                       max_link_load=int(load.max()) if len(load) else 0,
                       colors_used=len(np.unique(color[moving])), iterations=neg.iterations,
                       stats=stats)
