"""The cycle kernel of one tiled operator grid, shared by every caller that times one: the tiler's
shape search (passes/tile_shapes.py), the analytic timing model (wafercc/perf/model.py) and the
event-driven replay (wafercc/perf/eventsim.py).  docs/cost-model.md describes the formulas.

A grid's decode step has three phases:

    broadcast  = broadcast_hops x hop + broadcast bytes / link_bytes
    compute    = the work of one core (``Phases.compute``)
    reduction  = reduction_hops x hop + chain x reduce_step
                 + max((reduction_links - chain) x reduce_step + ser, reduction_load x ser + reduce_step)
                 (ser = reduction bytes / link_bytes; chain = the segmented tree's segment - 1)

(``reduction_links``: the receive-add-forward steps of the reduction tree's root, ceil(log2 rows)
for a grid column's binomial tree; ``reduction_load``: the partials sharing its busiest directed
link, which serialise there: ceil(log2 rows) beside a binomial tree's root, 1 on a chain.  A
broadcast's ``broadcast_load`` messages on one link serialise the same way.)

The kind functions (``gemv``, ``kv``, ``lookup``) give the compute cycles and the sizes of the two
messages.  The caller gives the paths: the tiler uses the row chains and column trees of an
unplaced grid (``chain_paths``), the model uses the routed (or estimated) paths of the op records, and the replay
sends each message over its own route, in whole wavelets, adding ``reduce_step`` per partial it
receives.  Everything takes plain numbers or numpy arrays (the tiler scores all its candidates at
once), so wafercc.passes can use it without importing wafercc.perf.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from ..ir.ops import SOFTMAX_FLOPS
from ..target.geometry import DEFAULT_REDUCTION, REDUCTIONS

ALLREDUCE_RIDERS = ("norm", "softmax")   # riders that all-reduce over their host's output row

PSUM_BYTES = 4     # partial sums accumulate in fp32 (the TileOptions.psum_bytes default)
ID_BYTES = 4       # a lookup's token id: one int32 (one 32-bit wavelet on the WSE fabric)


@dataclasses.dataclass(frozen=True)
class Rates:
    """Target figures (docs/targets.md) and calibrated cost-model parameters (``[cost_model]``)."""
    macs_per_cycle: float      # simd_lanes_fp16 x flop_per_lane_cycle / 2
    flops_per_cycle: float     # simd_lanes_fp16 x flop_per_lane_cycle
    hop: float                 # fabric.hop_latency: cycles per fabric hop
    link_bytes: float          # bytes per link per cycle
    efficiency: float = 1.0    # cost_model.compute_efficiency: achieved fraction of the SIMD peak
    reduce_step: float = 0.0   # cost_model.reduce_step: cycles per receive-add-forward link
    psum_bytes: int = PSUM_BYTES


def core_peak(target) -> tuple[float, float]:
    """(MACs, FLOPs) per cycle of one core of ``target``."""
    flops = target.core.simd_lanes_fp16 * target.core.flop_per_lane_cycle
    return flops / 2, float(flops)


@dataclasses.dataclass(frozen=True)
class Phases:
    """One grid's work per core and its two messages (scalars or arrays of candidates / cores)."""
    compute: Any        # cycles of one core's own work
    bcast_bytes: Any    # what a core receives along its broadcast tree
    reduce_bytes: Any   # what a core sends up its reduction tree


def gemv(tokens, tile_k, tile_n, act_bytes: float, r: Rates, flat: bool = False) -> Phases:
    """y = x @ W on tile_k x tile_n tiles: the input slice in, this core's MACs, its fp32 partial
    sums out.  ``flat``: bytes, not a matrix (only its slice moves, no MACs)."""
    compute = 0.0 if flat else tokens * tile_k * tile_n / (r.macs_per_cycle * r.efficiency)
    return Phases(compute, tokens * tile_k * act_bytes, tokens * tile_n * r.psum_bytes)


def kv(positions, group: int, head_dim: int, act_bytes: float, r: Rates, score_flops: int = SOFTMAX_FLOPS) -> Phases:
    """Partial attention of one kv head's ``group`` query heads over ``positions`` cached positions:
    the queries and this token's K and V row in, QK^T and PV (2 x positions x group x head_dim MACs)
    plus ``score_flops`` per score (the softmax's, and one add for a position bias: ir.ops.score_flops),
    the partial (output, running max, running sum) out."""
    compute = (2 * positions * group * head_dim / r.macs_per_cycle
               + score_flops * positions * group / r.flops_per_cycle) / r.efficiency
    return Phases(compute, (group + 2) * head_dim * act_bytes, group * (head_dim + 2) * r.psum_bytes)


