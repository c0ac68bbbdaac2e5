"""Tile: every op that holds data on a wafer gets a grid of per-core tiles (docs/tiling.md).

    tile_plan(graph, plan, target, options) -> TilePlan
    TilePass(plan, target).run(graph)          # the same, as a pass; the plan lands in .results

Weight matrices (matmul, LM head, embedding tables, each MoE expert) become grids oriented for the
mesh GEMV (grid rows split the reduction dim, columns the outputs); attention KV caches get their
own grid (rows = sequence x kv head, columns = context chunks); norms, elementwise and other small
ops ride on the cores of a producer (or consumer) with their vectors and activations.  Per-tile and
per-core data are NumPy arrays computed from each grid's few integers; records are per op.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import ClassVar

import numpy as np

from ..ir import DType, Graph
from ..target.geometry import DEFAULT_MAPPING, DEFAULT_REDUCTION, group_size
from .pipeline import Pass
from .tile_shapes import (
    Grid,
    Machine,
    TileError,
    ceil_div,
    choose,
    kv_spec,
    op_frontier,
    op_weights,
)

ROLES = ("gemv", "lookup", "kv", "flat", "rider")


@dataclasses.dataclass(frozen=True)
class TileOptions:
    fill: float = 1.0          # fraction of a wafer's usable cores the tiles may take
    psum_bytes: int = 4        # partial sums in fp32
    fit_mesh: bool = True      # prefer grids no larger than the program rectangle
    lane: int = 0              # floorplan lane width: grids are counted by the cores they occupy there
    reduction: str = DEFAULT_REDUCTION  # REDUCTIONS (target/geometry.py): the shape the tiler scores
    mapping: str = DEFAULT_MAPPING      # regions | groups:G | wafer: layers sharing cores (docs/mapping.md)


@dataclasses.dataclass(frozen=True, eq=False)
class OpTiles:
    node: str
    op: str
    layer: int | None
    wafer: int
    role: str                  # one of ROLES
    host: str | None           # riders: the op whose cores hold this op's bytes
    grids: tuple[Grid, ...]
    weight_bytes: int          # the memory plan's bytes of this op on this wafer
    kv_bytes: int
    act_bytes: int
    hosted_bytes: int          # riders' bytes this op's cores hold
    rounding_bytes: int        # sub-byte tiles rounded up to whole bytes
    shares: str | None = None  # layer groups: the template op whose cores (and routes) this op's tiles use
    group: int = 1             # layers sharing this op's cores (its group's size)

    @property
    def cores(self) -> int:
        return sum(g.cores for g in self.grids)

    @property
    def slots(self) -> int:
        """Cores it occupies in the lane floorplan (= cores without a lane)."""
        return sum(g.slots for g in self.grids)

    @property
    def cycles(self) -> float:
        return sum(g.cycles for g in self.grids)

    @property
    def plan_bytes(self) -> int:
        return self.weight_bytes + self.kv_bytes + self.act_bytes

    @property
    def placed_bytes(self) -> int:
        return sum(g.data_bytes + g.extra_bytes for g in self.grids)

    @property
    def padding_bytes(self) -> int:
        return sum(g.padding_bytes for g in self.grids)

    def core_arrays(self) -> dict[str, np.ndarray]:
        """Flat per-core arrays over this op's grids (grid, expert, row, col order)."""
        if not self.grids:
            z = np.zeros(0, np.int64)
            return {"data": z, "extra": z, "buffer": z, "kv": z}
        data = np.concatenate([g.tile_bytes().ravel() for g in self.grids])
        kv = np.concatenate([np.full(g.cores, g.operand == "kv", bool) for g in self.grids])
        # a shared op runs at another time than its template: it reuses the template's receive buffer
        buf = 0 if self.shares else 1
        return {"data": data, "extra": np.concatenate([g.extra_per_core() for g in self.grids]),
                "buffer": np.concatenate([np.full(g.cores, buf * g.buffer_bytes, np.int64) for g in self.grids]),
                "kv": kv}


