"""Floorplan refinement by CP-SAT: where the wafer has spare slots, shift grids along the curve so
that fewer wide-grid chunks straddle a lane turn.

A chunk (``rows`` lane rows of one wide grid) that crosses from lane b into lane b+1 breaks its
column chains at the turn: the serpentine brings the next row back ``lane`` columns away, so about
``width`` reduction (and broadcast) links become ``lane``-hop routes that all cross the same mesh
row.  The constructive layout packs grids back to back; the slots it leaves unused (the slack:
capacity minus slots used) can instead pad the curve before some grids.

Model (one per wafer, banded along the curve): ``P_g`` = padding inserted before grid g and all
earlier ones (non-decreasing, at most the slack); a chunk with curve interval [a + P_g, b + P_g)
straddles lane boundary B unless b + P_g <= B or a + P_g >= B; minimise the straddling chunks
then the padding moved.  Only (chunk, boundary) pairs the slack can
reach get variables, so the model stays small at any fill.  Seeded with the constructive layout
(P = 0) as a hint; one worker, a fixed seed and a deterministic time limit, so the result is
reproducible; the status, objective, bound and gap are reported.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class RefineOptions:
    deterministic_time: float = 2.0   # CP-SAT deterministic time units (about seconds), reproducible
    workers: int = 1
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class RefineResult:
    status: str          # CP-SAT status name; "SKIPPED" when no chunk can move off a turn
    straddling_before: int
    straddling_after: int
    objective: float
    bound: float
    gap: float
    slack: int
    padding_used: int
    seconds: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def refine_padding(grid_start: np.ndarray, chunks: list[tuple[int, np.ndarray, int]], boundaries: np.ndarray,
                   slack: int, options: RefineOptions = RefineOptions()) -> tuple[np.ndarray, RefineResult]:
    """``grid_start`` [G]: each grid's first slot in the packed layout; ``chunks``: (grid, chunk start
    offsets from the grid's start, chunk length) for the wide grids; ``boundaries``: slots where a
    new lane starts.  Returns the padding to insert before each grid and the solver's report."""
    from ortools.sat.python import cp_model

    from .solver import cp_solver
    n = len(grid_start)
    pairs = []                                    # (grid, lo, hi) of chunks the slack can move off a turn
    before = 0
    for g, offs, length in chunks:
        a = grid_start[g] + offs
        for b in boundaries[(boundaries > a.min()) & (boundaries < a.max() + length + slack)]:
            lo = b - (a + length)                 # P <= lo: the chunk ends by b;  P >= hi: it starts at b
            hi = b - a
            near = (hi > 0) & (lo < slack)           # some P in [0, slack] puts b inside the chunk
            for x, y in zip(lo[near], hi[near]):
                pairs.append((g, int(x), int(y)))
                before += int(x < 0 < y)          # straddles at P = 0
    if slack <= 0 or not pairs:
        return np.zeros(n, np.int64), RefineResult("SKIPPED", before, before, before, before, 0.0, max(slack, 0), 0,
                                                    0.0)
    m = cp_model.CpModel()
    used = sorted({p[0] for p in pairs})
    P = {g: m.NewIntVar(0, slack, f"P{g}") for g in used}
    for g0, g1 in zip(used, used[1:]):
        m.Add(P[g1] >= P[g0])                     # padding only accumulates along the curve
    straddle = []
    for k, (g, lo, hi) in enumerate(pairs):
        s = m.NewBoolVar(f"s{k}")
        end_first = m.NewBoolVar(f"e{k}")
        m.Add(P[g] <= lo).OnlyEnforceIf(end_first)
        m.Add(P[g] >= hi).OnlyEnforceIf([end_first.Not(), s.Not()])
        straddle.append(s)
        m.AddHint(s, int(lo < 0 < hi))
    for g in used:
        m.AddHint(P[g], 0)
    last = P[used[-1]]
    # straddles first; among equal layouts the least padding moved (keeps ops packed)
    m.Minimize(sum(straddle) * (slack + 1) + last)
    solver = cp_solver(options.seed, options.workers, options.deterministic_time)
    status = solver.Solve(m)
    name = solver.StatusName(status)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return np.zeros(n, np.int64), RefineResult(name, before, before, before, before, 0.0, slack, 0,
                                                    solver.WallTime())
    prefix = np.zeros(n, np.int64)
    for g in used:
        prefix[g] = solver.Value(P[g])
    prefix = np.maximum.accumulate(prefix)        # grids without variables follow the one before
    pads = np.diff(np.concatenate([[0], prefix]))
    after = int(sum(solver.Value(s) for s in straddle))
    obj, bound = solver.ObjectiveValue(), solver.BestObjectiveBound()
    gap = 0.0 if obj <= 0 else max(0.0, (obj - bound) / obj)
    return pads, RefineResult(name, before, after, obj, bound, round(gap, 6), slack, int(prefix[-1]),
                              solver.WallTime())
