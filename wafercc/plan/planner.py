"""Capacity planning: how many wafers, which layers on which wafer, and why.

plan_wafers(graph, target, options, defects, seed) -> WaferPlan
  1. memory plan (memory.py): bytes per unit at the planned dtypes, context, batch;
  2. device model (wafercc.target.Device): capacity of each wafer = the cores the tiler can fill in
     the floorplan's layout (options.layout, options.lane) x the bytes each offers after the
     per-core reserve and receive buffers, so a plan that fits by bytes fits as tiles;
  3. partition (passes/partition.py): fewest wafers, then the slowest stage balanced;
  4. the capacity lower bound and, when more wafers are needed, the constraint that
     added them; with --max-wafers too small, how far off and which levers fix it.
"""
from __future__ import annotations

import dataclasses

from ..ir import Graph
from ..passes.partition import Assignment, SolveStats, partition, stage_latencies, stages
from .latency import LatencyEstimate, PackedComputeEstimate, latencies_ns
from .memory import MemoryPlan, Unit, plan_memory
from .options import PlanError, PlanOptions


@dataclasses.dataclass(frozen=True)
class WaferLoad:
    index: int
    role: str                     # "pipeline" or "kv"
    units: tuple[str, ...]
    layers: tuple[int, int] | None
    weight_bytes: int
    kv_bytes: int
    act_bytes: int
    buffer_bytes: int             # receive buffers on every usable core
    reserve_bytes: int            # per-core code/runtime reserve on every live core
    sram_used_bytes: int          # data placed: weights + KV + activations
    sram_usable_bytes: int        # usable cores x (SRAM - reserve - buffers)
    usable_cores: int             # cores the tiler can fill (reachable, in whole lanes)
    dead_cores: int
    stage_latency_s: float

    @property
    def utilisation(self) -> float:
        return self.sram_used_bytes / self.sram_usable_bytes if self.sram_usable_bytes else 0.0


@dataclasses.dataclass(frozen=True)
class Lever:
    change: str                   # e.g. "fp8 weights"
    wafers: int | None            # wafers needed with it (None: still infeasible)
    saves_bytes: int


@dataclasses.dataclass(frozen=True)
class Infeasibility:
    max_wafers: int
    needed_wafers: int | None
    short_bytes: int              # bytes above what max_wafers wafers hold
    reason: str
    levers: tuple[Lever, ...]


@dataclasses.dataclass(frozen=True)
class WaferPlan:
    model: str
    target: str
    options: PlanOptions
    defects: str
    seed: int
    memory: MemoryPlan
    lower_bound: int
    required: int                 # fewest wafers that hold the model
    used: int                     # wafers in this plan (>= required when --wafers asks)
    pipeline_wafers: int
    kv_wafers: int
    wafers: tuple[WaferLoad, ...]
    explanation: tuple[str, ...]  # why required > lower_bound (empty when equal)
    solver: tuple[SolveStats, ...]
    latency_model: str
    infeasible: Infeasibility | None = None


def receive_buffer_bytes(target) -> int:
    return int(target.core.receive_buffer)


def wafer_bytes(w, overhead: int, options: PlanOptions) -> int:
    """What a plan may put on wafer ``w``: its tiler slots x usable bytes per core."""
    return w.tiler_bytes(overhead, options.layout, options.lane)


class _Capacities:
    """Per-wafer capacities from the device model, generated as far as needed."""

    def __init__(self, device, overhead: int, options: PlanOptions):
        self.device, self.overhead, self.options, self.caps = device, overhead, options, []

    def first(self, n: int) -> list[int]:
        while len(self.caps) < n:
            self.caps.append(wafer_bytes(self.device.wafer(len(self.caps)), self.overhead, self.options))
        return self.caps[:n]

    def lower_bound(self, total: int) -> int:
        n, acc = 0, 0
        while acc < total:
            acc += self.first(n + 1)[n]
            n += 1
        return max(n, 1)


