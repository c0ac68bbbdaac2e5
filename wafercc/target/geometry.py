"""Lane-layout geometry that depends only on a wafer's alive map (docs/placement.md).

The device model (device.py) counts the cores the tiler may fill with these, and the floorplan
(passes/floorplan.py) lays tiles out with the same functions, so planning, tiling and placement
agree on every wafer's usable slots.
"""
from __future__ import annotations

import dataclasses

import numpy as np

LAYOUTS = ("lanes", "spares", "row-major")
DEFAULT_LAYOUT = LAYOUTS[0]     # the one default, read by PlanOptions and PlaceOptions
# how a grid column combines its partial sums (passes/transfers.py): a binomial tree, ceil(log2 R)
# receive-add steps, or the launch-style chain, R - 1 steps (the mapping the Aug 2024 rows were measured on)
REDUCTIONS = ("tree", "chain")
DEFAULT_REDUCTION = REDUCTIONS[0]
# which layers share cores (docs/mapping.md): "regions" (every op its own cores, G = 1), "groups:G"
# (G consecutive identical layers share one floorplan, G tiles per core), "wafer" (G = every layer on
# the wafer), "auto" (the compiler prices the candidates with the tile-plan estimate and picks one)
MAPPING_KINDS = ("regions", "wafer", "auto")
DEFAULT_MAPPING = "regions"


def parse_mapping(mapping: str) -> int | None:
    """Layers per group of a mapping: 1 (regions), G (groups:G), 0 (wafer: all layers of a wafer),
    None (auto: chosen by the search).  ValueError on anything else."""
    m = str(mapping).strip()
    if m == "regions":
        return 1
    if m == "wafer":
        return 0
    if m == "auto":
        return None
    if m.startswith("groups:") and m[7:].isdigit() and int(m[7:]) >= 1:
        return int(m[7:])
    raise ValueError(f"mapping {mapping!r}: expected regions, groups:G (G >= 1), wafer or auto")


def group_size(mapping: str, layers: int) -> int:
    """Layers per group on a wafer holding ``layers`` layers (at least 1)."""
    g = parse_mapping(mapping)
    if g is None:
        raise ValueError("mapping 'auto' is resolved by the search before tiling")
    return max(1, min(layers, g) if g else layers)
LANE_RANGE = (40, 64)   # lane widths tried by choose_lane; wider than the grids' short side
MAX_SPARE_FRACTION = 0.25  # of a lane's columns kept free for displaced tiles


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    return layout


def choose_lane(width: int, lo: int = LANE_RANGE[0], hi: int = LANE_RANGE[1]) -> int:
    """The lane in [lo, hi] that leaves the fewest columns unused (the narrowest on ties); the
    whole width when the mesh is narrower than ``lo``."""
    if width <= lo:
        return width
    cand = np.arange(lo, min(hi, width) + 1)
    waste = width % cand
    return int(cand[np.argmin(waste)])


def lane_for(width: int, layout: str = "lanes", lane: int | None = None) -> int:
    """Lane width of a layout on a mesh ``width`` columns wide: row-major is one lane as wide as
    the mesh; otherwise ``lane`` (clipped to the mesh) or ``choose_lane``."""
    if check_layout(layout) == "row-major":
        return width
    return max(1, min(width, lane)) if lane else choose_lane(width)


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


def choose_spare(dead_fraction: float, lane: int) -> int:
    """Spare columns per lane: enough for the expected dead cores of a lane row (ceil(p x lane)),
    none on a perfect wafer."""
    if dead_fraction <= 0 or lane < 3:
        return 0
    return int(min(int(lane * MAX_SPARE_FRACTION), max(1, np.ceil(dead_fraction * lane - 1e-9))))


@dataclasses.dataclass(frozen=True)
class LaneGeometry:
    lane: int
    spare: int
    row_of: np.ndarray      # int32 [G]: mesh row of each lane row, in curve order
    lane_of: np.ndarray     # int32 [G]: its lane
    col_map: np.ndarray     # int32 [width]: lane column of each slot column (spares left out)

    @property
    def width(self) -> int:
        return len(self.col_map)

    @property
    def capacity(self) -> int:
        return len(self.row_of) * self.width

    def cells(self, slot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g = slot // self.width
        return self.row_of[g], self.lane_of[g] * self.lane + self.col_map[slot % self.width]


def dead_fraction(usable: np.ndarray, lane: int) -> float:
    """Unusable cells of the lane rows a lane geometry keeps."""
    keep, live = _lane_rows(usable, lane)
    cells = int(keep.sum()) * lane
    return 1.0 - int(live[keep].sum()) / cells if cells else 0.0


def _lane_rows(usable: np.ndarray, lane: int):
    rows, cols = usable.shape
    n = cols // lane
    live = usable[:, : n * lane].reshape(rows, n, lane).sum(2)      # [rows, lanes]
    return live * 2 >= lane, live                                     # rows at least half usable


def lane_geometry(usable: np.ndarray, lane: int, spare: int) -> LaneGeometry:
    rows, cols = usable.shape
    lane = max(1, min(int(lane), cols))
    keep, _ = _lane_rows(usable, lane)
    row_of, lane_of = [], []
    for b in range(keep.shape[1]):
        rr = np.flatnonzero(keep[:, b])
        row_of.append(rr if b % 2 == 0 else rr[::-1])
        lane_of.append(np.full(len(rr), b))
    spare = min(int(spare), max(0, lane - 1))
    gaps = {(2 * t + 1) * lane // (2 * spare) for t in range(spare)} if spare else set()
    col_map = np.array([c for c in range(lane) if c not in gaps], np.int32)
    cat = (lambda xs: np.concatenate(xs).astype(np.int32) if xs else np.zeros(0, np.int32))
    return LaneGeometry(lane, lane - len(col_map), cat(row_of), cat(lane_of), col_map)


def slot_count(usable: np.ndarray, lane: int, spare: int, layout: str = "lanes") -> int:
    """Slots the tiler may fill given the ``usable`` (reachable) cores: those of whole lanes; with
    spares, the lane geometry's slots and never more than the usable cores (so displaced tiles
    find free ones); row-major, every usable core."""
    if check_layout(layout) == "row-major":
        return int(usable.sum())
    if layout == "lanes":
        lane = max(1, min(int(lane), usable.shape[1]))
        return int(usable[:, : (usable.shape[1] // lane) * lane].sum())
    return min(lane_geometry(usable, lane, spare).capacity, int(usable.sum()))


def tile_capacity(alive: np.ndarray, lane: int, spare: int, layout: str = "lanes") -> int:
    """``slot_count`` of an alive map (its reachable cores)."""
    return slot_count(reachable(alive), lane, spare, layout)
