"""The speed-of-light bound: the least time per output token any mapping of the compiled wafers could
reach, from target figures alone (docs/cost-model.md, "Speed of light").

Per wafer k, for one token at batch 1 at the decode position:

    compute_k = FLOPs of its ops / (usable cores x SIMD lanes x FLOP/lane/cycle x clock)
    sram_k    = (weight bytes read + KV bytes read) / (usable cores x sram_read_bandwidth x clock)
    chain_k   = the longest dependency path through its ops, each op at its fastest shape (rows x
                columns of cores, up to the wafer's): its input a hop away, taken in over the
                core's links, its partial sums sent out, their adds (one cycle each, the physical
                minimum, not the fitted reduce_step) after every core is ready, its tile's work
                beside these; the input's fan-out beside the rest
    stage_k   = max(compute_k, sram_k, chain_k)

and per wafer boundary the off-wafer latency plus the activation bytes over the off-wafer bandwidth.
``stage_k`` is one wafer's floor.  The token's floor across the wafers is

    bound = sum_k chain_k + sum of the boundaries + max_k max(0, max(compute_k, sram_k) - chain_k)

the dependency chain through every wafer in order, plus the excess of a throughput term over its
wafer's chain on the one wafer where that is largest.  Throughput and latency are combined by max
within a wafer, not by sum: ops off the chain run beside it on other cores, and each chain op's own
work is already in its floor; but no wafer can begin before the chains ahead of it have delivered,
nor finish later ops' chains before it is done.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ..ir import BATCH, CONTEXT, SEQ, CostContext, DType, ValueKind
from ..ir.ops import SOFTMAX_FLOPS
from .evaluate import Program, decode_position

SOURCES = ("core.clock", "core.simd_lanes_fp16", "core.flop_per_lane_cycle", "core.sram",
           "core.sram_read_bandwidth", "fabric.hop_latency", "fabric.link_width", "fabric.router_ports",
           "io.off_wafer_latency", "io.off_wafer_bandwidth")
IN_LINKS = 4            # fabric links into (and out of) a core (router_ports minus the core's own ramp)


def diamond_radius(cores):
    """Fewest hops from one core to the farthest of ``cores`` cores on a 2-D mesh: the Manhattan
    ball of radius r holds 2r^2 + 2r + 1 cores (a bounded wafer only adds hops).  Scalars or arrays."""
    c = np.maximum(np.asarray(cores, dtype=np.int64), 1)
    r = np.maximum(0, np.ceil((np.sqrt(2.0 * c - 1) - 1) / 2)).astype(np.int64)
    r -= (r > 0) & (2 * (r - 1) ** 2 + 2 * (r - 1) + 1 >= c)     # float round-off, either way
    r += 2 * r * r + 2 * r + 1 < c
    return int(r) if r.ndim == 0 else r


@functools.lru_cache(maxsize=8)
def _round_trip_table(top: int) -> np.ndarray:
    """Cores X (not the source P) with d(P, X) + d(X, R) <= D, at the best placed sink R, for D = 0..top.
    With R at (dx, dy) from P and s = floor((D - dx - dy) / 2), the L1 ellipse holds
    (dx + 1)(dy + 1) + 2 s (dx + dy + 2) + 2 s (s - 1) cores; the count is largest with dx, dy
    balanced, so only their sum needs scanning."""
    d = np.arange(top + 1)
    best = np.zeros(top + 1, dtype=np.int64)
    for delta in range(top + 1):
        s = np.maximum(0, (d - delta) // 2)
        box = (delta // 2 + 1) * (delta - delta // 2 + 1)
        best = np.maximum(best, np.where(d >= delta, box + 2 * s * (delta + 2) + 2 * s * (s - 1), 0))
    return best - 1


def round_trip_hops(cores):
    """Fewest hops D such that ``cores`` distinct cores, none of them the source, can each be reached
    from one source and then reach one sink in D hops in all (scalars or arrays): the query's trip
    from its producer to every position's core and each partial's trip on to the output's root."""
    c = np.maximum(np.asarray(cores, dtype=np.int64), 1)
    top = 2 * int(diamond_radius(int(c.max()) + 1)) + 2
    out = np.searchsorted(_round_trip_table(top), c)
    return int(out) if out.ndim == 0 else out


def _log2_ceil(x):
    out = np.ceil(np.log2(np.maximum(np.asarray(x, dtype=np.float64), 1))).astype(np.int64)
    return int(out) if out.ndim == 0 else out


