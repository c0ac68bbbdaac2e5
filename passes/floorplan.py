"""Floorplan: the lane layout (docs/placement.md), in three variants (``LAYOUTS``).

The wafer is cut into vertical *lanes* ``lane`` columns wide (the columns left over at the east
edge, fewer than a lane, hold no planned tile).  A curve visits lane 0's rows top to bottom, lane
1's bottom to top, and so on, each lane row west to east; ops take consecutive runs of the curve
in dataflow order, so consecutive ops are adjacent.  Inside an op, a grid of ``cols`` tiles per
row is laid out so that its chains are mesh links:

* a *wide* grid (cols > width/8) is cut into chunks of ``width`` columns, each taking ``rows``
  runs of ``width`` curve positions: tile (i, j) and (i+1, j) are vertical neighbours, (i, j) and
  (i, j+1) horizontal ones.  A run that starts mid-row is a staircase: its columns keep their
  lane columns and those west of the start sit one lane row lower, so a row's chain steps down
  once instead of jumping back across the lane.
  A KV grid (its partials reduce along its rows) orders its chunk rows by row, then chunk, so
  each grid row is a block of consecutive lane rows and its row tree stays inside that block.
* a *narrow* grid (cols <= width/8) is packed column-major: a column's tree runs along ``rows``
  consecutive slots.

``lanes`` (default): the curve skips dead cores (every usable core can hold a tile; a dead core
shifts the rest of the curve by one), each chunk row takes its run's cores by column, and CP-SAT
(passes/floorplan_cpsat.py) pads the curve where there is slack so fewer chunks straddle a turn.
``spares``: the curve runs over the defect-free geometry with ``spare`` free columns per lane
(width = lane - spare); tiles whose cell is dead move by a min-cost assignment (passes/assign.py).
``row-major``: the plain baseline, one lane as wide as the mesh, every grid packed row-major.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import PlacementError
from ..target.geometry import check_layout, choose_spare, dead_fraction, lane_geometry, reachable
from ..target.geometry import LAYOUTS, choose_lane, tile_capacity  # noqa: F401  (moved to target; old callers)
from .assign import AssignResult, assign_displaced
from .floorplan_cpsat import RefineOptions, RefineResult, refine_padding
from .tile_shapes import narrow_limit


class FloorplanError(PlacementError):
    """The tiles of a wafer do not fit its live cores."""


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


def is_wide(cols: int, width: int, baseline: bool) -> bool:
    return not baseline and cols > narrow_limit(width)


def grid_slots(experts: int, rows: int, cols: int, width: int, baseline: bool, start: int = 0,
               row_blocks: bool = False) -> tuple[np.ndarray, int]:
    """Slot of each tile in (expert, row, col) order of a grid whose first slot is ``start``, and
    the slots the grid occupies.  Wide grids are rotated by ``start mod width`` (the staircase).
    ``row_blocks`` (KV grids, which reduce along their rows): a wide grid's chunk rows are ordered
    (row, chunk) instead of (chunk, row), so each grid row takes its own block of consecutive lane
    rows and its reduction tree stays inside it instead of climbing through the other rows'."""
    e, i, j = (a.ravel() for a in np.meshgrid(np.arange(experts, dtype=np.int64), np.arange(rows, dtype=np.int64),
                                                np.arange(cols, dtype=np.int64), indexing="ij"))
    if baseline:
        return start + e * rows * cols + i * cols + j, experts * rows * cols
    if not is_wide(cols, width, baseline):
        # column-major: a column's reduction tree runs along consecutive curve slots (one lane row),
        # its rows' broadcasts hop ``rows`` slots (about one lane row down): both stay local
        return start + e * rows * cols + j * rows + i, experts * rows * cols
    chunks = -(-cols // width)
    per_expert = rows * chunks * width
    a = start % width
    run = i * chunks * width + (j // width) * width if row_blocks else (j // width) * rows * width + i * width
    return start + e * per_expert + run + (j % width - a) % width, experts * per_expert


@dataclasses.dataclass(frozen=True)
class WaferFloorplan:
    index: int
    lane: int
    width: int                  # slot columns per lane row (lane minus spares)
    core_row: np.ndarray        # int32 [T]: physical row of each tile (tile order of TilePlan.core_arrays)
    core_col: np.ndarray        # int32 [T]
    op_first: np.ndarray        # int64 [ops]: first tile index of each op on this wafer
    op_count: np.ndarray        # int64 [ops]: tiles of each op
    slots: int                  # slots the tiles may fill (tile_capacity)
    slots_used: int             # slots the ops occupy, padding included
    assign: AssignResult | None = None   # the displaced tiles' assignment (spares layout)
    refine: RefineResult | None = None   # the CP-SAT lane-turn refinement (lanes layout)

    @property
    def spare(self) -> int:
        return self.lane - self.width

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



def _sorted_chunk_rows(at: np.ndarray, e: int, rows: int, cols: int, width: int, row_of: np.ndarray,
                       col_of: np.ndarray) -> np.ndarray:
    """Curve positions of a wide grid's tiles (lanes layout): each chunk row holds ``width``
    consecutive curve positions, which span two lane rows when the chunk row starts mid-row (or a
    dead core shifted it); tile j of the chunk row takes the j-th of them by column, so the chunk
    row is a staircase whose chain steps down once, not a wrap back across the lane."""
    base = at.reshape(e, rows, cols)[:, :, ::width]                  # slot of column k*width: chunk starts
    full = base[..., None] + np.arange(width)                          # [e, rows, chunks, width]
    order = np.argsort(col_of[full], axis=-1, kind="stable")
    pick = np.take_along_axis(full, order, axis=-1)                    # by column, curve order on ties
    j = np.arange(cols)
    return pick[:, :, j // width, j % width].reshape(-1)


def _pack(op_grids, width: int, layout: str, pads=None):
    """Slots of every grid's tiles when grids follow each other along the curve (after ``pads[g]``
    empty slots): (slot arrays, wide-grid shapes or None, tiles per op, grid starts, slots used)."""
    baseline = layout == "row-major"
    offs, counts, wide, starts = [], [], [], []
    slot, g = 0, 0
    for grids in op_grids:
        n = 0
        for grid in grids:
            e, r, c = grid[:3]
            blocks = bool(grid[3:] and grid[3])
            slot += int(pads[g]) if pads is not None else 0
            starts.append(slot)
            # spares rotate wide grids by their start (geometric staircase); lanes sort by column later
            s, used = grid_slots(e, r, c, width, baseline, slot if layout == "spares" else 0, blocks)
            offs.append(s if layout == "spares" else s + slot)
            wide.append((e, r, c, blocks) if layout == "lanes" and is_wide(c, width, False) else None)
            slot += used
            n += e * r * c
            g += 1
        counts.append(n)
    return offs, wide, np.asarray(counts, np.int64), np.asarray(starts, np.int64), slot


def _refine(wide, starts, used: int, cap: int, cols: np.ndarray, lane: int, width: int,
            options: RefineOptions):
    chunks = []
    for g, shape in enumerate(wide):
        if shape is not None:       # the blocks whose columns must stay mesh columns
            e, r, c, blocks = shape
            k = -(-c // width)
            size = k * width if blocks else r * width
            chunks.append((g, (np.arange(e * (r if blocks else k)) * size).astype(np.int64), size))
    boundaries = np.flatnonzero(np.diff(cols // lane)) + 1
    return refine_padding(starts, chunks, boundaries, cap - used, options)


def floorplan_wafer(index: int, alive: np.ndarray, op_grids: list[list[tuple[int, int, int]]], lane: int,
                    layout: str = "lanes", spare: int | None = None,
                    refine: RefineOptions | None = RefineOptions()) -> WaferFloorplan:
    """``op_grids``: for each op in dataflow order its grids as (experts, rows, cols[, row_blocks])
    (row_blocks: a KV grid, ``grid_slots``); tiles are numbered op by op, grid by grid, in
    (expert, row, col) order.

    ``layout``: "lanes" (the curve skips dead cores: nothing is displaced, every usable core can
    hold a tile; with ``refine`` CP-SAT pads the curve to keep chunks off lane turns), "spares" (the defect-free lane geometry with ``spare`` free columns per lane, None:
    ``choose_spare``; tiles on dead cores go to free cores by a min-cost assignment) or "row-major"
    (the baseline)."""
    check_layout(layout)
    usable = reachable(alive)
    baseline = layout == "row-major"
    lane = alive.shape[1] if baseline else max(1, min(int(lane), alive.shape[1]))
    if layout == "spares":
        if spare is None:
            spare = choose_spare(dead_fraction(usable, lane), lane)
        geom = lane_geometry(usable, lane, spare)
        width, cap = geom.width, min(geom.capacity, int(usable.sum()))
    else:
        rows, cols = curve(usable, lane)
        width, cap = lane, len(rows)
    offs, wide, counts, starts, slot = _pack(op_grids, width, layout)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    if slot > cap:
        raise FloorplanError(f"wafer {index}: its grids occupy {slot} cores but the {lane}-column lanes hold "
                             f"{cap} usable cores ({slot - cap} too many)")
    if layout == "spares":
        at = np.concatenate(offs) if offs else np.zeros(0, np.int64)
        row, col = geom.cells(at)
        row, col, res = assign_displaced(index, row, col, usable)
        return WaferFloorplan(index, lane, width, row, col, first, counts, cap, slot, res)
    res = None
    if layout == "lanes" and refine is not None:
        pads, res = _refine(wide, starts, slot, cap, cols, lane, width, refine)
        if pads.any():
            offs, wide, counts, starts, slot = _pack(op_grids, width, layout, pads)
    at = np.concatenate([s if g is None else _sorted_chunk_rows(s, *g[:3], width, rows, cols)
                         for s, g in zip(offs, wide)]) if offs else np.zeros(0, np.int64)
    return WaferFloorplan(index, lane, width, rows[at], cols[at], first, counts, cap, slot, refine=res)
