"""Mesh geometry for the router (docs/routing.md): directed link ids, the usable-link mask and
vectorised dimension-ordered (XY / YX) routes.

A directed link id is ``((row * cols) + col) * 4 + dir`` with dir 0 east, 1 south, 2 west, 3 north
(docs/schedule-format.md).  A dead link ``(row, col, 0|1)`` kills both directions of the east/south
link leaving (row, col); a link touching a dead core is unusable.
"""
from __future__ import annotations

import numpy as np

DR = (0, 1, 0, -1)      # row step of dir 0..3 (E, S, W, N)
DC = (1, 0, -1, 0)      # col step
OPPOSITE = (2, 3, 0, 1)


def usable_links(alive: np.ndarray, dead_links: np.ndarray) -> np.ndarray:
    """bool [rows, cols, 4]: directed link (row, col, dir) exists, is not dead and joins two alive cores."""
    a = np.asarray(alive, dtype=bool)
    rows, cols = a.shape
    east = a[:, :-1] & a[:, 1:]
    south = a[:-1, :] & a[1:, :]
    dl = np.asarray(dead_links, dtype=np.int64).reshape(-1, 3)
    if len(dl):
        bad = ((dl[:, 0] < 0) | (dl[:, 0] >= rows) | (dl[:, 1] < 0) | (dl[:, 1] >= cols)
               | ~np.isin(dl[:, 2], (0, 1)))
        if bad.any():
            raise ValueError(f"dead link {dl[bad][0].tolist()} outside the {rows} x {cols} mesh "
                             "or with dir not in (0 east, 1 south)")
        e, s = dl[dl[:, 2] == 0], dl[dl[:, 2] == 1]
        e = e[e[:, 1] < cols - 1]
        s = s[s[:, 0] < rows - 1]
        east[e[:, 0], e[:, 1]] = False
        south[s[:, 0], s[:, 1]] = False
    ok = np.zeros((rows, cols, 4), dtype=bool)
    ok[:, :-1, 0] = east
    ok[:, 1:, 2] = east
    ok[:-1, :, 1] = south
    ok[1:, :, 3] = south
    return ok


def segment_clear(ok: np.ndarray):
    """Prefix sums of unusable east links per row and south links per column, for O(1) checks of
    straight segments (a dead link is dead both ways, so east/south suffice)."""
    badE = (~ok[:, :-1, 0]).astype(np.int32)
    badS = (~ok[:-1, :, 1]).astype(np.int32)
    pE = np.zeros((ok.shape[0], ok.shape[1]), dtype=np.int32)
    pS = np.zeros((ok.shape[0], ok.shape[1]), dtype=np.int32)
    np.cumsum(badE, axis=1, out=pE[:, 1:])
    np.cumsum(badS, axis=0, out=pS[1:, :])
    return pE, pS


def _hclear(pE, r, c0, c1):
    lo, hi = np.minimum(c0, c1), np.maximum(c0, c1)
    return pE[r, hi] == pE[r, lo]


def _vclear(pS, c, r0, r1):
    lo, hi = np.minimum(r0, r1), np.maximum(r0, r1)
    return pS[hi, c] == pS[lo, c]


def dor_feasible(pE, pS, sr, sc, dr, dc):
    """(xy_ok, yx_ok) bool arrays: the XY route (along the source row, then the destination column)
    and the YX route avoid every unusable link (hence every dead core)."""
    xy = _hclear(pE, sr, sc, dc) & _vclear(pS, dc, sr, dr)
    yx = _vclear(pS, sc, sr, dr) & _hclear(pE, dr, sc, dc)
    return xy, yx


def dor_links(cols: int, sr, sc, dr, dc, xy):
    """CSR (offsets int64 [n+1], links int32) of dimension-ordered routes; ``xy`` bool [n] picks XY
    (columns first) or YX (rows first) per route."""
    sr, dr = np.asarray(sr, np.int64), np.asarray(dr, np.int64)
    return vhv_links(cols, sr, sc, dr, dc, np.where(np.asarray(xy, bool), sr, dr))


def vhv_clear(pE, pS, sr, sc, dr, dc, m):
    """The via-row route (see vhv_links) avoids every unusable link."""
    inside = (m >= 0) & (m < pS.shape[0])
    mm = np.clip(m, 0, pS.shape[0] - 1)
    return inside & _vclear(pS, sc, sr, mm) & _hclear(pE, mm, sc, dc) & _vclear(pS, dc, mm, dr)


def vhv_links(cols: int, sr, sc, dr, dc, m):
    """CSR (offsets int64 [n+1], links int32) of via-row routes: along the source column to row
    ``m``, along row ``m`` to the destination column, along it to the destination.  ``m = sr`` is
    XY, ``m = dr`` is YX, any other row a U or Z pattern around a crowded stretch."""
    sr, sc, dr, dc, m = (np.asarray(v, dtype=np.int64) for v in (sr, sc, dr, dc, m))
    n = len(sr)
    n1, n2, n3 = np.abs(m - sr), np.abs(dc - sc), np.abs(dr - m)
    lens = n1 + n2 + n3
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    rid = np.repeat(np.arange(n), lens)
    k = np.arange(int(offsets[-1]), dtype=np.int64) - offsets[:-1][rid]     # hop index within the route
    a, b = n1[rid], (n1 + n2)[rid]
    s1, hx, s3 = np.sign(m - sr)[rid], np.sign(dc - sc)[rid], np.sign(dr - m)[rid]
    seg1, seg3 = k < a, k >= b
    row = np.where(seg1, sr[rid] + s1 * k, np.where(seg3, m[rid] + s3 * (k - b), m[rid]))
    col = np.where(seg1, sc[rid], np.where(seg3, dc[rid], sc[rid] + hx * (k - a)))
    vdir = np.where(np.where(seg1, s1, s3) > 0, 1, 3)
    d = np.where(seg1 | seg3, vdir, np.where(hx > 0, 0, 2))
    links = ((row * cols + col) * 4 + d).astype(np.int32)
    return offsets, links


def link_loads(links: np.ndarray, n_links: int) -> np.ndarray:
    return np.bincount(links, minlength=n_links).astype(np.int32)


def decode(link: int, cols: int) -> tuple[int, int, int]:
    """(row, col, dir) of a directed link id."""
    node, d = divmod(int(link), 4)
    r, c = divmod(node, cols)
    return r, c, d


def link_name(link: int, cols: int) -> str:
    r, c, d = decode(link, cols)
    return f"({r},{c})->{'ESWN'[d]}"


def components(ok: np.ndarray) -> np.ndarray:
    """int32 [rows, cols]: connected-component label of each core over usable links (a dead core is
    a component of its own)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    rows, cols = ok.shape[:2]
    n = rows * cols
    idx = np.arange(n).reshape(rows, cols)
    e = idx[:, :-1][ok[:, :-1, 0]]
    s = idx[:-1, :][ok[:-1, :, 1]]
    src = np.concatenate([e, s])
    dst = np.concatenate([e + 1, s + cols])
    g = coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n, n))
    _, lab = connected_components(g, directed=False)
    return lab.reshape(rows, cols).astype(np.int32)
