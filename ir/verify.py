"""The IR verifier: structure, operand kinds, attributes, shapes, dtypes, cycles."""
from __future__ import annotations

from ..errors import IRVerificationError
from .graph import Graph, Node
from .ops import OPS, ShapeError
from .values import MAX_ELEMENTS, SYMBOL_RE, ValueKind, format_shape, static_numel


def verify(graph: Graph) -> None:
    """Raise :class:`wafercc.errors.IRVerificationError` listing every problem found."""
    problems = collect_problems(graph)
    if problems:
        raise IRVerificationError(problems, where=f"graph '{graph.name}'")


def collect_problems(graph: Graph) -> list[str]:
    problems: list[str] = []
    problems += _check_values(graph)
    defined = {n: None for n, v in graph.values.items() if v.kind is not ValueKind.ACTIVATION}
    producers: dict[str, str] = {}
    names: set[str] = set()
    for node in graph.nodes:
        at = f"node '{node.name}' ({node.op})"
        if node.name in names:
            problems.append(f"{at}: node name used twice")
        if node.layer is not None and (not isinstance(node.layer, int) or isinstance(node.layer, bool)
                                       or node.layer < 0):
            problems.append(f"{at}: layer {node.layer!r}, expected a non-negative integer")
        names.add(node.name)
        for out in node.outputs:
            if out in producers:
                problems.append(f"{at}: output %{out} is also produced by node '{producers[out]}'")
            elif out in defined:
                problems.append(f"{at}: output %{out} is a graph input, weight or KV cache")
            producers[out] = node.name
        problems += _check_node(graph, node, at)
    for name, v in graph.values.items():
        if v.kind is ValueKind.ACTIVATION and name not in producers:
            problems.append(f"value %{name}: activation with no producing node")
    for out in graph.outputs:
        if out not in graph.values:
            problems.append(f"graph output %{out} is not defined")
    if not graph.outputs:
        problems.append("graph has no outputs")
    if len(set(graph.outputs)) != len(graph.outputs):
        problems.append("a graph output is listed twice")
    problems += _check_order(graph, producers)
    return problems


def _check_values(graph: Graph) -> list[str]:
    out = []
    for name, v in graph.values.items():
        for d in v.shape:
            if isinstance(d, bool) or not (isinstance(d, str) and SYMBOL_RE.match(d) or isinstance(d, int) and d > 0):
                out.append(f"value %{name}: bad dim {d!r} in {format_shape(v.shape)}")
                break
        else:
            if static_numel(v.shape) > MAX_ELEMENTS:
                out.append(f"value %{name}: shape {format_shape(v.shape)} overflows ({static_numel(v.shape)} elements > 2^53)")
    return out


def _check_node(graph: Graph, node: Node, at: str) -> list[str]:
    spec = OPS.get(node.op)
    if spec is None:
        return [f"{at}: unknown op '{node.op}' (known: {', '.join(OPS)})"]
    problems = []
    for role, vname in node.inputs.items():
        operand = spec.operand(role)
        if operand is None:
            problems.append(f"{at}: unknown operand '{role}'")
        elif vname not in graph.values:
            problems.append(f"{at}: operand {role}=%{vname} is not defined (dangling)")
        elif graph.values[vname].kind not in operand.kinds:
            kinds = "/".join(sorted(k.value for k in operand.kinds))
            problems.append(f"{at}: operand {role}=%{vname} is a {graph.values[vname].kind.value}, expected {kinds}")
    for operand in spec.operands:
        if not operand.optional and operand.role not in node.inputs:
            problems.append(f"{at}: missing operand '{operand.role}'")
    problems += _check_attrs(spec, node, at)
    if problems:
        return problems
    try:
        inferred = spec.infer(graph.node_inputs(node), spec.with_defaults(node.attrs))
    except ShapeError as e:
        return [f"{at}: {e}"]
    if len(inferred) != len(node.outputs):
        return [f"{at}: has {len(node.outputs)} outputs, op produces {len(inferred)}"]
    for out, (shape, dtype) in zip(node.outputs, inferred):
        v = graph.values.get(out)
        if v is None:
            problems.append(f"{at}: output %{out} is not defined")
        elif tuple(v.shape) != tuple(shape) or v.dtype is not dtype:
            problems.append(f"{at}: output %{out} declared {v.dtype.value}{format_shape(v.shape)}, "
                            f"op gives {dtype.value}{format_shape(shape)}")
    return problems


