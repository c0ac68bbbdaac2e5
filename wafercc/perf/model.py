"""The analytic timing model: cycles of every op of a placed wafer, and the decode timeline.

Per op (docs/cost-model.md), for ``m`` tokens streamed through it (1 in decode at batch 1); the
per-grid formulas live in the cost kernel (passes/cost_kernel.py), which the tiler and the
event-driven replay share:

    gemv grid    broadcast  = broadcast_hops x hop + m x tile_k x act_bytes / link_bytes
                 compute    = m x tile_k x tile_n / (MACs per cycle x compute_efficiency)
                 reduction  = reduction_hops x hop + reduction_links x reduce_step
                              + m x tile_n x psum_bytes / link_bytes
    kv grid      the query (and the new K, V row) along the row, each core's partial attention over
                 its ceil(kv_len / cols) positions (position p lives on column p mod cols, so every
                 core of the row shares the work at any context length), partials back up the row
    lookup grid  the row's one-hot select and the gathered slice down the column
    op           op_sync + its grids in order (an MoE's router, gate/up, down)
    rider        runs on its host's cores after the host: FLOPs / (host cores x peak x efficiency);
                 norms and softmax add an all-reduce over the host's output row (``allreduce_paths``):
                 up its tree (hops x hop + steps x reduce_step), back down its broadcast tree (hops)

Ops of a wafer run in dataflow order, each starting when its input has arrived (activation route
hops); a token crosses wafers in order, paying the inter-wafer latency plus its bytes over the
off-wafer bandwidth at every boundary.  The free parameters are ``CostParams``: three read from the
target's ``[cost_model]``, the inter-wafer latency from its ``[io]`` (calibrated on ../shared/brief/calibration.md, see benchmarks/calibrate.py).
"""
from __future__ import annotations

import dataclasses
import math

from ..errors import WaferccError
from ..passes import cost_kernel as ck

ALLREDUCE_RIDERS = ck.ALLREDUCE_RIDERS


class CostModelError(WaferccError):
    """The target has no (or an invalid) calibrated cost-model parameter."""


PARAMS = {  # name in [cost_model] -> (unit, attribute)
    "compute_efficiency": "fraction",
    "op_sync": "cycles",
    "reduce_step": "cycles",
}


@dataclasses.dataclass(frozen=True)
class CostParams:
    compute_efficiency: float     # achieved fraction of the SIMD peak on a core's own tile
    op_sync: float                # cycles per dependent op with its own cores: inputs in, launch, done
    reduce_step: float            # cycles per receive-add step of a partial-sum tree (one per partial received)
    inter_wafer_latency_s: float  # one-way wafer-to-wafer latency per boundary per token (target io)

    @classmethod
    def of(cls, target) -> CostParams:
        cm = target.cost_model
        missing = [k for k in PARAMS if k not in cm]
        if missing:
            raise CostModelError(f"target '{target.name}': [cost_model] has no '{missing[0]}' "
                                 f"(expected {', '.join(PARAMS)}, see docs/cost-model.md)")
        vals = {}
        for k, unit in PARAMS.items():
            q = cm[k]
            if q.unit != unit:
                raise CostModelError(f"target '{target.name}': cost_model.{k} is in '{q.unit}', expected '{unit}'")
            vals[k] = float(q.value)
        if not 0 < vals["compute_efficiency"] <= 1:
            raise CostModelError(f"target '{target.name}': cost_model.compute_efficiency "
                                 f"{vals['compute_efficiency']}: expected a fraction in (0, 1]")
        if min(vals["op_sync"], vals["reduce_step"]) < 0:
            raise CostModelError(f"target '{target.name}': cost-model latencies must be non-negative")
        return cls(vals["compute_efficiency"], vals["op_sync"], vals["reduce_step"],
                   float(target.io.off_wafer_latency))


@dataclasses.dataclass(frozen=True)
class Machine:
    """Target figures the model reads (wafercc.target fields)."""
    clock_hz: float
    hop: float                    # cycles per fabric hop
    link_bytes: float             # bytes per link per cycle
    macs_per_cycle: float
    flops_per_cycle: float
    off_wafer_bandwidth: float    # B/s
    system_power_w: float         # per wafer (one system each)

    @classmethod
    def of(cls, target) -> Machine:
        macs, flops = ck.core_peak(target)
        return cls(float(target.core.clock), float(target.fabric.hop_latency), float(target.link_bytes_per_cycle),
                   macs, flops, float(target.io.off_wafer_bandwidth), float(target.power.system))


@dataclasses.dataclass(frozen=True)
class Workload:
    act_bytes: float              # activation element bytes
    kv_len: int                   # cached positions each decode step attends over
    tokens: int = 1               # tokens streamed through every op (micro-batch size)
    queries: int = 1              # positions of one user per pass (a speculative verify: k + 1), each
                                  # attending over that user's cached positions on the same KV rows


