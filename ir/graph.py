"""The dataflow graph: values, nodes, graph inputs/outputs and model metadata."""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Iterator, Mapping

from .dtypes import DType
from .ops import OPS, CostContext, OpCost
from .values import Shape, Value, ValueKind


@dataclasses.dataclass(slots=True)
class Node:
    name: str
    op: str
    inputs: dict[str, str]          # operand role -> value name, in op-spec order
    outputs: list[str]
    attrs: dict[str, Any] = dataclasses.field(default_factory=dict)
    layer: int | None = None        # decoder/encoder layer index; None outside layers

    @property
    def spec(self):
        return OPS[self.op]


class Graph:
    """A typed dataflow graph.  Nodes are kept in a topological order."""

    def __init__(self, name: str = "model", meta: Mapping[str, Any] | None = None):
        self.name = name
        self.meta: dict[str, Any] = dict(meta or {})
        self.values: dict[str, Value] = {}
        self.nodes: list[Node] = []
        self.inputs: list[str] = []
        self.outputs: list[str] = []

    # -- construction ---------------------------------------------------------
    def add_value(self, name: str, shape: Iterable, dtype: DType, kind: ValueKind) -> Value:
        if name in self.values:
            raise ValueError(f"value '{name}' defined twice")
        v = Value(name, tuple(shape), dtype, kind)
        self.values[name] = v
        if kind is ValueKind.INPUT:
            self.inputs.append(name)
        return v

    def add_node(self, op: str, inputs: Mapping[str, str], outputs: list[tuple[str, Shape, DType]] | None = None,
                 *, name: str | None = None, attrs: Mapping[str, Any] | None = None,
                 layer: int | None = None, infer: bool = True) -> Node:
        """Append a node.  With ``infer`` its output values are created from the op's
        shape inference (``outputs`` then only gives their names, or one default name)."""
        spec = OPS[op]
        ordered = {o.role: inputs[o.role] for o in spec.operands if o.role in inputs}
        extra = set(inputs) - set(ordered)
        if extra:
            raise ValueError(f"op {op} has no operand(s) {sorted(extra)}")
        name = name or self.fresh(op)
        node = Node(name, op, ordered, [], dict(attrs or {}), layer)
        if infer:
            ins = {r: self.values[v] for r, v in ordered.items()}
            inferred = spec.infer(ins, spec.with_defaults(node.attrs))
            names = [o[0] if isinstance(o, tuple) else o for o in (outputs or [])] or [name]
            for out_name, (shape, dtype) in zip(names, inferred):
                self.add_value(out_name, shape, dtype, ValueKind.ACTIVATION)
                node.outputs.append(out_name)
        else:
            for out_name, shape, dtype in outputs or []:
                self.add_value(out_name, shape, dtype, ValueKind.ACTIVATION)
                node.outputs.append(out_name)
        self.nodes.append(node)
        return node

    def fresh(self, stem: str) -> str:
        """A name not yet used by any value or node."""
        taken = set(self.values) | {n.name for n in self.nodes}
        i = len(self.nodes)
        while f"{stem}_{i}" in taken:
            i += 1
        return f"{stem}_{i}"

    # -- queries --------------------------------------------------------------
    def weights(self) -> list[Value]:
        return [v for v in self.values.values() if v.kind is ValueKind.WEIGHT]

    def kv_caches(self) -> list[Value]:
        return [v for v in self.values.values() if v.kind is ValueKind.KV_CACHE]

    def producers(self) -> dict[str, Node]:
        return {o: n for n in self.nodes for o in n.outputs}

    def consumers(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for v in n.inputs.values():
                out.setdefault(v, []).append(n)
        return out

    def node_inputs(self, node: Node) -> dict[str, Value]:
        return {r: self.values[v] for r, v in node.inputs.items()}

    def node_cost(self, node: Node, ctx: CostContext) -> OpCost:
        return node.spec.cost(self.node_inputs(node), [self.values[o] for o in node.outputs],
                              node.attrs, ctx)

    def layers(self) -> dict[int, list[Node]]:
        out: dict[int, list[Node]] = {}
        for n in self.nodes:
            if n.layer is not None:
                out.setdefault(n.layer, []).append(n)
        return dict(sorted(out.items()))

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)
