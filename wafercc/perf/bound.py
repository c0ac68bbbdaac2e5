"""The speed-of-light bound: the least time per output token any mapping of the compiled wafers could
reach, from target figures alone (docs/cost-model.md, "Speed of light").

Per wafer k, for one token at batch 1 at the decode position:

    compute_k = FLOPs of its ops / (usable cores x SIMD lanes x FLOP/lane/cycle x clock)
    sram_k    = (weight bytes read + KV bytes read) / (usable cores x sram_read_bandwidth x clock)
    chain_k   = the longest dependency path through its ops, each op at its fastest shape: the
                fewest hops its input must fan out and the fewest tree levels its partial sums must
                combine in, one hop per level (the physical minimum, not the fitted reduce_step)
    stage_k   = max(compute_k, sram_k, chain_k)

and per wafer boundary the off-wafer latency plus the activation bytes over the off-wafer bandwidth.
``stage_k`` is one wafer's floor.  The token's floor across the wafers is

    bound = sum_k chain_k + sum of the boundaries + max_k max(0, max(compute_k, sram_k) - chain_k)

the dependency chain through every wafer in order, plus the excess of a throughput term over its
wafer's chain on the one wafer where that is largest.  Throughput and latency are combined by max
within a wafer, not by sum: wavelet-level dataflow lets an op start on the first outputs of the op
before it, so work and latency may overlap there; but no wafer can begin before the chains ahead of
it have delivered, nor finish later ops' chains before it is done.
"""
from __future__ import annotations

import math

from ..ir import BATCH, CONTEXT, SEQ, CostContext, DType, ValueKind
from .evaluate import Program, decode_position

SOURCES = ("core.clock", "core.simd_lanes_fp16", "core.flop_per_lane_cycle", "core.sram",
           "core.sram_read_bandwidth", "fabric.hop_latency", "fabric.link_width", "fabric.router_ports",
           "io.off_wafer_latency", "io.off_wafer_bandwidth")
IN_LINKS = 4            # fabric links into a core (router_ports minus the core's own ramp)


def diamond_radius(cores: int) -> int:
    """Fewest hops from one core to the farthest of ``cores`` cores on a 2-D mesh: the Manhattan
    ball of radius r holds 2r^2 + 2r + 1 cores (a bounded wafer only adds hops)."""
    r = 0
    while 2 * r * r + 2 * r + 1 < cores:
        r += 1
    return r


def _log2_ceil(x: int) -> int:
    return max(0, math.ceil(math.log2(x))) if x > 1 else 0


