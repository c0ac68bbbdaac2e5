"""Per-unit decode latency estimates used to balance pipeline stages.

An interface the timing model (issue 5) refines: anything with
``unit_latency_s(unit, target, bytes_per_core)`` will do.  The default is
deliberately simple and documented in docs/planning.md.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Protocol

from .memory import Unit


class LatencyEstimate(Protocol):
    name: str

    def unit_latency_s(self, unit: Unit, target, bytes_per_core: int) -> float: ...


@dataclasses.dataclass(frozen=True)
class PackedComputeEstimate:
    """A unit's weights packed densely over ``cores = bytes / bytes_per_core`` cores: its
    decode step takes its FLOPs over those cores' peak (the mesh GEMV is bound by each
    core's own tile), plus a broadcast and a reduction across the unit's region
    (about 2 x sqrt(cores) hops).  Units are sequential within a stage."""
    name: str = "packed-compute"

    def unit_latency_s(self, unit: Unit, target, bytes_per_core: int) -> float:
        cores = max(1, math.ceil(unit.total_bytes / bytes_per_core))
        compute = unit.flops / (cores * target.peak_flops_per_core)
        hops = 2 * math.isqrt(cores) * target.fabric.hop_latency
        return compute + hops / target.core.clock


def latencies_ns(units, estimate: LatencyEstimate, target, bytes_per_core: int) -> list[int]:
    """Integer nanoseconds (CP-SAT works on integers); at least 1 per unit."""
    return [max(1, round(estimate.unit_latency_s(u, target, bytes_per_core) * 1e9)) for u in units]


def cut_latencies_ns(units, target) -> list[int]:
    """Per unit, what cutting the pipeline after it costs its stage beyond the cheapest cut of the
    model: the activations live across it (``Unit.out_bytes``, every value a later unit reads) past
    the cheapest cut's (the residual stream between layers), over the off-wafer bandwidth.  The
    share every boundary pays alike (wafercc.perf.model.boundary_seconds: the off-wafer latency,
    the residual, the edge hops placement decides) is the same at every cut, so it is left out: a
    whole-layer or block partition balances as it did without cut costs (all zero)."""
    live = [u.out_bytes for u in units[:-1] if u.out_bytes > 0]
    base = min(live, default=0)
    bw = float(target.io.off_wafer_bandwidth)
    return [round(max(0, u.out_bytes - base) / bw * 1e9) for u in units]