@dataclasses.dataclass(frozen=True)
class WaferTiles:
    index: int
    role: str
    ops: tuple[int, ...]       # indices into TilePlan.ops
    usable_cores: int
    core_budget: int           # floor(fill x usable cores)
    cores_needed: int
    cores_min: int             # the fewest cores these ops could be tiled on (every grid at its densest)
    plan_bytes: int            # the memory plan's weight + KV + activation bytes of this wafer
    placed_bytes: int          # bytes on its cores (= plan_bytes + rounding)
    padding_bytes: int
    buffer_bytes: int          # receive buffers of the cores used
    cycles: float              # sum of the ops' latency estimates (ops run in sequence)
    lam: float                 # the Lagrange multiplier the grid choice ended at (cycles per core)


@dataclasses.dataclass(frozen=True, eq=False)
class TilePlan:
    model: str
    target: str
    options: TileOptions
    ops: tuple[OpTiles, ...]
    wafers: tuple[WaferTiles, ...]

    def op(self, node: str, wafer: int | None = None) -> OpTiles:
        for o in self.ops:
            if o.node == node and (wafer is None or o.wafer == wafer):
                return o
        raise KeyError(node)

    def table(self) -> dict[str, np.ndarray]:
        """Columnar per-op summary (one entry per op record)."""
        cols = ("wafer", "cores", "weight_bytes", "kv_bytes", "act_bytes", "placed_bytes", "padding_bytes")
        return {c: np.array([getattr(o, c) for o in self.ops], np.int64) for c in cols} | {
            "cycles": np.array([o.cycles for o in self.ops], np.float64)}

    def core_arrays(self, wafer: int) -> dict[str, np.ndarray]:
        """Flat per-core arrays of one wafer: ``op`` (index into ops), ``data``, ``extra``, ``buffer``, ``kv``."""
        parts = [(i, self.ops[i].core_arrays()) for i in self.wafers[wafer].ops]
        out = {k: np.concatenate([p[k] for _, p in parts]) for k in ("data", "extra", "buffer", "kv")}
        out["op"] = np.concatenate([np.full(len(p["data"]), i, np.int32) for i, p in parts])
        return out


@dataclasses.dataclass
class _Ctx:
    graph: Graph
    nodes: dict
    om: dict
    index: dict
    producers: dict
    consumers: dict
    m: Machine
    popts: object
    beside: bool
    options: TileOptions
    cache: dict


_FRONTIERS: collections.OrderedDict = collections.OrderedDict()
FRONTIER_CACHE_SIZE = 512


def _frontier(node, spec, key, min_cores, m, popts, options):
    """``op_frontier`` through a process-wide cache: the planner's tile checks, the tile stage and
    the wafers curve tile the same ops again and again (Llama-3.1-70B: 10 tile plans of 10 distinct
    ops).  The key is everything op_frontier reads; frontiers are never modified after they are made."""
    gkey = (key, m, popts.batch, options.fit_mesh,
            repr(sorted(node.attrs.items())) if spec[1] == "kv" else None)
    f = _FRONTIERS.get(gkey)
    if f is None:
        f = _FRONTIERS[gkey] = op_frontier(node, spec, key[6], min_cores, m, popts, options)
        if len(_FRONTIERS) > FRONTIER_CACHE_SIZE:
            _FRONTIERS.popitem(last=False)
    else:
        _FRONTIERS.move_to_end(gkey)
    return f


def build(graph: Graph, plan, target, options: TileOptions = TileOptions(), slots_available=None) -> TilePlan:
    if plan.infeasible is not None or not plan.wafers:
        raise TileError(f"{plan.model}: the wafer plan is infeasible or empty; nothing to tile")
    mem = plan.memory
    nodes = {n.name: n for n in graph.nodes}
    lost = [o.node for o in mem.ops if o.node not in nodes]
    if lost:
        raise TileError(f"op '{lost[0]}' of the memory plan is not in graph '{graph.name}' ({len(lost)} missing)")
    act = mem.options.act_dtype or DType(mem.weight_dtype)
    cx = _Ctx(graph, nodes, {o.node: o for o in mem.ops}, {n.name: i for i, n in enumerate(graph.nodes)},
              graph.producers(), graph.consumers(), Machine.of(target, act.bits, options.psum_bytes, options.lane, options.reduction),
              mem.options, plan.kv_wafers == 0, options, {})
    units = {u.name: u for u in mem.units}
    ops: list[OpTiles] = []
    wafers = []
    for load in plan.wafers:
        if slots_available is not None:      # the floorplan's cores (e.g. live cores in whole lanes)
            load = dataclasses.replace(load, usable_cores=int(slots_available[load.index]))
        wops, wt = _tile_wafer(cx, load, [n for u in load.units for n in units[u].nodes])
        wafers.append(dataclasses.replace(wt, ops=tuple(range(len(ops), len(ops) + len(wops)))))
        ops.extend(wops)
    return TilePlan(graph.name, target.name, options, tuple(ops), tuple(wafers))


