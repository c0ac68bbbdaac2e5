"""Per-op timing records of one wafer: what the timing model reads, and what schedule.json stores.

One record per op in the wafer's dataflow order (wafer-local ``id``):

    {id, name, op, role, layer, host, flops, deps (ids of the ops on this wafer whose outputs it reads), grids: [{grid, operand, experts, rows, cols, k, n,
     tile_k, tile_n, unit_bits, segment, head_segment, broadcast_hops, broadcast_links, reduction_hops, reduction_links,
     broadcast_load, reduction_load [, allreduce_hops, allreduce_links, allreduce_down_hops]}],
     attention: {group, head_dim} (attention ops), act_in_hops}

``flops`` is the op's IR cost per decode step (the plan's batch, one token).  Path figures come
from the routed placement (``paths``: wafercc.perf.paths.grid_paths) or, with ``paths=None``, from
the tile plan alone (``estimate_paths``: the lane floorplan's geometry, no router), which the
wafers curve and draft models use.
"""
from __future__ import annotations

import math

import numpy as np

from ..ir.ops import kv_head_dim, score_flops
from ..passes.cost_kernel import ALLREDUCE_RIDERS, reduce_steps, segment_shape
from ..passes.transfers import segmented_parents
from ..target.geometry import DEFAULT_REDUCTION

GRID_INTS = ("experts", "rows", "cols", "k", "n", "tile_k", "tile_n", "unit_bits")