def _fit(sizes, lat, caps: _Capacities, start: int, opts: PlanOptions, wafers: int | None,
         limit: int | None) -> Assignment | None:
    """Partition onto wafers start, start+1, ...; grows the wafer list as needed."""
    if not sizes:
        return Assignment((), 0, 0, 0, ())
    n = max(caps.lower_bound(sum(sizes)) + 2, wafers or 0)
    while True:
        if limit is not None:
            n = min(n, limit)
        cap = caps.first(start + n)[start:]
        if max(sizes) > max(cap):
            return None  # a unit larger than any wafer: no contiguous plan
        a = partition(sizes, lat, cap, opts.solver, wafers)
        if a is not None or (limit is not None and n >= limit) or n >= 4 * len(sizes) + 4:
            return a
        n *= 2


def plan_wafers(graph: Graph, target, options: PlanOptions, device, *,
                estimate: LatencyEstimate | None = None, with_levers: bool = True) -> WaferPlan:
    estimate = estimate or PackedComputeEstimate()
    mem = plan_memory(graph, options)
    overhead = receive_buffer_bytes(target)
    caps = _Capacities(device, overhead, options)
    bpc = device.wafer(0).bytes_per_core(overhead)
    dedicated = options.kv_placement == "dedicated"
    units = list(mem.units)
    pipe_sizes = [u.weight_bytes + u.act_bytes + (0 if dedicated else u.kv_bytes) for u in units]
    lat = latencies_ns(units, estimate, target, bpc)
    lower = caps.lower_bound(mem.total_bytes)
    # --wafers N asks for exactly N: fewer than the model needs is as infeasible as --max-wafers N
    limit = min(n for n in (options.max_wafers, options.wafers) if n) if (options.max_wafers or options.wafers) \
        else None
    pipe = _fit(pipe_sizes, lat, caps, 0, options, options.wafers, limit)
    kv_units = [u for u in units if u.kv_bytes] if dedicated else []
    kv = None
    if pipe is not None and kv_units:
        kv_limit = None if limit is None else limit - pipe.wafers
        kv = _fit([u.kv_bytes for u in kv_units], [1] * len(kv_units), caps, pipe.wafers, options, None,
                  kv_limit) if kv_limit is None or kv_limit > 0 else None
    ok = pipe is not None and (kv is not None or not kv_units)
    if not ok:
        if limit is None:
            big = max(units, key=lambda u: u.total_bytes)
            raise PlanError(f"{big.name} of {graph.name} needs {big.total_bytes / 1e9:.2f} GB, more than one "
                            f"{target.name} wafer holds ({max(caps.first(1)) / 1e9:.2f} GB); layers are not split "
                            f"across wafers")
        return _infeasible(graph, target, options, device, mem, lower, with_levers, estimate)
    loads = _loads(units, pipe, kv_units, kv, device, overhead, options, lat)
    required = pipe.min_wafers + (kv.wafers if kv else 0)
    return WaferPlan(graph.name, target.name, options, device.spec.text, device.seed, mem, lower,
                     required, len(loads), pipe.wafers, kv.wafers if kv else 0, tuple(loads),
                     tuple(_explain(mem, loads, lower, required, caps, dedicated)),
                     pipe.stats + (kv.stats if kv else ()), estimate.name)


def _loads(units: list[Unit], pipe: Assignment, kv_units, kv, device, overhead, options, lat) -> list[WaferLoad]:
    out = []
    lat_stage = stage_latencies(pipe.wafer_of_unit, lat)
    for k, r in enumerate(stages(pipe.wafer_of_unit)):
        out.append(_load(k, "pipeline", [units[i] for i in r], device, overhead, options,
                         lat_stage[k] / 1e9, include_kv=not kv_units))
    if kv:
        for k, r in enumerate(stages(kv.wafer_of_unit)):
            out.append(_load(pipe.wafers + k, "kv", [kv_units[i] for i in r], device, overhead, options, 0.0,
                             include_kv=True, kv_only=True))
    return out


def _load(index, role, members, device, overhead, options, latency, include_kv, kv_only=False) -> WaferLoad:
    w = device.wafer(index)
    weight = 0 if kv_only else sum(u.weight_bytes for u in members)
    act = 0 if kv_only else sum(u.act_bytes for u in members)
    kvb = sum(u.kv_bytes for u in members) if include_kv else 0
    layers = [u.layer for u in members if u.layer is not None]
    slots = w.tiler_slots(options.layout, options.lane)
    return WaferLoad(index, role, tuple(u.name for u in members), (min(layers), max(layers)) if layers else None,
                     weight, kvb, act, slots * overhead, w.usable_cores * w.target.core.sram_reserved,
                     weight + kvb + act, wafer_bytes(w, overhead, options), slots, w.dead_cores, latency)


