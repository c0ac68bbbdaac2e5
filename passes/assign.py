"""Assign: tiles whose floorplan cell is a dead (or unreachable) core move to free good cores,
chosen by a min-cost assignment (OR-Tools min-cost flow) that minimises the total Manhattan move.

The lane floorplan (passes/floorplan.py) lays tiles on the defect-free lane geometry, with spare
columns in every lane, so a tile's ideal cell keeps its chain neighbours one hop away.  Each tile
whose cell is unusable is *displaced*; it may go to any usable core no tile holds (spare columns,
grid padding, the unused tail of the lanes).  A displaced tile's chain edges grow by about its move
distance, so the sum of Manhattan moves is the cost.

Candidates per displaced tile are its ``k`` nearest free cores (Manhattan, scipy cKDTree); when the
flow cannot place every displaced tile (a cluster of defects: a dead die) ``k`` grows fourfold until
it can or every free core is a candidate.  Ties resolve by arc order (cores in row-major order), so
the result is deterministic.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from ..errors import PlacementError

K_FIRST = 8          # nearest free cores offered to each displaced tile on the first try


class AssignError(PlacementError):
    """Displaced tiles outnumber the free good cores of a wafer."""


@dataclasses.dataclass(frozen=True)
class AssignResult:
    status: str          # OR-Tools status name ("OPTIMAL"), or "NONE" when no tile was displaced
    displaced: int       # tiles moved off unusable cells
    cost: int            # total Manhattan move (the flow's optimal cost)
    max_move: int
    candidates: int      # nearest free cores offered per displaced tile in the solved round
    rounds: int
    seconds: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _flow(disp_rc: np.ndarray, free_rc: np.ndarray, k: int):
    """Min-cost flow of every displaced tile to one of its k nearest free cores: (max flow, cost,
    chosen free index per displaced tile, status name)."""
    from ortools.graph.python import min_cost_flow
    from scipy.spatial import cKDTree
    n = len(disp_rc)
    k = min(k, len(free_rc))
    dist, near = cKDTree(free_rc).query(disp_rc, k=k, p=1)
    near = np.asarray(near, np.int64).reshape(n, k)
    dist = np.rint(np.asarray(dist).reshape(n, k)).astype(np.int64)
    cand, local = np.unique(near, return_inverse=True)          # free cores offered to anyone
    local = local.reshape(n, k)
    src, sink = n + len(cand), n + len(cand) + 1
    tails = np.concatenate([np.full(n, src), np.repeat(np.arange(n), k), n + np.arange(len(cand))])
    heads = np.concatenate([np.arange(n), n + local.ravel(), np.full(len(cand), sink)])
    costs = np.concatenate([np.zeros(n, np.int64), dist.ravel(), np.zeros(len(cand), np.int64)])
    caps = np.ones(len(tails), np.int64)
    f = min_cost_flow.SimpleMinCostFlow()
    f.add_arcs_with_capacity_and_unit_cost(tails.astype(np.int32), heads.astype(np.int32), caps, costs)
    f.set_node_supply(src, n)
    f.set_node_supply(sink, -n)
    status = f.solve_max_flow_with_min_cost()
    flows = f.flows(np.arange(n, n + n * k, dtype=np.int32)).reshape(n, k)
    chosen = np.where(flows.any(axis=1), cand[local[np.arange(n), np.argmax(flows, axis=1)]], -1)
    return int(f.maximum_flow()), int(f.optimal_cost()), chosen, status.name


def assign_displaced(index: int, row: np.ndarray, col: np.ndarray, usable: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, AssignResult]:
    """New (row, col) of every tile: unchanged where the cell is usable, else the free core the
    min-cost assignment gave it.  Raises AssignError when free usable cores are too few."""
    t0 = time.perf_counter()
    row, col = np.asarray(row, np.int32), np.asarray(col, np.int32)
    bad = ~usable[row, col]
    disp = np.flatnonzero(bad)
    if len(disp) == 0:
        return row, col, AssignResult("NONE", 0, 0, 0, 0, 0, time.perf_counter() - t0)
    held = np.zeros(usable.shape, bool)
    held[row[~bad], col[~bad]] = True
    free_r, free_c = np.nonzero(usable & ~held)
    if len(free_r) < len(disp):
        raise AssignError(f"wafer {index}: {len(disp)} tiles sit on dead cores but only {len(free_r)} "
                          f"good cores are free to take them")
    disp_rc = np.stack([row[disp], col[disp]], 1)
    free_rc = np.stack([free_r, free_c], 1)
    k, rounds = K_FIRST, 0
    while True:
        rounds += 1
        got, cost, chosen, status = _flow(disp_rc, free_rc, k)
        if got == len(disp) or k >= len(free_rc):
            break
        k *= 4
    if got < len(disp):   # cannot happen with every free core a candidate; kept loud regardless
        raise AssignError(f"wafer {index}: only {got} of {len(disp)} displaced tiles found a free core")
    row, col = row.copy(), col.copy()
    row[disp], col[disp] = free_r[chosen], free_c[chosen]
    moves = np.abs(disp_rc - free_rc[chosen]).sum(1)
    return row, col, AssignResult(status, len(disp), cost, int(moves.max()), min(k, len(free_rc)), rounds,
                                  time.perf_counter() - t0)
