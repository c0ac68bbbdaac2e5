"""Per-op timing records of one wafer: what the timing model reads, and what schedule.json stores.

One record per op in the wafer's dataflow order (wafer-local ``id``):

    {id, name, op, role, layer, host, flops, deps (ids of the ops on this wafer whose outputs it reads), grids: [{grid, operand, experts, rows, cols, k, n,
     tile_k, tile_n, unit_bits, broadcast_hops, broadcast_links, reduction_hops, reduction_links}],
     attention: {group, head_dim} (attention ops), act_in_hops}

``flops`` is the op's IR cost per decode step (the plan's batch, one token).  Path figures come
from the routed placement (``paths``: wafercc.perf.paths.grid_paths) or, with ``paths=None``, from
the tile plan alone (``estimate_paths``: the lane floorplan's geometry, no router), which the
wafers curve and draft models use.
"""
from __future__ import annotations

import math

from ..ir.ops import kv_head_dim, score_flops
from ..passes.cost_kernel import reduce_steps
from ..target.geometry import DEFAULT_REDUCTION

GRID_INTS = ("experts", "rows", "cols", "k", "n", "tile_k", "tile_n", "unit_bits")


def estimate_paths(g, width: int, reduction: str = DEFAULT_REDUCTION) -> dict[str, int]:
    """Longest broadcast / reduction paths of a grid laid out by the lane floorplan (docs/placement.md)
    without routing: a narrow grid's row is a chain of cols-1 one-hop links and its columns binomial
    trees over rows-1 one-lane-row links (``reduce_steps(rows)`` steps; chains with ``reduction`` "chain"); a wide grid's row runs across its chunk rows (chunk k's slice comes
    `rows` lane rows down from chunk k-1) and spreads along the lane."""
    chunks = math.ceil(g.cols / width) if width and g.cols > width else 1
    span = min(g.cols, width) if width else g.cols
    b_links = (span - 1) + (chunks - 1)
    b_hops = (span - 1) + (chunks - 1) * g.rows
    if g.operand == "kv":
        return {"broadcast_hops": b_hops, "broadcast_links": b_links,
                "reduction_hops": b_hops,
                "reduction_links": b_links if reduction == "chain" else reduce_steps(g.cols, reduction)}
    return {"broadcast_hops": b_hops, "broadcast_links": b_links,
            "reduction_hops": g.rows - 1, "reduction_links": reduce_steps(g.rows, reduction)}


def op_records(ops, graph, flops: dict[str, float], paths: dict | None = None, act_in: dict | None = None,
               width: int = 0, reduction: str = DEFAULT_REDUCTION) -> list[dict]:
    """``ops``: the wafer's OpTiles in order; ``flops``: node name -> FLOPs per decode step;
    ``paths``: {(op, grid): path figures} of the routed wafer, None to estimate from ``width``;
    ``act_in``: {op: hops of its incoming activation route}."""
    ids = {o.node: i for i, o in enumerate(ops)}
    nodes = {n.name: n for n in graph.nodes}
    producers = graph.producers()
    out = []
    for i, o in enumerate(ops):
        node = nodes[o.node]
        grids = []
        for gi, g in enumerate(o.grids):
            rec = {"grid": gi, "operand": g.operand, **{f: int(getattr(g, f)) for f in GRID_INTS}}
            p = paths.get((i, gi)) if paths is not None else estimate_paths(g, width, reduction)
            if p is None:
                raise ValueError(f"op '{o.node}' grid {gi}: no routed paths for its tiles")
            rec.update({k: int(v) for k, v in p.items()})
            grids.append(rec)
        r = {"id": i, "name": o.node, "op": o.op, "role": o.role, "layer": o.layer,
             "host": ids.get(o.host) if o.host else None, "flops": float(flops.get(o.node, 0.0)),
             "grids": grids, "act_in_hops": int((act_in or {}).get(i, 0)),
             "deps": sorted({ids[producers[v].name] for v in node.inputs.values()
                             if v in producers and producers[v].name in ids})}
        if getattr(o, "shares", None):          # layer groups: the template's cores and routes
            r["routes_of"] = ids[o.shares]
        if o.op == "attention":
            at = node.spec.with_defaults(node.attrs)
            r["attention"] = {"group": int(at["num_heads"] // at["num_kv_heads"]), "head_dim": int(kv_head_dim(at)),
                              "score_flops": score_flops(at)}
        out.append(r)
    return out
