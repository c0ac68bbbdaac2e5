"""Partition: contiguous units (embedding, layers, head) onto wafers in pipeline order.

Two questions, each answered by CP-SAT and by an exact dynamic program that
cross-checks it (tests compare them on random instances):

* the fewest wafers whose capacities hold the units, contiguously and in order;
* at a given wafer count (>= that minimum), the assignment that minimises the
  slowest stage's latency, using each wafer.

Wafer capacities may differ (defects).  Sizes are bytes, latencies integer
nanoseconds.  CP-SAT runs with a fixed seed, worker count and deterministic
time limit, and reports its status; the DP is exact.
"""
from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Sequence

from ortools.sat.python import cp_model

from .solver import SolverOptions, cp_solver


@dataclasses.dataclass(frozen=True)
class SolveStats:
    solver: str            # "cp-sat" or "dp"
    status: str            # OPTIMAL / FEASIBLE / INFEASIBLE / UNKNOWN (cp-sat); OPTIMAL (dp)
    objective: int | None
    bound: int | None
    seconds: float

    @property
    def gap(self) -> int | None:
        return None if self.objective is None or self.bound is None else self.objective - self.bound


@dataclasses.dataclass(frozen=True)
class Assignment:
    wafer_of_unit: tuple[int, ...]   # non-decreasing, steps of 0 or 1, starting at 0
    wafers: int
    min_wafers: int                  # fewest wafers that hold the units (wafers may be more if asked)
    max_stage_latency_ns: int
    stats: tuple[SolveStats, ...]


def stages(wafer_of_unit: Sequence[int]) -> list[range]:
    out = []
    for _, grp in itertools.groupby(range(len(wafer_of_unit)), key=lambda i: wafer_of_unit[i]):
        g = list(grp)
        out.append(range(g[0], g[-1] + 1))
    return out


def stage_latencies(wafer_of_unit, latencies) -> list[int]:
    return [sum(latencies[i] for i in r) for r in stages(wafer_of_unit)]


# -- exact dynamic programs ------------------------------------------------------------

def min_wafers_dp(sizes: Sequence[int], capacities: Sequence[int]) -> list[int] | None:
    """Fewest wafers, in order, each non-empty; exact for per-wafer capacities that differ
    (defects): ``reach[k]`` holds the prefix lengths k wafers can hold exactly.  None if no
    number of the given wafers holds the units."""
    n = len(sizes)
    size_pre = list(itertools.accumulate(sizes, initial=0))
    reach = [0] * (n + 1)   # reach[j] = 1 if the first j units fit the wafers so far
    reach[0] = 1
    back: list[list[int]] = []
    for cap in capacities:
        nxt, arg = [0] * (n + 1), [-1] * (n + 1)
        for i in range(n):
            if not reach[i]:
                continue
            for j in range(i + 1, n + 1):
                if size_pre[j] - size_pre[i] > cap:
                    break
                if not nxt[j]:
                    nxt[j], arg[j] = 1, i
        back.append(arg)
        if nxt[n]:
            out, j = [0] * n, n
            for k in range(len(back) - 1, -1, -1):
                i = back[k][j]
                out[i:j] = [k] * (j - i)
                j = i
            return out
        if not any(nxt):
            return None
        reach = nxt
    return None


def balance_dp(sizes: Sequence[int], latencies: Sequence[int], capacities: Sequence[int],
               wafers: int) -> list[int] | None:
    """Exactly ``wafers`` non-empty stages minimising the slowest stage; None if infeasible."""
    n = len(sizes)
    if wafers > n or wafers > len(capacities):
        return None
    size_pre = list(itertools.accumulate(sizes, initial=0))
    lat_pre = list(itertools.accumulate(latencies, initial=0))
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(wafers + 1)]
    arg = [[-1] * (n + 1) for _ in range(wafers + 1)]
    best[0][0] = 0
    for k in range(1, wafers + 1):
        cap = capacities[k - 1]
        for j in range(k, n - (wafers - k) + 1):
            for i in range(j - 1, k - 2, -1):
                if size_pre[j] - size_pre[i] > cap:
                    break
                if best[k - 1][i] == inf:
                    continue
                v = max(best[k - 1][i], lat_pre[j] - lat_pre[i])
                if v < best[k][j]:
                    best[k][j], arg[k][j] = v, i
    if best[wafers][n] == inf:
        return None
    out = [0] * n
    j = n
    for k in range(wafers, 0, -1):
        i = arg[k][j]
        for u in range(i, j):
            out[u] = k - 1
        j = i
    return out


# -- CP-SAT -----------------------------------------------------------------------------------

