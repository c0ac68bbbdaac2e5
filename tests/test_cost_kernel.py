"""One cost kernel (passes/cost_kernel.py): the tiler's score, the analytic model and the event-driven
replay give the same cycles for the same grid.  Each case takes the tiler's frontier of a small
GEMV, lookup or KV op, lays every point out as one-hop chains (tile (i, j) on mesh cell (i, j)),
and times it with all three.  The points are those whose messages are whole 32-bit wavelets (the
replay rounds up to wavelets, the other two do not) on grids of at least 2 x 2 (KV: 2 columns): in
a single row or column the replay sends no broadcast or reduction message at all (the root holds
its input or sum; the activation routes between ops carry the bytes), while the model and the
tiler still charge one serialisation per phase.  That difference sits in the replay's network,
not in the kernel."""
from __future__ import annotations

import numpy as np
import pytest

from target_util import preset_text, write_variant
from wafercc.passes import cost_kernel as ck
from wafercc.passes.transfers import grid_transfers
from wafercc.passes.tile_shapes import Machine, kv_frontier, matrix_frontier
from wafercc.perf.eventsim import ARRAYS, PATH_ARRAYS, simulate_timing
from wafercc.perf.model import CostParams, Workload, op_cycles
from wafercc.perf.model import Machine as ModelMachine
from wafercc.target import load_target

A = 2.0          # bf16 activations


@pytest.fixture(scope="module", params=["wse3", "op_sync"])
def target(request, tmp_path_factory):
    """The wse3 preset, and a variant with a nonzero op_sync (the tiler leaves it out: one per op)."""
    if request.param == "wse3":
        return load_target("wse3")
    line = next(ln for ln in preset_text("wse3").splitlines() if ln.startswith("op_sync = "))
    return load_target(write_variant(tmp_path_factory.mktemp("t"), line, line.replace("value = 0.0", "value = 7.0")))


def _record(kind: str, rows: int, cols: int, k: int, n: int, tk: int, tn: int, group=2, head_dim=8) -> dict:
    bh, rh, rl, load = ck.chain_paths(kind, rows, cols)
    g = {"grid": 0, "operand": {"gemv": "w", "lookup": "table", "kv": "kv"}[kind], "experts": 1, "rows": rows,
         "cols": cols, "k": k, "n": n, "tile_k": tk, "tile_n": tn, "unit_bits": 16, "broadcast_hops": bh,
         "broadcast_links": bh, "reduction_hops": rh, "reduction_links": rl, "reduction_load": load,
         "broadcast_load": 1}
    op = {"id": 0, "name": "op", "op": {"gemv": "matmul", "lookup": "embedding", "kv": "attention"}[kind],
          "role": kind, "layer": 0, "host": None, "flops": 0.0, "deps": [], "grids": [g], "act_in_hops": 0}
    if kind == "kv":
        op["attention"] = {"group": group, "head_dim": head_dim}
    return op