def _row_broadcasts(rows: int, cols: int, width: int, stride: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(links, hops) of the longest broadcast path of each grid row as passes/transfers.py builds it:
    a chain east from column 0 inside one chunk; in a wide grid of several chunks, chunk k of row i
    receives at column c_k = i mod (its width) from the same column of chunk k-1 (``stride`` lane
    rows up, one link: ``rows``, or 1 for a KV grid's row blocks, passes/floorplan.py) and spreads
    east and west from there."""
    stride = rows if stride is None else stride
    i = np.arange(rows, dtype=np.int64)
    if not width or cols <= width:
        return np.full(rows, cols - 1, np.int64), np.full(rows, cols - 1, np.int64)
    links = hops = np.zeros(rows, np.int64)
    best_l = best_h = np.zeros(rows, np.int64)
    entry = np.zeros(rows, np.int64)
    for k in range(math.ceil(cols / width)):
        w = min(width, cols - k * width)
        c = i % w if k else entry
        if k:                                  # along chunk k-1 from its entry to c, then one link down
            links = links + np.abs(c - entry) + 1
            hops = hops + np.abs(c - entry) + stride
        far = np.maximum(c, w - 1 - c)
        best_l, best_h = np.maximum(best_l, links + far), np.maximum(best_h, hops + far)
        entry = c
    return best_l, best_h


def _tree_hops(cols: int, width: int, rows: int) -> int:
    """Longest path (hops) of the binomial tree over a row's columns rooted at column 0 (column c
    sends to c - lowbit(c)): along the lane row inside a chunk, ``rows`` lane rows per chunk crossed
    (1 for a KV grid's row blocks)."""
    c = np.arange(cols, dtype=np.int64)
    w = width if width and cols > width else max(cols, 1)
    d = np.zeros(cols, np.int64)
    x = c.copy()
    while (x > 0).any():
        p = x & (x - 1)
        d += np.abs(x % w - p % w) + (x // w - p // w) * rows
        x = p
    return int(d.max(initial=0))


def _row_tree_load(rows: int, cols: int, width: int, segment: int = 1, head_segment: int = 1) -> int:
    """Partials on the busiest directed link of a KV grid's row trees (column c sends to its
    ``segmented_parents(cols, segment, head_segment)`` parent; 1 and 1: c - lowbit(c)) laid out
    in chunks of ``width`` columns, each grid row a block of consecutive lane rows (chunk k of row i on lane row
    i x chunks + k, passes/floorplan.py), each route dimension-ordered as the router first tries it:
    along the sender's lane row, then along the parent's column."""
    w = width if width and cols > width else max(cols, 1)
    c = np.arange(1, cols, dtype=np.int64)
    if not len(c):
        return 1
    p = segmented_parents(cols, segment, head_segment)[1:]
    i = np.repeat(np.arange(rows, dtype=np.int64), len(c))
    c, p = np.tile(c, rows), np.tile(p, rows)
    k = -(-cols // w)
    sr, sc, dr, dc = i * k + c // w, c % w, i * k + p // w, p % w
    nh, nv = np.abs(sc - dc), np.abs(sr - dr)
    # horizontal links: cell (sr, x) for x from sc stepping toward dc; vertical: (y, dc) from sr toward dr
    hdir = np.where(dc > sc, 0, 2)
    vdir = np.where(dr > sr, 1, 3)
    hk = np.repeat(np.arange(len(c)), nh)
    hx = sc[hk] + np.sign(dc - sc)[hk] * (np.arange(int(nh.sum())) - np.repeat(np.cumsum(nh) - nh, nh))
    vk = np.repeat(np.arange(len(c)), nv)
    vy = sr[vk] + np.sign(dr - sr)[vk] * (np.arange(int(nv.sum())) - np.repeat(np.cumsum(nv) - nv, nv))
    ids = np.r_[(sr[hk] * w + hx) * 4 + hdir[hk], (vy * w + dc[vk]) * 4 + vdir[vk]]
    return int(np.unique(ids, return_counts=True)[1].max(initial=1))


def estimate_paths(g, width: int, reduction: str = DEFAULT_REDUCTION, allreduce: bool = False) -> dict[str, int]:
    """Longest broadcast / reduction paths of a grid laid out by the lane floorplan (docs/placement.md)
    without routing, on the transfers passes/transfers.py builds: a row's broadcast tree
    (``_row_broadcasts``: a chain of cols-1 one-hop links in one chunk, across the chunks of a wide
    grid), its columns segmented trees (the grid's ``segment`` and ``head_segment``; 1 and 1 the
    binomial tree) over rows-1 one-lane-row links (``segment_shape`` steps and partials on the root's link;
    chains with ``reduction`` "chain").  ``allreduce`` (a norm's or softmax's host, tree reductions
    only): the all-reduce tree over the output row's columns and that row's broadcast back down."""
    kv = g.operand == "kv"
    b_links, b_hops = _row_broadcasts(g.rows, g.cols, width, 1 if kv else g.rows)
    seg, hseg = int(getattr(g, "segment", 1)), int(getattr(g, "head_segment", 1))
    out = {"broadcast_hops": int(b_hops.max()), "broadcast_links": int(b_links.max())}
    out["broadcast_load"] = 1
    if g.operand == "kv":
        chain = reduction == "chain"
        out.update(reduction_hops=out["broadcast_hops"],
                   reduction_links=out["broadcast_links"] if chain else segment_shape(g.cols, seg, hseg)[0],
                   reduction_load=1 if chain else _row_tree_load(g.rows, g.cols, width, seg, hseg))
    else:
        links, load = segment_shape(g.rows, *((g.rows, 1) if reduction == "chain" else (seg, hseg)))
        out.update(reduction_hops=g.rows - 1, reduction_links=links, reduction_load=max(load, 1))
    if allreduce and reduction != "chain":
        down = b_hops if g.operand == "kv" else b_hops[-1:]
        out.update(allreduce_hops=_tree_hops(g.cols, width, 1 if kv else g.rows), allreduce_links=reduce_steps(g.cols, reduction),
                   allreduce_down_hops=int(down.max()))
    return out


def op_records(ops, graph, flops: dict[str, float], paths: dict | None = None, act_in: dict | None = None,
               width: int = 0, reduction: str = DEFAULT_REDUCTION) -> list[dict]:
    """``ops``: the wafer's OpTiles in order; ``flops``: node name -> FLOPs per decode step;
    ``paths``: {(op, grid): path figures} of the routed wafer, None to estimate from ``width``;
    ``act_in``: {op: hops of its incoming activation route}; ``reduction``: the mapping's reduction
    shape (the estimate's paths, and ``chain``, the launch-style mapping, defers no norm's scale)."""
    ids = {o.node: i for i, o in enumerate(ops)}
    hosts = {ids[o.host] for o in ops if o.op in ALLREDUCE_RIDERS and o.host in ids}
    nodes = {n.name: n for n in graph.nodes}
    producers = graph.producers()
    out = []
    for i, o in enumerate(ops):
        node = nodes[o.node]
        grids = []
        for gi, g in enumerate(o.grids):
            rec = {"grid": gi, "operand": g.operand, **{f: int(getattr(g, f)) for f in GRID_INTS},
                   "segment": int(getattr(g, "segment", 1)), "head_segment": int(getattr(g, "head_segment", 1))}
            p = paths.get((i, gi)) if paths is not None else estimate_paths(
                g, width, reduction, i in hosts and gi == len(o.grids) - 1)
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
        if o.op == "norm":              # the launch-style mapping (chains) waits for its norms
            r["scale_deferred"] = scale_deferred(node) and reduction != "chain"
        if o.op == "attention":
            at = node.spec.with_defaults(node.attrs)
            r["attention"] = {"group": int(at["num_heads"] // at["num_kv_heads"]), "head_dim": int(kv_head_dim(at)),
                              "score_flops": score_flops(at)}
        out.append(r)
    return out


def scale_deferred(node) -> bool:
    """Whether a norm's division commutes with a consuming GEMV: an RMS norm over the whole last
    dim (one group) scales every element by one 1 / rms, so W (g * x) / rms = W (g * x / rms) and
    the GEMV may start on the raw input, applying 1 / rms at its reduction roots once the all-reduce
    is done (wafercc/perf/model.py ``wafer_time``).  A layer norm's mean, and per-group statistics,
    would need corrections the tiles do not hold (and a bias, a constant W b), so they wait."""
    at = node.spec.with_defaults(node.attrs)
    return at["kind"] == "rms" and not at["group"] and "bias" not in node.inputs
