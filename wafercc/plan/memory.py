"""Memory plan: bytes each op and each pipeline unit (embedding, layer i, head) must hold.

Units come at three granularities (``PARTITIONS``): whole layers; blocks (a layer cut where only
one activation is live, the residual stream: attention block and MLP block); ops (a new unit at
every op holding weights or a KV cache).  Each unit records ``out_bytes``, the activations live
across a cut after it (what a wafer boundary there must carry).  After partitioning, the atoms a
wafer holds merge back into pieces (``merge_units``): a whole layer is ``layer i`` again, a part
of one is ``layer i ops a-b`` (its ops a..b, counted from 0 within the layer).

Weights at the planned dtype (per-model default, overridable per op), the KV
cache for the planned context and batch (its own dtype; a sliding window caps
it), and the activations one decode step produces.  Per-core reserve and
receive buffers are per-core overheads applied to capacity (see capacity.py).
"""
from __future__ import annotations

import dataclasses

from ..ir import BATCH, CONTEXT, SEQ, CostContext, DType, Graph, ValueKind
from .options import PARTITIONS, PlanOptions


@dataclasses.dataclass(frozen=True)
class OpMemory:
    node: str
    op: str
    layer: int | None
    weight_dtype: str | None
    weight_bytes: int
    kv_bytes: int
    act_bytes: int
    flops: int          # one decode step of the whole batch at the planned context
    live_after: int = 0  # activation bytes produced up to this op and read after it (whole batch)
    live_values: int = 0  # how many activations those are


@dataclasses.dataclass(frozen=True)
class Unit:
    """The atom of pipeline partitioning: the embedding, one layer, or the head."""
    name: str
    layer: int | None
    nodes: tuple[str, ...]
    weight_bytes: int
    kv_bytes: int
    act_bytes: int
    flops: int
    out_bytes: int = 0                    # activations live across a cut after the unit (whole batch)
    base: str = ""                        # the whole unit this is (part of): "layer 3", "head"
    part: tuple[int, int] | None = None   # ops first..last of ``base`` when not all of it

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.kv_bytes + self.act_bytes


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    model: str
    options: PlanOptions
    weight_dtype: str            # the default planned weight dtype
    kv_dtype: str | None
    ops: tuple[OpMemory, ...]
    units: tuple[Unit, ...]

    @property
    def weight_bytes(self) -> int:
        return sum(u.weight_bytes for u in self.units)

    @property
    def kv_bytes(self) -> int:
        return sum(u.kv_bytes for u in self.units)

    @property
    def act_bytes(self) -> int:
        return sum(u.act_bytes for u in self.units)

    @property
    def total_bytes(self) -> int:
        return sum(u.total_bytes for u in self.units)

    def per_layer(self) -> dict[str, dict[str, int]]:
        return {u.name: {"weight_bytes": u.weight_bytes, "kv_bytes": u.kv_bytes, "act_bytes": u.act_bytes}
                for u in self.units}


def model_weight_dtype(graph: Graph) -> DType:
    """The per-model default: the dtype most weight bytes are stored in."""
    by: dict[DType, int] = {}
    for w in graph.weights():
        by[w.dtype] = by.get(w.dtype, 0) + w.numel()
    return max(sorted(by, key=lambda d: d.value), key=lambda d: by[d]) if by else DType.BF16


def checkpoint_defaults(graph: Graph) -> tuple[DType | None, tuple[tuple[str, DType], ...]]:
    """The per-model default weight dtype and per-op overrides the frontend recorded."""
    d = graph.meta.get("checkpoint_dtypes") or {}
    dtype = DType.parse(d["dtype"]) if d.get("dtype") else None
    return dtype, tuple((p, DType.parse(t)) for p, t in d.get("overrides", []))


def plan_memory(graph: Graph, options: PlanOptions) -> MemoryPlan:
    model_dtype, model_overrides = checkpoint_defaults(graph)
    if options.dtype is None and model_overrides:  # the user's overrides come first
        options = options.replace(dtype_overrides=options.dtype_overrides + model_overrides)
    default_w = options.dtype or model_dtype or model_weight_dtype(graph)
    kv_dtype = options.kv_dtype or default_w
    act_dtype = options.act_dtype or default_w
    ctx = CostContext({BATCH: options.batch, SEQ: 1, CONTEXT: options.context},
                      kv_dtype=kv_dtype, act_dtype=act_dtype)
    ops = []
    for node in graph.nodes:
        wdt = options.weight_dtype_for(node.name, node.op, default_w)
        cost = graph.node_cost(node, ctx)
        weights = {v for v in node.inputs.values() if graph.values[v].kind is ValueKind.WEIGHT}
        wbytes = sum(graph.values[v].nbytes(dtype=wdt) for v in sorted(weights))
        window = node.attrs.get("sliding_window") or 0
        cached = min(options.context, window) if window else options.context
        kv = cost.kv_bytes_per_token * cached * options.batch
        act = sum(graph.values[o].nbytes(ctx.bindings, act_dtype) for o in node.outputs)
        ops.append(OpMemory(node.name, node.op, node.layer, wdt.value if weights else None,
                            wbytes, kv, act, cost.flops))
    live = _live_after(graph, ctx, act_dtype)
    ops = [dataclasses.replace(o, live_after=b, live_values=c) for o, (b, c) in zip(ops, live)]
    return MemoryPlan(graph.name, options, default_w.value, kv_dtype.value if graph.kv_caches() else None,
                      tuple(ops), tuple(_units(ops)))


