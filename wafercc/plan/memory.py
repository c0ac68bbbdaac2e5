"""Memory plan: bytes each op and each pipeline unit (embedding, layer i, head) must hold.

Weights at the planned dtype (per-model default, overridable per op), the KV
cache for the planned context and batch (its own dtype; a sliding window caps
it), and the activations one decode step produces.  Per-core reserve and
receive buffers are per-core overheads applied to capacity (see capacity.py).
"""
from __future__ import annotations

import dataclasses

from ..ir import BATCH, CONTEXT, SEQ, CostContext, DType, Graph, ValueKind
from .options import PlanOptions


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
    return MemoryPlan(graph.name, options, default_w.value, kv_dtype.value if graph.kv_caches() else None,
                      tuple(ops), tuple(_units(ops)))


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
    return [Unit(name, layer, tuple(o.node for o in members), sum(o.weight_bytes for o in members),
                 sum(o.kv_bytes for o in members), sum(o.act_bytes for o in members),
                 sum(o.flops for o in members))
            for (name, layer), members in groups.items()]