def _cells(m: int, per_octave: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Cells [lo, hi] covering every split count 1..m: a floor over a cell takes each term at the
    cell's end that favours it, so the minimum over cells is a floor over every integer shape, not
    just the sampled ones.  Cells start at 2^i + 1 (ceil(log2) is constant inside) and split each
    octave geometrically, so the relaxation costs at most 2^(1/per_octave) in a tile's size."""
    top = max(1, int(m)).bit_length()
    geo = np.ceil(2.0 ** (np.arange(top * per_octave + 1) / per_octave)).astype(np.int64)
    lo = np.unique(np.concatenate([[1, 2], 2 ** np.arange(top, dtype=np.int64) + 1, geo]))
    lo = lo[lo <= m]
    return lo, np.append(lo[1:] - 1, m)


def _cdiv(a, b):
    return -(-np.asarray(a) // np.asarray(b))


class _Fabric:
    """Per-op floors on one wafer of ``max_cores`` cores (docs/cost-model.md, "Speed of light").
    An op starts when its whole input vector is at its producers' cores (the schedule's ``deps``)
    and ends when every output is complete at its root.  ``step`` is one receive-add."""

    def __init__(self, target, step: float | None = None, max_cores: int | None = None):
        from ..passes.cost_kernel import PSUM_BYTES, core_peak
        self.core_bytes = float(target.core.sram)           # the whole SRAM: any reserve only adds cores
        self.hop = float(target.fabric.hop_latency)
        self.step = self.hop if step is None else step      # one receive-add: at least a cycle, a hop here
        links = min(IN_LINKS, int(target.fabric.router_ports) - 1)
        self.in_bytes = self.out_bytes = float(target.link_bytes_per_cycle) * links
        self.macs, self.flops = core_peak(target)
        self.read = float(target.core.sram_read_bandwidth)
        self.psum = float(PSUM_BYTES)
        self.max_cores = int(max_cores or target.usable_cores)

    def cores(self, nbytes: float) -> int:
        return max(1, math.ceil(nbytes / self.core_bytes))

    def core_ready(self, ingest, post, work):
        """When a core's last partial wavelet can leave: its first input is a hop away (the producer
        is another op's core); every partial needs its last input, so ``post`` (its partial sums'
        MACs and serialisation) follows the ingestion; its whole tile's MACs and reads stream
        beside them."""
        return self.hop + np.maximum(ingest + post, work)

    def combine(self, ready, heavy, far, parts):
        """An output is done when its ``parts`` partials are combined at its root: after every core is
        ``ready``, the add depth ceil(log2 parts) (one message length, already in ``ready``: adds
        pipeline wavelet by wavelet) and the hops from the farthest part; after the heaviest and
        the farthest core, at least the root's add."""
        many = parts > 1
        tree = np.where(many, np.maximum(_log2_ceil(parts) * self.step, diamond_radius(parts) * self.hop), 0.0)
        last = np.where(many, self.step, 0.0)
        return np.maximum(ready + tree, np.maximum(heavy, far) + last)

    def gemv(self, k: int, n: int, unit_bits: int, act_bytes: float) -> float:
        """Fastest k x n weight over a row splits x b column splits (balanced: tiles differ by at most
        one row or column), a*b cores from its bytes up to the wafer's: x_i fans out from its
        producer to the b cores of its row, each core takes in its k/a inputs and sends its n/b fp32
        partial sums (a > 1), the a partials of each output combine."""
        a_lo, a_hi = (x[:, None] for x in _cells(k))
        b_lo, b_hi = (x[None, :] for x in _cells(n))
        return _least(*self.gemv_cells(k, n, unit_bits, act_bytes, a_lo, a_hi, b_lo, b_hi))

    def gemv_cells(self, k, n, unit_bits, act_bytes, a_lo, a_hi, b_lo, b_hi):
        """(cycles, feasible) of every cell of shapes a in [a_lo, a_hi] x b in [b_lo, b_hi]: a floor
        of each shape in it (lo = hi: one shape)."""
        wb = unit_bits / 8
        need = self.cores(k * n * wb)
        b_lo = np.maximum(b_lo, _cdiv(need, a_hi))          # a shape has at least the weight's cores
        a_lo = np.maximum(a_lo, _cdiv(need, b_hi))
        ok = (a_lo <= a_hi) & (b_lo <= b_hi) & (a_lo * b_lo <= self.max_cores)
        many = a_lo > 1

        def tile(tk, tn):
            post = np.maximum(tn / self.macs, np.where(many, tn * self.psum / self.out_bytes, 0.0))
            return post, self.core_ready(tk * act_bytes / self.in_bytes, post,
                                         np.maximum(tk * tn / self.macs, tk * tn * wb / self.read))
        _, heavy = tile(_cdiv(k, a_hi), _cdiv(n, b_hi))     # the core with the largest tile
        post, ready = tile(k // a_hi, n // b_hi)            # every core
        far = diamond_radius(b_lo + 1) * self.hop + post    # x_i's farthest consumer, not its producer
        return self.combine(ready, heavy, far, a_lo), ok

    def kv(self, positions: int, unit_bits: int, group: int, head_dim: int, act_bytes: float,
           score_flops: int = 0) -> float:
        """One kv head's ``group`` query heads over ``positions`` cached positions on a cores (from the
        cache's bytes to the wafer's; past one position per core the work splits by query head, then
        head_dim): the query fans out to them (the new K, V row only to its position's), each core
        does its share of QK^T, the scores' FLOPs and PV and sends its partial (output, max, sum) in
        fp32, and the cores sharing a query head combine their partials."""
        lo, hi = _cells(min(positions * group * head_dim, self.max_cores))
        return _least(*self.kv_cells(positions, unit_bits, group, head_dim, act_bytes, lo, hi, score_flops))

    def kv_cells(self, positions, unit_bits, group, head_dim, act_bytes, lo, hi, score_flops=0):
        """(cycles, feasible) of every cell of a in [lo, hi] cores for one kv head (lo = hi: one shape)."""
        work = positions * group * head_dim
        lo = np.maximum(lo, self.cores(positions * unit_bits / 8))
        ok = lo <= hi
        finer_hi = np.maximum(1, hi // positions)           # cores per position, at the cell's top
        per_head = _cdiv(lo, np.minimum(group, finer_hi))   # cores sharing a query head, at least
        heads = _cdiv(group, np.minimum(group, finer_hi))
        dims = _cdiv(head_dim, np.maximum(1, finer_hi // group))
        post = np.where(per_head > 1, heads * (dims + 2) * self.psum / self.out_bytes, 0.0)
        ingest = group * head_dim * act_bytes / finer_hi / self.in_bytes   # only the new position's cores need K, V
        work_c = np.maximum(positions * unit_bits / 8 / hi / self.read,
                            (2 * _cdiv(work, hi)) / self.macs + _cdiv(positions * group, hi) * score_flops / self.flops)
        ready = self.core_ready(ingest, post, work_c)
        far = diamond_radius(lo + 1) * self.hop + post
        # one element of the query reaches every position block's core, whose partial then reaches the
        # root of one output element: a round trip over min(positions, a) cores, then the root's add
        trip = np.where(per_head > 1, round_trip_hops(np.minimum(positions, lo)) * self.hop + self.step, 0.0)
        return np.maximum(self.combine(ready, ready, far, per_head), trip), ok

    def lookup(self, k: int, n: int, unit_bits: int) -> float:
        """The token id must reach whichever core holds its row: every core of the table may."""
        return diamond_radius(self.cores(k * n * unit_bits / 8)) * self.hop


def _least(t, ok) -> float:
    """The fastest feasible shape; a weight or cache larger than the wafer (only by the reserve this
    floor ignores) is priced at every shape."""
    return float(np.min(np.where(ok, t, np.inf)) if np.any(ok) else np.min(t))


def op_latency(rec: dict, fab: _Fabric, act_bytes: float, positions: int) -> float:
    """Cycles of one op on the dependency chain at its fastest shape (riders: 0, a hidden vector
    fits one core; flat grids move bytes without a reduction: 0)."""
    t = 0.0
    for g in rec["grids"]:
        if g["operand"] == "kv":
            at = rec["attention"]
            t += fab.kv(max(1, min(positions, g["n"])), g["unit_bits"], at["group"], at["head_dim"], act_bytes,
                        at.get("score_flops", SOFTMAX_FLOPS))
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
    positions = int(perf.get("decode_context_tokens") or decode_position(prog, perf["prompt_tokens"]))
    traffic = op_traffic(graph, plan, positions)
    bw = float(target.core.sram_read_bandwidth)
    wafers = []
    for k, ops in enumerate(prog.wafers):
        cores = int(device.wafer(k).usable_cores)
        fl = sum(traffic.get(o["name"], (0, 0, 0))[0] for o in ops)
        wr = sum(traffic.get(o["name"], (0, 0, 0))[1] for o in ops)
        kr = sum(traffic.get(o["name"], (0, 0, 0))[2] for o in ops)
        chain, path = chain_cycles(list(ops), _Fabric(target, max_cores=cores), prog.act_bytes, positions)
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
        "reduction_step_cycles": float(target.fabric.hop_latency),
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
    clock = float(target.core.clock)
    chains = [chain_cycles(list(ops), _Fabric(target, step, w["cores"]), prog.act_bytes, positions)[0] / clock
              for ops, w in zip(prog.wafers, wafers)]
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
