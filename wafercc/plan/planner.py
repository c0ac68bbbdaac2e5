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
from typing import Callable

from ..ir import Graph
from ..passes.partition import Assignment, SolveStats, min_wafers_dp, partition, stage_latencies, stages
from .latency import LatencyEstimate, PackedComputeEstimate, cut_latencies_ns, latencies_ns
from .memory import PARTITIONS, MemoryPlan, Unit, merge_units, plan_memory, units_at
from .options import MAX_PLAN_WAFERS, PlanError, PlanOptions


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
    out_bytes: int = 0            # activations live across the boundary after this wafer (whole batch)

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
    partition: str = "layer"      # the granularity of the units the partition cut (memory.PARTITIONS)
    tried: tuple[tuple[str, int], ...] = ()   # (granularity, fewest wafers at the planned capacity share) per one priced


def receive_buffer_bytes(target) -> int:
    return int(target.core.receive_buffer)


def wafer_bytes(w, overhead: int, options: PlanOptions) -> int:
    """What a plan may put on wafer ``w``: its tiler slots x usable bytes per core."""
    return w.tiler_bytes(overhead, options.layout, options.lane)


def best_wafer_bytes(device, overhead: int, options: PlanOptions) -> int:
    """What a wafer without a single defect would hold: an upper bound on every wafer's
    ``wafer_bytes``, computed from the target's numbers alone (no defect map is built)."""
    t = device.target
    rows, cols = t.usable_rows, t.usable_cols
    cores = rows * cols
    if options.layout == "lanes":
        lane = max(1, min(device.lane_width(options.layout, options.lane), cols))
        cores = rows * (cols // lane) * lane
    return cores * device.bytes_per_core(overhead)


class _Capacities:
    """Per-wafer capacities from the device model, generated as far as needed and never past
    ``limit`` wafers (each is a defect map of the whole wafer)."""

    def __init__(self, device, overhead: int, options: PlanOptions, limit: int = MAX_PLAN_WAFERS, derate: float = 1.0):
        self.device, self.overhead, self.options, self.caps, self.limit = device, overhead, options, [], limit
        self.derate = derate

    def first(self, n: int) -> list[int]:
        n = min(n, self.limit)
        while len(self.caps) < n:
            k = len(self.caps)
            cap = wafer_bytes(self.device.wafer(k), self.overhead, self.options)
            cap = int(cap * self.derate) if self.derate < 1 else cap
            if cap <= 0:
                raise PlanError(f"wafer {k} of {self.device.target.name} has no usable core under defects "
                                f"'{self.device.spec.text}' (seed {self.device.seed}): nothing can be placed")
            self.caps.append(cap)
        return self.caps[:n]

    def lower_bound(self, total: int) -> int:
        """Fewest wafers whose capacities sum to ``total``; ``limit + 1`` when ``limit`` do not."""
        n, acc = 0, 0
        while acc < total:
            if n >= self.limit:
                return self.limit + 1
            acc += self.first(n + 1)[n]
            n += 1
        return max(n, 1)


def _fit(sizes, lat, caps: _Capacities, start: int, opts: PlanOptions, wafers: int | None,
         limit: int | None, cuts=None) -> Assignment | None:
    """Partition onto wafers start, start+1, ...; grows the wafer list as needed."""
    if not sizes:
        return Assignment((), 0, 0, 0, ())
    n = max(caps.lower_bound(sum(sizes)) + 2, wafers or 0)
    limit = min(limit or caps.limit, caps.limit)
    while True:
        n = min(n, limit)
        cap = caps.first(start + n)[start:]
        if not cap or max(sizes) > max(cap):
            return None  # a unit larger than any wafer: no contiguous plan
        a = partition(sizes, lat, cap, opts.solver, wafers, cuts)
        if a is not None or n >= limit or n >= 4 * len(sizes) + 4:
            return a
        n *= 2


TileCheck = Callable[["WaferPlan"], "TileShortfall | str | None"]


def plan_wafers(graph: Graph, target, options: PlanOptions, device, *,
                estimate: LatencyEstimate | None = None, with_levers: bool = True,
                tile_check: TileCheck | None = None) -> WaferPlan:
    """The plan of fewest wafers (or exactly ``options.wafers``).  With ``tile_check`` (a plan ->
    None when its tiles fit every wafer's floorplan slots, else why not: the tiler's own count, see
    wafercc.driver) a plan that holds the bytes but not the tiles is re-planned: over several wafers
    with every wafer's data capped at the share of its capacity the short wafer's tiles would fit
    (so the partition moves units off it), on one wafer (or past ``MIN_DERATE``) with one more
    wafer; ``required`` and the explanation say so: no plan claims a count the tiler disproved."""
    estimate = estimate or PackedComputeEstimate()
    if tile_check is None:
        return _plan(graph, target, options, device, estimate, with_levers, None)
    limit = min(n for n in (options.max_wafers, options.wafers, MAX_PLAN_WAFERS) if n)
    relaxed = options.replace(wafers=None)
    floor, notes, derate, tight, last = 0, [], 1.0, None, None
    while True:                                      # the fewest wafers whose tiles fit
        p = _plan(graph, target, relaxed, device, estimate, with_levers, tile_check, floor,
                  tuple(notes) + ((tight,) if tight else ()), derate=derate)
        why = None if p.infeasible else tile_check(p)
        if p.infeasible and derate < 1:              # derated past the limit: the tiles, not the bytes
            q, qwhy = last
            return _untileable(q, options, limit, f"{q.used} wafer(s) hold the bytes but not the tiles: {qwhy}",
                               graph, target, device, estimate, with_levers, tile_check)
        if why is None:
            break
        if _derates(p, why, derate):
            last = (p, str(why).split(";")[0])
            derate, tight = _derate(p, why, derate)
            continue
        why = str(why).split(";")[0]                # the shortfall, not the tiler's advice
        if p.used + 1 > limit:
            return _untileable(p, options, limit, f"{p.used} wafer(s) hold the bytes but not the tiles: {why}",
                               graph, target, device, estimate, with_levers, tile_check)
        notes.append(f"{p.used} wafer(s) hold the bytes ({p.wafers[-1].utilisation:.1%} of the last) but not the "
                     f"tiles (tile padding, lane slots, receive buffers): {why}; planned {p.used + 1}")
        floor = p.used + 1
    notes = notes + ([tight] if tight else [])
    if p.infeasible:                                 # by bytes; exactly --wafers W says so with W as the limit
        return _plan(graph, target, options, device, estimate, with_levers, tile_check, derate=derate) \
            if options.wafers else p
    if not options.wafers:
        return p
    if options.wafers < p.required:
        return _untileable(p, options, options.wafers, f"--wafers {options.wafers} is fewer than the "
                           f"{p.required} the tiles need", graph, target, device, estimate, with_levers, tile_check)
    q = _plan(graph, target, options, device, estimate, with_levers, tile_check, 0, tuple(notes), p.required,
              derate=derate)
    why = None if q.infeasible else tile_check(q)
    while why is not None and _derates(q, why, derate):   # exactly --wafers W: move units off the short wafer
        derate, tight = _derate(q, why, derate)
        r = _plan(graph, target, options, device, estimate, with_levers, tile_check, 0,
                  tuple(n for n in notes if not n.startswith("at full capacity")) + (tight,), p.required,
                  derate=derate)
        if r.infeasible:
            break
        q, why = r, tile_check(r)
    if why is not None:
        why = str(why).split(";")[0]
        return _untileable(q, options, options.wafers, f"{q.used} wafer(s) hold the bytes but not the tiles: {why}",
                           graph, target, device, estimate, with_levers, tile_check)
    return q


def _derates(p: "WaferPlan", why, derate: float) -> bool:
    """Whether a tile shortfall is answered by re-planning with less on each wafer: over several
    wafers (the partition can move units), not already at ``MIN_DERATE``."""
    return isinstance(why, TileShortfall) and why.wafer < len(p.wafers) and p.pipeline_wafers > 1 \
        and derate > MIN_DERATE


def _derate(p: "WaferPlan", why: "TileShortfall", derate: float) -> tuple[float, str]:
    """The tiles need more cores than the bytes say (tile padding, lane slots, receive buffers):
    cap every wafer's data at the share of its capacity the short wafer's tiles would fit in."""
    w = p.wafers[why.wafer]
    new = max(MIN_DERATE, min(derate, w.utilisation * why.avail / why.need) * (1 - 1e-3))
    return new, (f"at full capacity wafer {why.wafer}'s tiles need {why.need} cores, {why.avail} available "
                 f"(tile padding, lane slots, receive buffers): planned with each wafer's data at most "
                 f"{new:.1%} of its capacity")


@dataclasses.dataclass(frozen=True)
class TileShortfall:
    """A tile check's answer when a wafer's tiles need more cores than it has."""
    text: str
    wafer: int
    need: int
    avail: int

    def __str__(self) -> str:
        return self.text


# the planner never fills wafers below this share of their bytes to make the tiles fit; below it
# one more wafer is planned instead (each re-plan derates further, so this bounds the loop)
MIN_DERATE = 0.8


def tile_shortfall(e) -> "TileShortfall | str":
    """A tiler's short-of-cores error as a tile check's answer (its one-line text and numbers)."""
    text = " ".join(str(e).split("\n")[0].split())
    if all(getattr(e, a, None) is not None for a in ("wafer", "need_cores", "avail_cores")) and e.need_cores > 0:
        return TileShortfall(text, int(e.wafer), int(e.need_cores), int(e.avail_cores))
    return text


def _untileable(p: "WaferPlan", options, limit: int, reason: str, graph, target, device, estimate, with_levers,
                tile_check) -> "WaferPlan":
    """Infeasible: within ``limit`` wafers no plan's tiles fit (the bytes may)."""
    levers = tuple(_levers(graph, target, options, device, p.memory, estimate, tile_check)) if with_levers else ()
    needed = None
    if options.max_wafers or options.wafers:
        relaxed = options.replace(max_wafers=None, wafers=None)
        r = plan_wafers(graph, target, relaxed, device, estimate=estimate, with_levers=False, tile_check=tile_check)
        needed = None if r.infeasible else r.required
    return WaferPlan(graph.name, target.name, options, device.spec.text, device.seed, p.memory, p.lower_bound,
                     needed or 0, 0, 0, 0, (), (), (), estimate.name, Infeasibility(limit, needed, 0, reason, levers))


def _plan(graph: Graph, target, options: PlanOptions, device, estimate, with_levers: bool, tile_check,
          floor: int = 0, notes: tuple[str, ...] = (), required: int | None = None,
          derate: float = 1.0) -> WaferPlan:
    """One partition: at least ``floor`` pipeline wafers (the tiles disproved fewer, ``notes`` say
    why), each wafer's data at most ``derate`` of its capacity (the tiles need the rest);
    ``required`` overrides the byte count's minimum (the tile-verified one)."""
    for n in (options.wafers, options.max_wafers):
        if n and n > MAX_PLAN_WAFERS:
            raise PlanError(f"wafer count {n}: the planner plans at most {MAX_PLAN_WAFERS} wafers")
    mem = plan_memory(graph, options)
    overhead = receive_buffer_bytes(target)
    dedicated = options.kv_placement == "dedicated"
    grans = (options.partition,) if options.partition else PARTITIONS
    whole = {u.name: len(u.nodes) for u in mem.units}

    def pipe_size(u: Unit) -> int:
        return u.weight_bytes + u.act_bytes + (0 if dedicated else u.kv_bytes)

    # --wafers N asks for exactly N: fewer than the model needs is as infeasible as --max-wafers N
    limit = min(n for n in (options.max_wafers, options.wafers) if n) if (options.max_wafers or options.wafers) \
        else None
    # the bound first, by arithmetic: no defect map is built for a plan that cannot fit
    best = best_wafer_bytes(device, overhead, options)
    finest = units_at(mem, grans[-1])
    big = max(finest, key=lambda u: u.total_bytes)
    atoms_word = {"layer": "layers", "block": "blocks", "op": "ops"}[grans[-1]]
    if max([pipe_size(u) for u in finest] + [u.kv_bytes for u in finest if dedicated]) > best:
        return _beyond(graph, target, options, device, mem, best, limit, with_levers, estimate, tile_check,
                       f"{big.name} of {graph.name} needs {big.total_bytes / 1e9:,.2f} GB, more than one "
                       f"{target.name} wafer holds ({best / 1e9:.2f} GB without defects); {atoms_word} are not "
                       f"split across wafers")
    if -(-mem.total_bytes // best) > (limit or MAX_PLAN_WAFERS):
        return _beyond(graph, target, options, device, mem, best, limit, with_levers, estimate, tile_check)
    full = _Capacities(device, overhead, options)
    caps = _Capacities(device, overhead, options, derate=derate) if derate < 1 else full
    bpc = device.wafer(0).bytes_per_core(overhead)
    lower = full.lower_bound(mem.total_bytes)
    pipe_lower = caps.lower_bound(sum(pipe_size(u) for u in mem.units))
    want = max(options.wafers or 0, floor) or None
    chosen, tried = None, []
    for g in grans:   # the coarsest granularity that reaches the fewest wafers (finer ones cost boundaries)
        atoms = units_at(mem, g)
        sizes = [pipe_size(u) for u in atoms]
        if max(sizes) > best:
            continue
        lat, cuts = latencies_ns(atoms, estimate, target, bpc), cut_latencies_ns(atoms, target)
        a = _fit(sizes, lat, caps, 0, options, want, limit, cuts)
        if a is None:
            continue
        tried.append((g, a.min_wafers))
        if chosen is None or (a.wafers, a.min_wafers) < (chosen[1].wafers, chosen[1].min_wafers):
            chosen = (g, a, atoms, stage_latencies(a.wafer_of_unit, lat, cuts))
        if a.wafers <= max(pipe_lower, want or 0):
            break
    pipe = chosen[1] if chosen else None
    units: list[Unit] = list(mem.units)
    if chosen is not None:
        units = merge_units(chosen[2], pipe.wafer_of_unit, whole)
        mem = dataclasses.replace(mem, units=tuple(units))
    kv_units = [u for u in units if u.kv_bytes] if dedicated else []
    kv = None
    if pipe is not None and kv_units:
        kv_limit = None if limit is None else limit - pipe.wafers
        kv = _fit([u.kv_bytes for u in kv_units], [1] * len(kv_units), caps, pipe.wafers, options, None,
                  kv_limit) if kv_limit is None or kv_limit > 0 else None
    ok = pipe is not None and (kv is not None or not kv_units)
    if not ok:
        held = max(caps.first(lower))
        if max(pipe_size(u) for u in finest) > held:
            return _beyond(graph, target, options, device, mem, best, limit, with_levers, estimate, tile_check,
                           f"{big.name} of {graph.name} needs {big.total_bytes / 1e9:,.2f} GB, more than any of the "
                           f"first {min(lower, caps.limit)} {target.name} wafer(s) holds ({held / 1e9:.2f} GB); "
                           f"{atoms_word} are not split across wafers")
        return _infeasible(graph, target, options, device, mem, lower, with_levers, estimate, limit, tile_check)
    gran, lat_stage = chosen[0], chosen[3]
    piece_wafer = [k for k, r in enumerate(_piece_stages(units, chosen[2], pipe.wafer_of_unit)) for _ in r]
    loads = _loads(units, piece_wafer, lat_stage, kv_units, kv, device, overhead, options)
    required = required or max(pipe.min_wafers + (kv.wafers if kv else 0), floor)
    return WaferPlan(graph.name, target.name, options, device.spec.text, device.seed, mem, lower,
                     required, len(loads), pipe.wafers, kv.wafers if kv else 0, tuple(loads),
                     notes + tuple(_explain(mem, loads, lower, required, full, dedicated, tiled=floor > 0,
                                            gran=gran, tried=tuple(tried),
                                            largest=max(chosen[2], key=lambda u: u.total_bytes),
                                            tile_bound=caps.lower_bound(mem.total_bytes),
                                            largest_op=max(mem.ops, key=lambda o: (o.weight_bytes + o.kv_bytes
                                                                                   + o.act_bytes)),
                                            contiguous=_full_capacity_wafers(chosen[2], pipe_size, full, pipe)
                                            if derate < 1 else None)),
                     pipe.stats + (kv.stats if kv else ()), estimate.name, partition=gran, tried=tuple(tried))


def _full_capacity_wafers(atoms: list[Unit], size, full: "_Capacities", pipe: Assignment) -> int:
    """The fewest wafers ``atoms`` need, whole and contiguous, at full capacity (the exact DP)."""
    got = min_wafers_dp([size(u) for u in atoms], full.first(pipe.min_wafers + 1))
    return got[-1] + 1 if got else pipe.min_wafers


def _piece_stages(pieces: list[Unit], atoms: list[Unit], wafer_of_atom) -> list[range]:
    """Per wafer, the range of pieces (merged atoms, in order) it holds."""
    k_of_piece, i = [], 0
    for p in pieces:
        k_of_piece.append(wafer_of_atom[i])
        n = 0
        while n < len(p.nodes):
            n += len(atoms[i].nodes)
            i += 1
    return stages(k_of_piece)


def _loads(units: list[Unit], piece_wafer: list[int], lat_stage: list[int], kv_units, kv, device, overhead,
           options) -> list[WaferLoad]:
    out = []
    for k, r in enumerate(stages(piece_wafer)):
        out.append(_load(k, "pipeline", [units[i] for i in r], device, overhead, options,
                         lat_stage[k] / 1e9, include_kv=not kv_units))
    if kv:
        for k, r in enumerate(stages(kv.wafer_of_unit)):
            out.append(_load(len(lat_stage) + k, "kv", [kv_units[i] for i in r], device, overhead, options, 0.0,
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
                     weight + kvb + act, wafer_bytes(w, overhead, options), slots, w.dead_cores, latency,
                     0 if kv_only else members[-1].out_bytes)


_GRAN_WORDS = {"layer": "whole layers", "block": "blocks (attention, MLP)",
               "op": "ops (each weight matrix, MoE layer or KV cache whole)"}


def _explain(mem: MemoryPlan, loads, lower: int, required: int, caps, dedicated: bool, tiled: bool = False,
             gran: str = "layer", tried: tuple[tuple[str, int], ...] = (), largest: Unit | None = None,
             tile_bound: int = 0, largest_op=None, contiguous: int | None = None) -> list[str]:
    """Why ``required`` exceeds the capacity bound (unless one more wafer for the tiles did it:
    ``tiled``, their note says so): the units' contiguity (``contiguous``: the fewest wafers the
    chosen units need at full capacity), the tiles' share of capacity (``tile_bound``: the fewest
    the bytes need at that share however split), what finer units bought and what remains; and why
    more than ``required`` are used."""
    out = []
    contiguous = required if contiguous is None else contiguous
    if required > lower and not tiled:
        free = sum(w.sram_usable_bytes - w.sram_used_bytes for w in loads[:-1])
        biggest = largest or max(mem.units, key=lambda u: u.total_bytes)
        why = []
        if contiguous > lower:
            why.append(f"units are whole and contiguous: at full capacity they need {contiguous} wafer(s) "
                       f"(here wafer boundaries leave {free / 1e9:.2f} GB unused; largest unit: {biggest.name}, "
                       f"{biggest.total_bytes / 1e9:.2f} GB)")
        if tile_bound > lower:
            why.append(f"at the share of capacity the tiles fit (see above) the bytes need {tile_bound} wafer(s) "
                       f"however they are split")
        out.append(f"capacity bound {lower} wafer(s) ({mem.total_bytes / 1e9:.2f} GB over "
                   f"{caps.first(1)[0] / 1e9:.2f} GB per wafer); {required} needed because " + "; and ".join(why))
        if "op" in dict(tried) and largest_op is not None and contiguous > lower:
            same = [g for g, n in tried if n == required and g != gran]
            out.append((f"finer units ({', '.join(_GRAN_WORDS[g] for g in same)}) need {required} too; " if same
                        else "") +
                       f"the finest units are single ops (largest: {largest_op.node}, {largest_op.op}, "
                       f"{(largest_op.weight_bytes + largest_op.kv_bytes + largest_op.act_bytes) / 1e9:.2f} GB): "
                       f"fewer wafers need a matrix or an MoE layer's experts split across a wafer boundary, "
                       f"which wafercc does not do" + (", and tiles closer to their bytes than that share"
                                                       if tile_bound >= required else ""))
        if dedicated:
            out.append("KV caches on dedicated wafers are packed apart from the weights")
    coarser = [(g, n) for g, n in tried if g != gran and n > required]
    if coarser:
        out.append(f"units at {gran} granularity: " + ", ".join(f"{_GRAN_WORDS[g]} need {n} wafer(s)"
                                                                 for g, n in coarser) +
                   f", {_GRAN_WORDS[gran]} {required}")
    if len(loads) > required:
        out.append(f"{len(loads)} wafers used because --wafers asked for them (the minimum is {required})")
    return out


def _beyond(graph, target, options, device, mem, best, limit, with_levers, estimate, tile_check,
            reason=None) -> WaferPlan:
    """Infeasible by arithmetic (even defect-free wafers would need more than the limit), or
    because one unit is larger than a wafer (``reason``)."""
    at_least = -(-mem.total_bytes // best)
    cap = limit or MAX_PLAN_WAFERS
    bound = f"--max-wafers/--wafers {limit}" if limit else f"the planner's limit of {MAX_PLAN_WAFERS} wafers"
    text = reason or (f"{mem.total_bytes / 1e9:,.2f} GB needs at least {at_least:,} wafer(s) at "
                      f"{best / 1e9:.2f} GB each (no defects), more than {bound}")
    levers = tuple(_levers(graph, target, options, device, mem, estimate, tile_check)) if with_levers else ()
    short = max(0, mem.total_bytes - cap * best)
    needed = None
    if limit and reason is None and at_least <= MAX_PLAN_WAFERS:   # the user's limit: what the model needs
        relaxed = dataclasses.replace(options, max_wafers=None, wafers=None)
        p = plan_wafers(graph, target, relaxed, device, estimate=estimate, with_levers=False, tile_check=tile_check)
        needed = None if p.infeasible else p.required
    return WaferPlan(graph.name, target.name, options, device.spec.text, device.seed, mem, at_least,
                     needed or 0, 0, 0, 0, (), (), (), estimate.name,
                     Infeasibility(cap, needed, short, text, levers))


def _infeasible(graph, target, options, device, mem, lower, with_levers, estimate, limit, tile_check) -> WaferPlan:
    needed = None
    if limit is not None:                            # what the model needs without the user's limit
        relaxed = dataclasses.replace(options, max_wafers=None, wafers=None)
        try:
            p = plan_wafers(graph, target, relaxed, device, estimate=estimate, with_levers=False, tile_check=tile_check)
            needed = None if p.infeasible else p.required
        except PlanError:
            needed = None
    limit = limit or MAX_PLAN_WAFERS
    caps = _Capacities(device, receive_buffer_bytes(target), options).first(limit)
    short = max(0, mem.total_bytes - sum(caps))
    reason = (f"{mem.total_bytes / 1e9:.2f} GB does not fit {limit} wafer(s) ({sum(caps) / 1e9:.2f} GB): "
              f"short by {short / 1e9:.2f} GB" if short else
              f"{mem.total_bytes / 1e9:.2f} GB fits {limit} wafer(s) in total, but not as whole contiguous units")
    levers = tuple(_levers(graph, target, options, device, mem, estimate, tile_check)) if with_levers else ()
    return WaferPlan(graph.name, target.name, options, device.spec.text, device.seed, mem, lower,
                     needed or 0, 0, 0, 0, (), (), (), estimate.name,
                     Infeasibility(limit, needed, short, reason, levers))


def _levers(graph, target, options, device, mem, estimate, tile_check=None):
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
            p = plan_wafers(graph, target, relaxed, device, estimate=estimate, with_levers=False, tile_check=tile_check)
            yield Lever(change, None if p.infeasible else p.required, mem.total_bytes - p.memory.total_bytes)
        except PlanError:
            yield Lever(change, None, 0)


def cut_bytes(load: WaferLoad, last_op_bytes: int) -> int:
    """What the boundary after ``load`` carries for the whole batch: every activation live across it
    (a cut inside a layer may carry more than the residual stream); the last op's output when the plan
    does not say (a KV wafer, or the pipeline's last wafer feeding one)."""
    return load.out_bytes if load.role == "pipeline" and load.out_bytes else last_op_bytes


def summary_rows(plan: WaferPlan) -> list[dict]:
    return [{"index": w.index, "role": w.role, "layers": list(w.layers) if w.layers else None,
             "units": len(w.units), "weight_bytes": w.weight_bytes, "kv_bytes": w.kv_bytes,
             "act_bytes": w.act_bytes, "buffer_bytes": w.buffer_bytes, "reserve_bytes": w.reserve_bytes,
             "sram_used_bytes": w.sram_used_bytes, "sram_usable_bytes": w.sram_usable_bytes,
             "utilisation": round(w.utilisation, 6), "cores_usable": w.usable_cores, "dead_cores": w.dead_cores,
             "stage_latency_s": w.stage_latency_s}
            for w in plan.wafers]
