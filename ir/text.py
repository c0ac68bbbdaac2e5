"""Stable text form of the IR: ``print_graph`` and ``parse_graph`` round-trip.

    wafercc.ir 1
    graph "tiny" {
      meta {"source": "onnx"}
      input %input_ids : i64[batch, seq]
      weight %embed.weight : f32[128, 64]
      kv %layers.0.k_cache : f32[batch, 2, context, 16]
      %h : f32[batch, seq, 64] = embedding(ids=%input_ids, table=%embed.weight) name="embed"
      %q : f32[batch, seq, 64] = matmul(x=%h, w=%q.weight) {"transpose_w": true} layer=0 name="q_proj"
      output %q
    }

Attributes and metadata are JSON objects with sorted keys; names that are not
plain identifiers are written as JSON strings after the ``%``.
"""
from __future__ import annotations

import json
import re

from ..errors import IRParseError
from .dtypes import DType
from .graph import Graph, Node
from .values import Value, ValueKind

FORMAT_VERSION = 1
_BARE = re.compile(r"[A-Za-z0-9_.\-/]+")
_DECL_KINDS = {"input": ValueKind.INPUT, "weight": ValueKind.WEIGHT, "kv": ValueKind.KV_CACHE}


def _name(n: str) -> str:
    return "%" + (n if _BARE.fullmatch(n) else json.dumps(n))


def _type(v: Value) -> str:
    return f"{v.dtype.value}[{', '.join(str(d) for d in v.shape)}]"


def _json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(", ", ": "))


def declaration_order(graph: Graph) -> list[Value]:
    """Weights and KV caches in order of first use (then unused ones): the text form does
    not depend on the order a frontend happened to create them in."""
    out, seen = [], set()
    for node in graph.nodes:
        for v in node.inputs.values():
            val = graph.values.get(v)
            if val is not None and v not in seen and val.kind in (ValueKind.WEIGHT, ValueKind.KV_CACHE):
                seen.add(v)
                out.append(val)
    out += [v for v in graph.values.values()
            if v.kind in (ValueKind.WEIGHT, ValueKind.KV_CACHE) and v.name not in seen]
    return out


def print_graph(graph: Graph) -> str:
    lines = [f"wafercc.ir {FORMAT_VERSION}", f"graph {json.dumps(graph.name)} {{"]
    if graph.meta:
        lines.append(f"  meta {_json(graph.meta)}")
    for n in graph.inputs:
        lines.append(f"  input {_name(n)} : {_type(graph.values[n])}")
    for v in declaration_order(graph):
        lines.append(f"  {'weight' if v.kind is ValueKind.WEIGHT else 'kv'} {_name(v.name)} : {_type(v)}")
    for node in graph.nodes:
        outs = ", ".join(f"{_name(o)} : {_type(graph.values[o])}" for o in node.outputs)
        args = ", ".join(f"{r}={_name(v)}" for r, v in node.inputs.items())
        line = f"  {outs} = {node.op}({args})"
        if node.attrs:
            line += f" {_json(node.attrs)}"
        if node.layer is not None:
            line += f" layer={node.layer}"
        line += f" name={json.dumps(node.name)}"
        lines.append(line)
    for o in graph.outputs:
        lines.append(f"  output {_name(o)}")
    lines.append("}")
    return "\n".join(lines) + "\n"


