"""The one-layer extrapolation protocol of research measurements, in the timing model's terms.

WaferLLM (OSDI 2025; ../shared/brief/calibration.md) reports decode speeds measured on one
transformer layer and multiplied by the layer count: every operator of the layer runs on the same
P x P core grid (P <= 720), its dimensions padded to multiples of P.  A layer-pipelined placement
(what wafercc compiles) gives each operator its own region, so each core holds more of one matrix
and only one layer's cores work at a time; comparing the two would fit the mapping, not the
hardware.  ``one_layer_seconds`` times the protocol's mapping instead, with the same per-grid
phases (wafercc.perf.model.grid_phases) and parameters, so the research rows calibrate the same
cost model as the served rows.
"""
from __future__ import annotations

from .evaluate import Program, decode_position
from .model import CostModelError, CostParams, Machine, Workload, ceil_div, wafer_time


def square_grid(g: dict, side: int) -> dict:
    """Grid record ``g`` remapped onto a side x side core grid: the reduced dimension (k) over the
    rows, the output (n) over the columns; a KV grid stripes its positions over ``side`` columns.
    Paths run straight along the row and the column; partial sums combine in a binary tree
    (MeshGEMV's K-tree), ceil(log2(length)) store-and-forward steps deep."""
    g = dict(g)
    if g["operand"] == "kv":                              # KV partials merge back along the row
        cols = red = side
        g.update(cols=cols, tile_n=ceil_div(g["n"], cols))
    else:
        red, cols = min(side, g["k"]), min(side, g["n"])
        g.update(rows=red, cols=cols, tile_k=ceil_div(g["k"], red), tile_n=ceil_div(g["n"], cols))
    # the protocol's own straight paths: not the placed grid's link loads (``dict(g)`` copies them);
    # a straight tree's root takes its tree_depth children over the one link beside it
    g.update(broadcast_hops=cols - 1, broadcast_links=tree_depth(cols), broadcast_load=1,
             reduction_hops=red - 1, reduction_links=tree_depth(red), reduction_load=max(tree_depth(red), 1),
             allreduce_hops=cols - 1, allreduce_links=tree_depth(cols), allreduce_down_hops=cols - 1)
    return g


def tree_depth(n: int) -> int:
    return max(0, (int(n) - 1).bit_length())


def layer_records(prog: Program, side: int, layer: int = 0) -> list[dict]:
    """The op records of ``layer`` mapped as the protocol does: each weight and KV grid on one
    side x side grid.  Ops keep their dataflow dependencies within the layer (q, k and v read the
    same broadcast input, as a fused GEMV would), and no activation route: consecutive GEMVs
    alternate orientation, so one op's reduced output already lies along the edge the next op
    broadcasts from."""
    where = [k for k, ops in enumerate(prog.wafers) if any(r["layer"] == layer for r in ops)]
    if len(where) != 1:
        raise CostModelError(f"one-layer protocol: layer {layer} is on {len(where)} wafers, expected one")
    recs = [r for r in prog.wafers[where[0]] if r["layer"] == layer]
    if not any(r["grids"] for r in recs):
        raise CostModelError(f"one-layer protocol: layer {layer} has no weight or KV operator")
    old = {r["id"]: i for i, r in enumerate(recs)}      # wafer-local ids -> ids within the layer
    first = next(i for i, r in enumerate(recs) if r["grids"])
    out = []
    for i, r in enumerate(recs):
        r = dict(r, id=i, deps=sorted(old[d] for d in r["deps"] if d in old),
                 grids=[square_grid(g, side) for g in r["grids"]], act_in_hops=0)
        if r["host"] is not None:      # every op shares the grid: one outside the layer is a grid too
            r["host"] = old.get(r["host"], first)
        out.append(r)
    return out


def one_layer_seconds(prog: Program, layers: int, side: int, mc: Machine, p: CostParams,
                      prompt_tokens: int, layer: int = 0) -> float:
    """Seconds per decoded token by the protocol: one layer's time on a side x side grid, times
    ``layers``; no embedding, output head or inter-wafer crossing (the protocol leaves them out)."""
    if side < 1 or layers < 1:
        raise CostModelError(f"one-layer protocol: side {side} and layers {layers} must be positive")
    w = Workload(prog.act_bytes, decode_position(prog, prompt_tokens), 1)
    return layers * wafer_time(0, layer_records(prog, side, layer), mc, p, w).cycles / mc.clock_hz