def _check_attrs(spec, node: Node, at: str) -> list[str]:
    problems = []
    for key, val in node.attrs.items():
        a = spec.attr(key)
        if a is None:
            problems.append(f"{at}: unknown attribute '{key}'")
            continue
        if val is None and not a.required:
            continue
        ok_type = isinstance(val, a.types) and not (isinstance(val, bool) and bool not in a.types)
        if float in a.types and isinstance(val, int) and not isinstance(val, bool):
            ok_type = True
        if not ok_type:
            want = "/".join(t.__name__ for t in a.types)
            problems.append(f"{at}: attribute {key}={val!r} has type {type(val).__name__}, expected {want}")
        elif a.choices is not None and val not in a.choices:
            problems.append(f"{at}: attribute {key}={val!r}, expected one of {', '.join(map(str, a.choices))}")
        elif a.positive and val <= 0:
            problems.append(f"{at}: attribute {key}={val!r}, expected > 0")
    for a in spec.attrs:
        if a.required and a.name not in node.attrs:
            problems.append(f"{at}: missing attribute '{a.name}'")
    if not problems and spec.check is not None:
        problems += [f"{at}: {p}" for p in spec.check(spec.with_defaults(node.attrs))]
    return problems


def _check_order(graph: Graph, producers: dict[str, str]) -> list[str]:
    """Nodes must be listed in a topological order; report a cycle if there is one."""
    position = {n.name: i for i, n in enumerate(graph.nodes)}
    late = []
    for i, node in enumerate(graph.nodes):
        for v in node.inputs.values():
            p = producers.get(v)
            if p is not None and position[p] >= i:
                late.append((node, v, p))
    if not late:
        return []
    cycle = find_cycle(graph, producers)
    if cycle:
        return ["cycle through nodes " + " -> ".join(f"'{n}'" for n in cycle)]
    node, v, p = late[0]
    return [f"node '{node.name}' ({node.op}) uses %{v} before its producer '{p}' (nodes not in topological order)"]


def find_cycle(graph: Graph, producers: dict[str, str]) -> list[str]:
    deps = {n.name: [producers[v] for v in n.inputs.values() if v in producers] for n in graph.nodes}
    state: dict[str, int] = {}
    for root in deps:
        if root in state:
            continue
        stack = [(root, iter(deps[root]))]
        path = [root]
        state[root] = 1
        while stack:
            name, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[name] = 2
                stack.pop()
                path.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(deps[nxt])))
                path.append(nxt)
    return []


def topological_sort(graph: Graph) -> None:
    """Reorder ``graph.nodes`` topologically (stable); raise on a cycle."""
    producers = graph.producers()
    by_name = {n.name: n for n in graph.nodes}
    indeg = {n.name: 0 for n in graph.nodes}
    users: dict[str, list[str]] = {}
    for n in graph.nodes:
        for v in set(n.inputs.values()):
            p = producers.get(v)
            if p is not None:
                indeg[n.name] += 1
                users.setdefault(p.name, []).append(n.name)
    import heapq
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    ready = [(order[k], k) for k, d in indeg.items() if d == 0]
    heapq.heapify(ready)
    out = []
    while ready:
        _, k = heapq.heappop(ready)
        out.append(by_name[k])
        for u in users.get(k, []):
            indeg[u] -= 1
            if indeg[u] == 0:
                heapq.heappush(ready, (order[u], u))
    if len(out) != len(graph.nodes):
        cycle = find_cycle(graph, {o: n.name for n in graph.nodes for o in n.outputs})
        raise IRVerificationError(["cycle through nodes " + " -> ".join(f"'{n}'" for n in cycle)],
                                  where=f"graph '{graph.name}'")
    graph.nodes = out
