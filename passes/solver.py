"""Settings every CP-SAT call of the passes takes (wafercc.plan.options re-exports them)."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class SolverOptions:
    """Every CP-SAT call uses these: results are reproducible and bounded in time."""
    seed: int = 0
    workers: int = 1
    time_limit_s: float = 10.0
