"""Runtime switches between two graphs: optimum's "merged" decoder.

optimum's ``merge_decoders`` puts the decoder without past and the decoder with past in the two
branches of one ``If`` on a boolean graph input (``use_cache_branch``), sharing the weights. wafercc
compiles one dataflow, and the one it models is the decode step's, which reads the KV cache: the
branch that reads the ``past*`` inputs is inlined in place of the ``If`` (its outputs renamed to the
``If``'s), and the switch input is dropped. An ``If`` on a graph input whose branches do not differ
that way is refused: which graph runs is decided per request, and wafercc cannot say which.
"""
from __future__ import annotations

import onnx
from onnx import helper

from ..errors import UnsupportedOpError


def _reads(graph: onnx.GraphProto) -> set[str]:
    """Every name read in ``graph``, its nested subgraphs included."""
    names = set()
    for n in graph.node:
        names.update(t for t in n.input if t)
        for a in n.attribute:
            for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                names |= _reads(g)
    return names


def _is_past(name: str) -> bool:
    return name.lower().startswith(("past", "cache"))


def inline_cache_branch(model: onnx.ModelProto, where: str = "model") -> onnx.ModelProto:
    """``model`` with each ``If`` on a graph input replaced by its with-past branch (unchanged when it
    has none)."""
    g = model.graph
    inputs = {i.name for i in g.input}
    switches = [n for n in g.node if n.op_type == "If" and n.domain in ("", "ai.onnx") and n.input[0] in inputs]
    if not switches:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    nodes = []
    taken = {t.name for t in g.initializer} | inputs | {o for n in g.node for o in n.output}
    for node in g.node:
        if node.op_type != "If" or node.input[0] not in inputs:
            nodes.append(node)
            continue
        branches = {a.name: a.g for a in node.attribute if a.name in ("then_branch", "else_branch")}
        past = {k: any(_is_past(t) for t in _reads(b) & inputs) for k, b in branches.items()}
        chosen = [k for k, reads in past.items() if reads]
        if len(chosen) != 1:
            raise UnsupportedOpError("If", node=node.name or node.output[0], detail=(
                f"a runtime switch on graph input '{node.input[0]}' between two graphs, neither of them (or "
                "both) the KV-cache decoder: wafercc compiles one dataflow; export the graph without the switch"))
        nodes.extend(_inline(branches[chosen[0]], node, taken, g))
    del g.node[:]
    g.node.extend(nodes)
    used = {t for n in g.node for t in n.input} | _reads(g)
    kept = [i for i in g.input if i.name in used or i.name in {o.name for o in g.output}]
    del g.input[:]
    g.input.extend(kept)
    return out


def _inline(branch: onnx.GraphProto, node, taken: set[str], g: onnx.GraphProto) -> list:
    """The branch's nodes with its outputs renamed to the If's and its local names kept apart."""
    local = {o for n in branch.node for o in n.output} | {t.name for t in branch.initializer}
    rename = {o.name: y for o, y in zip(branch.output, node.output) if o.name in local}
    for name in sorted(local - set(rename)):
        if name in taken:                         # a branch-local name the outer graph also has
            k = 1
            while f"{name}__{k}" in taken:
                k += 1
            rename[name] = f"{name}__{k}"
        taken.add(rename.get(name, name))
    out, produced = [], set()
    for t in branch.initializer:
        c = onnx.TensorProto()
        c.CopyFrom(t)
        c.name = rename.get(t.name, t.name)
        produced.add(c.name)
        g.initializer.append(c)
    for vi in branch.value_info:
        c = onnx.ValueInfoProto()
        c.CopyFrom(vi)
        c.name = rename.get(vi.name, vi.name)
        g.value_info.append(c)
    for n in branch.node:
        c = onnx.NodeProto()
        c.CopyFrom(n)
        c.input[:] = [rename.get(t, t) for t in n.input]
        c.output[:] = [rename.get(t, t) for t in n.output]
        produced.update(c.output)
        out.append(c)
    for o, y in zip(branch.output, node.output):
        if y not in produced:                     # the branch passes an outer value straight through
            out.append(helper.make_node("Identity", [rename.get(o.name, o.name)], [y], name=f"{y}/passed"))
    return out