def _model(n: int, k_max: int):
    m = cp_model.CpModel()
    stage = [m.NewIntVar(0, k_max - 1, f"stage{i}") for i in range(n)]
    on = [[m.NewBoolVar(f"on{i}_{k}") for k in range(k_max)] for i in range(n)]
    m.Add(stage[0] == 0)
    for i in range(n):
        m.AddExactlyOne(on[i])
        m.Add(stage[i] == sum(k * on[i][k] for k in range(k_max)))
    for i in range(n - 1):  # contiguous, in pipeline order, no wafer skipped
        d = stage[i + 1] - stage[i]
        m.Add(d >= 0)
        m.Add(d <= 1)
    return m, stage, on


def _solve(m, solver_opts: SolverOptions, hint_vars, hint_vals):
    for v, x in zip(hint_vars, hint_vals):
        m.AddHint(v, x)
    s = cp_solver(solver_opts.seed, solver_opts.workers, solver_opts.time_limit_s, 10 * solver_opts.time_limit_s)
    t0 = time.perf_counter()
    status = s.Solve(m)
    return s, s.StatusName(status), time.perf_counter() - t0


def min_wafers_cpsat(sizes, capacities, solver_opts: SolverOptions, hint: Sequence[int] | None = None):
    n, k_max = len(sizes), len(capacities)
    m, stage, on = _model(n, k_max)
    for k in range(k_max):
        m.Add(sum(sizes[i] * on[i][k] for i in range(n)) <= capacities[k])
    m.Minimize(stage[n - 1])
    s, status, secs = _solve(m, solver_opts, stage if hint else [], hint or [])
    if status not in ("OPTIMAL", "FEASIBLE"):
        return None, SolveStats("cp-sat", status, None, None, secs)
    sol = [int(s.Value(v)) for v in stage]
    return sol, SolveStats("cp-sat", status, sol[-1] + 1, int(s.BestObjectiveBound()) + 1, secs)


def balance_cpsat(sizes, latencies, capacities, wafers: int, solver_opts: SolverOptions,
                  hint: Sequence[int] | None = None):
    n = len(sizes)
    m, stage, on = _model(n, wafers)
    m.Add(stage[n - 1] == wafers - 1)
    bound = m.NewIntVar(0, sum(latencies), "slowest")
    for k in range(wafers):
        m.Add(sum(sizes[i] * on[i][k] for i in range(n)) <= capacities[k])
        m.Add(sum(latencies[i] * on[i][k] for i in range(n)) <= bound)
    m.Minimize(bound)
    s, status, secs = _solve(m, solver_opts, stage if hint else [], hint or [])
    if status not in ("OPTIMAL", "FEASIBLE"):
        return None, SolveStats("cp-sat", status, None, None, secs)
    sol = [int(s.Value(v)) for v in stage]
    return sol, SolveStats("cp-sat", status, int(s.ObjectiveValue()), int(s.BestObjectiveBound()), secs)


def partition(sizes: Sequence[int], latencies: Sequence[int], capacities: Sequence[int],
              solver_opts: SolverOptions, wafers: int | None = None) -> Assignment | None:
    """Fewest wafers (or exactly ``wafers`` if given and feasible), slowest stage balanced.
    Returns None when no contiguous assignment fits ``capacities``."""
    t0 = time.perf_counter()
    dp_min = min_wafers_dp(sizes, capacities)
    if dp_min is None:
        return None
    stats = [SolveStats("dp", "OPTIMAL", dp_min[-1] + 1, dp_min[-1] + 1, time.perf_counter() - t0)]
    cp_min, st = min_wafers_cpsat(sizes, capacities[:dp_min[-1] + 1], solver_opts, dp_min)
    stats.append(st)
    w_min = dp_min[-1] + 1
    if cp_min is not None and cp_min[-1] + 1 < w_min:  # the DP is exact: this would be a bug
        raise AssertionError(f"CP-SAT found {cp_min[-1] + 1} wafers, the exact DP {w_min}")
    w = max(w_min, wafers or w_min)
    t1 = time.perf_counter()
    dp_bal = balance_dp(sizes, latencies, capacities, w)
    if dp_bal is None:
        return None
    stats.append(SolveStats("dp", "OPTIMAL", max(stage_latencies(dp_bal, latencies)), None,
                            time.perf_counter() - t1))
    cp_bal, st = balance_cpsat(sizes, latencies, capacities[:w], w, solver_opts, dp_bal)
    stats.append(st)
    chosen = dp_bal
    if cp_bal is not None and max(stage_latencies(cp_bal, latencies)) <= max(stage_latencies(dp_bal, latencies)):
        chosen = cp_bal
    return Assignment(tuple(chosen), w, w_min, max(stage_latencies(chosen, latencies)), tuple(stats))
