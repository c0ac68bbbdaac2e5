"""Settings every CP-SAT call of the passes takes (wafercc.plan.options re-exports them)."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class SolverOptions:
    """Every CP-SAT call uses these: results are reproducible and bounded in time."""
    seed: int = 0
    workers: int = 1
    time_limit_s: float = 10.0


def cp_solver(seed: int, workers: int, deterministic_time: float, wall_time: float | None = None):
    """A CP-SAT solver with the passes' settings.  ``catch_sigint_signal`` off: by default CP-SAT
    installs its own SIGINT handler and restores SIG_DFL after the solve, so a later Ctrl-C would
    kill the process without Python's KeyboardInterrupt (the CLI's message and clean-up).  Off, a
    Ctrl-C during a solve is raised when the solve returns (within its time limit)."""
    from ortools.sat.python import cp_model
    s = cp_model.CpSolver()
    s.parameters.catch_sigint_signal = False
    s.parameters.random_seed = seed
    s.parameters.num_workers = workers
    # deterministic time: the same inputs give the same answer on any machine load
    s.parameters.max_deterministic_time = deterministic_time
    if wall_time is not None:
        s.parameters.max_time_in_seconds = wall_time
    return s
