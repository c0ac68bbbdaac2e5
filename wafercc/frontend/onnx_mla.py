"""Multi-head latent attention (DeepSeek-V2/V3 MLA), recognised so that it is refused by name.

MLA projects each token to one narrow row, ``kv_lora_rank`` latent values plus a ``qk_rope_head_dim``
key shared by every head, normalises the latent and up-projects it per head to the keys' non-rotary
part and the values.  What a cache stores is that row (Hugging Face caches it compressed).  The IR's
``attention`` op has an MLA mode for it (``kv_lora_rank``, ``rope_dim``, ``v_head_dim``, operands
``q_rope`` and ``kv_b_w``, caches of the latent and rope-key rows: docs/ir.md), but this frontend does
not emit it yet (the exporters' new_empty + slice-copy key assembly, ScatterND, and the split rotary
parts are not read), and the generic path would change the KV bytes per token, so it refuses.  Found structurally: a projection whose output is split in two along the
features, one part normalised (a ReduceMean on its way) and multiplied by a 2-D weight whose input
width is that part's width.
"""
from __future__ import annotations

from ..errors import UnsupportedOpError
from .onnx_regions import weight_of

_THROUGH = {"Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Transpose", "Pow", "ReduceMean", "Add",
            "Sqrt", "Div", "Mul", "Reciprocal", "SimplifiedLayerNormalization", "RMSNormalization",
            "LayerNormalization", "Concat", "Expand"}


def _width(src, t):
    s = src.shapes.get(t)
    return s[-1] if s and isinstance(s[-1], int) else None


def _halves(src, t):
    """The two feature slices of ``t`` when it is split in two along its last axis."""
    users = [u for u in src.users(t) if u.op_type not in ("Shape", "Size")]
    if len(users) == 1 and users[0].op_type == "Split" and len([o for o in users[0].output if o]) == 2:
        axis = src.attr(users[0], "axis", 0)
        rank = len(src.shapes.get(t) or ())
        if rank and axis in (-1, rank - 1):
            return list(users[0].output)
    if len(users) == 1 and users[0].op_type == "SplitToSequence":  # dynamo: SplitToSequence + SequenceAt
        at = [u for u in src.users(users[0].output[0]) if u.op_type == "SequenceAt"]
        pos = sorted((src.scalar(u.input[1]), u.output[0]) for u in at if src.scalar(u.input[1]) is not None)
        if len(pos) == 2 and len(at) == 2:
            return [t for _, t in pos]
    if len(users) == 2 and all(u.op_type == "Slice" for u in users):
        return [u.output[0] for u in users]
    return None


def _normalised_then_projected(src, t, width, limit=48):
    """A MatMul with a [width, n] weight reached from ``t`` through a normalisation (ReduceMean)."""
    frontier, seen, normed = [(t, False)], set(), None
    while frontier and limit > 0:
        t, norm = frontier.pop(0)
        if (t, norm) in seen:
            continue
        seen.add((t, norm))
        for u in src.users(t):
            limit -= 1
            if u.op_type in ("MatMul", "Gemm") and u.input[0] == t and norm:
                w = weight_of(src, u.input[1])
                shape = src.shapes.get(w[0]) if w else None
                if shape and len(shape) == 2 and (shape[1] if (w[1] ^ bool(u.op_type == "Gemm" and
                                                  src.attr(u, "transB", 0))) else shape[0]) == width:
                    return u
            elif u.op_type in _THROUGH:
                normed = norm or u.op_type in ("ReduceMean", "SimplifiedLayerNormalization", "RMSNormalization",
                                               "LayerNormalization")
                frontier.extend((o, normed) for o in u.output if o)
    return None


def refuse_mla(src, act: set[str]) -> None:
    """Raise a one-line UnsupportedOpError at the first multi-head latent attention in the graph."""
    for node in src.nodes:
        if node.op_type not in ("MatMul", "Gemm") or node.input[0] not in act:
            continue
        w = weight_of(src, node.input[1])
        if w is None or len(src.shapes.get(w[0], ())) != 2:
            continue
        parts = _halves(src, node.output[0])
        if not parts:
            continue
        widths = [_width(src, p) for p in parts]
        for (lat, r), (_, rope) in ((parts[0], widths[0]), (parts[1], widths[1])), \
                                    ((parts[1], widths[1]), (parts[0], widths[0])):
            if not r or not rope or rope >= r:
                continue
            up = _normalised_then_projected(src, lat, r)
            if up is not None:
                raise UnsupportedOpError(
                    node.op_type, node=node.name or src.scope(node),
                    detail=f"multi-head latent attention (MLA: each token's {r}-wide latent and {rope}-wide "
                           f"shared rotary key, the latent up-projected per head by '{up.name or up.op_type}') "
                           "is not lowered from ONNX yet: the IR's attention has an MLA mode (docs/ir.md) this frontend "
                           "does not emit")