def _resolve_hosts(names, rec, nodes, index, producers, consumers) -> dict[str, str | None]:
    """Riders ride on the latest-produced operand's op (through other riders), else on the first
    consumer's; None if the wafer has neither."""
    here = set(names)
    host: dict[str, str | None] = {}

    def through(p):
        return p if rec[p]["role"] != "rider" else host.get(p)

    for name in names:
        if rec[name]["role"] != "rider":
            continue
        ps = sorted({producers[v].name for v in nodes[name].inputs.values() if v in producers} & here,
                    key=index.get, reverse=True)
        host[name] = next((h for h in map(through, ps) if h), None)
    for name in reversed(names):
        if rec[name]["role"] == "rider" and host[name] is None:
            cs = sorted({c.name for o in nodes[name].outputs for c in consumers.get(o, [])} & here, key=index.get)
            host[name] = next((h for h in map(through, cs) if h), None)
    return host


def _tile_wafer(cx: _Ctx, load, names: list[str]) -> tuple[list[OpTiles], WaferTiles]:
    nodes, om, m0, popts, options, cache = cx.nodes, cx.om, cx.m, cx.popts, cx.options, cx.cache
    kv_wafer = load.role == "kv"
    gsize, template = _layer_groups(names, nodes, options.mapping)
    machines = {}

    def mach(name):
        """The template op's tiles share a core with gs - 1 others: each gets 1/gs of the data bytes
        (the receive buffer is one, used by each op in turn)."""
        gs = gsize.get(nodes[name].layer, 1)
        if gs not in machines:
            machines[gs] = m0 if gs == 1 else dataclasses.replace(m0, share=gs)
        return machines[gs], gs

    rec = {}
    for name in names:
        node, o = nodes[name], om[name]
        m, _ = mach(name)
        kvb = o.kv_bytes if (kv_wafer or cx.beside) else 0
        if kv_wafer and not kvb:
            continue
        wb, ab = (0, 0) if kv_wafer else (o.weight_bytes, o.act_bytes)
        wdt = DType(o.weight_dtype) if o.weight_dtype else DType.BF16
        mats, vec = op_weights(cx.graph, node, wdt) if wb else ([], 0)
        role = ("kv" if kvb else "lookup" if node.op == "embedding" and mats else "gemv" if mats
                else "flat" if wb > m.budget * m.share else "rider")   # a whole core's budget, under any mapping
        rec[name] = {"role": role, "wb": wb, "kvb": kvb, "ab": ab, "mats": mats, "vec": vec if wb else 0,
                     "bits": wdt.bits, "hosted": 0}
    host = _resolve_hosts(list(rec), rec, nodes, cx.index, cx.producers, cx.consumers)
    if gsize:
        _rehost_outside_groups(host, rec, nodes)
    for name, h in host.items():
        r = rec[name]
        if h is None and r["wb"] + r["ab"]:
            r["role"] = "flat"          # nothing to ride on: its own cores
            host[name] = None
        elif h is not None:
            rec[h]["hosted"] += r["wb"] + r["ab"]
    shared = {n: template[n] for n in rec if template.get(n, n) != n}
    _check_identical(rec, shared, nodes)
    # candidate frontiers, one per matrix / KV cache
    items, keys = [], []
    op_keys: dict[str, list] = {}
    for name, r in rec.items():
        if r["role"] in ("rider", "flat"):
            continue
        node = nodes[name]
        m, gs = mach(name)
        extras = r["vec"] + r["ab"] + r["hosted"]
        specs = kv_spec(node, r, popts) if r["role"] == "kv" else \
            [(op_, kind, e, k, n, r["bits"]) for op_, kind, e, k, n in r["mats"]]
        sizes = [(e * k * n * bits + 7) // 8 for _, _, e, k, n, bits in specs]
        shares = [extras * s // sum(sizes) for s in sizes]
        shares[int(np.argmax(sizes))] += extras - sum(shares)
        for spec, size, share in zip(specs, sizes, shares):
            min_cores = max(1, ceil_div(size + share, m.budget))
            key = spec + (ceil_div(share, min_cores), min_cores, node.attrs.get("num_heads"),
                          node.attrs.get("head_dim"), node.attrs.get("kv_lora_rank"), node.attrs.get("rope_dim"), gs)
            op_keys.setdefault(name, []).append(key)
            if name in shared:
                continue                       # its grids are the template's (same cores)
            if key not in cache:
                cache[key] = _frontier(node, spec, key, min_cores, m, popts, options)
            items.append((name, spec, share))
            keys.append(key)
    for name, t in shared.items():
        if op_keys.get(name, []) != op_keys.get(t, []):
            raise TileError(f"mapping {options.mapping}: op '{name}' is not tiled like '{t}', the op of its "
                            "group's first layer it would share cores with (layers differ)")
    flat_cores = {}
    for name, r in rec.items():
        total = r["wb"] + r["ab"] + r["hosted"]
        if r["role"] == "flat" and total and name not in shared:
            flat_cores[name] = ceil_div(total, mach(name)[0].budget)
    ukeys = list(dict.fromkeys(keys))
    budget = int(options.fill * load.usable_cores) - sum(flat_cores.values())
    picks, lam, fits = choose([cache[k] for k in ukeys], [keys.count(k) for k in ukeys], budget)
    fewest = sum(cache[k].cores[0] for k in keys) + sum(flat_cores.values())
    avail = int(options.fill * load.usable_cores)
    if not fits:
        e = TileError(f"wafer {load.index}: its tiles need at least {fewest} cores, {avail} available "
                      f"({load.usable_cores} usable x fill {options.fill}): short by {fewest - avail} cores; "
                      f"raise the fill or plan more wafers (--wafers)")
        e.short_cores = fewest - avail      # the planner re-plans with less on this wafer (wafercc.plan.planner)
        e.wafer, e.need_cores, e.avail_cores = load.index, fewest, avail
        raise e
    pick = dict(zip(ukeys, picks))
    grids: dict[str, list[Grid]] = {n: [] for n in rec}
    for (name, spec, share), key in zip(items, keys):
        f, j = cache[key], pick[key]
        op_, _, e, k, n, bits = spec
        grids[name].append(Grid(op_, e, k, n, int(f.rows[j]), int(f.cols[j]), int(f.tile_k[j]), int(f.tile_n[j]),
                                bits, share, max(m0.receive_buffer, int(f.buffer[j])), float(f.cycles[j]), m0.lane,
                                int(f.segment[j]), int(f.head_segment[j])))
    for name, c in flat_cores.items():
        r = rec[name]
        total = r["wb"] + r["ab"] + r["hosted"]
        t = ceil_div(total, c)
        grids[name].append(Grid("*", 1, total, 1, ceil_div(total, t), 1, t, 1, 8, 0, m0.receive_buffer, 0.0,
                                m0.lane))
    for name, t in shared.items():
        grids[name] = list(grids[t])
    out = []
    for name, r in rec.items():
        node = nodes[name]
        ot = OpTiles(name, node.op, node.layer, load.index, r["role"], host.get(name), tuple(grids[name]),
                     r["wb"], r["kvb"], r["ab"], r["hosted"], 0, shared.get(name) if grids[name] else None,
                     mach(name)[1])
        rounding = ot.placed_bytes - ot.plan_bytes - ot.hosted_bytes if ot.grids else 0
        if rounding < 0 or (rounding and all(g.unit_bits % 8 == 0 for g in ot.grids)):
            raise TileError(f"op '{name}': tiles hold {ot.placed_bytes} B, "
                            f"the plan {ot.plan_bytes + ot.hosted_bytes} B")
        out.append(dataclasses.replace(ot, rounding_bytes=rounding))
    placed = sum(o.placed_bytes for o in out)
    plan_bytes = load.weight_bytes + load.kv_bytes + load.act_bytes
    if placed - plan_bytes != sum(o.rounding_bytes for o in out):
        raise TileError(f"wafer {load.index}: tiles hold {placed} B, the plan {plan_bytes} B")
    own = [o for o in out if not o.shares]           # shared ops occupy their template's cores
    return out, WaferTiles(load.index, load.role, (), load.usable_cores, avail, sum(o.slots for o in own), fewest,
                           plan_bytes, placed, sum(o.padding_bytes for o in out),
                           sum(g.buffer_bytes * g.cores for o in own for g in o.grids), sum(o.cycles for o in out), lam)


def _layer_groups(names, nodes, mapping: str) -> tuple[dict, dict]:
    """({layer: its group's size}, {op name: the op at its place in its group's first layer}) for
    the layers of one wafer cut into consecutive groups (target.geometry.group_size)."""
    layers = sorted({nodes[n].layer for n in names if nodes[n].layer is not None})
    g = group_size(mapping, len(layers)) if layers else 1
    if g == 1:
        return {}, {}
    by_layer: dict = {}
    for n in names:
        if nodes[n].layer is not None:
            by_layer.setdefault(nodes[n].layer, []).append(n)
    size, template = {}, {}
    # a partition cut inside a layer (--partition block/op) leaves the wafer's first layer a tail
    # of one and its last a head: each gets cores of its own (a tail's template would come later;
    # a head's ops host fewer riders than the template's, so they would not hold its bytes)
    n_ops = [len(by_layer[lay]) for lay in layers]
    full = max(n_ops)
    lo = 1 if n_ops[0] < full else 0
    hi = len(layers) - 1 if len(layers) > lo + 1 and n_ops[-1] < full else len(layers)
    for lay in layers[:lo] + layers[hi:]:
        size[lay] = 1
    for a in range(lo, hi, g):
        grp = layers[a:min(a + g, hi)]
        first = by_layer[grp[0]]
        for lay in grp:
            size[lay] = len(grp)
            ops = by_layer[lay]
            if len(ops) != len(first) or any(nodes[x].op != nodes[y].op for x, y in zip(ops, first)):
                raise TileError(f"mapping {mapping}: layer {lay} has other ops than layer {grp[0]}, the first "
                                "of its group (groups need structurally identical layers)")
            template.update(zip(ops, first))
    return size, template


def _rehost_outside_groups(host: dict, rec: dict, nodes) -> None:
    """Under layer groups every layer must hold its own riders only: a rider riding on another
    layer's op (the next layer's input norm on this layer's last matmul, the final norm on the last
    layer's) would make the layers of a group unlike each other.  It rides on the nearest op of its
    own layer (or of no layer) holding tiles instead, the next one first."""
    order = list(rec)
    at = {n: i for i, n in enumerate(order)}
    holders: dict = {}
    for i, n in enumerate(order):
        if rec[n]["role"] != "rider":
            holders.setdefault(nodes[n].layer, []).append(i)
    for name, h in host.items():
        lay = nodes[name].layer
        if h is None or nodes[h].layer == lay or not holders.get(lay):
            continue
        i = at[name]
        host[name] = order[min(holders[lay], key=lambda j: (j < i, abs(j - i)))]


def _check_identical(rec: dict, shares: dict, nodes) -> None:
    for name, t in shares.items():
        a, b = rec[name], rec.get(t)
        if b is None or (a["role"], a["wb"], a["kvb"], a["ab"], a["hosted"]) != (b["role"], b["wb"], b["kvb"], b["ab"], b["hosted"]):
            raise TileError(f"op '{name}' does not hold the bytes of '{t}', the op of its group's first layer "
                            "(groups need structurally identical layers)")


@dataclasses.dataclass(frozen=True)
class TilePass(Pass):
    """Plans per-core tiles for ``plan`` on ``target``; appends the TilePlan to ``results``."""
    name: ClassVar[str] = "tile"
    requires: ClassVar[frozenset[str]] = frozenset({"partitioned"})
    ensures: ClassVar[frozenset[str]] = frozenset({"tiled"})
    plan: object = None
    target: object = None
    options: TileOptions = TileOptions()
    results: list = dataclasses.field(default_factory=list, compare=False, hash=False)

    def run(self, graph: Graph) -> None:
        self.results.append(tile_plan(graph, self.plan, self.target, self.options))


def tile_plan(graph: Graph, plan, target, options: TileOptions = TileOptions(), slots_available=None) -> TilePlan:
    """Per-core tiles of every op ``plan`` puts on a wafer (see the module docstring).  With
    ``slots_available`` (cores per wafer index) the tiles fit those instead of the plan's usable cores."""
    return build(graph, plan, target, options, slots_available)
