"""Tile-shape search for the Tile pass (docs/tiling.md): candidate grids of one weight matrix
(or one KV cache), their per-core bytes, receive-buffer need and decode latency in cycles,
reduced to a Pareto frontier (cores vs cycles); then, per wafer, one point per frontier chosen
by a Lagrangian relaxation of "minimise the summed latency subject to the wafer's cores".

Everything here is vectorised over candidates; nothing is per core.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import PlacementError
from ..target.geometry import DEFAULT_REDUCTION
from ..ir import DType, Graph, ValueKind
from . import cost_kernel as ck
from ..ir.ops import kv_head_dim, score_flops


class TileError(PlacementError):
    """An op cannot be tiled, or a wafer's tiles do not fit its cores."""


@dataclasses.dataclass(frozen=True)
class Machine:
    """The target numbers the search reads (all from target fields, see docs/targets.md)."""
    macs_per_cycle: float      # simd lanes x FLOP per lane per cycle / 2
    flops_per_cycle: float
    hop: float                 # cycles per fabric hop
    link_bytes: float          # bytes per link per cycle
    psum_bytes: int            # partial-sum width (a kernel choice, TileOptions)
    act_bytes: float           # activation element bytes (the plan's activation dtype)
    free: int                  # sram - reserve: data + buffers of one core
    receive_buffer: int        # buffer bytes every core keeps (target field; the planner's capacity)
    mesh_rows: int
    mesh_cols: int
    lane: int = 0              # lane width of the floorplan (0: grids counted as rows x cols)
    efficiency: float = 1.0    # the calibrated cost model's achieved fraction of SIMD peak
    reduce_step: float = 0.0   # ... and its cycles per store-and-forward partial-sum link
    reduction: str = DEFAULT_REDUCTION    # the reduction shape scored (TileOptions.reduction)
    share: int = 1             # layer groups: tiles of this many layers' ops per core (one buffer, in turn)

    @classmethod
    def of(cls, target, act_bits: int, psum_bytes: int, lane: int = 0, reduction: str = DEFAULT_REDUCTION) -> Machine:
        """Tile latencies use the timing model's calibrated parameters (docs/cost-model.md) when the
        target has them, so the tiler picks the shapes the timing model finds fastest."""
        c = target.core
        cm = getattr(target, "cost_model", None) or {}
        eff = float(cm["compute_efficiency"].value) if "compute_efficiency" in cm else 1.0
        step = float(cm["reduce_step"].value) if "reduce_step" in cm else 0.0
        return cls(*ck.core_peak(target), float(target.fabric.hop_latency), float(target.link_bytes_per_cycle),
                   psum_bytes, act_bits / 8, c.sram - c.sram_reserved, c.receive_buffer, target.usable_rows,
                   target.usable_cols, lane, eff, step, reduction)

    @property
    def rates(self) -> ck.Rates:
        """What the cost kernel (passes/cost_kernel.py) reads."""
        return ck.Rates(self.macs_per_cycle, self.flops_per_cycle, self.hop, self.link_bytes, self.efficiency,
                        self.reduce_step, self.psum_bytes)

    @property
    def budget(self) -> int:
        """Data bytes of a core whose buffers fit the target's receive buffer."""
        return (self.free - self.receive_buffer) // self.share


@dataclasses.dataclass(frozen=True, eq=False)
class Frontier:
    """Pareto-optimal tilings of one matrix, sorted by cores (ascending) = cycles (descending)."""
    tile_k: np.ndarray
    tile_n: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    cores: np.ndarray      # experts x rows x cols
    cycles: np.ndarray     # float64, one decode step
    buffer: np.ndarray     # receive-buffer bytes one core needs
    segment: np.ndarray    # the reduction tree's segment lengths (cost_kernel.best_tree)
    head_segment: np.ndarray


