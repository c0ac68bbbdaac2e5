"""Export each distinct decoder layer once, then replicate it in the IR.

Tracing and translating 80-126 identical layers dominates frontend time for
large configs.  On the meta device a model's layer stack is an ``nn.ModuleList``
of ``num_hidden_layers`` blocks; blocks with the same structure (classes,
parameter shapes, plain attributes such as ``attention_type`` or
``sliding_window``) compute the same function of their inputs.  We export a
model holding one block per distinct structure, lift it, and clone each
block's IR for every layer that shares its structure.  Anything that does not
fit this shape (several stacks, blocks that exchange more than one value)
falls back to exporting the whole model; tests compare both paths.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

import torch

from ..ir import Graph, Node, ValueKind

_LAYER_RE = re.compile(r"(?:^|[./])(\d+)(?=[./#'@]|$)")
_SKIP_ATTRS = {"training", "layer_idx", "layer_id", "layer_number", "idx"}


@dataclasses.dataclass
class LayerPlan:
    stack_path: str                 # e.g. "model.model.layers"
    reps: list[int]                 # original index of each exported block
    assignment: list[int]           # for each original layer, its position in ``reps``


def _plain(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str)) or (
        isinstance(v, (tuple, list)) and all(_plain(x) for x in v))


def block_signature(block: torch.nn.Module) -> tuple:
    """Everything about a block that can change what it computes, except its index."""
    parts = []
    for name, mod in block.named_modules():
        attrs = tuple(sorted((k, repr(v)) for k, v in vars(mod).items()
                             if not k.startswith("_") and k not in _SKIP_ATTRS and _plain(v)))
        params = tuple((n, tuple(p.shape), str(p.dtype)) for n, p in mod.named_parameters(recurse=False))
        buffers = tuple((n, tuple(b.shape), str(b.dtype)) for n, b in mod.named_buffers(recurse=False))
        parts.append((name, type(mod).__qualname__, attrs, params, buffers))
    return tuple(parts)


def plan_layers(root: torch.nn.Module, num_layers: int) -> LayerPlan | None:
    stacks = [(n, m) for n, m in root.named_modules()
              if isinstance(m, torch.nn.ModuleList) and len(m) == num_layers and num_layers > 1]
    if len(stacks) != 1:
        return None
    path, stack = stacks[0]
    sigs: dict[tuple, int] = {}
    reps, assignment = [], []
    for i, block in enumerate(stack):
        s = block_signature(block)
        if s not in sigs:
            sigs[s] = len(reps)
            reps.append(i)
        assignment.append(sigs[s])
    if len(reps) == num_layers:
        return None  # nothing to share
    return LayerPlan(path, reps, assignment)


def reduce_model(root: torch.nn.Module, config, plan: LayerPlan):
    """Swap in a stack of the representative blocks; returns an undo function."""
    parent_path, _, attr = plan.stack_path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    full = getattr(parent, attr)
    saved = {"num_hidden_layers": config.num_hidden_layers}
    # per-layer settings (e.g. layer_types) are lists of one entry per layer; a tuple of the same
    # length is a setting (Bamba's time_step_limit (min, max) with 2 layers), not per layer
    per_layer = {k: v for k, v in vars(config).items()
                 if isinstance(v, list) and len(v) == config.num_hidden_layers}
    setattr(parent, attr, torch.nn.ModuleList([full[i] for i in plan.reps]))
    config.num_hidden_layers = len(plan.reps)
    for k, v in list(per_layer.items()):  # they follow their blocks
        try:
            setattr(config, k, type(v)(v[i] for i in plan.reps))
        except (TypeError, ValueError):  # a validated field that refuses the shorter list
            del per_layer[k]

    def undo():
        setattr(parent, attr, full)
        config.num_hidden_layers = saved["num_hidden_layers"]
        for k, v in per_layer.items():
            setattr(config, k, v)
    return undo


def _renumber(name: str, old: int, new: int) -> str:
    """Replace the layer index (first integer path component) ``old`` with ``new``."""
    m = _LAYER_RE.search(name)
    if m is None or int(m.group(1)) != old:
        return name
    return name[:m.start(1)] + str(new) + name[m.end(1):]


class ReplicationError(Exception):
    """The reduced graph does not have the block structure replication needs."""


def replicate(reduced: Graph, plan: LayerPlan) -> Graph:
    """Expand a graph lifted from the reduced model to the full layer count."""
    blocks = reduced.layers()
    if sorted(blocks) != list(range(len(plan.reps))):
        raise ReplicationError(f"expected layers 0..{len(plan.reps) - 1}, got {sorted(blocks)}")
    first = min(reduced.nodes.index(b[0]) for b in blocks.values())
    last = max(reduced.nodes.index(b[-1]) for b in blocks.values())
    body = reduced.nodes[first:last + 1]
    if any(n.layer is None for n in body):
        raise ReplicationError("nodes outside any layer sit between layers")
    pre, post = reduced.nodes[:first], reduced.nodes[last + 1:]
    # each block must read the residual stream from exactly one value of the block before
    produced_by = {o: n.layer for n in reduced.nodes for o in n.outputs}
    entry: dict[int, str] = {}
    for j, nodes in blocks.items():
        outside = {v for n in nodes for v in n.inputs.values()
                   if reduced.values[v].kind is ValueKind.ACTIVATION and produced_by.get(v) != j}
        want = j - 1 if j else None
        if len(outside) != 1 or produced_by[next(iter(outside))] != want:
            raise ReplicationError(f"layer {j} reads {sorted(outside)} from outside itself")
        entry[j] = next(iter(outside))
    consumers = reduced.consumers()
    exits = {j: [o for n in nodes for o in n.outputs if any(c.layer != j for c in consumers.get(o, []))]
             for j, nodes in blocks.items()}
    if any(len(v) != 1 for v in exits.values()):
        raise ReplicationError(f"layers hand on more than one value: {exits}")
    out = Graph(reduced.name, reduced.meta)
    for name in reduced.inputs:
        v = reduced.values[name]
        out.add_value(name, v.shape, v.dtype, v.kind)
    for n in pre:
        _copy_node(reduced, out, n, {}, n.layer)
    stream = entry[0]
    for i, j in enumerate(plan.assignment):
        rename = {entry[j]: stream}
        for n in blocks[j]:
            for v in list(n.inputs.values()) + n.outputs:
                kind = reduced.values[v].kind
                if v in rename or not (produced_by.get(v) == j or kind in (ValueKind.WEIGHT, ValueKind.KV_CACHE)):
                    continue
                new = _renumber(v, j, i)
                if new == v and i != j and kind is not ValueKind.WEIGHT:
                    new = f"{v}@{i}"  # per-layer state or value without a layer index in its name
                rename[v] = new
            _copy_node(reduced, out, n, rename, i)
        stream = rename[exits[j][0]]
    rename = {exits[len(plan.reps) - 1][0]: stream}
    for n in post:
        _copy_node(reduced, out, n, rename, n.layer)
    out.outputs = [rename.get(o, o) for o in reduced.outputs]
    return out


def _copy_node(src: Graph, dst: Graph, n: Node, rename: dict[str, str], layer):
    for v in n.inputs.values():
        name = rename.get(v, v)
        if name not in dst.values:
            val = src.values[v]
            dst.add_value(name, val.shape, val.dtype, val.kind)
    outs = [(rename.get(o, o), src.values[o].shape, src.values[o].dtype) for o in n.outputs]
    name = n.name
    if n.layer is not None and layer != n.layer:
        name = _renumber(n.name, n.layer, layer)
        if name == n.name:
            name = f"{n.name}@{layer}"
    dst.add_node(n.op, {r: rename.get(v, v) for r, v in n.inputs.items()}, outs,
                 name=name, attrs=dict(n.attrs), layer=layer, infer=False)
