"""The device model: one target plus one defect map per wafer, read by every pass, the verifier and
the cost model, so they can never disagree about which cores exist and how much they hold.

    dev = Device("wse3", "random:0.01", seed=0)
    w = dev.wafer(0)
    w.alive                 # bool [rows, cols] over the program rectangle
    w.reachable             # the live cores a tile can use (the largest connected group)
    w.usable_bytes()        # alive cores x (sram - reserve - overhead)
    lane = dev.lane_width("lanes")         # the floorplan's lane width (layout, optional lane)
    w.lane_slots(lane, spare, "lanes")     # cores the tiler may fill in that layout
    w.tiler_bytes(overhead, "lanes")       # those slots x usable bytes per core (what the planner packs)
    dev.free_colors, dev.link_capacity, dev.bytes_per_core(overhead)   # also on every wafer
    w.region_bytes(r0, c0, r1, c1)         # half-open rectangle, O(1) via a 2-D prefix sum
    w.to_physical(row, logical_col)        # the row-shift mapping around dead cores

Coordinates are (row, col) inside the program rectangle; add (target.usable_y0, target.usable_x0)
for fabric coordinates.  All per-core data are NumPy arrays.
"""
from __future__ import annotations

from functools import cached_property

import numpy as np

from .defects import (
    DefectMap,
    DefectSpec,
    die_edges,
    generate_defects,
    parse_defect_spec,
)
from .errors import TargetError
from .geometry import choose_spare, dead_fraction, lane_for, slot_count
from .geometry import reachable as reachable_cores
from .links import usable_links
from .loader import load_target
from .schema import Target

LINK_CAPACITY = 1   # routes one color of one link carries: each route holds its color end to end


class _TargetFigures:
    """Numbers that depend on the target alone, the same on every wafer."""
    target: Target

    @property
    def free_colors(self) -> tuple[int, ...]:
        """Color ids routes may use (the runtime reserves the others)."""
        return self.target.free_colors

    @property
    def link_capacity(self) -> int:
        return LINK_CAPACITY

    def bytes_per_core(self, per_core_overhead_bytes: int = 0) -> int:
        """Bytes a live core offers: sram - reserve - overhead (TargetError if negative)."""
        b = self.target.usable_bytes_per_core - int(per_core_overhead_bytes)
        if per_core_overhead_bytes < 0 or b < 0:
            raise TargetError(f"per-core overhead {per_core_overhead_bytes} B: expected 0.."
                              f"{self.target.usable_bytes_per_core} B (the usable bytes per core of {self.target.name})")
        return b

    def lane_width(self, layout: str = "lanes", lane: int | None = None) -> int:
        """The floorplan's lane width on this target's program rectangle (geometry.lane_for)."""
        return lane_for(self.target.usable_cols, layout, lane)


class Device(_TargetFigures):
    """A target and a defect spec; ``wafer(i)`` generates wafer i's map lazily and deterministically."""

    def __init__(self, target: Target | str, defect_spec: DefectSpec | str | None = None, seed: int = 0):
        self.target = target if isinstance(target, Target) else load_target(target)
        self.spec = defect_spec if isinstance(defect_spec, DefectSpec) else parse_defect_spec(defect_spec)
        self.seed = int(seed)
        self._wafers: dict[int, WaferDevice] = {}

    def wafer(self, index: int) -> WaferDevice:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise ValueError(f"wafer index must be an integer >= 0, got {index!r}")
        index = int(index)
        if index not in self._wafers:
            self._wafers[index] = WaferDevice(self.target, index,
                                              generate_defects(self.spec, self.target, self.seed, index))
        return self._wafers[index]

    def wafers(self, n: int) -> list[WaferDevice]:
        return [self.wafer(i) for i in range(n)]

    def spare(self, layout: str, lane: int, n_wafers: int) -> int:
        """Spare columns per lane shared by wafers 0..n-1 (the tiler shapes grids for one slot
        width): the worst wafer's; 0 unless the layout is spares."""
        if layout != "spares":
            return 0
        return max((self.wafer(k).lane_spare(lane) for k in range(n_wafers)), default=0)

    def __repr__(self) -> str:
        return f"Device({self.target.name!r}, {self.spec.text!r}, seed={self.seed})"