def rates(mc: Machine, p: CostParams) -> ck.Rates:
    """What the cost kernel reads (fp32 partial sums, passes/cost_kernel.PSUM_BYTES)."""
    return ck.Rates(mc.macs_per_cycle, mc.flops_per_cycle, mc.hop, mc.link_bytes, p.compute_efficiency,
                    p.reduce_step)


def kernel_phases(g: dict, op: dict, r: ck.Rates, w: Workload) -> ck.Phases:
    """The cost kernel's phases of one grid record: KV at the decode position (one (user, kv head)
    per row, so users in a batch use separate rows), the others for ``w.tokens`` tokens.  ``w.queries``
    positions of one user share its rows: as many query heads against the same K and V."""
    if g["operand"] == "kv":
        at = op["attention"]
        pos = int(ck.striped_positions(g["tile_n"], g["cols"], w.kv_len))
        ph = ck.kv(pos, at["group"] * w.queries, at["head_dim"], w.act_bytes, r,
                   at.get("score_flops", ck.SOFTMAX_FLOPS))
        if w.queries > 1:            # and one new K and V row per position, not per query head
            extra = 2 * (w.queries - 1) * at["head_dim"] * w.act_bytes
            ph = dataclasses.replace(ph, bcast_bytes=ph.bcast_bytes + extra)
        return ph
    if op["role"] == "lookup":
        return ck.lookup(w.tokens, g["tile_n"], w.act_bytes, r)
    # ``vectors``: right-hand vectors per token sharing the grid's matrix (the one-layer protocol's
    # attention as GEMVs: a kv head's query group, wafercc/perf/protocol.py)
    return ck.gemv(w.tokens * g.get("vectors", 1), g["tile_k"], g["tile_n"], w.act_bytes, r, flat=op["role"] == "flat")


def grid_phases(g: dict, op: dict, mc: Machine, p: CostParams, w: Workload) -> tuple[float, float, float]:
    """(broadcast, compute, reduction) cycles of one grid on its recorded paths."""
    r = rates(mc, p)
    ph = kernel_phases(g, op, r, w)
    return (ck.broadcast(ph, g["broadcast_hops"], r, g.get("broadcast_load", 1)), ph.compute,
            ck.reduction(ph, g["reduction_hops"], g["reduction_links"], r, g.get("reduction_load", 1),
                         reduction_chain(g)))


def reduction_chain(g: dict) -> int:
    """The chained steps of a grid's segmented reduction tree (its ``segment``; 1: binomial)."""
    n = g["cols"] if g["operand"] == "kv" else g["rows"]
    return min(ck.segment_chain(n, g.get("segment", 1), g.get("head_segment", 1)), int(g["reduction_links"]))


def op_cycles(op: dict, ops: list[dict], mc: Machine, p: CostParams, w: Workload) -> dict[str, float]:
    """{"compute", "fabric", "total"} cycles of one op (fabric includes its sync)."""
    comp = fab = 0.0
    if op["grids"]:
        fab = p.op_sync
        for g in op["grids"]:
            b, c, r = grid_phases(g, op, mc, p, w)
            comp += c
            fab += b + r
    elif op["host"] is not None:
        host = ops[op["host"]]
        comp = ck.rider_compute(w.tokens, op["flops"], host_cores(host), rates(mc, p))
        if op["op"] in ALLREDUCE_RIDERS and host["grids"]:
            fab = ck.allreduce(*allreduce_paths(host["grids"][-1]), rates(mc, p))
    act = op.get("act_in_hops", 0) * mc.hop
    return {"compute": comp, "fabric": fab + act, "total": comp + fab + act}


def allreduce_paths(g: dict) -> tuple[int, int, int]:
    """(up hops, receive-add steps, down hops) of the all-reduce over a host grid's output row: its
    routed (or estimated) tree's figures (``allreduce_*``, wafercc/perf/paths.py), else the
    launch-style chain up the broadcast routes reversed and back down them (``--reduction chain``)."""
    if "allreduce_links" in g:
        return g["allreduce_hops"], g["allreduce_links"], g["allreduce_down_hops"]
    return g["broadcast_hops"], g["broadcast_links"], g["broadcast_hops"]


def host_cores(host: dict) -> int:
    """Cores of a rider's host (at least 1)."""
    return sum(g["experts"] * g["rows"] * g["cols"] for g in host["grids"]) or 1


@dataclasses.dataclass(frozen=True)
class WaferTime:
    index: int
    start: list[float]            # cycles from the token's arrival on this wafer, per op
    end: list[float]
    compute: float
    fabric: float

    @property
    def cycles(self) -> float:
        return max(self.end, default=0.0)


def deferred_deps(op: dict, ops: list[dict]) -> set[int]:
    """The deps of ``op`` it need not wait for: RMS norms whose scale commutes with it
    (``scale_deferred``, wafercc/perf/records.py) when it is a GEMV.  It starts when the norm does,
    on the raw input, and applies 1 / rms at its reduction roots once the norm's all-reduce is done
    and the value has come over its activation route."""
    if op.get("role") != "gemv":
        return set()
    return {d for d in op.get("deps", []) if d < len(ops) and ops[d].get("scale_deferred")}