class _Scanner:
    def __init__(self, text: str, lineno: int):
        self.s, self.i, self.lineno = text, 0, lineno

    def fail(self, what: str):
        raise IRParseError(f"{what} at column {self.i + 1}: {self.s.strip()!r}", where=f"line {self.lineno}")

    def ws(self):
        while self.i < len(self.s) and self.s[self.i] in " \t":
            self.i += 1

    def peek(self, lit: str) -> bool:
        self.ws()
        return self.s.startswith(lit, self.i)

    def expect(self, lit: str):
        if not self.peek(lit):
            self.fail(f"expected '{lit}'")
        self.i += len(lit)

    def word(self) -> str:
        self.ws()
        m = _BARE.match(self.s, self.i)
        if not m:
            self.fail("expected a word")
        self.i = m.end()
        return m.group()

    def json(self):
        self.ws()
        try:
            obj, end = json.JSONDecoder().raw_decode(self.s, self.i)
        except json.JSONDecodeError:
            self.fail("malformed JSON")
        self.i = end
        return obj

    def name(self) -> str:
        self.expect("%")
        if self.s.startswith('"', self.i):
            n = self.json()
            if not isinstance(n, str):
                self.fail("expected a quoted name")
            return n
        m = _BARE.match(self.s, self.i)
        if not m:
            self.fail("expected a value name")
        self.i = m.end()
        return m.group()

    def type(self):
        dt = self.word()
        try:
            dtype = DType(dt)
        except ValueError:
            self.fail(f"unknown dtype '{dt}'")
        self.expect("[")
        dims = []
        while not self.peek("]"):
            w = self.word()
            dims.append(int(w) if w.lstrip("-").isdigit() else w)
            if not self.peek("]"):
                self.expect(",")
        self.expect("]")
        return tuple(dims), dtype

    def end(self):
        self.ws()
        if self.i != len(self.s):
            self.fail("unexpected text")


def parse_graph(text: str) -> Graph:
    lines = text.splitlines()
    body = [(i + 1, l) for i, l in enumerate(lines) if l.strip() and not l.strip().startswith("#")]
    if not body or body[0][1].strip() != f"wafercc.ir {FORMAT_VERSION}":
        raise IRParseError(f"expected header 'wafercc.ir {FORMAT_VERSION}'", where="line 1")
    if len(body) < 3:
        raise IRParseError("expected 'graph \"name\" {' ... '}'", where=f"line {body[-1][0]}")
    sc = _Scanner(body[1][1], body[1][0])
    sc.expect("graph")
    name = sc.json()
    sc.expect("{")
    sc.end()
    if body[-1][1].strip() != "}":
        raise IRParseError("expected closing '}'", where=f"line {body[-1][0]}")
    graph = Graph(str(name))
    for lineno, line in body[2:-1]:
        sc = _Scanner(line, lineno)
        try:
            _parse_statement(graph, sc)
        except ValueError as e:  # duplicate definitions from Graph.add_value
            raise IRParseError(str(e), where=f"line {lineno}") from None
    return graph


def _parse_statement(graph: Graph, sc: _Scanner) -> None:
    if sc.peek("meta "):
        sc.expect("meta")
        meta = sc.json()
        if not isinstance(meta, dict):
            sc.fail("meta must be a JSON object")
        graph.meta = meta
    elif sc.peek("output "):
        sc.expect("output")
        graph.outputs.append(sc.name())
    elif not sc.peek("%"):
        kind = sc.word()
        if kind not in _DECL_KINDS:
            sc.fail(f"unknown statement '{kind}'")
        n = sc.name()
        sc.expect(":")
        shape, dtype = sc.type()
        graph.add_value(n, shape, dtype, _DECL_KINDS[kind])
    else:
        outs = []
        while True:
            n = sc.name()
            sc.expect(":")
            outs.append((n, *sc.type()))
            if not sc.peek(","):
                break
            sc.expect(",")
        sc.expect("=")
        op = sc.word()
        sc.expect("(")
        inputs = {}
        while not sc.peek(")"):
            role = sc.word()
            sc.expect("=")
            inputs[role] = sc.name()
            if not sc.peek(")"):
                sc.expect(",")
        sc.expect(")")
        attrs, layer, node_name = {}, None, None
        if sc.peek("{"):
            attrs = sc.json()
        if sc.peek("layer="):
            sc.expect("layer=")
            w = sc.word()
            if not w.isdigit():
                sc.fail("layer must be a non-negative integer")
            layer = int(w)
        sc.expect("name=")
        node_name = sc.json()
        sc.end()
        for n, shape, dtype in outs:
            graph.add_value(n, shape, dtype, ValueKind.ACTIVATION)
        graph.nodes.append(Node(str(node_name), op, inputs, [o[0] for o in outs], attrs, layer))