def _explain(mem: MemoryPlan, loads, lower: int, required: int, caps, dedicated: bool) -> list[str]:
    out = []
    if required > lower:
        free = sum(w.sram_usable_bytes - w.sram_used_bytes for w in loads[:-1])
        biggest = max(mem.units, key=lambda u: u.total_bytes)
        out.append(f"capacity bound {lower} wafer(s) ({mem.total_bytes / 1e9:.2f} GB over "
                   f"{caps.first(1)[0] / 1e9:.2f} GB per wafer); {required} needed because units are whole and "
                   f"contiguous: wafer boundaries leave {free / 1e9:.2f} GB unused "
                   f"(largest unit: {biggest.name}, {biggest.total_bytes / 1e9:.2f} GB)")
        if dedicated:
            out.append("KV caches on dedicated wafers are packed apart from the weights")
    if len(loads) > required:
        out.append(f"{len(loads)} wafers used because --wafers asked for them (the minimum is {required})")
    return out


def _infeasible(graph, target, options, device, mem, lower, with_levers, estimate) -> WaferPlan:
    limit = min(n for n in (options.max_wafers, options.wafers) if n)
    relaxed = dataclasses.replace(options, max_wafers=None, wafers=None)
    try:
        needed = plan_wafers(graph, target, relaxed, device, estimate=estimate, with_levers=False).required
    except PlanError:
        needed = None
    caps = _Capacities(device, receive_buffer_bytes(target), options).first(limit)
    short = max(0, mem.total_bytes - sum(caps))
    reason = (f"{mem.total_bytes / 1e9:.2f} GB does not fit {limit} wafer(s) ({sum(caps) / 1e9:.2f} GB): "
              f"short by {short / 1e9:.2f} GB" if short else
              f"{mem.total_bytes / 1e9:.2f} GB fits {limit} wafer(s) in total, but not as whole contiguous layers")
    levers = tuple(_levers(graph, target, options, device, mem, estimate)) if with_levers else ()
    return WaferPlan(graph.name, target.name, options, device.spec.text, device.seed, mem, lower,
                     needed or 0, 0, 0, 0, (), (), (), estimate.name,
                     Infeasibility(limit, needed, short, reason, levers))


def _levers(graph, target, options, device, mem, estimate):
    """What each single change would need, re-planned for real."""
    from ..ir import DType
    cands = []
    cur_w = mem.weight_dtype
    for dt in (DType.F8E4M3, DType.F4E2M1):
        if DType(cur_w).bits > dt.bits:
            cands.append((f"{dt.value} weights", options.replace(dtype=dt)))
    if mem.kv_bytes and (mem.kv_dtype and DType(mem.kv_dtype).bits > 8):
        cands.append(("f8e4m3 KV cache", options.replace(kv_dtype=DType.F8E4M3)))
    if mem.kv_bytes and options.context > 1:
        c = options.context // 2
        cands.append((f"context {options.context} -> {c}", options.replace(context=c)))
    if options.batch > 1:
        b = options.batch // 2
        cands.append((f"batch {options.batch} -> {b}", options.replace(batch=b)))
    for change, opts in cands:
        relaxed = opts.replace(max_wafers=None, wafers=None)
        try:
            p = plan_wafers(graph, target, relaxed, device, estimate=estimate, with_levers=False)
            yield Lever(change, p.required, mem.total_bytes - p.memory.total_bytes)
        except PlanError:
            yield Lever(change, None, 0)


def summary_rows(plan: WaferPlan) -> list[dict]:
    return [{"index": w.index, "role": w.role, "layers": list(w.layers) if w.layers else None,
             "units": len(w.units), "weight_bytes": w.weight_bytes, "kv_bytes": w.kv_bytes,
             "act_bytes": w.act_bytes, "buffer_bytes": w.buffer_bytes, "reserve_bytes": w.reserve_bytes,
             "sram_used_bytes": w.sram_used_bytes, "sram_usable_bytes": w.sram_usable_bytes,
             "utilisation": round(w.utilisation, 6), "cores_usable": w.usable_cores, "dead_cores": w.dead_cores,
             "stage_latency_s": w.stage_latency_s}
            for w in plan.wafers]
