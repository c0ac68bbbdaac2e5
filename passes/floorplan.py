"""Floorplan and assign (constructive): the lane layout (docs/placement.md).

The wafer's usable rectangle is cut into vertical *lanes* ``lane`` columns wide; the columns
left over at the east edge (fewer than a lane) are not used.  A curve visits lane 0 top to
bottom, lane 1 bottom to top, and so on, each lane row west to east, skipping dead cores.  A
position on the curve is a *slot*; ops take consecutive runs of slots in dataflow order, so
consecutive ops are adjacent.

Inside an op, a grid of ``cols`` tiles per row is laid out so that its chains are mesh links:

* a *wide* grid (cols > lane/8) is cut into chunks of ``lane`` columns; each chunk fills
  ``rows`` whole lane rows, so tile (i, j) and (i+1, j) are one lane row apart (vertical
  neighbours, one hop; two where a dead core shifts the curve) and (i, j), (i, j+1) are
  horizontal neighbours.  The last chunk's unused slots stay empty (the tiler counts them).
* a *narrow* grid (cols <= lane/8) is packed row-major: its column chains span ``cols`` slots.

``lane >= usable width`` is the plain row-major baseline: one lane, every grid packed row-major.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import WaferccError
from .tile_shapes import narrow_limit


class FloorplanError(WaferccError):
    """The tiles of a wafer do not fit its live cores."""


LANE_RANGE = (40, 64)   # lane widths tried by choose_lane; wider than the grids' short side


def choose_lane(width: int, lo: int = LANE_RANGE[0], hi: int = LANE_RANGE[1]) -> int:
    """The lane in [lo, hi] that leaves the fewest columns unused (the narrowest on ties); the
    whole width when the mesh is narrower than ``lo``."""
    if width <= lo:
        return width
    cand = np.arange(lo, min(hi, width) + 1)
    waste = width % cand
    return int(cand[np.argmin(waste)])


@dataclasses.dataclass(frozen=True)
class WaferFloorplan:
    index: int
    lane: int
    core_row: np.ndarray        # int32 [T]: physical row of each tile (tile order of TilePlan.core_arrays)
    core_col: np.ndarray        # int32 [T]
    op_first: np.ndarray        # int64 [ops]: first tile index of each op on this wafer
    op_count: np.ndarray        # int64 [ops]: tiles of each op
    slots: int                  # live cores on the curve (in whole lanes)
    slots_used: int             # slots the ops occupy, padding included

    def regions(self, op: int) -> list[list[int]]:
        """Bounding boxes [r0, c0, rows, cols] of the op's tiles, one per lane they cross."""
        sl = slice(self.op_first[op], self.op_first[op] + self.op_count[op])
        r, c = self.core_row[sl], self.core_col[sl]
        if len(r) == 0:
            return []
        band = c // self.lane
        out = []
        for b in np.unique(band):
            m = band == b
            out.append([int(r[m].min()), int(c[m].min()), int(r[m].max() - r[m].min() + 1),
                        int(c[m].max() - c[m].min() + 1)])
        return out


def reachable(alive: np.ndarray) -> np.ndarray:
    """The live cores of the largest 4-connected group: a live core cut off by dead neighbours
    (inside a checkerboard of defects, say) can hold no tile, as nothing can reach it."""
    from scipy import ndimage
    lab, n = ndimage.label(alive)
    if n <= 1:
        return np.asarray(alive, bool)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def curve(alive: np.ndarray, lane: int) -> tuple[np.ndarray, np.ndarray]:
    """Usable cores (``reachable``) of the whole lanes in curve order: (rows, cols) int32 arrays."""
    alive = reachable(alive)
    rows, cols = alive.shape
    w = max(1, min(int(lane), cols))
    r_parts, c_parts = [], []
    for b, c0 in enumerate(range(0, cols - w + 1, w)):
        rr = np.arange(rows) if b % 2 == 0 else np.arange(rows - 1, -1, -1)
        r = np.repeat(rr, w)
        c = np.tile(np.arange(c0, c0 + w), rows)
        keep = alive[r, c]
        r_parts.append(r[keep])
        c_parts.append(c[keep])
    return (np.concatenate(r_parts).astype(np.int32), np.concatenate(c_parts).astype(np.int32))


def curve_slots(alive: np.ndarray, lane: int) -> int:
    """Usable cores in whole lanes (what the tiler may fill)."""
    w = max(1, min(int(lane), alive.shape[1]))
    return int(reachable(alive)[:, : (alive.shape[1] // w) * w].sum())


def is_wide(cols: int, lane: int, baseline: bool) -> bool:
    return not baseline and cols > narrow_limit(lane)


def grid_slots(experts: int, rows: int, cols: int, lane: int, baseline: bool) -> tuple[np.ndarray, int]:
    """Slot offset (from the grid's first slot) of each tile in (expert, row, col) order, and the
    slots the grid occupies."""
    e, i, j = (a.ravel() for a in np.meshgrid(np.arange(experts, dtype=np.int64), np.arange(rows, dtype=np.int64),
                                                np.arange(cols, dtype=np.int64), indexing="ij"))
    if not is_wide(cols, lane, baseline):
        return e * rows * cols + i * cols + j, experts * rows * cols
    chunks = -(-cols // lane)
    per_expert = rows * chunks * lane
    return e * per_expert + (j // lane) * rows * lane + i * lane + j % lane, experts * per_expert


def floorplan_wafer(index: int, alive: np.ndarray, op_grids: list[list[tuple[int, int, int]]], lane: int,
                    baseline: bool = False) -> WaferFloorplan:
    """``op_grids``: for each op in dataflow order its grids as (experts, rows, cols); tiles are
    numbered op by op, grid by grid, in (expert, row, col) order."""
    lane = max(1, min(int(lane), alive.shape[1]))
    offs, counts = [], []
    slot = 0
    for grids in op_grids:
        n = 0
        for e, r, c in grids:
            s, used = grid_slots(e, r, c, lane, baseline)
            offs.append(s + slot)
            slot += used
            n += e * r * c
        counts.append(n)
    rows, cols = curve(alive, lane)
    if slot > len(rows):
        raise FloorplanError(f"wafer {index}: its grids occupy {slot} cores but the {lane}-column lanes hold "
                             f"{len(rows)} live cores ({slot - len(rows)} too many)")
    at = np.concatenate(offs) if offs else np.zeros(0, np.int64)
    counts = np.asarray(counts, np.int64)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return WaferFloorplan(index, lane, rows[at], cols[at], first, counts, len(rows), slot)
