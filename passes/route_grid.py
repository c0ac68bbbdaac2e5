"""Mesh geometry for the router (docs/routing.md): directed link ids, the usable-link mask and
vectorised dimension-ordered (XY / YX) routes.

A directed link id is ``((row * cols) + col) * 4 + dir`` with dir 0 east, 1 south, 2 west, 3 north
(docs/schedule-format.md).  A dead link ``(row, col, 0|1)`` kills both directions of the east/south
link leaving (row, col); a link touching a dead core is unusable.
"""
from __future__ import annotations

import numpy as np

from ..target.links import usable_links  # noqa: F401  (the device model's link mask; router callers)

DR = (0, 1, 0, -1)      # row step of dir 0..3 (E, S, W, N)
DC = (1, 0, -1, 0)      # col step
OPPOSITE = (2, 3, 0, 1)


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


def _seg_clear(pE, pS, r0, c0, r1, c1):
    """Axis-aligned segments (r0, c0) -> (r1, c1) avoid every unusable link."""
    return np.where(r0 == r1, _hclear(pE, r0, c0, c1), _vclear(pS, c0, r0, r1))


def polyline_clear(pE, pS, sr, sc, r1, c1, r2, c2, dr, dc):
    """The three-segment route source -> (r1, c1) -> (r2, c2) -> destination avoids every unusable
    link (each segment axis-aligned; corners outside the mesh are not clear)."""
    rows, cols = pS.shape
    inside = (r1 >= 0) & (r1 < rows) & (c1 >= 0) & (c1 < cols) & (r2 >= 0) & (r2 < rows) & (c2 >= 0) & (c2 < cols)
    r1, r2 = np.clip(r1, 0, rows - 1), np.clip(r2, 0, rows - 1)
    c1, c2 = np.clip(c1, 0, cols - 1), np.clip(c2, 0, cols - 1)
    return (inside & _seg_clear(pE, pS, sr, sc, r1, c1) & _seg_clear(pE, pS, r1, c1, r2, c2)
            & _seg_clear(pE, pS, r2, c2, dr, dc))


def dor_corners(sr, sc, dr, dc, xy):
    """Corners (r1, c1, r2, c2) of XY (``xy``) or YX routes as three-segment polylines."""
    r = np.where(xy, sr, dr)
    c = np.where(xy, dc, sc)
    return r, c, r.copy(), c.copy()


def dor_feasible(pE, pS, sr, sc, dr, dc):
    """(xy_ok, yx_ok) bool arrays: the XY route (along the source row, then the destination column)
    and the YX route avoid every unusable link (hence every dead core)."""
    xy = _hclear(pE, sr, sc, dc) & _vclear(pS, dc, sr, dr)
    yx = _vclear(pS, sc, sr, dr) & _hclear(pE, dr, sc, dc)
    return xy, yx


def polyline_links(cols: int, sr, sc, r1, c1, r2, c2, dr, dc):
    """CSR (offsets int64 [n+1], links int32) of three-segment routes source -> (r1, c1) ->
    (r2, c2) -> destination, every segment axis-aligned.  XY, YX, the U / Z patterns via a row
    (corners (m, sc), (m, dc)) and via a column ((sr, m), (dr, m)) are all of this form."""
    pts = [(np.asarray(r, dtype=np.int64), np.asarray(c, dtype=np.int64))
           for r, c in ((sr, sc), (r1, c1), (r2, c2), (dr, dc))]
    n = len(pts[0][0])
    slen = [np.abs(b[0] - a[0]) + np.abs(b[1] - a[1]) for a, b in zip(pts, pts[1:])]
    lens = slen[0] + slen[1] + slen[2]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    out = np.empty(int(offsets[-1]), np.int32)
    before = offsets[:-1].copy()                       # where each route's current segment starts
    for (a_r, a_c), (b_r, b_c), ln in zip(pts, pts[1:], slen):
        m = np.flatnonzero(ln)
        if len(m):
            seg_lens = ln[m]
            rid = np.repeat(m, seg_lens)
            starts = np.zeros(len(m), np.int64)
            np.cumsum(seg_lens[:-1], out=starts[1:])
            k = np.arange(int(seg_lens.sum()), dtype=np.int64) - np.repeat(starts, seg_lens)
            vr, vc = np.sign(b_r - a_r)[rid], np.sign(b_c - a_c)[rid]
            d = np.where(vc > 0, 0, np.where(vc < 0, 2, np.where(vr > 0, 1, 3)))
            out[before[rid] + k] = ((a_r[rid] + vr * k) * cols + a_c[rid] + vc * k) * 4 + d
        before += ln
    return offsets, out


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
