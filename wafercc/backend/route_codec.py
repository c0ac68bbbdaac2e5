"""Routed paths in wafer{k}.npz as hop counts and 2-bit directions (docs/schedule-format.md).

A route's links are adjacent: each leaves the core the previous one entered, starting at the
route's source core.  So a path is its source (``route_src_row``, ``route_src_col``, stored
anyway) and the direction of each hop, 0 east, 1 south, 2 west, 3 north: ``route_hops`` (int32
[R]) and ``route_dirs`` (int8 [sum]) instead of CSR offsets (int64 [R+1]) and link ids (int32
[sum]).  On a Llama-3.1-405B wafer that is 0.5 MB compressed instead of 11.0 MB, 17.3 -> 6.8 MB
per file.  ``route_paths`` gives every reader the offsets and link ids back; a file that stores
``route_offsets`` / ``route_links`` itself (schema 2, or one a test builds by hand) is read as
it is, so the verifier still checks that such links are continuous.
"""
from __future__ import annotations

import numpy as np

# (row, col) step of each direction: E, S, W, N
_DROW = np.array([0, 1, 0, -1], np.int64)
_DCOL = np.array([1, 0, -1, 0], np.int64)


def encode(offsets: np.ndarray, links: np.ndarray, src_row: np.ndarray, src_col: np.ndarray,
           cols: int) -> dict[str, np.ndarray]:
    """``route_hops`` and ``route_dirs`` of CSR paths; raises ValueError unless every path is a
    chain of adjacent links from its source core (the router's invariant, checked here because the
    encoding could not hold anything else)."""
    offsets = np.asarray(offsets, np.int64)
    links = np.asarray(links, np.int64)
    hops = np.diff(offsets)
    dirs = (links % 4).astype(np.int8)
    out = {"route_hops": hops.astype(np.int32), "route_dirs": dirs}
    back = decode(out["route_hops"], dirs, src_row, src_col, cols)[1]
    if not np.array_equal(back, links):
        bad = int(np.flatnonzero(back != links)[0])
        route = int(np.searchsorted(offsets, bad, side="right") - 1)
        raise ValueError(f"route {route}: its links are not a chain of adjacent links from its source core")
    return out


def decode(hops: np.ndarray, dirs: np.ndarray, src_row: np.ndarray, src_col: np.ndarray,
           cols: int, rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(offsets int64 [R+1], link ids int64 [sum]) of paths given as hops and directions.  A hop
    that leaves a core outside the rectangle (``rows`` x ``cols``; rows unbounded when None) gets
    link id -1, which no link has, so the verifier reports the route as leaving the mesh."""
    hops = np.asarray(hops, np.int64)
    dirs = np.asarray(dirs, np.int64)
    offsets = np.concatenate([[0], np.cumsum(hops)]).astype(np.int64)
    if len(dirs) != offsets[-1]:
        raise ValueError(f"route_dirs has {len(dirs)} entries, route_hops sum to {int(offsets[-1])}")
    if len(dirs) and (dirs.min() < 0 or dirs.max() > 3):
        raise ValueError("route_dirs: expected directions 0..3 (east, south, west, north)")
    moving = hops > 0
    first = offsets[:-1][moving]
    at = []
    for src, step in ((src_row, _DROW[dirs]), (src_col, _DCOL[dirs])):
        walked = np.cumsum(step) - step                  # steps before each hop, over all routes
        start = np.repeat(walked[first], hops[moving])   # ... before the route's first hop
        at.append(np.repeat(np.asarray(src, np.int64), hops) + walked - start)
    r, c = at
    inside = (r >= 0) & (c >= 0) & (c < cols) & ((r < rows) if rows is not None else True)
    return offsets, np.where(inside, (r * cols + c) * 4 + dirs, -1)


def route_paths(arrays: dict, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, link ids) of a wafer's routes, whichever way its npz stores them."""
    if "route_links" in arrays and "route_offsets" in arrays:
        return np.asarray(arrays["route_offsets"], np.int64), np.asarray(arrays["route_links"], np.int64)
    return decode(arrays["route_hops"], arrays["route_dirs"], arrays["route_src_row"], arrays["route_src_col"], cols)
