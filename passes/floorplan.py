"""Floorplan and assign (constructive): ops onto runs of a band-serpentine over live cores.

The wafer's usable rectangle is cut into vertical bands ``band_width`` columns wide. The
curve visits band 0 top to bottom, band 1 bottom to top, and so on (a serpentine of
bands), each band row left to right. Dead cores are skipped, so no tile can land on one.
Ops take consecutive runs of the curve in dataflow order, so consecutive ops are
adjacent; an op's tiles fill its run in grid order (grid, expert, row, col), so with
``band_width`` equal to a grid's column count its grid rows lie on mesh rows.

``band_width = cols`` is the plain row-major baseline the issue compares against.
This is the constructive layout; a CP-SAT refinement will be seeded by it.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import WaferccError


class FloorplanError(WaferccError):
    """The tiles of a wafer do not fit its live cores."""


@dataclasses.dataclass(frozen=True)
class WaferFloorplan:
    index: int
    band_width: int
    core_row: np.ndarray        # int32 [T]: physical row of each tile (tile order of TilePlan.core_arrays)
    core_col: np.ndarray        # int32 [T]
    op_first: np.ndarray        # int64 [ops]: first tile index of each op on this wafer
    op_count: np.ndarray        # int64 [ops]
    live_cores: int

    def regions(self, op: int) -> list[list[int]]:
        """Bounding boxes [r0, c0, rows, cols] of the op's run, one per band it crosses."""
        sl = slice(self.op_first[op], self.op_first[op] + self.op_count[op])
        r, c = self.core_row[sl], self.core_col[sl]
        if len(r) == 0:
            return []
        band = c // self.band_width
        out = []
        for b in np.unique(band):
            m = band == b
            out.append([int(r[m].min()), int(c[m].min()), int(r[m].max() - r[m].min() + 1),
                        int(c[m].max() - c[m].min() + 1)])
        return out


def serpentine(alive: np.ndarray, band_width: int) -> tuple[np.ndarray, np.ndarray]:
    """Live cores in band-serpentine order: (rows, cols) int32 arrays."""
    rows, cols = alive.shape
    w = max(1, min(int(band_width), cols))
    r_parts, c_parts = [], []
    for b, c0 in enumerate(range(0, cols, w)):
        c1 = min(cols, c0 + w)
        rr = np.arange(rows) if b % 2 == 0 else np.arange(rows - 1, -1, -1)
        r = np.repeat(rr, c1 - c0)
        c = np.tile(np.arange(c0, c1), rows)
        keep = alive[r, c]
        r_parts.append(r[keep])
        c_parts.append(c[keep])
    return (np.concatenate(r_parts).astype(np.int32), np.concatenate(c_parts).astype(np.int32))


def floorplan_wafer(index: int, alive: np.ndarray, op_tiles: np.ndarray, band_width: int) -> WaferFloorplan:
    """``op_tiles``: tiles per op in dataflow order; tiles are numbered op by op."""
    counts = np.asarray(op_tiles, np.int64)
    total = int(counts.sum())
    rows, cols = serpentine(alive, band_width)
    if total > len(rows):
        raise FloorplanError(f"wafer {index}: {total} tiles but {len(rows)} live cores "
                             f"({total - len(rows)} too many)")
    first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return WaferFloorplan(index, max(1, min(band_width, alive.shape[1])), rows[:total], cols[:total],
                          first, counts, len(rows))