class _Fabric:
    """Per-op floors on one core: a column's k/a inputs arrive over its input links, are read from
    SRAM against its weights and multiplied on its lanes; these stream, so the slowest counts."""

    def __init__(self, target, step: float | None = None):
        from ..passes.cost_kernel import core_peak
        self.core_bytes = float(target.core.sram)           # the whole SRAM: any reserve only adds cores
        self.hop = float(target.fabric.hop_latency)
        self.step = self.hop if step is None else step      # one store-and-forward level: at least a hop
        self.in_bytes = float(target.link_bytes_per_cycle) * min(IN_LINKS, int(target.fabric.router_ports) - 1)
        self.macs = core_peak(target)[0]
        self.read = float(target.core.sram_read_bandwidth)

    def column(self, rows: int, wb: float, act_bytes: float) -> float:
        """Cycles for one core to take in ``rows`` inputs and fold them into one column's partial sum."""
        return max(rows * act_bytes / self.in_bytes, rows / self.macs, rows * wb / self.read)

    def cores(self, nbytes: float) -> int:
        return max(1, math.ceil(nbytes / self.core_bytes))

    def gemv(self, k: int, n: int, unit_bits: int, act_bytes: float) -> float:
        """Best shape of a k x n weight over a row splits (k direction) x b column splits, a*b cores
        at least its bytes: x_i fans out to the b cores holding row i, each core takes in its k/a
        inputs, the a partial sums of an output combine in ceil(log2 a) levels."""
        wb = unit_bits / 8
        need = self.cores(k * n * wb)
        best, a = math.inf, 1
        while True:
            b = max(1, math.ceil(need / a))
            if b <= n:                  # a core holds at least one column element of its rows
                best = min(best, diamond_radius(b) * self.hop + _log2_ceil(a) * self.step
                           + self.column(math.ceil(k / a), wb, act_bytes))
            if a >= k:
                return best
            a = min(2 * a, k)

    def kv(self, positions: int, unit_bits: int, group: int, head_dim: int, act_bytes: float) -> float:
        """One kv head's ``group`` query heads over ``positions`` cached positions on a cores (at least
        the cache's bytes; past one position per core the work splits by query head, then head_dim):
        the query (and new K, V row) fans out to them, each core does its share of QK^T and PV, and
        the cores sharing a query head combine their partials in a tree."""
        work = positions * group * head_dim
        best, a = math.inf, self.cores(positions * unit_bits / 8)
        while True:
            finer = max(1, a // positions)                  # cores per position
            per_head = max(1, math.ceil(a / min(group, finer)))
            share = (group + 2) * head_dim * act_bytes / finer / self.in_bytes
            core = max(share, positions * unit_bits / 8 / a / self.read, 2 * math.ceil(work / a) / self.macs)
            best = min(best, diamond_radius(a) * self.hop + _log2_ceil(per_head) * self.step + core)
            if a >= work:
                return best
            a = min(2 * a, work)

    def lookup(self, k: int, n: int, unit_bits: int) -> float:
        """The token id must reach whichever core holds its row: every core of the table may."""
        return diamond_radius(self.cores(k * n * unit_bits / 8)) * self.hop


def op_latency(rec: dict, fab: _Fabric, act_bytes: float, positions: int) -> float:
    """Cycles of one op on the dependency chain at its fastest shape (riders: 0, a hidden vector
    fits one core; flat grids move bytes without a reduction: 0)."""
    t = 0.0
    for g in rec["grids"]:
        if g["operand"] == "kv":
            at = rec["attention"]
            t += fab.kv(max(1, min(positions, g["n"])), g["unit_bits"], at["group"], at["head_dim"], act_bytes)
        elif rec["role"] == "lookup":
            t += fab.lookup(g["k"], g["n"], g["unit_bits"])
        elif rec["role"] != "flat":
            t += fab.gemv(g["k"], g["n"], g["unit_bits"], act_bytes)
    return t


def chain_cycles(ops: list[dict], fab: _Fabric, act_bytes: float, positions: int) -> tuple[float, list[str]]:
    """(cycles, op names) of the longest dependency path through one wafer's ops."""
    end, prev = [], []
    for op in ops:
        j = max(op.get("deps", []), key=lambda d: end[d], default=None)
        end.append((end[j] if j is not None else 0.0) + op_latency(op, fab, act_bytes, positions))
        prev.append(j)
    if not end:
        return 0.0, []
    last = i = max(range(len(end)), key=end.__getitem__)
    path = []
    while i is not None:
        path.append(ops[i]["name"])
        i = prev[i]
    return end[last], path[::-1]


def op_traffic(graph, plan, positions: int) -> dict[str, tuple[float, float, float]]:
    """node -> (FLOPs, weight bytes read, KV bytes read) of one token at batch 1 at ``positions``:
    a lookup reads one table row, an MoE its routed experts' share of its weights."""
    mem = plan.memory
    act = DType(mem.options.act_dtype or mem.weight_dtype)
    kv = DType(mem.kv_dtype) if mem.kv_dtype else None
    ctx = CostContext({BATCH: 1, SEQ: 1, CONTEXT: positions}, act_dtype=act, kv_dtype=kv)
    wbytes = {o.node: o.weight_bytes for o in mem.ops}
    out = {}
    for node in graph.nodes:
        cost = graph.node_cost(node, ctx)
        w = float(wbytes.get(node.name, 0))
        if node.op == "embedding" and w:
            tables = [graph.values[v].shape for v in node.inputs.values() if graph.values[v].kind is ValueKind.WEIGHT]
            rows = tables[0][0] if tables and isinstance(tables[0][0], int) else 1
            w /= max(1, rows)
        experts, top = node.attrs.get("num_experts"), node.attrs.get("top_k")
        if experts and top:
            w *= min(1.0, top / experts)
        window = node.attrs.get("sliding_window") or 0
        cached = min(positions, window) if window else positions
        out[node.name] = (float(cost.flops), w, float(cost.kv_bytes_per_token * cached))
    return out


def speed_of_light(prog: Program, graph, plan, target, device, perf: dict) -> dict:
    """The report's ``speed_of_light`` section (docs/metrics.md) for the routed schedule ``prog``
    whose ``performance`` section is ``perf``."""
    from .model import Machine

    mc = Machine.of(target)
    fab = _Fabric(target)
    positions = int(perf.get("decode_context_tokens") or decode_position(prog, perf["prompt_tokens"]))
    traffic = op_traffic(graph, plan, positions)
    bw = float(target.core.sram_read_bandwidth)
    wafers = []
    for k, ops in enumerate(prog.wafers):
        cores = int(device.wafer(k).usable_cores)
        fl = sum(traffic.get(o["name"], (0, 0, 0))[0] for o in ops)
        wr = sum(traffic.get(o["name"], (0, 0, 0))[1] for o in ops)
        kr = sum(traffic.get(o["name"], (0, 0, 0))[2] for o in ops)
        chain, path = chain_cycles(list(ops), fab, prog.act_bytes, positions)
        terms = {"compute": fl / (cores * mc.flops_per_cycle * mc.clock_hz),
                 "sram": (wr + kr) / (cores * bw * mc.clock_hz),
                 "fabric_chain": chain / mc.clock_hz}
        binding = max(terms, key=terms.get)
        wafers.append({"wafer": k, "cores": cores, "flops": fl, "weight_bytes_read": wr, "kv_bytes_read": kr,
                       "compute_s": terms["compute"], "sram_s": terms["sram"], "fabric_chain_s": terms["fabric_chain"],
                       "fabric_chain_cycles": chain, "chain_ops": len(path), "bound_s": terms[binding],
                       "binding": binding,
                       "sram_weight_s": wr / (cores * bw * mc.clock_hz), "sram_kv_s": kr / (cores * bw * mc.clock_hz)})
    bounds = [target.io.off_wafer_latency + b.bytes_per_token / mc.off_wafer_bandwidth for b in prog.boundaries]
    tpot, excess = combine([w["fabric_chain_s"] for w in wafers], [max(w["compute_s"], w["sram_s"]) for w in wafers],
                           bounds)
    predicted = perf["time_per_output_token_s"]
    out = {
        "time_per_output_token_s": tpot,
        "tokens_per_s_per_user": round(1.0 / tpot, 3),
        "prediction_fraction": round(tpot / predicted, 4),
        "terms_s": {"compute": sum(w["compute_s"] for w in wafers), "sram": sum(w["sram_s"] for w in wafers),
                    "fabric_chain": sum(w["fabric_chain_s"] for w in wafers), "inter_wafer": sum(bounds)},
        "binding": _binding(wafers, bounds, excess),
        "throughput_excess_s": excess,
        "decode_context_tokens": positions,
        "reduction_step_cycles": fab.step,
        "at_fitted_reduce_step": _at_fitted_step(prog, target, positions, bounds, wafers),
        "per_wafer": wafers,
        "boundaries_s": bounds,
        "at_batch": _at_batch(prog.batch, tpot, wafers, prog, mc, perf),
        "sources": {k: target.quantities[k].citation for k in SOURCES if k in target.quantities},
    }
    return out


def _at_fitted_step(prog: Program, target, positions: int, bounds: list[float], wafers: list[dict]) -> dict | None:
    """The same bound with every tree level at the cost model's fitted reduce_step (a comparison:
    the fit absorbs today's software, so this is not a floor of the hardware)."""
    from .model import CostModelError, CostParams
    try:
        step = CostParams.of(target).reduce_step
    except CostModelError:
        return None
    fab, clock = _Fabric(target, step), float(target.core.clock)
    chains = [chain_cycles(list(ops), fab, prog.act_bytes, positions)[0] / clock for ops in prog.wafers]
    t, _ = combine(chains, [max(w["compute_s"], w["sram_s"]) for w in wafers], bounds)
    return {"reduction_step_cycles": step, "time_per_output_token_s": t, "tokens_per_s_per_user": round(1.0 / t, 3)}


def combine(chains: list[float], throughput: list[float], bounds: list[float]) -> tuple[float, float]:
    """(bound, excess): the chains through every wafer and boundary, plus the largest excess of a
    wafer's throughput floor over its own chain."""
    excess = max((max(0.0, t - c) for c, t in zip(chains, throughput)), default=0.0)
    return sum(chains) + sum(bounds) + excess, excess


def _binding(wafers: list[dict], bounds: list[float], excess: float) -> str:
    """The term that contributes most of the bound: the on-wafer chains, the wafer boundaries, or
    the throughput term (compute or sram) of the wafer whose excess is added."""
    share = {"fabric_chain": sum(w["fabric_chain_s"] for w in wafers), "inter_wafer": sum(bounds)}
    top = max(wafers, key=lambda w: w["bound_s"] - w["fabric_chain_s"], default=None)
    if top is not None and excess > 0:
        share[top["binding"]] = excess
    return max(share, key=share.get)


def _at_batch(batch: int, tpot: float, wafers: list[dict], prog: Program, mc, perf: dict) -> dict:
    """One round at the report's batch (every user one token): no faster than one user's token
    (each user's next token needs this one), nor than the busiest wafer doing every user's FLOPs
    and reading its weights once and every user's KV."""
    busiest = max((max(batch * w["compute_s"], w["sram_weight_s"] + batch * w["sram_kv_s"]) for w in wafers),
                  default=0.0)
    links = max((batch * b.bytes_per_token / mc.off_wafer_bandwidth for b in prog.boundaries), default=0.0)
    round_s = max(tpot, busiest, links)
    predicted = 1.0 / perf["decode_tokens_per_s_per_user_at_batch"]
    return {"batch": batch, "round_s": round_s, "tokens_per_s_aggregate": round(batch / round_s, 3),
            "prediction_fraction": round(round_s / predicted, 4)}