def lookup(tokens, tile_n, act_bytes: float, r: Rates) -> Phases:
    """A table lookup: the token id along the row, the one-hot row's slice summed down the column
    (every partial received a receive-add, as in a GEMV's partial-sum tree)."""
    return Phases(0.0, tokens * ID_BYTES, tokens * tile_n * act_bytes)


def striped_positions(tile_n, cols, kv_len, col=0):
    """Positions the core in column ``col`` of a KV row attends over: position p lives on column
    p mod cols (at most ``tile_n``, the positions it holds); column 0 is the busiest."""
    return np.minimum(tile_n, np.maximum(0, (kv_len - col + cols - 1) // cols))


def broadcast(ph: Phases, hops, r: Rates, load=1):
    """``load``: the most broadcast messages of the grid on one directed link (1 on a row's chain;
    wide grids' crossings and dead-core detours share links): each serialises on it in turn."""
    return hops * r.hop + load * ph.bcast_bytes / r.link_bytes


def reduction(ph: Phases, hops, links, r: Rates, load=1, chain=0):
    """The root's ``links`` receive-add steps and one serialisation, or the ``load`` partials that
    share the busiest directed link of the tree serialising there and the root's last add (a
    binomial tree's root receives all its ceil(log2 R) children on the one link beside it),
    whichever is longer: hops x hop + max(links x reduce_step + ser, load x ser + reduce_step).
    With load 1 (a chain) this is the chain's formula.  A segmented tree (``segment_shape``)
    first runs its ``chain`` = (segment - 1) + (head segment - 1) chained steps, streamed, before
    its binomial part:
    hops x hop + chain x reduce_step + max((links - chain) x reduce_step + ser, load x ser +
    reduce_step).  The event replay (wafercc/perf/eventsim.py) queues the messages on their links
    and lands at 65-100 % of it (tests/test_cost_kernel.py): the analytic figure is the higher."""
    out = _reduce_cycles(ph.reduce_bytes / r.link_bytes, hops, links, r, load, chain)
    return float(out) if np.ndim(out) == 0 else out


def _reduce_cycles(ser, hops, links, r: Rates, load, chain):
    rest = links - chain
    return hops * r.hop + chain * r.reduce_step + np.maximum(rest * r.reduce_step + ser,
                                                             load * ser + np.minimum(rest, 1) * r.reduce_step)


def segment_chain(n, seg, head_seg=1):
    """Chained steps of the segmented tree over ``n`` tiles before its binomial part
    (``reduction``): (seg - 1) + (head_seg - 1), the tiles' chains and the heads' chains, both
    streamed; 0 for the binomial tree and for a whole chain (seg >= n, whose one-partial links
    make the two terms of ``reduction`` agree)."""
    n = np.maximum(np.asarray(n, dtype=np.int64), 1)
    seg = np.clip(np.asarray(seg, dtype=np.int64), 1, n)
    hs = np.clip(np.asarray(head_seg, dtype=np.int64), 1, -(-n // seg))
    out = np.where(seg < n, seg - 1 + hs - 1, 0)
    return int(out) if out.ndim == 0 else out


def serialisation(ph: Phases, r: Rates):
    """Cycles the grid's links are busy per token (a token stream's interval, without latencies)."""
    return (ph.bcast_bytes + ph.reduce_bytes) / r.link_bytes


def tree_steps(n):
    """Receive-add-forward steps of the binomial reduction tree over ``n`` tiles (passes/transfers.py):
    ceil(log2 n), 0 for one tile (scalars or integer arrays)."""
    n = np.maximum(np.asarray(n, dtype=np.int64), 1)
    out = np.ceil(np.log2(n)).astype(np.int64)
    return int(out) if out.ndim == 0 else out


def reduce_steps(n, reduction: str = DEFAULT_REDUCTION):
    """Receive-add steps of reducing ``n`` tiles: ``tree_steps(n)`` for the binomial tree, n - 1 for
    the launch-style chain (target/geometry.py REDUCTIONS)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction {reduction!r}: expected one of {REDUCTIONS}")
    if reduction == "chain":
        out = np.maximum(np.asarray(n, dtype=np.int64) - 1, 0)
        return int(out) if out.ndim == 0 else out
    return tree_steps(n)


def tree_load(n, reduction: str = DEFAULT_REDUCTION):
    """Partials on the busiest link of a straight reduction over ``n`` tiles: the binomial tree's
    root receives its ceil(log2 n) children over the one link beside it; a chain's links carry one."""
    if reduction == "chain":
        out = np.minimum(np.maximum(np.asarray(n, dtype=np.int64) - 1, 0), 1)
        return int(out) if out.ndim == 0 else out
    return tree_steps(n)


def segment_shape(n, seg, head_seg=1):
    """(receive-add steps of the root, partials on the link beside it) of the segmented reduction
    tree over ``n`` tiles in a line (passes/transfers.py ``segmented_parents``): chains of ``seg``
    tiles toward each segment head, the h = ceil(n / seg) heads in chains of ``head_seg`` toward
    every head_seg-th head, then the binomial tree over the ceil(h / head_seg) of those.  The
    root's chain child is ready after seg - 1 steps and the heads' tree, all of whose heads are
    ready by then, adds its own steps: (seg - 1) + (head_seg - 1) + ceil(log2 ceil(h / head_seg))
    (at most: a short last segment is ready early; the routed paths count exactly,
    wafercc/perf/paths.py).  Its chain child, its head-chain child and its binomial children all
    arrive over the one link beside it: (seg > 1) + (head_seg > 1) + that log.  seg 1 (and
    head_seg 1) is the binomial tree (``tree_steps(n)`` both), seg >= n the chain (n - 1 steps, 1
    partial per link)."""
    n = np.maximum(np.asarray(n, dtype=np.int64), 1)
    seg = np.clip(np.asarray(seg, dtype=np.int64), 1, n)
    h = -(-n // seg)
    hs = np.clip(np.asarray(head_seg, dtype=np.int64), 1, h)
    lg = tree_steps(-(-h // hs))
    links = seg - 1 + hs - 1 + lg
    load = (seg > 1).astype(np.int64) + (hs > 1).astype(np.int64) + lg
    return (int(links), int(load)) if links.ndim == 0 else (links, load)


def _lengths(n):
    """Candidate segment lengths of a tree over up to ``n`` tiles: the powers of two up to n, and n."""
    top = int(tree_steps(int(n)))
    return np.unique(np.minimum(np.left_shift(1, np.arange(top + 1, dtype=np.int64)), max(int(n), 1)))


def best_tree(n, reduce_bytes, r: Rates, reduction: str = DEFAULT_REDUCTION, align: int = 0):
    """(segment, head segment) of the segmented tree over ``n`` tiles that reduces
    ``reduce_bytes`` partials fastest by ``reduction`` below, both powers of two or the whole span
    (ties: the shorter segments, the binomial tree first).  Small partials are bound by the root's
    receive-add steps and take the binomial tree (1, 1); large ones by their serialisation on the
    root's link, which chains unload.  ``align`` > 0 (a KV grid in the lane floorplan, each row a
    block of lane rows ``align`` wide, passes/floorplan.py): a row longer than one lane row takes
    only segments that divide the lane width, so no segment's chain wraps back across the lane
    (the lane width itself: each segment one lane row, the heads' chain straight down the
    block's first column).  ``reduction`` "chain" (the launch-style mapping) is (n, 1)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction {reduction!r}: expected one of {REDUCTIONS}")
    n = np.maximum(np.asarray(n, dtype=np.int64), 1)
    if reduction == "chain":
        return (int(n), 1) if n.ndim == 0 else (n, np.ones_like(n))
    shape = np.broadcast_shapes(n.shape, np.shape(reduce_bytes))
    nn = np.broadcast_to(n, shape).ravel()
    ser = (np.broadcast_to(np.asarray(reduce_bytes, dtype=np.float64), shape) / r.link_bytes).ravel()
    # the candidates depend on n alone (a frontier has ~10^5 shapes but a few hundred distinct n):
    # price each shape against its n's candidates, in the loop order, strict < keeping the first
    uniq, inv = np.unique(nn, return_inverse=True)
    cands = [_tree_candidates(int(u), int(align)) for u in uniq.tolist()]
    width = max((len(c[0]) for c in cands), default=0)
    pad = np.zeros((len(uniq), 5, width), np.int64)
    valid = np.zeros((len(uniq), width), bool)
    for i, c in enumerate(cands):
        pad[i, :, :len(c[0])] = c
        valid[i, :len(c[0])] = True
    best = np.full(len(nn), np.inf)
    s_out, h_out = np.ones(len(nn), np.int64), np.ones(len(nn), np.int64)
    for j in range(width):
        links, load, chain, sg, hs = (pad[inv, f, j] for f in range(5))
        cost = np.where(valid[inv, j], _reduce_cycles(ser, 0, links, r, load, chain), np.inf)
        better = cost < best - 1e-9
        best = np.where(better, cost, best)
        s_out = np.where(better, sg, s_out)
        h_out = np.where(better, hs, h_out)
    if not len(shape):
        return int(s_out[0]), int(h_out[0])
    return s_out.reshape(shape), h_out.reshape(shape)


@functools.lru_cache(maxsize=1 << 13)
def _tree_candidates(n: int, align: int) -> np.ndarray:
    """int64 [5, C]: (root links, root load, chained steps, segment, head segment) of the segmented
    trees over ``n`` tiles that ``best_tree`` tries, in its order (segments, then head segments,
    shortest first; each clipped to what ``segment_shape`` builds), without those ``align`` forbids
    and those no better in every term than an earlier one (never strictly cheaper, so never picked)."""
    lens = _lengths(n)
    if align > 0:
        lens = np.union1d(lens, [align])
    sg, hs = (a.ravel() for a in np.meshgrid(lens, lens, indexing="ij"))
    keep = ~((sg == 1) & (hs > 1))                   # the same tree as (hs, 1)
    if align > 0 and n > align:                      # a row past one lane row: segments dividing it
        keep &= align % np.minimum(sg, n) == 0
    sg, hs = sg[keep], hs[keep]
    links, load = segment_shape(n, sg, hs)
    chain = segment_chain(n, sg, hs)
    s = np.minimum(sg, n)
    h = np.minimum(hs, -(-n // s))
    terms = np.stack([chain, links - chain, load])
    earlier = np.tril(np.ones((len(sg), len(sg)), bool), -1)      # [j, i]: i before j
    dominated = (earlier & (terms[:, None, :] <= terms[:, :, None]).all(axis=0)).any(axis=1)
    out = np.stack([links, load, chain, s, h])[:, ~dominated]
    out.setflags(write=False)
    return out


def chain_paths(kind: str, rows, cols, reduction: str = DEFAULT_REDUCTION, seg=None,
                head_seg=1) -> tuple[Any, Any, Any, Any]:
    """(broadcast hops, reduction hops, reduction links, reduction load) of an unplaced grid: a
    one-hop chain along the row; up the column the segmented tree of ``seg`` and ``head_seg``
    (``best_tree``; None: the binomial tree, or the chain with ``reduction`` "chain") ending at the
    last row (rows-1 hops on its longest path, ``segment_shape`` steps and partials on its busiest
    link); a KV row's partials reduce the same way over its columns."""
    n = cols if kind == "kv" else rows
    if seg is None:
        return cols - 1, n - 1, reduce_steps(n, reduction), tree_load(n, reduction)
    return (cols - 1, n - 1, *segment_shape(n, seg, head_seg))


def grid_cycles(ph: Phases, paths, r: Rates, chain=0):
    """Broadcast + compute + reduction of one grid with paths (broadcast hops, reduction hops,
    reduction links[, reduction load[, broadcast load]]); ``chain``: its reduction tree's chained
    steps (``segment_chain``)."""
    bh, rh, rl, *load = paths
    rload = load[0] if load else 1
    bload = load[1] if len(load) > 1 else 1
    return broadcast(ph, bh, r, bload) + ph.compute + reduction(ph, rh, rl, r, rload, chain)


def rider_compute(tokens, flops, cores, r: Rates):
    """An op without its own cores (norm, rotary, elementwise) spread over its host's cores."""
    return tokens * flops / (cores * r.flops_per_cycle * r.efficiency)


def allreduce(up_hops, steps, down_hops, r: Rates):
    """A norm's or softmax's all-reduce over its host's output row (1-wavelet partials): up its
    reduction tree (``up_hops`` on the longest path, ``steps`` receive-adds at the root:
    ceil(log2 cols) for the binomial tree, cols - 1 for the launch-style chain over the broadcast
    routes reversed), then the result back down the row's broadcast tree, cut-through (hops only)."""
    return (up_hops + down_hops) * r.hop + steps * r.reduce_step
