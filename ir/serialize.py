"""JSON form of the IR (``to_json`` / ``from_json`` round-trip exactly)."""
from __future__ import annotations

import json
from typing import Any

from ..errors import IRParseError
from .dtypes import DType
from .graph import Graph, Node
from .values import ValueKind

SCHEMA = "wafercc.ir/1"


def to_dict(graph: Graph) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "name": graph.name,
        "meta": graph.meta,
        "inputs": list(graph.inputs),
        "outputs": list(graph.outputs),
        "values": [{"name": v.name, "shape": list(v.shape), "dtype": v.dtype.value, "kind": v.kind.value}
                   for v in graph.values.values()],
        "nodes": [{"name": n.name, "op": n.op, "inputs": [[r, v] for r, v in n.inputs.items()], "outputs": list(n.outputs),
                   "attrs": n.attrs, "layer": n.layer} for n in graph.nodes],
    }


def from_dict(d: dict[str, Any]) -> Graph:
    if not isinstance(d, dict) or d.get("schema") != SCHEMA:
        raise IRParseError(f"expected an object with schema '{SCHEMA}'", where="IR JSON")
    try:
        g = Graph(d["name"], d.get("meta") or {})
        for v in d["values"]:
            g.values[v["name"]] = _value(v)
        g.inputs = list(d["inputs"])
        g.outputs = list(d["outputs"])
        g.nodes = [Node(n["name"], n["op"], {r: v for r, v in n["inputs"]}, list(n["outputs"]), dict(n.get("attrs") or {}),
                        n.get("layer")) for n in d["nodes"]]
    except (KeyError, TypeError, ValueError) as e:
        raise IRParseError(f"malformed IR JSON ({type(e).__name__}: {e})", where="IR JSON") from None
    return g


def _value(v):
    from .values import Value
    return Value(v["name"], tuple(v["shape"]), DType(v["dtype"]), ValueKind(v["kind"]))


def to_json(graph: Graph) -> str:
    return json.dumps(to_dict(graph), sort_keys=True, indent=1) + "\n"


def from_json(text: str) -> Graph:
    try:
        return from_dict(json.loads(text))
    except json.JSONDecodeError as e:
        raise IRParseError(f"not JSON: {e.msg}", where=f"IR JSON line {e.lineno}") from None
