"""Model-level facts derived from a graph: layers, parameters, bytes, KV per token."""
from __future__ import annotations

import collections
import dataclasses

from .dtypes import DType
from .graph import Graph
from .ops import CostContext
from .values import BATCH, CONTEXT, SEQ


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    name: str
    layers: int
    params: int
    weight_bytes: int
    kv_bytes_per_token: int
    decode_flops_per_token: int
    nodes: int
    op_counts: dict[str, int]

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# The default planned context (tokens of KV cache per sequence): the one place it is written; the
# planner's PlanOptions.context and the summary's decode FLOPs read it from here.
DEFAULT_CONTEXT = 8192


def decode_bindings(context: int, batch: int = 1) -> dict[str, int]:
    """Bindings for one decode step: one new token per sequence, ``context`` cached."""
    return {BATCH: batch, SEQ: 1, CONTEXT: context}


def model_facts(graph: Graph, *, weight_dtype: DType | None = None, kv_dtype: DType | None = None,
                context: int = DEFAULT_CONTEXT) -> ModelFacts:
    """Facts for batch 1: KV bytes per token of context, FLOPs of one decode step at ``context``."""
    ctx = CostContext(decode_bindings(context), weight_dtype=weight_dtype, kv_dtype=kv_dtype)
    weights = graph.weights()
    buffers = buffer_weights(graph)
    flops = kv = 0
    for node in graph.nodes:
        c = graph.node_cost(node, ctx)
        flops += c.flops
        kv += c.kv_bytes_per_token
    return ModelFacts(
        name=graph.name,
        layers=len(graph.layers()),
        params=sum(w.numel() for w in weights if w.name not in buffers),
        weight_bytes=sum(w.nbytes(dtype=weight_dtype) for w in weights),
        kv_bytes_per_token=kv,
        decode_flops_per_token=flops,
        nodes=len(graph.nodes),
        op_counts=dict(sorted(collections.Counter(n.op for n in graph.nodes).items())),
    )


def buffer_weights(graph: Graph) -> set[str]:
    """Weights used only in operands the op set declares buffers (``Operand.parameter`` False, e.g. the
    MoE router's score-correction bias), or listed in ``graph.meta["buffers"]``: resident like any
    weight, but torch counts no parameter."""
    from .ops import OPS
    param, buf = set(), set()
    for node in graph.nodes:
        spec = OPS.get(node.op)
        for role, v in node.inputs.items():
            o = spec.operand(role) if spec else None
            (buf if o is not None and not o.parameter else param).add(v)
    # and weights a frontend knows to be the source model's buffers (torch_frontend: named_buffers)
    return (buf - param) | (set(graph.meta.get("buffers", ())) & set(graph.values))


def layer_params(graph: Graph) -> dict[int | None, int]:
    """Parameters per layer (None: outside the layers, e.g. embedding, final norm, head).
    A weight shared by nodes of several groups counts in the first group that uses it;
    buffers (see :func:`buffer_weights`) count in none."""
    seen: set[str] = set(buffer_weights(graph))
    out: dict[int | None, int] = collections.defaultdict(int)
    for node in graph.nodes:
        for v in node.inputs.values():
            val = graph.values[v]
            if val.kind.value == "weight" and v not in seen:
                seen.add(v)
                out[node.layer] += val.numel()
    return dict(out)
