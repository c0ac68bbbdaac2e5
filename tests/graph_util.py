"""Hand-built IR graphs for kernel tests: named fp32 inputs and weights, nodes added by the test."""
from __future__ import annotations

from wafercc.ir import DType, Graph, ValueKind


def small_graph(inputs, weights=()) -> Graph:
    g = Graph("t")
    for name, shape in inputs:
        g.add_value(name, shape, DType.F32, ValueKind.INPUT)
    for name, shape in weights:
        g.add_value(name, shape, DType.F32, ValueKind.WEIGHT)
    return g
