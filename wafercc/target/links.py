"""Which mesh links a wafer can use, from its alive map and dead links: the device model's and the
router's mask.  A directed link is (row, col, dir) with dir 0 east, 1 south, 2 west, 3 north; a dead
link (row, col, 0|1) kills both directions of the east/south link leaving (row, col).
"""
from __future__ import annotations

import numpy as np


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
