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

from ..ir.ops import SOFTMAX_FLOPS
from .evaluate import Program, decode_position
from .model import CostModelError, CostParams, Machine, Workload, ceil_div, wafer_time


def square_grid(g: dict, side: int) -> dict:
    """Weight grid record ``g`` remapped onto a side x side core grid: the reduced dimension (k) over
    the rows, the output (n) over the columns.  Paths run straight along the row and the column;
    partial sums combine in a binary tree (MeshGEMV's K-tree), ceil(log2(length)) store-and-forward
    steps deep.  KV grids take ``attention_grids`` instead."""
    if g["operand"] == "kv":
        raise CostModelError("one-layer protocol: a KV grid maps to attention_grids, not square_grid")
    red, cols = min(side, g["k"]), min(side, g["n"])
    return _straight(dict(g, rows=red, cols=cols, tile_k=ceil_div(g["k"], red), tile_n=ceil_div(g["n"], cols)),
                     cols, red)


def attention_grids(g: dict, attention: dict, side: int, positions: int) -> list[dict]:
    """A KV grid record ``g`` (``k`` = kv heads, ``n`` = context) on the protocol's side x side grid
    as WaferLLM maps decode attention: the K and V caches as matrices [positions, kv heads x head_dim]
    with the positions over one axis and the kv dimensions over the other (padded to the side), and
    both products as MeshGEMVs on it.  ``vectors``: the group's query heads multiplying one head's
    slice (grouped-query attention), so messages and MACs scale by the group.

    * QK^T: the query slices fan out along the positions axis; each core's partial scores (its
      positions, per query head) combine over the cores holding that head's dimensions;
    * P V: the probabilities fan out over the head's dimension cores; each core's partial outputs
      (its dimensions, per query head) combine over the positions axis.

    The softmax's max and sum all-reduce over the positions axis (``allreduce_*`` of the last grid,
    charged by the attention's softmax rider, ``layer_records``)."""
    kv_dims = g["k"] * attention["head_dim"]
    tile_d = ceil_div(kv_dims, min(side, kv_dims))            # dimensions per core (padded)
    per_head = max(1, ceil_div(attention["head_dim"], tile_d))  # cores holding one head's dimensions
    pos_cores = min(side, max(1, positions))
    tile_p = ceil_div(max(1, positions), pos_cores)           # positions per core
    cores_d = min(side, kv_dims)                              # padded to the side, as the weights
    base = {k: v for k, v in g.items() if k in ("grid", "experts", "unit_bits")}
    base.update(operand="w", unit_bits=16, vectors=attention["group"])
    qk = _straight(dict(base, experts=ceil_div(cores_d, per_head), k=kv_dims, n=positions, rows=per_head,
                        cols=pos_cores, tile_k=tile_d, tile_n=tile_p), pos_cores, per_head)
    pv = _straight(dict(base, k=positions, n=kv_dims, rows=pos_cores, cols=cores_d, tile_k=tile_p, tile_n=tile_d),
                   per_head, pos_cores)
    pv.update(allreduce_hops=pos_cores - 1, allreduce_links=tree_depth(pos_cores), allreduce_down_hops=pos_cores - 1)
    return [qk, pv]


def _straight(g: dict, bcast: int, red: int) -> dict:
    """The protocol's own straight paths over ``bcast`` cores along the broadcast axis and ``red``
    along the reduction axis: not the placed grid's link loads (``dict(g)`` copies them); a straight
    tree's root takes its tree_depth children over the one link beside it."""
    g.update(broadcast_hops=bcast - 1, broadcast_links=tree_depth(bcast), broadcast_load=1,
             reduction_hops=red - 1, reduction_links=tree_depth(red), reduction_load=max(tree_depth(red), 1),
             allreduce_hops=bcast - 1, allreduce_links=tree_depth(bcast), allreduce_down_hops=bcast - 1)
    return g


def tree_depth(n: int) -> int:
    return max(0, (int(n) - 1).bit_length())


def layer_records(prog: Program, side: int, layer: int = 0, positions: int | None = None) -> list[dict]:
    """The op records of ``layer`` mapped as the protocol does: each weight grid on one side x side
    grid, each attention's KV as its two MeshGEMVs on it (``attention_grids`` at ``positions``
    cached positions, default the planned context) followed by its softmax's all-reduce (a rider
    record).  Ops keep their dataflow dependencies within the layer (q, k and v read the same
    broadcast input, as a fused GEMV would), and no activation route: consecutive GEMVs alternate
    orientation, so one op's reduced output already lies along the edge the next op broadcasts from."""
    where = [k for k, ops in enumerate(prog.wafers) if any(r["layer"] == layer for r in ops)]
    if len(where) != 1:
        raise CostModelError(f"one-layer protocol: layer {layer} is on {len(where)} wafers, expected one")
    recs = [r for r in prog.wafers[where[0]] if r["layer"] == layer]
    if not any(r["grids"] for r in recs):
        raise CostModelError(f"one-layer protocol: layer {layer} has no weight or KV operator")
    positions = prog.context if positions is None else positions
    new, nxt = {}, 0                   # wafer-local ids -> ids within the layer (a softmax after each KV op)
    for r in recs:
        new[r["id"]] = nxt
        nxt += 2 if _kv(r) else 1
    out_of = {r["id"]: new[r["id"]] + (1 if _kv(r) else 0) for r in recs}   # where each op's output is ready
    first = next(new[r["id"]] for r in recs if r["grids"])
    out = []
    for r in recs:
        i = new[r["id"]]
        grids = [x for g in r["grids"] for x in (attention_grids(g, r["attention"], side, positions)
                                                 if g["operand"] == "kv" else [square_grid(g, side)])]
        rec = dict(r, id=i, deps=sorted(out_of[d] for d in r["deps"] if d in out_of), grids=grids, act_in_hops=0)
        if r["op"] == "norm":          # the protocol's layer waits for its norms (no deferred scale)
            rec["scale_deferred"] = False
        if rec["host"] is not None:    # every op shares the grid: one outside the layer is a grid too
            rec["host"] = new.get(rec["host"], first)
        out.append(rec)
        if _kv(r):
            att = r["attention"]
            heads = sum(g["k"] for g in r["grids"] if g["operand"] == "kv")
            out.append({"id": i + 1, "name": f"{r['name']}.softmax", "op": "softmax", "role": "rider",
                        "layer": r["layer"], "host": i, "grids": [], "act_in_hops": 0, "deps": [i],
                        "flops": float(att.get("score_flops", SOFTMAX_FLOPS) * positions * att["group"] * heads)})
    return out


def _kv(r: dict) -> bool:
    return any(g["operand"] == "kv" for g in r["grids"])


def one_layer_seconds(prog: Program, layers: int, side: int, mc: Machine, p: CostParams,
                      prompt_tokens: int, layer: int = 0) -> float:
    """Seconds per decoded token by the protocol: one layer's time on a side x side grid, times
    ``layers``; no embedding, output head or inter-wafer crossing (the protocol leaves them out)."""
    if side < 1 or layers < 1:
        raise CostModelError(f"one-layer protocol: side {side} and layers {layers} must be positive")
    w = Workload(prog.act_bytes, decode_position(prog, prompt_tokens), 1)
    recs = layer_records(prog, side, layer, w.kv_len)
    return layers * wafer_time(0, recs, mc, p, w).cycles / mc.clock_hz
