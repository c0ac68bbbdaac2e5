"""The transfers a placed wafer must route, as arrays (endpoints are tile indices).

* broadcast (kind 0): along each grid row, tile (e, i, j) forwards its input slice to (e, i, j+1).
  In a wide grid (passes/floorplan.py) chunk k >= 1 of row i gets the slice from the chunk above at
  column c = i mod (chunk width), one lane-row block straight down, and spreads it east and west
  from c (the crossings are spread over the lane's columns instead of piling onto one);
* reduction (kind 1): each grid column reduces as a binomial tree rooted at its last row (e, R-1, j):
  the tile at distance p = R-1-i from the root sends its partial sums to the tile at distance
  p - lowbit(p) (``tree_parents``), so a column of R rows takes ceil(log2 R) receive-add-forward
  steps instead of a chain's R-1 (docs/cost-model.md).  Every edge runs along the column, toward
  the root; the root keeps the chain's place, so the op's output still leaves from its last tile.
  A KV grid's row is one (sequence, kv head) and its columns are chunks of context positions, so
  its partial softmax sums combine along the row instead, as the same binomial tree over the row's
  columns rooted at column 0 (the row's entry tile, where the query arrived): column c sends to
  c - lowbit(c), ceil(log2 cols) steps.  A grid whose partials are large reduces instead as a
  segmented tree (``segmented_parents``, the grid's ``segment`` L and ``head_segment`` H chosen by
  the tiler: passes/cost_kernel.py ``best_tree``): chains of L tiles toward each segment head, the
  heads in chains of H toward every H-th head, and the binomial tree over those, so fewer
  partials queue on the link beside the root;
* all-reduce (kind 4, ``--reduction tree`` only): a norm's or softmax rider's statistic (a norm's
  sums, a softmax's max and sum) over its host's output: the tiles of the host's last grid that hold the
  output (its last row, per expert; every row of a KV grid) reduce it as the binomial tree over the
  row's columns rooted at column 0, the row's broadcast root (column c sends to c - lowbit(c),
  ceil(log2 cols) steps), and the result goes back along the row's broadcast routes (kind 0),
  cut-through.  With ``--reduction chain`` there are no kind-4 routes: the launch-style all-reduce
  runs up the broadcast routes reversed (a chain, cols - 1 steps) and back down them;
* activation (kind 2): each op's output (its last tile) to the next op's input (its first
  tile), in the wafer's dataflow order; riders travel with their hosts;
* layer groups (``templates``, docs/mapping.md): an op sharing its template's cores has no broadcast
  or reduction routes of its own (the template's serve it: same grid, same cores, another time),
  and an activation route is built only for the first consecutive pair of ops with its pair of
  templates (a group's layers repeat the template layer's routes; the template's last op feeds
  its first op for the next layer of the group);
* inter-wafer (kind 3): from the west edge into the wafer's first op and from its last op
  to the east edge (the I/O channels sit on the east and west edges).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..target.geometry import DEFAULT_REDUCTION, REDUCTIONS

KIND_BROADCAST, KIND_REDUCTION, KIND_ACTIVATION, KIND_INTER_WAFER, KIND_ALLREDUCE = 0, 1, 2, 3, 4


@dataclasses.dataclass(frozen=True)
class TransferSet:
    src: np.ndarray     # int64 [N]: source tile index, or -1 for an edge core
    dst: np.ndarray     # int64 [N]: destination tile index, or -1 for an edge core
    kind: np.ndarray    # int8 [N]
    op_src: np.ndarray  # int32 [N]: op index (wafer-local) or -1
    op_dst: np.ndarray  # int32 [N]

    def __len__(self) -> int:
        return len(self.kind)


def tree_parents(n: int) -> np.ndarray:
    """int64 [n]: parent distance of each distance 0..n-1 from the root in the binomial reduction
    tree (p -> p with its lowest set bit cleared; -1 at the root).  A tile adds its children's
    partials as they arrive, largest subtree last, so the subtree of p = 2^k..2^(k+1)-1 is done
    after k steps and the root after ceil(log2 n): the fewest of any tree whose cores add one
    partial per step."""
    p = np.arange(n, dtype=np.int64)
    out = p & (p - 1)
    out[0] = -1
    return out


def segmented_parents(n: int, seg: int, head_seg: int = 1) -> np.ndarray:
    """int64 [n]: parent distances of a segmented reduction tree: chains of ``seg`` tiles toward
    each segment head (p -> p - 1 inside a segment), then the heads reduced by the segmented tree
    of ``head_seg`` over them (chains of that many heads, head q -> q - 1, then the binomial tree
    over their first heads, q -> q - lowbit(q)).  seg = 1 with head_seg = 1 is tree_parents,
    seg >= n a chain; the tiler picks both per grid by cost (passes/cost_kernel.py ``best_tree``)."""
    if seg < 1 or head_seg < 1:
        raise ValueError(f"segment lengths {seg}, {head_seg}: expected >= 1")
    p = np.arange(n, dtype=np.int64)
    q, r = np.divmod(p, seg)
    h = np.arange(-(-n // seg), dtype=np.int64)
    b, c = np.divmod(h, head_seg)
    head_parent = np.where(c > 0, h - 1, (b & (b - 1)) * head_seg)
    out = np.where(r > 0, p - 1, head_parent[q] * seg)
    out[0] = -1
    return out


def grid_transfers(first: int, experts: int, rows: int, cols: int, chunk: int = 0, along_row: bool = False,
                   reduction: str = DEFAULT_REDUCTION, segment: int = 1, head_segment: int = 1):
    """Broadcast chains and reduction trees inside one grid whose tiles are numbered from ``first``
    in (expert, row, col) order; ``chunk`` > 0: the grid is wide, laid out in chunks of that many
    columns.  ``along_row`` (KV grids): the reduction is a tree over each row's columns instead of
    the column trees.  ``segment``, ``head_segment``: the tree's segment lengths
    (``segmented_parents``; 1 and 1 the binomial tree).  ``reduction`` "chain" (the launch-style
    mapping): row i sends to row i + 1,
    a KV row's partials go back up its broadcast tree."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction {reduction!r}: expected one of {REDUCTIONS}")
    b_src, b_dst, r_src, r_dst = _grid_transfers(first, experts, rows, cols, chunk, reduction == "chain", segment,
                                                 head_segment)
    if along_row and reduction == "chain":
        return b_src, b_dst, b_dst.copy(), b_src.copy()
    if along_row:
        idx = first + np.arange(experts * rows * cols, dtype=np.int64).reshape(experts, rows, cols)
        par = segmented_parents(cols, segment, head_segment)[1:]     # column c sends toward column 0
        return b_src, b_dst, idx[:, :, 1:].ravel(), idx[:, :, par].ravel()
    return b_src, b_dst, r_src, r_dst


