"""wafercc.ir: the typed dataflow IR (see docs/ir.md)."""
from .dtypes import DType
from .facts import DEFAULT_CONTEXT, ModelFacts, decode_bindings, layer_params, model_facts
from .graph import Graph, Node
from .ops import OPS, CostContext, OpCost, OpSpec
from .serialize import from_dict, from_json, to_dict, to_json
from .text import parse_graph, print_graph
from .values import BATCH, CONTEXT, SEQ, Value, ValueKind
from .verify import collect_problems, topological_sort, verify

__all__ = [
    "BATCH", "CONTEXT", "SEQ", "DType", "Graph", "Node", "Value", "ValueKind", "OPS", "OpSpec",
    "OpCost", "CostContext", "DEFAULT_CONTEXT", "ModelFacts", "model_facts", "layer_params", "decode_bindings",
    "verify", "collect_problems", "topological_sort", "print_graph", "parse_graph",
    "to_dict", "from_dict", "to_json", "from_json",
]