def wafer_time(index: int, ops: list[dict], mc: Machine, p: CostParams, w: Workload) -> WaferTime:
    """The op timeline of one token on one wafer: an op starts when the ops it reads from (``deps``)
    have finished (at the token's arrival if they are on an earlier wafer), so independent ops on
    their own cores (q, k and v projections; gate and up) overlap; a GEMV reading an RMS norm starts
    with the norm and ends no earlier than the norm's end plus its activation hops
    (``deferred_deps``).  ``compute`` and ``fabric`` split the critical path that ends last."""
    start, end, comp, fab = [], [], [], []
    path0 = []                    # (compute, fabric) of the critical path up to each op's start
    for op in ops:
        c = op_cycles(op, ops, mc, p, w)
        deps = op.get("deps", [])
        if any(d >= len(end) for d in deps):
            raise CostModelError(f"op '{op['name']}' reads an op that comes after it on its wafer")
        late = deferred_deps(op, ops)
        ready = {d: (start[d] if d in late else end[d]) for d in deps}
        j = max(deps, key=lambda d: ready[d], default=None)
        t0 = ready[j] if j is not None else 0.0
        base = (0.0, 0.0) if j is None else path0[j] if j in late else (comp[j], fab[j])
        t1, path = t0 + c["total"], (base[0] + c["compute"], base[1] + c["fabric"])
        scale = max(late, key=lambda d: end[d], default=None)
        hops = op.get("act_in_hops", 0) * mc.hop
        if scale is not None and end[scale] + hops > t1:     # the norm's 1 / rms arrives last
            t1, path = end[scale] + hops, (comp[scale], fab[scale] + hops)
        path0.append(base)
        start.append(t0)
        end.append(t1)
        comp.append(path[0])
        fab.append(path[1])
    last = max(range(len(end)), key=end.__getitem__, default=None)
    return WaferTime(index, start, end, comp[last] if last is not None else 0.0,
                     fab[last] if last is not None else 0.0)


def boundary_seconds(bytes_per_token: float, hops: int, mc: Machine, p: CostParams, tokens: int = 1) -> float:
    """One wafer-to-wafer crossing: latency, the activations over the off-wafer links, the edge hops."""
    return p.inter_wafer_latency_s + tokens * bytes_per_token / mc.off_wafer_bandwidth + hops * mc.hop / mc.clock_hz


def bottleneck_cycles(ops: list[dict], mc: Machine, p: CostParams, w: Workload) -> float:
    """Per-token occupancy of the busiest cores: the interval at which a stream of tokens (a prompt, a
    speculative verify) leaves a wafer once the first is through (ops are spatially separate, except
    the ops of a layer group, ``routes_of``, which share their template's cores: their times add)."""
    one = dataclasses.replace(w, tokens=1)
    r = rates(mc, p)
    worst = 0.0
    per_cores: dict[int, float] = {}      # layer groups: ops sharing a template's cores add up
    for i, op in enumerate(ops):
        busy = 0.0
        for g in op["grids"]:
            ph = kernel_phases(g, op, r, one)
            busy += ph.compute + ck.serialisation(ph, r)
        t = op.get("routes_of")
        key = i if t is None else t
        per_cores[key] = per_cores.get(key, 0.0) + busy
        worst = max(worst, per_cores[key], op_cycles(op, ops, mc, p, one)["compute"])
    return worst


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def pipeline_round(stage_s: list[float], boundary_s: list[float], batch: int) -> tuple[float, int, int]:
    """(seconds per round, groups, users per group) for ``batch`` users over the wafer pipeline: users
    go in min(batch, stages) groups, one group per stage at a time; every user gets one token per
    round.  A round is the slower of one group's full latency and the busiest stage serving every
    group (stage_s and boundary_s are per group, at its size)."""
    stages = len(stage_s)
    groups = max(1, min(batch, stages))
    latency = sum(stage_s) + sum(boundary_s)
    busiest = max(s + (boundary_s[i] if i < len(boundary_s) else 0.0) for i, s in enumerate(stage_s))
    return max(latency, groups * busiest), groups, ceil_div(batch, groups)


def expected_accepted(k: int, acceptance: float) -> float:
    """Tokens a speculative step yields: accepted drafts plus the target's own token, with each draft
    token accepted independently with probability ``acceptance`` (Leviathan et al. 2023)."""
    if acceptance >= 1.0:
        return float(k + 1)
    return (1 - acceptance ** (k + 1)) / (1 - acceptance)


def check_finite(x: float, what: str) -> float:
    if not math.isfinite(x) or x < 0:
        raise CostModelError(f"{what}: the timing model produced {x}")
    return x
