"""Route checks (2 for routes, 4, 5 of docs/schedule-format.md), vectorised over all links at once.

Link id = ((row * cols) + col) * 4 + dir, dir 0 east, 1 south, 2 west, 3 north.  Router model:
each core has 5 ports (E, S, W, N, ramp), input and output counted separately.  A link leaving
core c in direction d uses c's output port d and the neighbour's input port opposite(d); a route
with at least one link uses its source's ramp input and its destination's ramp output; a
zero-length route uses no port.  Per (core, port, in/out, color) at most ``link_capacity`` routes.
(For the four mesh ports this is the same constraint as "per (directed link, color)", so it is
checked once, as ``color-reuse``; the ramp is checked as ``port-conflict``.)
"""
from __future__ import annotations

import numpy as np

from .checks import Sink, op_label, sorted_unique

DIRS = "ESWN"
DR = np.array([0, 1, 0, -1], dtype=np.int64)
DC = np.array([1, 0, -1, 0], dtype=np.int64)
KINDS = ("broadcast", "reduction", "activation", "inter-wafer", "all-reduce")


def link_tables(alive: np.ndarray, dead_links: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per directed link id: (flags uint8, far-end core int64 or -1).  Flags: 1 leaves the rectangle,
    2 one of its end cores is dead, 4 the link is dead (a dead link is dead both ways)."""
    rows, cols = alive.shape
    dead = ~alive
    f = np.zeros((rows, cols, 4), dtype=np.uint8)
    f[:, -1, 0] |= 1
    f[-1, :, 1] |= 1
    f[:, 0, 2] |= 1
    f[0, :, 3] |= 1
    f[dead] |= 2
    f[:, :-1, 0] |= (dead[:, 1:] * 2).astype(np.uint8)
    f[:-1, :, 1] |= (dead[1:, :] * 2).astype(np.uint8)
    f[:, 1:, 2] |= (dead[:, :-1] * 2).astype(np.uint8)
    f[1:, :, 3] |= (dead[:-1, :] * 2).astype(np.uint8)
    if dead_links.size:
        r, c, d = dead_links[:, 0], dead_links[:, 1], dead_links[:, 2]
        r2, c2 = r + (d == 1), c + (d == 0)
        ok = (d >= 0) & (d <= 1) & (r >= 0) & (c >= 0) & (r2 < rows) & (c2 < cols)
        f[r[ok], c[ok], d[ok]] |= 4
        f[r2[ok], c2[ok], d[ok] + 2] |= 4
    it = np.int32 if rows * cols * 4 < 2**31 else np.int64
    core = np.arange(rows * cols, dtype=it)[:, None]
    dest = (core + np.array([1, cols, -1, -cols], dtype=it)).ravel()
    f = f.ravel()
    dest[(f & 1) != 0] = -1
    return f, dest


def _groups(keys: np.ndarray, cap: int):
    """(order, starts, ends) of runs of equal keys (in sorted order) longer than ``cap``."""
    s = np.sort(keys)                       # a plain sort first: the argsort only when a run is too long
    if s.size <= cap or not (s[cap:] == s[:-cap]).any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.argsort(keys, kind="stable")
    s = keys[order]
    brk = np.flatnonzero(s[1:] != s[:-1]) + 1
    starts = np.concatenate([[0], brk]).astype(np.int64)
    ends = np.concatenate([brk, [s.size]]).astype(np.int64)
    bad = np.flatnonzero(ends - starts > cap)
    return order, starts[bad], ends[bad]


def _first_per_route(off: np.ndarray, mask: np.ndarray):
    """Routes with at least one masked link, and the index of the first such link."""
    pos = np.flatnonzero(mask)
    r = np.searchsorted(off, pos, side="right") - 1          # sorted, as pos is
    first = np.flatnonzero(np.concatenate([[True], r[1:] != r[:-1]])) if r.size else r
    return r[first], pos[first]


def _reused(lk: np.ndarray, col: np.ndarray, load: np.ndarray, cap: int, nck: int) -> np.ndarray:
    """Indices (into lk) of the link entries on links where some color has more than ``cap`` routes."""
    if cap == 1 and nck <= 64:        # sort-free: a color bitmask per link, popcount < load
        ut = np.uint32 if nck <= 32 else np.uint64
        bits = np.left_shift(ut(1), np.arange(nck, dtype=ut))
        mask = np.zeros(load.size, dtype=ut)
        np.bitwise_or.at(mask, lk, bits[col])
        bad = np.bitwise_count(mask) < load
    else:
        bad = load > cap
    return np.flatnonzero(bad[lk])


def check_routes(w, ops: list, colors: list, cap: int, ncolors: int, sink: Sink) -> dict:
    ro, k = w.routes, w.index
    rows, cols = w.alive.shape
    nlink = rows * cols * 4
    sr, sc, dr, dc = ro["route_src_row"], ro["route_src_col"], ro["route_dst_row"], ro["route_dst_col"]
    kind, color, off, links = ro["route_kind"], ro["route_color"], ro["offsets"], ro["links"]
    nr_routes = kind.size
    lengths = np.diff(off)

    def rid(j: int) -> int:
        return int(np.searchsorted(off, j, side="right") - 1)

    def rdesc(i: int) -> str:
        kd = int(kind[i])
        kname = KINDS[kd] if 0 <= kd < len(KINDS) else f"kind {kd}"
        o1, o2 = int(ro["route_op_src"][i]), int(ro["route_op_dst"][i])
        ends = op_label(ops, o1) if o1 == o2 else f"{op_label(ops, o1) if o1 >= 0 else 'edge'} -> " \
            f"{op_label(ops, o2) if o2 >= 0 else 'edge'}"
        return (f"route {i} ({kname}, {ends}, color {int(color[i])}, "
                f"({int(sr[i])}, {int(sc[i])}) -> ({int(dr[i])}, {int(dc[i])}))")

    flags, dest = link_tables(w.alive, w.dead_links)
    inr = (links >= 0) & (links < nlink)
    all_in = bool(inr.all())
    lk = links if all_in else np.where(inr, links, 0)
    f = flags[lk]
    if not all_in:
        f[~inr] = 1
    on = (f & 1) == 0
    core, nb = lk >> 2, dest[lk]

    def lname(j: int) -> str:
        x = int(links[j])
        if not inr[j]:
            return f"link id {x}"
        return f"link ({x // 4 // cols}, {x // 4 % cols})->{DIRS[x % 4]}"

    def at(j: int) -> str:
        return f"{lname(j)} (link {int(j - off[rid(j)])})"

    routes, first = _first_per_route(off, ~on)
    fl = dict(zip(routes.tolist(), first.tolist()))
    sink.add("route-off-mesh", k, routes, lambda i: f"{rdesc(i)} leaves the rectangle at {at(fl[i])}")
    ends_on = [(a >= 0) & (a < n) for a, n in ((sr, rows), (sc, cols), (dr, rows), (dc, cols))]
    src_on, dst_on = ends_on[0] & ends_on[1], ends_on[2] & ends_on[3]
    sink.add("route-off-mesh", k, np.flatnonzero(~(src_on & dst_on)), lambda i: f"{rdesc(i)} has an end off the mesh")
    src = np.where(src_on, sr * cols + sc, -1)
    dst = np.where(dst_on, dr * cols + dc, -1)

    # 4. connectivity
    nonzero = lengths > 0
    fidx, lidx = off[:-1][nonzero], off[1:][nonzero] - 1
    brk = np.zeros(links.size, dtype=bool)
    brk[1:] = core[1:] != nb[:-1]
    brk[fidx] = False
    brk[1:] &= on[:-1] & inr[1:]
    routes, first = _first_per_route(off, brk)
    fb = dict(zip(routes.tolist(), first.tolist()))
    sink.add("route-broken", k, routes, lambda i: f"{rdesc(i)} is cut: {at(fb[i])} does not start where "
             f"{lname(fb[i] - 1)} arrives")
    bad_start = np.flatnonzero(nonzero)[(core[fidx] != src[nonzero]) | ~inr[fidx]]
    sink.add("route-start", k, bad_start, lambda i: f"{rdesc(i)}: first link {lname(int(off[i]))} does not leave "
             f"the source core")
    bad_end = np.flatnonzero(nonzero)[(nb[lidx] != dst[nonzero]) | ~on[lidx]]
    sink.add("route-end", k, bad_end, lambda i: f"{rdesc(i)}: last link {lname(int(off[i + 1] - 1))} does not "
             f"arrive at the destination core")
    sink.add("route-empty", k, np.flatnonzero(~nonzero & (src != dst)),
             lambda i: f"{rdesc(i)} has no links but its source and destination differ")

    # 2. dead cores and dead links
    alive = w.alive.ravel()
    routes, first = _first_per_route(off, (f & 2) != 0)
    fd = dict(zip(routes.tolist(), first.tolist()))
    end_dead = np.flatnonzero((src_on & ~alive[np.maximum(src, 0)]) | (dst_on & ~alive[np.maximum(dst, 0)]))

    def dead(i: int) -> str:
        if i not in fd:
            e = int(src[i]) if src[i] >= 0 and not alive[src[i]] else int(dst[i])
            return f"{rdesc(i)} starts or ends on dead core ({e // cols}, {e % cols})"
        j = fd[i]
        x = int(core[j]) if not alive[core[j]] else int(nb[j])
        return f"{rdesc(i)} crosses dead core ({x // cols}, {x % cols}) at {at(j)}"

    sink.add("route-dead-core", k, np.union1d(routes, end_dead), dead)
    routes, first = _first_per_route(off, (f & 4) != 0)
    fk = dict(zip(routes.tolist(), first.tolist()))
    sink.add("route-dead-link", k, routes, lambda i: f"{rdesc(i)} uses dead {at(fk[i])}")

    # 5. colors, link loads, ports
    allowed = np.asarray(sorted(set(colors)), dtype=np.int64)
    sink.add("color-not-allowed", k, np.flatnonzero(~np.isin(color, allowed)),
             lambda i: f"{rdesc(i)} uses color {int(color[i])}, not in the allowed colors {allowed.tolist()}")
    nck = max(ncolors, int(color.max()) + 1 if color.size else 1)
    colc = np.clip(color, 0, nck - 1)
    col_link = np.repeat(colc.astype(np.uint8 if nck <= 255 else np.int64), lengths)
    lpos = np.flatnonzero(inr) if not all_in else None
    lk_in = lk if all_in else lk[lpos]
    col_in = col_link if all_in else col_link[lpos]
    load = np.bincount(lk_in, minlength=nlink)
    cand = _reused(lk_in, col_in, load, cap, nck)
    cpos = cand if all_in else lpos[cand]
    order, starts, ends = _groups(lk_in[cand].astype(np.int64) * nck + col_in[cand], cap)

    def reuse(g: int) -> str:
        js = cpos[order[starts[g]:ends[g]]]
        users = sorted({rid(j) for j in js[:64].tolist()})
        return (f"{lname(int(js[0]))} color {int(col_link[js[0]])} used {int(ends[g] - starts[g])} times "
                f"(> {cap}) by routes {', '.join(map(str, users[:8]))}")

    sink.add("color-reuse", k, np.arange(starts.size), reuse)
    limit = len(colors) * cap
    sink.add("link-overload", k, np.flatnonzero(load > limit),
             lambda j: f"link ({j // 4 // cols}, {j // 4 % cols})->{DIRS[j % 4]} carries {int(load[j])} routes "
             f"> {limit} (colors x link_capacity)")
    for end, port in ((src, "input"), (dst, "output")):
        sel = np.flatnonzero(nonzero & (end >= 0))
        order, starts, ends = _groups(end[sel] * nck + colc[sel], cap)

        def ramp(g: int, sel=sel, order=order, starts=starts, ends=ends, end=end, port=port) -> str:
            users = sel[order[starts[g]:ends[g]]]
            e0 = int(end[users[0]])
            return (f"core ({e0 // cols}, {e0 % cols}) ramp {port} color {int(colc[users[0]])} used by "
                    f"{users.size} routes (> {cap}): {', '.join(map(str, users[:8].tolist()))}")

        sink.add("port-conflict", k, np.arange(starts.size), ramp)

    manhattan = np.abs(sr - dr) + np.abs(sc - dc)
    return {"routes": int(nr_routes), "hops": int(links.size), "lower_bound": int(manhattan.sum()),
            "max_link_load": int(load.max()) if load.size else 0,
            "colors_used": int(sorted_unique(color).size), "src": src, "dst": dst, "lengths": lengths}