def _live_after(graph: Graph, ctx: CostContext, act_dtype: DType) -> list[tuple[int, int]]:
    """Per op position p: (bytes, count) of the activations produced at or before p and read after
    p, i.e. what a wafer boundary after op p carries (graph inputs such as position ids reach every wafer
    from the host and are not counted)."""
    last_use: dict[str, int] = {}
    for i, n in enumerate(graph.nodes):
        for v in n.inputs.values():
            last_use[v] = i
    diff, count = [0] * (len(graph.nodes) + 1), [0] * (len(graph.nodes) + 1)
    for i, n in enumerate(graph.nodes):
        for o in n.outputs:
            j = last_use.get(o, -1)
            if j > i and graph.values[o].kind is ValueKind.ACTIVATION:
                b = graph.values[o].nbytes(ctx.bindings, act_dtype)
                diff[i] += b
                diff[j] -= b
                count[i] += 1
                count[j] -= 1
    out, acc, nv = [], 0, 0
    for i in range(len(graph.nodes)):
        acc, nv = acc + diff[i], nv + count[i]
        out.append((acc, nv))
    return out


def units_at(mem: MemoryPlan, granularity: str) -> list[Unit]:
    """The partition's atoms at ``granularity`` (see the module docstring), in pipeline order."""
    if granularity not in PARTITIONS:
        raise ValueError(f"partition granularity {granularity!r}: expected one of {PARTITIONS}")
    if granularity == "layer":
        return list(mem.units)
    by_name = {o.node: o for o in mem.ops}
    out = []
    for u in mem.units:
        members = [by_name[n] for n in u.nodes]
        cuts = _cuts(members, granularity)
        for a, b in zip([0, *cuts], [*cuts, len(members)]):
            out.append(_unit(u.name if (a, b) == (0, len(members)) else f"{u.name} ops {a}-{b - 1}", u.layer,
                             members[a:b], u.name, None if (a, b) == (0, len(members)) else (a, b - 1)))
    return out


def _cuts(members: list[OpMemory], granularity: str) -> list[int]:
    """Positions 1..len-1 inside a unit where an atom starts."""
    if granularity == "block":
        # one activation alone is live across the cut: the residual stream between blocks
        return [i + 1 for i, o in enumerate(members[:-1]) if o.live_values == 1]
    cuts, held = [], False
    for i, o in enumerate(members):
        holds = bool(o.weight_bytes or o.kv_bytes)
        if holds and held and i:
            cuts.append(i)
            held = False
        held = held or holds
    return cuts


def _unit(name, layer, members: list[OpMemory], base: str, part) -> Unit:
    return Unit(name, layer, tuple(o.node for o in members), sum(o.weight_bytes for o in members),
                sum(o.kv_bytes for o in members), sum(o.act_bytes for o in members),
                sum(o.flops for o in members), members[-1].live_after, base, part)


def merge_units(atoms: list[Unit], wafer_of_unit, whole: dict[str, int]) -> list[Unit]:
    """The pieces wafers hold: consecutive atoms of one base unit on one wafer joined; all of a base
    unit is named as it (``whole``: ops per base unit), a part ``BASE ops a-b``."""
    out: list[Unit] = []
    groups: list[list[Unit]] = []
    prev = None
    for u, k in zip(atoms, wafer_of_unit):
        key = (u.base or u.name, k)
        if key != prev:
            groups.append([])
            prev = key
        groups[-1].append(u)
    for g in groups:
        base = g[0].base or g[0].name
        a = g[0].part[0] if g[0].part else 0
        b = g[-1].part[1] if g[-1].part else whole[base] - 1
        full = a == 0 and b == whole[base] - 1
        out.append(Unit(base if full else f"{base} ops {a}-{b}", g[0].layer, sum((u.nodes for u in g), ()),
                        sum(u.weight_bytes for u in g), sum(u.kv_bytes for u in g), sum(u.act_bytes for u in g),
                        sum(u.flops for u in g), g[-1].out_bytes, base, None if full else (a, b)))
    return out


def _units(ops: list[OpMemory]) -> list[Unit]:
    """Group ops into embedding / layers / head, in pipeline order.  A weight used by
    several units (a tied embedding and LM head) is held by each: a pipeline stage
    only reads its own wafer's SRAM."""
    groups: dict[tuple[str, int | None], list[OpMemory]] = {}
    seen_layer = False
    for op in ops:
        seen_layer = seen_layer or op.layer is not None
        key = (f"layer {op.layer}", op.layer) if op.layer is not None else \
            (("head", None) if seen_layer else ("embed", None))
        groups.setdefault(key, []).append(op)
    return [_unit(name, layer, members, name, None) for (name, layer), members in groups.items()]
