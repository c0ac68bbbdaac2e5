"""Pixel inputs: a vision transformer's patch embedding, lowered to token rows.

A ViT (DeiT, BEiT, DINO...) starts from ``pixel_values`` [batch, C, H, W]: a Conv whose kernel equals
its stride (no padding, no dilation, one group) cuts the image into patches and projects each one,
then flatten + transpose make the patches the token sequence, learned tokens (CLS, a distillation
token, registers) are concatenated in front and a learned position table is added.

:func:`detect_patches` finds that chain as one region; :func:`emit_patches` lowers it:

* the graph input becomes an IR input of **patch rows** ``[batch, seq, C*kh*kw]`` (tokens along the
  IR's seq dim).  Row ``i`` holds the flattened patch of token ``i`` in the conv weight's (c, ky, kx)
  order; the first ``prefix_rows`` rows are the slots of the prepended learned tokens (their content
  is unused).  ``graph.meta["pixel_inputs"][name]`` records how to cut an image into these rows
  (:func:`patch_rows` does it);
* the Conv becomes a ``matmul`` of each row by the kernel read as a ``[D, C*kh*kw]`` matrix
  (``transpose_w``) plus the conv bias: the kernel's parameters, counted once;
* each prepended token becomes a ``prefix_tokens`` op writing its weight rows into its slots;
* the position table becomes an ``embedding`` by ``position_ids`` added to the rows (a table added
  before the learned tokens were prepended is looked up ``prefix_rows`` positions earlier).

A Conv that is not such a patch embedding is refused with the reason (:func:`conv_refusal`).
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from ..ir import BATCH, SEQ, DType, ValueKind
from .onnx_regions import Region, weight_of
from .onnx_source import onnx_dtype

_PASS = ("Identity", "Cast")
_SHAPE_ONLY = ("Shape", "Size")


# -- detection ---------------------------------------------------------------------------------

def _root_input(src, t):
    """The graph input ``t`` is (through casts / identities), else None."""
    for _ in range(8):
        if t in src.graph_inputs:
            return t
        p = src.prod(t)
        if p is None or p.op_type not in _PASS:
            return None
        t = p.input[0]
    return None


def _conv_facts(src, node):
    """(facts dict, None) for a patch-embedding Conv, else (None, why it is not one)."""
    if len(node.input) < 2 or node.input[1] not in src.inits:
        return None, "the conv kernel is not an initializer"
    wshape = tuple(int(d) for d in src.inits[node.input[1]].dims)
    if len(wshape) < 3:
        return None, f"conv kernel {list(wshape)} is not [out, in, k...]"
    kernel = tuple(src.attr(node, "kernel_shape") or wshape[2:])
    strides = tuple(src.attr(node, "strides") or (1,) * len(kernel))
    pads = tuple(src.attr(node, "pads") or (0,) * (2 * len(kernel)))
    dil = tuple(src.attr(node, "dilations") or (1,) * len(kernel))
    auto_pad = src.attr(node, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    if src.attr(node, "group", 1) != 1:
        return None, f"grouped conv (group {src.attr(node, 'group')})"
    if strides != kernel:
        return None, f"stride {list(strides)} differs from kernel {list(kernel)} (patches would overlap or skip pixels)"
    if any(pads) or auto_pad not in ("NOTSET", "VALID"):
        return None, f"padded conv (pads {list(pads)}, auto_pad {auto_pad})"
    if any(d != 1 for d in dil):
        return None, f"dilated conv (dilations {list(dil)})"
    pixels = _root_input(src, node.input[0])
    if pixels is None:
        return None, "its input is computed in the graph, not a pixel graph input"
    xs = src.shapes.get(node.input[0]) or src.shapes.get(pixels)
    if not xs or len(xs) != 2 + len(kernel):
        return None, f"input shape {list(xs) if xs else 'unknown'} is not [batch, channels, {len(kernel)} spatial dims]"
    spatial = xs[2:]
    if not all(isinstance(d, int) and d > 0 for d in spatial) or xs[1] != wshape[1]:
        return None, f"input {list(xs)} needs static spatial dims and {wshape[1]} channels"
    if any(d % k for d, k in zip(spatial, kernel)):
        return None, f"image {list(spatial)} is not a whole number of {list(kernel)} patches"
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if bias is not None and bias not in src.inits:
        zeros = src.const(bias)       # a conv without bias (CLIP): the exporter passes Expand(0)
        if zeros is not None and not np.any(zeros):
            bias = None
    if bias is not None and (bias not in src.inits or tuple(src.inits[bias].dims) != (wshape[0],)):
        return None, "the conv bias is not a [out] initializer"
    grid = tuple(d // k for d, k in zip(spatial, kernel))
    return {"pixels": pixels, "weight": node.input[1], "bias": bias, "width": wshape[0],
            "channels": wshape[1], "kernel": kernel, "image": tuple(spatial), "grid": grid,
            "patches": math.prod(grid), "batch": xs[0]}, None


def _data_users(src, t):
    return [u for u in src.users(t) if u.op_type not in _SHAPE_ONLY]


def _one_user(src, t, ops):
    us = _data_users(src, t)
    return us[0] if len(us) == 1 and us[0].op_type in ops else None


def _out_dims(src, node, in_dims):
    """Output dims of a Reshape of a tensor with dims ``in_dims`` (None where unknown)."""
    shape = src.shapes.get(node.output[0])
    target = src.const(node.input[1]) if len(node.input) > 1 else None
    if target is not None:
        dims = []
        for i, d in enumerate(int(v) for v in np.asarray(target).reshape(-1)):
            dims.append(in_dims[i] if d == 0 and i < len(in_dims) and not src.attr(node, "allowzero", 0)
                        else None if d == -1 else d)
        return dims
    return [d if isinstance(d, int) else None for d in shape] if shape else None


def _flatten_tokens(src, t, f, nodes):
    """Follow conv output ``t`` [B, D, *grid] to [B, patches, D] (Reshape then Transpose, or channels
    last first); the tensor, or (None, why)."""
    d, n, rank = f["width"], f["patches"], 2 + len(f["grid"])
    u = _one_user(src, t, ("Reshape", "Transpose"))
    if u is None:
        return None, "its output is not flattened into a token sequence (Reshape then Transpose)"
    if u.op_type == "Transpose":           # channels last first: [B, *grid, D] -> [B, N, D]
        if list(src.attr(u, "perm") or []) != [0, *range(2, rank), 1]:
            return None, f"its output is transposed with perm {src.attr(u, 'perm')}"
        r = _one_user(src, u.output[0], ("Reshape",))
        dims = _out_dims(src, r, [None, *f["grid"], d]) if r is not None else None
        if not dims or len(dims) != 3 or dims[2] != d or dims[1] not in (None, n):
            return None, "its channels-last output is not reshaped to [batch, patches, width]"
        nodes.update(src.producer[x.output[0]] for x in (u, r))
        return r.output[0], None
    dims = _out_dims(src, u, [None, d, *f["grid"]])
    if not dims or len(dims) != 3 or dims[1] != d or dims[2] not in (None, n):
        return None, "its output is not flattened to [batch, width, patches]"
    tr = _one_user(src, u.output[0], ("Transpose",))
    if tr is None or list(src.attr(tr, "perm") or []) != [0, 2, 1]:
        return None, "the flattened patches are not transposed to [batch, patches, width]"
    nodes.update(src.producer[x.output[0]] for x in (u, tr))
    return tr.output[0], None


def _learned_token(src, t, f, nodes):
    """(initializer, rows, copies) of a learned token block ``t`` [B|1, rows, D] (through Expand /
    Tile / casts to the batch), else None."""
    seen = []
    for _ in range(6):
        if t in src.inits:
            break
        p = src.prod(t)
        if p is None or p.op_type not in ("Expand", "Tile", "Identity", "Cast"):
            return None
        seen.append(src.producer[t])
        t = p.input[0]
    else:
        return None
    dims = tuple(int(x) for x in src.inits[t].dims)
    if len(dims) == 1 and seen:
        dims = (1, dims[0])      # one [D] token expanded to the batch (CLIP's class_embedding)
    if len(dims) not in (2, 3) or dims[-1] != f["width"]:
        return None
    copies = dims[0] if len(dims) == 3 else 1
    if copies != 1 and (seen or copies != f["batch"]):   # folded to the traced batch: [B, rows, D]
        return None
    nodes.update(seen)
    return t, dims[-2], copies


def _position_table(src, add, t, f, rows):
    """The initializer of a learned position table added to ``t`` (rows tokens), else None."""
    other = add.input[1] if add.input[0] == t else add.input[0]
    w = weight_of(src, other)
    if w is None or w[1]:
        return None
    dims = tuple(int(x) for x in src.inits[w[0]].dims)
    if len(dims) < 2 or dims[-1] != f["width"] or any(x != 1 for x in dims[:-2]) or dims[-2] != rows:
        return None
    return w[0]


def detect_patches(src, conv_idx: int) -> Region | str:
    """The patch-embedding region starting at the Conv ``conv_idx``, or why there is none."""
    node = src.nodes[conv_idx]
    f, why = _conv_facts(src, node)
    if f is None:
        return why
    nodes = {conv_idx}
    t, why = _flatten_tokens(src, node.output[0], f, nodes)
    if t is None:
        return why
    tokens: list[list] = []        # [initializer, rows, copies, start (final, once all are prepended)]
    steps: list[tuple] = []        # in graph order: ("tokens", entries) or ("positions", table, prefix then)
    prefix = 0
    while True:
        u = _one_user(src, t, ("Concat", "Add", "Dropout", "Identity"))
        if u is None:
            break
        if u.op_type in ("Dropout", "Identity"):
            nodes.add(src.producer[u.output[0]])
            t = u.output[0]
            continue
        if u.op_type == "Add":
            table = _position_table(src, u, t, f, f["patches"] + prefix)
            if table is None:
                break
            steps.append(("positions", table, prefix))
        else:
            if src.attr(u, "axis", 0) not in (1, -2):
                return f"the patch tokens are concatenated along axis {src.attr(u, 'axis')}, not the token axis"
            at = list(u.input).index(t)
            if at != len(u.input) - 1:
                return "learned tokens are concatenated after the patch tokens (only tokens before them are supported)"
            added = []
            for other in u.input[:at]:
                tok = _learned_token(src, other, f, nodes)
                if tok is None:
                    return f"Concat input '{other}' is not a learned token (an initializer [1, rows, {f['width']}])"
                added.append(tok)
            k = sum(tok[1] for tok in added)
            for tok in tokens:
                tok[3] += k
            start, entries = 0, []
            for init, rows, copies in added:
                entries.append([init, rows, copies, start])
                start += rows
            tokens.extend(entries)
            steps.append(("tokens", entries))
            prefix += k
        nodes.add(src.producer[u.output[0]])
        t = u.output[0]
    return Region("patches", f["pixels"], t, nodes,
                  {**f, "steps": steps, "prefix": prefix, "conv": node.output[0]})


def conv_refusal(src, conv_idx: int) -> str:
    """The line that refuses a Conv the patch lowering does not take."""
    r = detect_patches(src, conv_idx)
    why = r if isinstance(r, str) else "a second patch embedding of the same pixel input"
    return (f"convolution is not a patch embedding: {why}; wafercc lowers only a ViT-style patch embedding "
            f"(kernel == stride, no padding, group 1, on a pixel graph input, flattened to tokens): "
            f"export the model's token embeddings instead, or rewrite the conv that way")


def is_patch_conv(src, node) -> bool:
    """A Conv that :func:`detect_patches` lowers: its outputs are token activations."""
    return node.op_type == "Conv" and _conv_facts(src, node)[0] is not None


# -- emission ----------------------------------------------------------------------------------

def _declare(lifter, init: str, shape: tuple) -> str:
    """The IR weight of ``init`` declared with ``shape`` (fewer dims than stored: docs/ir.md)."""
    if init not in lifter.weights:
        t = lifter.src.inits[init]
        lifter.g.add_value(init, shape, onnx_dtype(t.data_type, f"initializer '{init}'"), ValueKind.WEIGHT)
        lifter.weights[init] = init
    return lifter.weights[init]


def emit_patches(lifter, r: Region, node) -> str:
    """Emit the region's IR ops (see the module doc); returns the IR value of the token rows."""
    src, g, p = lifter.src, lifter.g, r.params
    name = p["pixels"]
    meta = g.meta.setdefault("pixel_inputs", {})
    if name in meta:
        lifter._fail(node, "a second patch embedding of the same pixel input")
    feat = p["channels"] * math.prod(p["kernel"])
    dt = src.elem.get(name)
    g.add_value(name, (BATCH, SEQ, feat), onnx_dtype(dt, f"input '{name}'") if dt else DType.F32, ValueKind.INPUT)
    meta[name] = {"image": [p["channels"], *p["image"]], "patch": list(p["kernel"]), "prefix_rows": p["prefix"]}
    conv = src.prod(p["conv"])
    ins = {"x": name, "w": _declare(lifter, p["weight"], (p["width"], feat))}
    if p["bias"]:
        ins["b"] = lifter._weight(p["bias"])
    x = lifter._emit(conv, "matmul", ins, {"transpose_w": True})
    for step in p["steps"]:        # in graph order, each token block written at its final rows
        if step[0] == "positions":
            x = _add_positions(lifter, node, x, step[1], p["prefix"] - step[2])
            continue
        for init, rows, copies, start in step[1]:
            if copies > 1:
                warnings.warn(f"{src.where}: '{init}' is a learned token the exporter expanded to the traced "
                              f"batch ({copies} copies): its parameters count one copy", stacklevel=2)
            x = lifter._emit(node, "prefix_tokens", {"x": x, "tokens": _declare(lifter, init, (rows, p["width"]))},
                             {"start": start})
    return x


