"""Planning options: dtypes, context, batch, KV placement, wafer limits, layout, solver settings."""
from __future__ import annotations

import dataclasses
import re

from ..errors import WaferccError
from ..ir import DEFAULT_CONTEXT, DType
from ..passes.solver import SolverOptions  # noqa: F401  (defined below plan so passes need not import plan)
from ..limits import MAX_WAFERS
from ..target.geometry import DEFAULT_LAYOUT, DEFAULT_MAPPING, DEFAULT_REDUCTION, LAYOUTS, REDUCTIONS, parse_mapping

KV_PLACEMENTS = ("beside", "dedicated")
PARTITIONS = ("layer", "block", "op")   # the partition's unit granularities, coarsest first
# the most wafers a plan may use: the planner builds one defect map per wafer it considers, so
# this bounds its memory and time; the same bound as --wafers / --max-wafers (wafercc/limits.py)
MAX_PLAN_WAFERS = MAX_WAFERS


class PlanError(WaferccError):
    """Planning options are invalid (bad dtype, non-positive context, ...)."""


@dataclasses.dataclass(frozen=True)
class PlanOptions:
    dtype: DType | None = None             # weights; None: the model's own (per-model default)
    kv_dtype: DType | None = None          # KV cache; None: the weight dtype
    act_dtype: DType | None = None         # activations and receive buffers; None: the weight dtype
    dtype_overrides: tuple[tuple[str, DType], ...] = ()  # (regex on node name or op, dtype), first match wins
    context: int = DEFAULT_CONTEXT
    batch: int = 1
    kv_placement: str = "beside"
    max_wafers: int | None = None
    wafers: int | None = None              # spread over exactly this many (>= the minimum)
    solver: SolverOptions = SolverOptions()
    # the floorplan the plan is for (passes/place_route.PlaceOptions): capacity counts its tiler slots
    layout: str = DEFAULT_LAYOUT
    lane: int | None = None                # lane width; None: the floorplan's choice for the mesh
    reduction: str = DEFAULT_REDUCTION     # the tile plan's reduction shape (the estimate times it)
    # the partition's units: whole layers, blocks or ops (plan/memory.py PARTITIONS); None: the
    # coarsest of them that needs the fewest wafers
    partition: str | None = None
    mapping: str = DEFAULT_MAPPING         # layers sharing cores (the tile plan's and the estimate's)

    def __post_init__(self):
        if self.context < 1:
            raise PlanError(f"context {self.context}: expected a positive number of tokens")
        if self.batch < 1:
            raise PlanError(f"batch {self.batch}: expected a positive number of sequences")
        if self.kv_placement not in KV_PLACEMENTS:
            raise PlanError(f"KV placement '{self.kv_placement}': expected one of {', '.join(KV_PLACEMENTS)}")
        for n in (self.max_wafers, self.wafers):
            if n is not None and n < 1:
                raise PlanError(f"wafer count {n}: expected at least 1")
        if self.layout not in LAYOUTS:
            raise PlanError(f"layout '{self.layout}': expected one of {', '.join(LAYOUTS)}")
        if self.reduction not in REDUCTIONS:
            raise PlanError(f"reduction '{self.reduction}': expected one of {', '.join(REDUCTIONS)}")
        if self.partition is not None and self.partition not in PARTITIONS:
            raise PlanError(f"partition '{self.partition}': expected one of {', '.join(PARTITIONS)}")
        try:
            parse_mapping(self.mapping)
        except ValueError as e:
            raise PlanError(str(e)) from None
        if self.lane is not None and self.lane < 1:
            raise PlanError(f"lane width {self.lane}: expected at least 1 column")
        if self.wafers and self.max_wafers and self.wafers > self.max_wafers:
            raise PlanError(f"--wafers {self.wafers} exceeds --max-wafers {self.max_wafers}")
        for pattern, _ in self.dtype_overrides:
            try:
                re.compile(pattern)
            except re.error as e:
                raise PlanError(f"dtype override pattern '{pattern}': {e}") from None

    def weight_dtype_for(self, node_name: str, op: str, stored: DType) -> DType:
        for pattern, dt in self.dtype_overrides:
            if re.search(pattern, node_name) or re.fullmatch(pattern, op):
                return dt
        return self.dtype or stored

    def replace(self, **kw) -> "PlanOptions":
        return dataclasses.replace(self, **kw)


def parse_dtype(text: str, what: str = "dtype") -> DType:
    try:
        return DType.parse(text)
    except ValueError as e:
        raise PlanError(f"{what}: {e}") from None


def parse_overrides(items: list[str]) -> tuple[tuple[str, DType], ...]:
    """``PATTERN=DTYPE`` items, e.g. ``moe=fp4`` or ``lm_head=bf16``."""
    out = []
    for item in items:
        pattern, sep, dt = item.partition("=")
        if not sep or not pattern:
            raise PlanError(f"dtype override '{item}': expected PATTERN=DTYPE (e.g. moe=fp4)")
        out.append((pattern, parse_dtype(dt, f"dtype override '{item}'")))
    return tuple(out)
