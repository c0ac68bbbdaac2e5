"""Partition: contiguous units (embedding, layers, head) onto wafers in pipeline order.

Two questions, each answered by CP-SAT and by an exact dynamic program that
cross-checks it (tests compare them on random instances):

* the fewest wafers whose capacities hold the units, contiguously and in order;
* at a given wafer count (>= that minimum), the assignment that minimises the
  slowest stage's latency, using each wafer.  A stage that ends before the last unit also
  pays ``cuts[i]``, the cost of sending what is live after its last unit i to the next wafer
  (the activations crossing a boundary inside a layer are more than the residual stream).

CP-SAT's stage variable of each unit only ranges over the stages the exact fewest-wafer counts
of its prefix and suffix allow (``_windows``), so fine units (ops) keep the model small.

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


def stage_latencies(wafer_of_unit, latencies, cuts: Sequence[int] | None = None) -> list[int]:
    """Each stage's latency: its units' plus, but for the last stage, the cut after its last unit."""
    rs = stages(wafer_of_unit)
    return [sum(latencies[i] for i in r) + (cuts[r[-1]] if cuts and k < len(rs) - 1 else 0)
            for k, r in enumerate(rs)]


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
               wafers: int, cuts: Sequence[int] | None = None) -> list[int] | None:
    """Exactly ``wafers`` non-empty stages minimising the slowest stage (with its outgoing cut);
    None if infeasible."""
    n = len(sizes)
    cut = list(cuts) if cuts else [0] * n
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
                v = max(best[k - 1][i], lat_pre[j] - lat_pre[i] + (cut[j - 1] if j < n else 0))
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

def _greedy_counts(sizes: Sequence[int], capacities: Sequence[int]) -> list[int]:
    """counts[i]: the fewest of ``capacities`` (in order) holding units 0..i contiguously (greedy
    filling is exact for contiguous units and ordered wafers); len(capacities) + 1 if they do not."""
    out, k, used = [], 0, 0
    for s in sizes:
        while k < len(capacities) and used + s > capacities[k]:
            k, used = k + 1, 0
        if k == len(capacities):
            out.append(len(capacities) + 1)
            continue
        used += s
        out.append(k + 1)
    return out


def _windows(sizes: Sequence[int], capacities: Sequence[int], k_max: int, all_used: bool) -> list[range]:
    """The stages unit i can take on wafers 0..k_max-1: units 0..i need ``pre[i]`` wafers, and
    (``all_used``: every wafer holds units) units i..n-1 on the last wafers need ``suf[i]``; a unit
    is at most one stage past the one before it."""
    n = len(sizes)
    caps = list(capacities[:k_max])
    pre = _greedy_counts(sizes, caps)
    suf = _greedy_counts(list(sizes)[::-1], caps[::-1])[::-1] if all_used else [1] * n
    out = []
    for i in range(n):
        lo = max(0, pre[i] - 1)
        out.append(range(lo, max(lo, min(i, k_max - suf[i]) + 1)))
    return out


def _model(n: int, k_max: int, windows: list[range] | None = None):
    m = cp_model.CpModel()
    windows = windows or [range(k_max)] * n
    stage = [m.NewIntVar(0, k_max - 1, f"stage{i}") for i in range(n)]
    on = [{k: m.NewBoolVar(f"on{i}_{k}") for k in windows[i]} for i in range(n)]
    m.Add(stage[0] == 0)
    for i in range(n):
        m.AddExactlyOne(on[i].values())
        m.Add(stage[i] == sum(k * v for k, v in on[i].items()))
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


def min_wafers_cpsat(sizes, capacities, solver_opts: SolverOptions, hint: Sequence[int] | None = None,
                     all_used: bool = False):
    """``all_used``: the caller knows no fewer wafers hold the units (the DP's count), so every
    solution uses them all and the suffix windows apply."""
    n, k_max = len(sizes), len(capacities)
    m, stage, on = _model(n, k_max, _windows(sizes, capacities, k_max, all_used))
    for k in range(k_max):
        m.Add(sum(sizes[i] * on[i][k] for i in range(n) if k in on[i]) <= capacities[k])
    m.Minimize(stage[n - 1])
    s, status, secs = _solve(m, solver_opts, stage if hint else [], hint or [])
    if status not in ("OPTIMAL", "FEASIBLE"):
        return None, SolveStats("cp-sat", status, None, None, secs)
    sol = [int(s.Value(v)) for v in stage]
    return sol, SolveStats("cp-sat", status, sol[-1] + 1, int(s.BestObjectiveBound()) + 1, secs)


def balance_cpsat(sizes, latencies, capacities, wafers: int, solver_opts: SolverOptions,
                  hint: Sequence[int] | None = None, cuts: Sequence[int] | None = None):
    n = len(sizes)
    win = [range(max(w.start, wafers - (n - i)), w.stop) for i, w in enumerate(_windows(sizes, capacities, wafers, True))]
    m, stage, on = _model(n, wafers, win)
    m.Add(stage[n - 1] == wafers - 1)
    bound = m.NewIntVar(0, sum(latencies) + sum(cuts or [0]), "slowest")
    ends: dict[int, list] = {}
    for i in range(n - 1):      # stage k ends at unit i: on[i][k] and on[i+1][k+1]; it pays cuts[i]
        for k in on[i]:
            if cuts and cuts[i] and k + 1 in on[i + 1]:
                e = m.NewBoolVar(f"end{i}_{k}")
                m.Add(e >= on[i][k] + on[i + 1][k + 1] - 1)
                ends.setdefault(k, []).append(cuts[i] * e)
    for k in range(wafers):
        m.Add(sum(sizes[i] * on[i][k] for i in range(n) if k in on[i]) <= capacities[k])
        m.Add(sum(latencies[i] * on[i][k] for i in range(n) if k in on[i]) + sum(ends.get(k, [])) <= bound)
    m.Minimize(bound)
    s, status, secs = _solve(m, solver_opts, stage if hint else [], hint or [])
    if status not in ("OPTIMAL", "FEASIBLE"):
        return None, SolveStats("cp-sat", status, None, None, secs)
    sol = [int(s.Value(v)) for v in stage]
    return sol, SolveStats("cp-sat", status, int(s.ObjectiveValue()), int(s.BestObjectiveBound()), secs)


def partition(sizes: Sequence[int], latencies: Sequence[int], capacities: Sequence[int],
              solver_opts: SolverOptions, wafers: int | None = None,
              cuts: Sequence[int] | None = None) -> Assignment | None:
    """Fewest wafers (or exactly ``wafers`` if given and feasible), slowest stage balanced
    (``cuts[i]``: what a boundary after unit i adds to its stage).  Returns None when no contiguous
    assignment fits ``capacities``."""
    t0 = time.perf_counter()
    dp_min = min_wafers_dp(sizes, capacities)
    if dp_min is None:
        return None
    stats = [SolveStats("dp", "OPTIMAL", dp_min[-1] + 1, dp_min[-1] + 1, time.perf_counter() - t0)]
    cp_min, st = min_wafers_cpsat(sizes, capacities[:dp_min[-1] + 1], solver_opts, dp_min, all_used=True)
    stats.append(st)
    w_min = dp_min[-1] + 1
    if cp_min is not None and cp_min[-1] + 1 < w_min:  # the DP is exact: this would be a bug
        raise AssertionError(f"CP-SAT found {cp_min[-1] + 1} wafers, the exact DP {w_min}")
    w = max(w_min, wafers or w_min)
    t1 = time.perf_counter()
    dp_bal = balance_dp(sizes, latencies, capacities, w, cuts)
    if dp_bal is None:
        return None
    stats.append(SolveStats("dp", "OPTIMAL", max(stage_latencies(dp_bal, latencies, cuts)), None,
                            time.perf_counter() - t1))
    cp_bal, st = balance_cpsat(sizes, latencies, capacities[:w], w, solver_opts, dp_bal, cuts)
    stats.append(st)
    chosen = dp_bal
    if cp_bal is not None and max(stage_latencies(cp_bal, latencies, cuts)) <= \
            max(stage_latencies(dp_bal, latencies, cuts)):
        chosen = cp_bal
    return Assignment(tuple(chosen), w, w_min, max(stage_latencies(chosen, latencies, cuts)), tuple(stats))