def allreduce_transfers(first: int, experts: int, rows: int, cols: int, along_row: bool = False):
    """The all-reduce tree of a grid numbered from ``first``: over the columns of its output rows
    (the last row of each expert; every row of a KV grid), column c sending to c - lowbit(c)."""
    idx = first + np.arange(experts * rows * cols, dtype=np.int64).reshape(experts, rows, cols)
    out = idx if along_row else idx[:, rows - 1:, :]
    par = tree_parents(cols)[1:]
    return out[:, :, 1:].ravel(), out[:, :, par].ravel()


def _grid_transfers(first: int, experts: int, rows: int, cols: int, chunk: int, chain: bool = False,
                    segment: int = 1, head_segment: int = 1):
    idx = first + np.arange(experts * rows * cols, dtype=np.int64).reshape(experts, rows, cols)
    if chain:
        r_src, r_dst = idx[:, :-1, :].ravel(), idx[:, 1:, :].ravel()
    else:
        par = segmented_parents(rows, segment, head_segment)[1:]     # distances 1..rows-1 from the root row
        r_src = idx[:, rows - 2 - np.arange(rows - 1), :].ravel() if rows > 1 else idx[:, :0, :].ravel()
        r_dst = idx[:, rows - 1 - par, :].ravel() if rows > 1 else idx[:, :0, :].ravel()
    if chunk <= 0 or cols <= chunk:
        return idx[:, :, :-1].ravel(), idx[:, :, 1:].ravel(), r_src, r_dst
    j = np.arange(cols - 1)                                   # pair (j, j+1) of a row
    k = j // chunk
    inner = (j + 1) % chunk != 0                              # both ends in the same chunk
    width = np.minimum(chunk, cols - k * chunk)               # width of the pair's chunk
    i = np.arange(rows)[:, None]
    entry = np.where(k[None, :] == 0, 0, i % width[None, :])  # where the chunk's slice arrives
    east = (j % chunk)[None, :] >= entry                      # [rows, cols-1]: j -> j+1, else j+1 -> j
    jj = np.broadcast_to(j, east.shape)
    a = np.where(east, jj, jj + 1)[:, inner[:]] if inner.any() else np.zeros((rows, 0), np.int64)
    b = np.where(east, jj + 1, jj)[:, inner[:]] if inner.any() else np.zeros((rows, 0), np.int64)
    ii = np.broadcast_to(i, a.shape)
    b_src = [idx[:, ii, a].reshape(experts, -1)]
    b_dst = [idx[:, ii, b].reshape(experts, -1)]
    for kc in range(1, -(-cols // chunk)):                    # down into chunk kc at column i mod width
        w = min(chunk, cols - kc * chunk)
        c = np.arange(rows) % w
        b_src.append(idx[:, np.arange(rows), (kc - 1) * chunk + c])
        b_dst.append(idx[:, np.arange(rows), kc * chunk + c])
    return (np.concatenate(b_src, axis=1).ravel(), np.concatenate(b_dst, axis=1).ravel(), r_src, r_dst)


def wafer_transfers(grids_per_op: list[list[tuple[int, int, int]]], first_wafer: bool, last_wafer: bool,
                    chunk_of=lambda cols: 0, reduction: str = DEFAULT_REDUCTION,
                    allreduce=frozenset(), templates=None) -> TransferSet:
    """``grids_per_op``: for each op in order, its grids as (experts, rows, cols[, along_row[,
    segment, head_segment]]) (along_row True for KV grids; the reduction tree's segment lengths,
    default 1 and 1); ``chunk_of(cols)`` is the chunk width of a wide grid in
    the floorplan, 0 for a narrow one; ``allreduce``: the ops hosting a norm or softmax rider
    (their last grid gets the all-reduce tree, with ``reduction`` "tree"); ``templates[op]``: the op
    whose routes it uses (itself unless it shares a layer group's cores)."""
    tmpl = list(templates) if templates is not None else list(range(len(grids_per_op)))
    src, dst, kind, osrc, odst = [], [], [], [], []
    first = 0
    ends = []  # (first tile, last tile) of each op with tiles
    for op, grids in enumerate(grids_per_op):
        start = first
        for gi, g in enumerate(grids):
            e, r, c = g[:3]
            if tmpl[op] != op:
                first += e * r * c
                continue
            along = bool(g[3:] and g[3])
            b_src, b_dst, r_src, r_dst = grid_transfers(first, e, r, c, chunk_of(c), along, reduction,
                                                        *(int(x) for x in g[4:6]))
            sets = [(b_src, b_dst, KIND_BROADCAST), (r_src, r_dst, KIND_REDUCTION)]
            if op in allreduce and gi == len(grids) - 1 and reduction != "chain":
                sets.append((*allreduce_transfers(first, e, r, c, along), KIND_ALLREDUCE))
            for s, d, k in sets:
                src.append(s)
                dst.append(d)
                kind.append(np.full(len(s), k, np.int8))
                osrc.append(np.full(len(s), op, np.int32))
                odst.append(np.full(len(s), op, np.int32))
            first += e * r * c
        if first > start:
            ends.append((op, start, first - 1))
    built = set()
    for (a, _, a_last), (b, b_first, _) in zip(ends, ends[1:]):
        if (tmpl[a], tmpl[b]) in built:
            continue                        # the same cores, already joined by a route
        built.add((tmpl[a], tmpl[b]))
        src.append(np.array([a_last]))
        dst.append(np.array([b_first]))
        kind.append(np.array([KIND_ACTIVATION], np.int8))
        osrc.append(np.array([a], np.int32))
        odst.append(np.array([b], np.int32))
    if ends and not first_wafer:
        src.append(np.array([-1]))
        dst.append(np.array([ends[0][1]]))
        kind.append(np.array([KIND_INTER_WAFER], np.int8))
        osrc.append(np.array([-1], np.int32))
        odst.append(np.array([ends[0][0]], np.int32))
    if ends and not last_wafer:
        src.append(np.array([ends[-1][2]]))
        dst.append(np.array([-1]))
        kind.append(np.array([KIND_INTER_WAFER], np.int8))
        osrc.append(np.array([ends[-1][0]], np.int32))
        odst.append(np.array([-1], np.int32))
    cat = (lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt))
    return TransferSet(cat(src, np.int64), cat(dst, np.int64), cat(kind, np.int8), cat(osrc, np.int32),
                       cat(odst, np.int32))
