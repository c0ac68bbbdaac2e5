"""Dead-code elimination: drop nodes and values that no graph output depends on."""
from __future__ import annotations

import dataclasses

from ..ir import Graph, ValueKind
from .pipeline import Pass


@dataclasses.dataclass(frozen=True)
class DeadCodeElimination(Pass):
    name = "dce"
    ensures = frozenset({"no-dead-code"})
    keep_inputs: bool = True  # graph inputs are the model's interface: keep them even if unused

    def run(self, graph: Graph) -> None:
        producers = graph.producers()
        live: set[str] = set()
        stack = list(graph.outputs)
        while stack:
            v = stack.pop()
            if v in live:
                continue
            live.add(v)
            node = producers.get(v)
            if node is not None:
                stack.extend(node.inputs.values())
        graph.nodes = [n for n in graph.nodes if any(o in live for o in n.outputs)]
        used = live | {o for n in graph.nodes for o in n.outputs}
        for name in list(graph.values):
            v = graph.values[name]
            if name not in used and not (self.keep_inputs and v.kind is ValueKind.INPUT):
                del graph.values[name]
