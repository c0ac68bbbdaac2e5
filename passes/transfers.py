"""The transfers a placed wafer must route, as arrays (endpoints are tile indices).

* broadcast (kind 0): along each grid row, tile (e, i, j) forwards its input slice to (e, i, j+1);
* reduction (kind 1): along each grid column, (e, i, j) passes partial sums to (e, i+1, j);
  KV grids use the same pattern (queries along a row of context chunks, partial softmax
  sums down the columns);
* activation (kind 2): each op's output (its last tile) to the next op's input (its first
  tile), in the wafer's dataflow order; riders travel with their hosts;
* inter-wafer (kind 3): from the west edge into the wafer's first op and from its last op
  to the east edge (the I/O channels sit on the east and west edges).
"""
from __future__ import annotations

import dataclasses

import numpy as np

KIND_BROADCAST, KIND_REDUCTION, KIND_ACTIVATION, KIND_INTER_WAFER = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True)
class TransferSet:
    src: np.ndarray     # int64 [N]: source tile index, or -1 for an edge core
    dst: np.ndarray     # int64 [N]: destination tile index, or -1 for an edge core
    kind: np.ndarray    # int8 [N]
    op_src: np.ndarray  # int32 [N]: op index (wafer-local) or -1
    op_dst: np.ndarray  # int32 [N]

    def __len__(self) -> int:
        return len(self.kind)


def grid_transfers(first: int, experts: int, rows: int, cols: int):
    """Chains inside one grid whose tiles are numbered from ``first`` in (expert, row, col) order."""
    idx = first + np.arange(experts * rows * cols, dtype=np.int64).reshape(experts, rows, cols)
    b_src, b_dst = idx[:, :, :-1].ravel(), idx[:, :, 1:].ravel()
    r_src, r_dst = idx[:, :-1, :].ravel(), idx[:, 1:, :].ravel()
    return b_src, b_dst, r_src, r_dst


def wafer_transfers(grids_per_op: list[list[tuple[int, int, int]]], first_wafer: bool, last_wafer: bool) -> TransferSet:
    """``grids_per_op``: for each op in order, its grids as (experts, rows, cols)."""
    src, dst, kind, osrc, odst = [], [], [], [], []
    first = 0
    ends = []  # (first tile, last tile) of each op with tiles
    for op, grids in enumerate(grids_per_op):
        start = first
        for e, r, c in grids:
            b_src, b_dst, r_src, r_dst = grid_transfers(first, e, r, c)
            for s, d, k in ((b_src, b_dst, KIND_BROADCAST), (r_src, r_dst, KIND_REDUCTION)):
                src.append(s)
                dst.append(d)
                kind.append(np.full(len(s), k, np.int8))
                osrc.append(np.full(len(s), op, np.int32))
                odst.append(np.full(len(s), op, np.int32))
            first += e * r * c
        if first > start:
            ends.append((op, start, first - 1))
    for (a, _, a_last), (b, b_first, _) in zip(ends, ends[1:]):
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