class WaferDevice(_TargetFigures):
    """One wafer: the target's program rectangle minus its defects."""

    def __init__(self, target: Target, index: int, defects: DefectMap):
        self.target, self.index, self.defects = target, index, defects

    # ---- shape and defects ----
    @property
    def shape(self) -> tuple[int, int]:
        return self.defects.alive.shape

    @property
    def rows(self) -> int:
        return self.shape[0]

    @property
    def cols(self) -> int:
        return self.shape[1]

    @property
    def alive(self) -> np.ndarray:
        return self.defects.alive

    @property
    def dead_dies(self) -> np.ndarray:
        """int64 [K, 2]: (die_row, die_col) of whole dead dies."""
        return self.defects.dead_dies

    @property
    def dead_links(self) -> np.ndarray:
        """int64 [K, 3]: (row, col, 0=east | 1=south) links that are dead besides those of dead cores."""
        return self.defects.dead_links

    @cached_property
    def usable_cores(self) -> int:
        return int(np.count_nonzero(self.alive))

    @property
    def dead_cores(self) -> int:
        return self.rows * self.cols - self.usable_cores

    def dead_core_coords(self) -> np.ndarray:
        """int64 [K, 2]: (row, col) of every dead core, row-major."""
        return np.argwhere(~self.alive)

    def die_edges(self) -> tuple[np.ndarray, np.ndarray]:
        """Die boundaries in program coordinates: (row_edges, col_edges)."""
        return die_edges(self.target)

    # ---- capacity ----
    def capacity_bytes(self, per_core_overhead_bytes: int = 0) -> np.ndarray:
        """int64 [rows, cols]: bytes each core offers (0 for dead cores)."""
        return self.alive.astype(np.int64) * self.bytes_per_core(per_core_overhead_bytes)

    def usable_bytes(self, per_core_overhead_bytes: int = 0) -> int:
        """Alive cores x (sram - reserve - overhead)."""
        return self.usable_cores * self.bytes_per_core(per_core_overhead_bytes)

    # ---- what the tiler can use ----
    @cached_property
    def reachable(self) -> np.ndarray:
        """bool [rows, cols]: live cores of the largest connected group (others hold no tile)."""
        r = reachable_cores(self.alive)
        r.flags.writeable = False
        return r

    def lane_spare(self, lane: int) -> int:
        """Spare columns per lane this wafer's dead cores call for (spares layout)."""
        return choose_spare(dead_fraction(self.reachable, lane), lane)

    def lane_slots(self, lane: int, spare: int = 0, layout: str = "lanes") -> int:
        """Cores the tiler may fill in a layout with ``lane``-column lanes and ``spare`` spares."""
        return slot_count(self.reachable, lane, spare, layout)

    def tiler_slots(self, layout: str = "lanes", lane: int | None = None) -> int:
        """``lane_slots`` at the layout's lane width and this wafer's own spare count."""
        lane = self.lane_width(layout, lane)
        spare = self.lane_spare(lane) if layout == "spares" else 0
        return self.lane_slots(lane, spare, layout)

    def tiler_bytes(self, per_core_overhead_bytes: int = 0, layout: str = "lanes", lane: int | None = None) -> int:
        """Tiler slots x (sram - reserve - overhead): the bytes a plan may put on this wafer."""
        return self.tiler_slots(layout, lane) * self.bytes_per_core(per_core_overhead_bytes)

    @cached_property
    def _prefix(self) -> np.ndarray:
        p = np.zeros((self.rows + 1, self.cols + 1), dtype=np.int32)   # counts fit: <= rows*cols
        np.cumsum(np.cumsum(self.alive, axis=0, dtype=np.int32), axis=1, out=p[1:, 1:])
        return p

    def region_cores(self, r0, c0, r1, c1):
        """Alive cores in rows [r0, r1) x cols [c0, c1); scalars or equal-shaped arrays."""
        r0, c0, r1, c1 = (np.asarray(v, dtype=np.int64) for v in (r0, c0, r1, c1))
        if ((r0 < 0) | (c0 < 0) | (r1 > self.rows) | (c1 > self.cols) | (r0 > r1) | (c0 > c1)).any():
            raise IndexError(f"region outside the {self.rows} x {self.cols} program rectangle")
        p = self._prefix
        n = (p[r1, c1].astype(np.int64) - p[r0, c1] - p[r1, c0] + p[r0, c0])
        return int(n) if n.ndim == 0 else n

    def region_bytes(self, r0, c0, r1, c1, per_core_overhead_bytes: int = 0):
        """Bytes offered by the alive cores of a half-open rectangle (scalars or arrays)."""
        return self.region_cores(r0, c0, r1, c1) * self.bytes_per_core(per_core_overhead_bytes)

    # ---- logical -> physical (row shift around dead cores) ----
    @cached_property
    def alive_per_row(self) -> np.ndarray:
        return np.count_nonzero(self.alive, axis=1)

    @property
    def logical_cols(self) -> int:
        """Width of the largest logical rectangle spanning all rows (min alive cores per row)."""
        return int(self.alive_per_row.min()) if self.rows else 0

    def column_map(self, r0: int = 0, r1: int | None = None, c0: int = 0, c1: int | None = None) -> np.ndarray:
        """int32 [r1-r0, c1-c0]: entry [i, j] is the physical column of the j-th alive core of row r0+i
        within columns [c0, c1), or -1 past that row's alive count.  Never a dead core."""
        r1 = self.rows if r1 is None else r1
        c1 = self.cols if c1 is None else c1
        a = self.alive[r0:r1, c0:c1]
        rr, cc = np.nonzero(a)
        rank = np.cumsum(a, axis=1, dtype=np.int32)[rr, cc] - 1
        out = np.full(a.shape, -1, dtype=np.int32)
        out[rr, rank] = cc + c0
        return out

    @cached_property
    def _column_map(self) -> np.ndarray:
        m = self.column_map()
        m.flags.writeable = False
        return m

    def to_physical(self, row, logical_col):
        """Physical column of logical column ``logical_col`` in ``row`` (vectorised); IndexError if the
        row has fewer alive cores."""
        row, lc = np.asarray(row, dtype=np.int64), np.asarray(logical_col, dtype=np.int64)
        if ((row < 0) | (row >= self.rows) | (lc < 0) | (lc >= self.alive_per_row[np.clip(row, 0, self.rows - 1)])).any():
            raise IndexError("logical coordinate outside the alive cores of its row")
        pc = self._column_map[row, lc].astype(np.int64)
        return int(pc) if pc.ndim == 0 else pc

    @cached_property
    def _rank(self) -> np.ndarray:
        r = np.cumsum(self.alive, axis=1, dtype=np.int32) - 1
        r.flags.writeable = False
        return r

    def to_logical(self, row, physical_col):
        """Logical column of a physical core (vectorised); -1 for dead cores."""
        row, pc = np.asarray(row, dtype=np.int64), np.asarray(physical_col, dtype=np.int64)
        lc = np.where(self.alive[row, pc], self._rank[row, pc], -1).astype(np.int64)
        return int(lc) if lc.ndim == 0 else lc

    # ---- links ----
    @cached_property
    def usable_links(self) -> np.ndarray:
        """bool [rows, cols, 4]: directed link (row, col, E/S/W/N) exists, is not dead and joins two
        alive cores (the router's mask)."""
        ok = usable_links(self.alive, self.dead_links)
        ok.flags.writeable = False
        return ok

    def link_masks(self) -> tuple[np.ndarray, np.ndarray]:
        """(east_ok [rows, cols-1], south_ok [rows-1, cols]) of ``usable_links``."""
        return self.usable_links[:, :-1, 0].copy(), self.usable_links[:-1, :, 1].copy()

    def summary(self, per_core_overhead_bytes: int = 0) -> dict:
        return {"wafer": self.index, "rows": self.rows, "cols": self.cols, "usable_cores": self.usable_cores,
                "dead_cores": self.dead_cores, "dead_dies": len(self.dead_dies),
                "dead_links": len(self.dead_links), "usable_bytes": self.usable_bytes(per_core_overhead_bytes)}