def _arrays(kind: str, rows: int, cols: int, mesh_cols: int) -> dict:
    """Tile (i, j) on cell i x mesh_cols + j; broadcast E along the row; reduction the transfer
    builder's column trees, S down the column (KV: W back along the row).  Links are cell x 4 +
    direction (E, S, W, N)."""
    cell = lambda i, j: i * mesh_cols + j          # noqa: E731
    routes = [(i * cols + j, i * cols + j + 1, 0, [cell(i, j) * 4]) for i in range(rows) for j in range(cols - 1)]
    if kind == "kv":
        _, _, rs, rd = grid_transfers(0, 1, rows, cols, along_row=True)
        routes += [(int(s), int(d), 1, [cell(int(s) // cols, c) * 4 + 2 for c in range(int(s) % cols, int(d) % cols, -1)])
                   for s, d in zip(rs, rd)]
    else:
        _, _, rs, rd = grid_transfers(0, 1, rows, cols)
        routes += [(int(s), int(d), 1, [cell(i, int(s) % cols) * 4 + 1 for i in range(int(s) // cols, int(d) // cols)])
                   for s, d in zip(rs, rd)]
    src, dst, kinds = (np.array([r[x] for r in routes], np.int64) for x in range(3))
    links = np.array([lk for r in routes for lk in r[3]], np.int64)
    offsets = np.r_[0, np.cumsum([len(r[3]) for r in routes])].astype(np.int64)
    n = rows * cols
    return dict(zip((*ARRAYS, *PATH_ARRAYS[0]), (np.zeros(n), np.zeros(n), np.tile(np.arange(cols), rows), src, dst, kinds,
                             np.zeros(len(src)), np.zeros(len(src)), offsets, links)))


def _three(target, kind, f, j, k, n, context=1, **at) -> tuple[float, float, float]:
    """(tiler, analytic, replay) cycles of frontier point ``j`` (the tiler's plus op_sync)."""
    rows, cols = int(f.rows[j]), int(f.cols[j])
    op = _record(kind, rows, cols, k, n, int(f.tile_k[j]), int(f.tile_n[j]), **at)
    mc, p = ModelMachine.of(target), CostParams.of(target)
    analytic = op_cycles(op, [op], mc, p, Workload(A, context))["total"]
    doc = {"target": "wse3", "wafers": [{"ops": [op]}], "timeline": {"prompt_tokens": context, "context": context}}
    ev = simulate_timing("", target, A, doc=doc, arrays=[_arrays(kind, rows, cols, target.usable_cols)])
    return float(f.cycles[j]) + p.op_sync, analytic, ev.total_cycles


def _whole_wavelets(*nbytes) -> bool:
    return all(float(b) % 4 == 0 for b in nbytes)


@pytest.mark.parametrize("kind,k,n", [("gemv", 60000, 6), ("gemv", 100000, 8), ("lookup", 100000, 16),
                                     ("lookup", 200000, 12)])
def test_gemv_and_lookup_cycles_agree(target, kind, k, n):
    m = Machine.of(target, 16, 4)
    f = matrix_frontier(kind, k, n, 1, 16, 1, 0, 1, m)
    checked = 0
    for j in range(len(f.cores)):
        ph = (ck.gemv if kind == "gemv" else ck.lookup)(1, *(() if kind == "lookup" else (int(f.tile_k[j]),)),
                                                         int(f.tile_n[j]), A, m.rates)
        if min(f.rows[j], f.cols[j]) < 2 or f.rows[j] * f.cols[j] > 400 or not _whole_wavelets(ph.bcast_bytes, ph.reduce_bytes):
            continue
        tiler, analytic, replay = _three(target, kind, f, j, k, n)
        assert tiler == pytest.approx(analytic, rel=1e-12)
        # the analytic tree charges its longest path's hops (rows - 1) on top of its steps, and the
        # partials queued beside the root all at once; the replay's critical path may run over
        # shorter edges and overlap the queue with the root's adds, never the other way round
        hop = float(target.fabric.hop_latency)
        assert 0.85 * analytic - (f.rows[j] - 1) * hop - 1e-9 <= replay <= analytic + 1e-9
        checked += 1
    assert checked >= 1


@pytest.mark.parametrize("positions", [240, 8192])
def test_kv_cycles_agree(target, positions):
    m = Machine.of(target, 16, 4)
    group, head_dim = 2, 8
    f = kv_frontier(3, positions, 4 * head_dim, group, head_dim, 0, 1, m)
    checked = 0
    for j in range(len(f.cores)):
        if positions % int(f.cols[j]) or not 2 <= f.cols[j] <= 60:      # equal columns: the replay's busiest core
            continue
        tiler, analytic, replay = _three(target, "kv", f, j, 3, positions, positions, group=group,
                                         head_dim=head_dim)
        assert tiler == pytest.approx(analytic, rel=1e-12)
        hop = float(target.fabric.hop_latency)   # a row tree: the gap is at most the paths' hop latency
        assert 0.85 * analytic - 2 * (f.cols[j] - 1) * hop - 1e-9 <= replay <= analytic + 1e-9
        checked += 1
    assert checked >= 2


@pytest.mark.parametrize("rows", [2, 5, 8, 41, 81, 200])
@pytest.mark.parametrize("wavelets", [1, 18, 71, 124, 520])
def test_tree_partials_queue_beside_the_root(rows, wavelets):
    """A column's binomial tree, routed straight: the root's ceil(log2 R) children share the link
    beside it, so big partials serialise there (the analytic ``reduction_load`` term).  The replay
    queues them; the analytic model stays within 15 % above it and never below, where it would be
    ~4x below for 520-wavelet partials without the load term.  A chain carries one partial per link."""
    from wafercc.passes.transfers import tree_parents
    from wafercc.perf.eventsim import _Net
    r = ck.Rates(8.0, 16.0, 1.0, 4.0, 1.0, 35.41)
    ph = ck.Phases(0.0, 0.0, wavelets * 4.0)
    for chain in (False, True):
        parent = np.maximum(np.arange(rows) - 1, 0) if chain else tree_parents(rows)
        links, offsets, red = [], [0], []
        for p in range(1, rows):          # distance p from the root (row rows-1) down to distance parent[p]
            links += [(rows - 1 - d) * 4 + 1 for d in range(p, int(parent[p]), -1)]
            offsets.append(len(links))
            red.append((p - 1, rows - 1 - p, rows - 1 - int(parent[p])))
        net = _Net(np.array(links, np.int64), np.array(offsets, np.int64), 1, r.hop, True)
        replay = net.phase(0.0, list(range(rows)), {}, [], red, 1, wavelets, r.reduce_step, True)
        red_kind = "chain" if chain else "tree"
        analytic = ck.reduction(ph, rows - 1, ck.reduce_steps(rows, red_kind), r, ck.tree_load(rows, red_kind))
        assert 0.85 * analytic <= replay <= analytic + 1e-9


def test_the_softmax_count_is_the_irs():
    """The kernel charges the IR's FLOPs per attention score (one named constant, ir/ops.py)."""
    from wafercc.ir.ops import SOFTMAX_FLOPS
    r = ck.Rates(8.0, 16.0, 1.0, 4.0)
    assert ck.kv(10, 1, 1, 2.0, r).compute == pytest.approx(2 * 10 / 8 + SOFTMAX_FLOPS * 10 / 16)


@pytest.mark.parametrize("rows", [5, 41, 200, 456, 1171])
@pytest.mark.parametrize("wavelets", [1, 71, 520, 1040])
@pytest.mark.parametrize("seg,head_seg", [(2, 1), (4, 1), (16, 1), (64, 1), (8, 4), (16, 8), (32, 64)])
def test_segmented_tree_replay_agrees(rows, wavelets, seg, head_seg):
    """A column's segmented tree (chains of ``seg`` toward each head, the heads in chains of
    ``head_seg``, the binomial tree over those), routed straight: the analytic term (the first
    chain's streamed steps, then the heads' tree with its ``segment_shape`` steps and root-link
    load) is at or above the replay and within ~35 % of it, and ``best_tree`` picks a shape the
    replay finds no slower than the binomial tree or the chain by more than ~10 %."""
    from wafercc.passes.transfers import segmented_parents
    from wafercc.perf.eventsim import _Net
    r = ck.Rates(8.0, 16.0, 1.0, 4.0, 1.0, 24.74)
    ph = ck.Phases(0.0, 0.0, wavelets * 4.0)

    def replay(s, h):
        parent = segmented_parents(rows, s, h)
        links, offsets, red = [], [0], []
        for p in range(1, rows):
            links += [(rows - 1 - d) * 4 + 1 for d in range(p, int(parent[p]), -1)]
            offsets.append(len(links))
            red.append((p - 1, rows - 1 - p, rows - 1 - int(parent[p])))
        net = _Net(np.array(links, np.int64), np.array(offsets, np.int64), 1, r.hop, True)
        return net.phase(0.0, list(range(rows)), {}, [], red, 1, wavelets, r.reduce_step, True)

    def analytic(s, h):
        links, load = ck.segment_shape(rows, s, h)
        return ck.reduction(ph, rows - 1, links, r, load, ck.segment_chain(rows, s, h))

    assert 0.65 * analytic(seg, head_seg) <= replay(seg, head_seg) <= analytic(seg, head_seg) + 1e-9
    best = ck.best_tree(rows, ph.reduce_bytes, r)
    assert analytic(*best) <= min(analytic(1, 1), analytic(rows, 1), analytic(seg, head_seg)) + 1e-9
    assert replay(*best) <= 1.1 * min(replay(1, 1), replay(rows, 1))


def test_segment_shape_is_the_trees():
    """``segment_shape`` is what wafercc/perf/paths.py measures on the transfers (root steps; an
    upper bound when a last segment is short) and the busiest link of the tree laid straight
    (partials crossing it)."""
    from wafercc.passes.transfers import segmented_parents
    from wafercc.perf.paths import _in_depths, _reduce_steps
    for n in (1, 2, 3, 7, 16, 33, 100, 256):
        for seg in (1, 2, 3, 4, 8, 50, n):
            for head_seg in (1, 2, 4, 7, n):
                par = segmented_parents(n, seg, head_seg)
                src = np.arange(1, n, dtype=np.int64)
                dst = par[1:].astype(np.int64)
                assert (dst < src).all()                       # every partial moves toward the root
                _, lev = _in_depths(n, src, dst, src - dst)
                steps = int(_reduce_steps(n, src, dst, lev).max(initial=0))
                cross = [int(((dst <= x) & (src > x)).sum()) for x in range(n - 1)]
                links, load = ck.segment_shape(n, seg, head_seg)
                assert load == max(cross, default=0), (n, seg, head_seg)
                heads = -(-n // seg)
                exact = (n % seg == 0 or seg == 1 or seg >= n) and (heads % head_seg == 0 or head_seg >= heads)
                assert steps == links if exact else steps <= links, (n, seg, head_seg)
    assert ck.best_tree(8, 4.0, ck.Rates(8.0, 16.0, 1.0, 4.0, 1.0, 24.74), "chain") == (8, 1)
    assert ck.best_tree(720, 32.0, ck.Rates(8.0, 16.0, 1.0, 4.0, 1.0, 24.74)) == (1, 1)   # small partials: binomial


def _best_tree_by_enumeration(n, reduce_bytes, r, align=0):
    """Every (segment, head segment) of powers of two and the span, priced one by one; the first
    of the cheapest in the order shorter segments first (best_tree's documented tie rule)."""
    lens = sorted({min(1 << i, n) for i in range(int(ck.tree_steps(n)) + 1)} | ({align} if align else set()))
    best, pick = np.inf, (1, 1)
    for sg in lens:
        for hs in lens:
            if sg == 1 and hs > 1 or (align and n > align and align % min(sg, n)):
                continue
            links, load = ck.segment_shape(n, sg, hs)
            cost = ck._reduce_cycles(reduce_bytes / r.link_bytes, 0, links, r, load, ck.segment_chain(n, sg, hs))
            if cost < best - 1e-9:
                s = min(sg, n)
                best, pick = cost, (s, min(hs, -(-n // s)))
    return pick


@pytest.mark.parametrize("step,align", [(0.0, 0), (1.0, 0), (24.74, 0), (24.74, 58), (90.0, 7)])
def test_best_tree_over_a_frontier_is_each_shapes_own_best(step, align):
    """best_tree prices a whole frontier at once (grouped by n); every shape's pick is the one the
    shape alone gets by enumerating the trees."""
    r = ck.Rates(8.0, 16.0, 1.0, 4.0, 1.0, step)
    rng = np.random.default_rng(7)
    n = np.concatenate([rng.integers(1, 3000, 300), [1, 2, 3, 57, 58, 59, 116, 128, 4096]])
    rb = rng.choice([4.0, 32.0, 2080.0, 40000.0, 1e6], len(n)) * rng.random(len(n))
    seg, head = ck.best_tree(n, rb, r, align=align)
    for i in range(len(n)):
        assert (int(seg[i]), int(head[i])) == _best_tree_by_enumeration(int(n[i]), float(rb[i]), r, align), i