def narrow_limit(lane: int) -> int:
    """Widest grid the lane floorplan packs row-major without padding (passes/floorplan.py): its
    column chains then span at most this many links, well inside the color budget."""
    return max(1, lane // 8)


def slots(experts, rows, cols, lane: int):
    """Cores a grid occupies in a lane floorplan: narrow grids pack row-major; wider ones take whole
    lanes (cols rounded up to a multiple of ``lane``), so that grid columns stay mesh columns."""
    if not lane:
        return experts * rows * cols
    wide = -(-cols // lane) * lane
    return experts * rows * np.where(cols > narrow_limit(lane), wide, cols)


def _split(total: int, n: int) -> np.ndarray:
    """``total`` bytes over ``n`` cores: the first ``total % n`` get one byte more (exact sum)."""
    out = np.full(n, total // n, np.int64)
    out[: total % n] += 1
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class Grid:
    """One matrix (x experts) or KV cache as rows x cols tiles of tile_k x tile_n units; a unit is
    one weight (``unit_bits`` bits) or, for KV, one (sequence, head, position) row of K and V."""
    operand: str
    experts: int
    k: int
    n: int
    rows: int
    cols: int
    tile_k: int
    tile_n: int
    unit_bits: int
    extra_bytes: int      # vectors and activations (own and riders') spread over these cores
    buffer_bytes: int     # receive buffer one core needs (input slice, partial sums)
    cycles: float
    lane: int = 0         # lane width it was tiled for (0: none)
    segment: int = 1      # its reduction tree's segment lengths (passes/transfers.py segmented_parents)
    head_segment: int = 1

    @property
    def cores(self) -> int:
        """Tiles (= cores holding data)."""
        return self.experts * self.rows * self.cols

    @property
    def slots(self) -> int:
        """Cores it occupies in the lane floorplan (tiles plus the padding of its last lane)."""
        return int(slots(self.experts, self.rows, self.cols, self.lane))

    def row_sizes(self) -> np.ndarray:
        s = np.full(self.rows, self.tile_k, np.int64)
        s[-1] = self.k - (self.rows - 1) * self.tile_k
        return s

    def col_sizes(self) -> np.ndarray:
        s = np.full(self.cols, self.tile_n, np.int64)
        s[-1] = self.n - (self.cols - 1) * self.tile_n
        return s

    def tile_bytes(self) -> np.ndarray:
        """int64 [experts, rows, cols]: data bytes of each tile (edge tiles are smaller)."""
        t = (np.multiply.outer(self.row_sizes(), self.col_sizes()) * self.unit_bits + 7) // 8
        return np.broadcast_to(t, (self.experts, self.rows, self.cols))

    def extra_per_core(self) -> np.ndarray:
        return _split(self.extra_bytes, self.cores)

    @property
    def data_bytes(self) -> int:
        """Sum of tile_bytes() without materialising it (at most 4 distinct tile sizes)."""
        rs, cs = self.row_sizes(), self.col_sizes()
        ru, rc = np.unique(rs, return_counts=True)
        cu, cc = np.unique(cs, return_counts=True)
        b = (np.multiply.outer(ru, cu) * self.unit_bits + 7) // 8
        return int(self.experts * (b * np.multiply.outer(rc, cc)).sum())

    @property
    def padding_bytes(self) -> int:
        """Allocated but unused: every core sized for a full tile, minus the data."""
        return self.cores * ((self.tile_k * self.tile_n * self.unit_bits + 7) // 8) - self.data_bytes


def splits(dim: int, max_tile: int) -> tuple[np.ndarray, np.ndarray]:
    """Every distinct part count p with tile ceil(dim/p) <= max_tile, and that (least-padding) tile."""
    top = min(dim, max_tile)
    if top < 1:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    parts = np.unique(-(-dim // np.arange(1, top + 1, dtype=np.int64)))
    return parts, -(-dim // parts)


def _pareto(tk, tn, r, c, cores, cycles, buf, seg, hseg) -> Frontier:
    order = np.lexsort((cycles, cores))
    cyc = cycles[order]
    best = np.minimum.accumulate(cyc)
    keep = np.ones(len(cyc), bool)
    keep[1:] = cyc[1:] < best[:-1]
    idx = order[keep]
    return Frontier(tk[idx], tn[idx], r[idx], c[idx], cores[idx], cycles[idx], buf[idx], seg[idx], hseg[idx])


def _select(tk, tn, r, c, experts, data, buf, cycles, seg, headroom, min_cores, m: Machine, fit_mesh: bool):
    seg, hseg = seg
    cores = slots(experts, r, c, m.lane)
    ok = ((data + headroom) * m.share <= m.free - np.maximum(m.receive_buffer, buf)) & (cores >= min_cores)
    if fit_mesh and (ok & (r <= m.mesh_rows) & (c <= m.mesh_cols)).any():
        ok &= (r <= m.mesh_rows) & (c <= m.mesh_cols)
    if not ok.any():
        return None
    return _pareto(tk[ok], tn[ok], r[ok], c[ok], cores[ok], cycles[ok], buf[ok], seg[ok], hseg[ok])


def matrix_frontier(kind: str, k: int, n: int, experts: int, bits: int, tokens: int, headroom: int,
                    min_cores: int, m: Machine, fit_mesh: bool = True) -> Frontier | None:
    """Tilings of a [k, n] matrix (x experts) for y = x @ W (kind "gemv": grid rows split k, the
    reduction; grid columns split n, the outputs) or a table lookup (kind "lookup": rows split the
    vocabulary, columns the width).  None if no tile fits a core."""
    a = m.act_bytes
    data_cap = m.free // m.share - headroom
    if kind == "gemv":
        k_max = min(data_cap * 8 // bits, int((m.free - m.psum_bytes) // (2 * a)))
        n_max = min(data_cap * 8 // bits, (m.free - int(2 * a)) // m.psum_bytes)
    else:
        k_max, n_max = data_cap * 8 // bits, int(m.free // a)
    rp, tkp = splits(k, k_max)
    cp, tnp = splits(n, n_max)
    if not len(rp) or not len(cp):
        return None
    r, c = (x.ravel() for x in np.meshgrid(rp, cp, indexing="ij"))
    tk, tn = (x.ravel() for x in np.meshgrid(tkp, tnp, indexing="ij"))
    data = (tk * tn * bits + 7) // 8
    if kind == "gemv":
        buf = np.ceil(2 * tk * a).astype(np.int64) + tn * m.psum_bytes   # double-buffered input, psums
        ph = ck.gemv(tokens, tk, tn, a, m.rates)
    else:
        buf = np.ceil(tn * a).astype(np.int64)                           # the gathered output slice
        ph = ck.lookup(tokens, tn, a, m.rates)
    seg = ck.best_tree(r, ph.reduce_bytes, m.rates, m.reduction)
    cycles = ck.grid_cycles(ph, ck.chain_paths(kind, r, c, m.reduction, *seg), m.rates, ck.segment_chain(r, *seg))
    return _select(tk, tn, r, c, experts, data, buf, cycles.astype(np.float64), seg, headroom, min_cores, m,
                   fit_mesh)


def kv_frontier(seq_heads: int, positions: int, row_bytes: int, group: int, head_dim: int, headroom: int,
                min_cores: int, m: Machine, fit_mesh: bool = True, score_flops: int = ck.SOFTMAX_FLOPS) -> Frontier | None:
    """Tilings of one attention op's KV cache: grid row = one (sequence, kv head), grid column = a
    chunk of context positions (K and V rows of those positions on the same core, which computes
    its partial softmax-attention for the head's `group` query heads; partials reduce along the row)."""
    p_max = (m.free // m.share - headroom) // row_bytes
    cp, pp = splits(positions, p_max)
    if not len(cp):
        return None
    r = np.full(len(cp), seq_heads, np.int64)
    a = m.act_bytes
    buf = np.full(len(cp), int(np.ceil(group * head_dim * a)) + group * (head_dim + 2) * m.psum_bytes, np.int64)
    ph = ck.kv(ck.striped_positions(pp, cp, positions), group, head_dim, a, m.rates, score_flops)  # at full context
    # a lane-wide segment is one lane row of the row's block (passes/floorplan.py): its chain
    # runs along the lane row and the heads' chain straight down the block's first column
    seg = ck.best_tree(cp, ph.reduce_bytes, m.rates, m.reduction, m.lane)
    cycles = ck.grid_cycles(ph, ck.chain_paths("kv", r, cp, m.reduction, *seg), m.rates, ck.segment_chain(cp, *seg))
    return _select(np.ones_like(pp), pp, r, cp, 1, pp * row_bytes, buf, cycles.astype(np.float64), seg,
                   headroom, min_cores, m, fit_mesh)


def choose(frontiers: list[Frontier], counts: list[int], core_budget: int,
           iterations: int = 60) -> tuple[list[int], float, bool]:
    """One point per frontier minimising sum(count x cycles) + lam x sum(count x cores), with the
    smallest lam whose cores fit ``core_budget``.  Returns (indices, lam, fits); when even the
    fewest cores do not fit, the fewest-core points and fits=False."""
    if not frontiers:
        return [], 0.0, True
    cnt = np.asarray(counts, np.float64)

    def pick(lam: float) -> tuple[list[int], float]:
        idx = [int(np.argmin(f.cycles + lam * f.cores)) for f in frontiers]
        return idx, float(sum(cnt[i] * f.cores[j] for i, (f, j) in enumerate(zip(frontiers, idx))))

    fewest = sum(cnt[i] * f.cores[0] for i, f in enumerate(frontiers))
    if fewest > core_budget:
        return [0] * len(frontiers), float("inf"), False
    idx, total = pick(0.0)
    if total <= core_budget:
        return idx, 0.0, True
    hi = 1.0
    while pick(hi)[1] > core_budget:
        hi *= 4
    lo = 0.0
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if pick(mid)[1] <= core_budget:
            hi = mid
        else:
            lo = mid
    return pick(hi)[0], hi, True


_BIASES = frozenset({"b", "router_b", "gate_up_b", "down_b"})


def op_weights(graph: Graph, node, wdt: DType) -> tuple[list[tuple[str, str, int, int, int]], int]:
    """(matrices [(operand, kind, experts, k, n)], bytes of the other (vector) weights) of a node;
    each weight value once, as the memory plan counts it."""
    at = node.spec.with_defaults(node.attrs)
    mats, vec, seen = [], 0, set()
    for role, v in node.inputs.items():
        val = graph.values[v]
        if val.kind is not ValueKind.WEIGHT or v in seen:
            continue
        seen.add(v)
        sh = val.shape
        if node.op in ("matmul", "moe", "embedding") and len(sh) in (2, 3) and role not in _BIASES:
            if not all(isinstance(d, int) for d in sh):
                raise TileError(f"op '{node.name}' ({node.op}): weight {v} has symbolic shape {list(sh)}")
            e, a, b = (1, *sh) if len(sh) == 2 else sh
            t = (at["experts_transposed"] if len(sh) == 3 else at["shared_transposed"] if role.startswith("shared")
                 else at["router_transposed"] if role == "router_w" else at.get("transpose_w", False))
            k, n = (b, a) if t else (a, b)
            mats.append((role, "lookup" if node.op == "embedding" else "gemv", e, k, n))
        else:
            vec += val.nbytes(dtype=wdt)
    return mats, vec


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def kv_spec(node, r, popts):
    at = node.spec.with_defaults(node.attrs)
    w = at["sliding_window"] or 0
    cached = min(popts.context, w) if w else popts.context
    for rows in (popts.batch * at["num_kv_heads"], popts.batch):
        if r["kvb"] % (rows * cached) == 0:
            return [("kv", "kv", 1, rows, cached, 8 * r["kvb"] // (rows * cached))]
    raise TileError(f"op '{node.name}' (attention): KV bytes {r['kvb']} do not split into rows of "
                    f"{cached} positions")


def op_frontier(node, spec, headroom, min_cores, m, popts, options):
    op_, kind, e, k, n, bits = spec
    if kind == "kv":
        at = node.spec.with_defaults(node.attrs)
        f = kv_frontier(k, n, bits // 8, at["num_heads"] // at["num_kv_heads"], kv_head_dim(at), headroom,
                        min_cores, m, options.fit_mesh, score_flops(at))
    else:
        f = matrix_frontier(kind, k, n, e, bits, popts.batch, headroom, min_cores, m, options.fit_mesh)
    if f is None:
        raise TileError(f"op '{node.name}' ({node.op}): no tile of {op_} [{k} x {n}] at {bits} bits fits a core "
                        f"({m.free} B free after the reserve" + (f", shared by {m.share} layers' tiles" if m.share > 1 else "")
                        + f", {headroom} B of vectors per core)")
    return f