def _add_positions(lifter, node, x: str, table: str, offset: int) -> str:
    """x + table[position - offset] (positions below ``offset`` are the slots of tokens prepended
    later, which overwrite those rows: they read row 0)."""
    g = lifter.g
    t = lifter.src.inits[table]
    w = _declare(lifter, table, (int(t.dims[-2]), int(t.dims[-1])))
    if "position_ids" not in g.values:
        g.add_value("position_ids", (BATCH, SEQ), DType.I64, ValueKind.INPUT)
    ids = "position_ids"
    if offset:
        ids = lifter._emit(node, "elementwise", {"a": ids}, {"fn": "sub", "scalar": float(offset)})
        ids = lifter._emit(node, "elementwise", {"a": ids}, {"fn": "clamp", "min": 0.0})
    pos = lifter._emit(node, "embedding", {"ids": ids, "table": w})
    return lifter._emit(node, "elementwise", {"a": x, "b": pos}, {"fn": "add"})


# -- host side: an image as patch rows -------------------------------------------------------------

def patch_rows(pixels: np.ndarray, spec: dict) -> np.ndarray:
    """``pixels`` [batch, C, *image] as the IR's patch rows [batch, prefix_rows + patches, C*prod(patch)]
    for a ``graph.meta["pixel_inputs"]`` entry ``spec`` (prefix slots are zeros)."""
    x = np.asarray(pixels)
    image, patch, prefix = list(spec["image"]), list(spec["patch"]), int(spec["prefix_rows"])
    if x.ndim != 1 + len(image) or list(x.shape[1:]) != image:
        raise ValueError(f"pixels {list(x.shape)} are not [batch, {', '.join(map(str, image))}]")
    b, c, sp = x.shape[0], image[0], image[1:]
    grid = [d // k for d, k in zip(sp, patch)]
    split = [b, c] + [v for gk in zip(grid, patch) for v in gk]          # b, c, g0, k0, g1, k1, ...
    nd = len(sp)
    perm = [0] + [2 + 2 * i for i in range(nd)] + [1] + [3 + 2 * i for i in range(nd)]
    rows = x.reshape(split).transpose(perm).reshape(b, math.prod(grid), c * math.prod(patch))
    return np.concatenate([np.zeros((b, prefix, rows.shape[2]), rows.dtype), rows], axis=1)
