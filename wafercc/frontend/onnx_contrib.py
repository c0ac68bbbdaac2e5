"""onnxruntime contrib ops (domain ``com.microsoft``) expanded into standard ONNX before lifting.

Files fused by onnxruntime's transformer optimizer or onnxscript's ``rewriter.ort_fusions`` hold
contrib ops (SkipLayerNormalization, FastGelu, Attention, MultiHeadAttention, ...).  Each is replaced
by the standard-ONNX subgraph its spec (onnxruntime docs/ContribOperators.md) defines, in the form
the structural lifter already recognises (HF eager attention, rotate-half rotary, Pow/ReduceMean
RMS norms), so nothing downstream knows about contrib ops.  Node outputs keep their names, so the
value names, initializers and external data of the file are unchanged and the simulator's
comparison against onnxruntime still runs the original (fused) file.  A form that has no standard
expansion here (packed QKV, shared KV buffers, a 1-D mask index...) is refused in one line.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import UnsupportedOpError

MS = "com.microsoft"
_NEG = -3.4028234663852886e38   # masked scores: float32's lowest, as HF masks write it


# onnxruntime registers these in the default domain too (its optimizer writes them there)
_ORT_DEFAULT_DOMAIN = {"SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization"}


def has_contrib(model: onnx.ModelProto) -> bool:
    return any(n.domain == MS or (n.domain in ("", "ai.onnx") and n.op_type in _ORT_DEFAULT_DOMAIN)
               for n in model.graph.node)


class _Node:
    """Emits the standard nodes replacing one contrib node: fresh names under the node's name,
    its metadata (module scope) copied, so layers are still found."""

    def __init__(self, node, index: int, opset: int, elem: dict, shapes: dict, read: set):
        self.node, self.opset, self.elem, self.shapes, self.read = node, opset, elem, shapes, read
        self.prefix = (node.name or f"{node.op_type}_{index}").rstrip("/")
        self.out: list = []
        self._k = 0

    def fail(self, why: str):
        raise UnsupportedOpError(f"{MS}.{self.node.op_type}", node=self.node.name or None, detail=why)

    def attr(self, name, default=None):
        for a in self.node.attribute:
            if a.name == name:
                return helper.get_attribute_value(a)
        return default

    def inp(self, k: int) -> str:
        return self.node.input[k] if len(self.node.input) > k else ""

    def used(self, k: int) -> bool:
        """Output ``k`` is read by a node or is a graph output (fusers name outputs nobody reads)."""
        return len(self.node.output) > k and self.node.output[k] in self.read

    def _name(self, what: str) -> str:
        self._k += 1
        return f"{self.prefix}/{what}_{self._k}"

    def op(self, op_type: str, inputs: list, out: str | None = None, **attrs) -> str:
        name = self._name(op_type)
        o = out or name + "_output"
        n = helper.make_node(op_type, inputs, [o], name=name, **attrs)
        n.metadata_props.extend(self.node.metadata_props)
        self.out.append(n)
        return o

    def ops(self, op_type: str, inputs: list, n_out: int, **attrs) -> list[str]:
        name = self._name(op_type)
        outs = [f"{name}_output_{i}" for i in range(n_out)]
        n = helper.make_node(op_type, inputs, outs, name=name, **attrs)
        n.metadata_props.extend(self.node.metadata_props)
        self.out.append(n)
        return outs

    def const(self, value, dtype=None) -> str:
        arr = np.asarray(value, dtype=dtype)
        return self.op("Constant", [], value=numpy_helper.from_array(arr, self._name("const")))

    def fconst(self, value, like: str) -> str:
        """A float constant in the element type of tensor ``like`` (fp16 models stay fp16)."""
        code = self.elem.get(like, onnx.TensorProto.FLOAT)
        if code == onnx.TensorProto.BFLOAT16:
            return self.op("CastLike", [self.const(value, np.float32), like])
        return self.const(value, helper.tensor_dtype_to_np_dtype(code))

    def reduce_mean(self, x: str) -> str:
        if self.opset >= 18:
            return self.op("ReduceMean", [x, self.const([-1], np.int64)], keepdims=1)
        return self.op("ReduceMean", [x], axes=[-1], keepdims=1)

    def ints(self, *v) -> str:
        return self.const(list(v), np.int64)

    def add_opt(self, x: str, t: str) -> str:
        return self.op("Add", [x, t]) if t else x


# -- norms -------------------------------------------------------------------------
def _rms(b: _Node, x: str, gamma: str, out: str):
    """RMSNorm as Llama's export writes it: x * 1/sqrt(mean(x^2) + eps) * gamma."""
    eps = float(b.attr("epsilon", 1e-5))
    var = b.reduce_mean(b.op("Pow", [x, b.fconst(2.0, x)]))
    inv = b.op("Reciprocal", [b.op("Sqrt", [b.op("Add", [var, b.fconst(eps, x)])])])
    b.op("Mul", [b.op("Mul", [x, inv]), gamma], out=out)


def _skip_norm(b: _Node, simplified: bool):
    if b.used(1) or b.used(2):
        b.fail("its mean / inverse standard deviation outputs are used (only inference outputs are read)")
    x = b.op("Add", [b.inp(0), b.inp(1)])
    bias = b.inp(3) if simplified else b.inp(4)
    s = b.add_opt(x, bias)
    if b.used(3):    # input_skip_bias_sum: the residual stream after the add
        b.op("Identity", [s], out=b.node.output[3])
    if simplified:
        _rms(b, s, b.inp(2), b.node.output[0])
    else:
        ins = [s, b.inp(2)] + ([b.inp(3)] if b.inp(3) else [])
        b.op("LayerNormalization", ins, out=b.node.output[0], axis=-1, epsilon=float(b.attr("epsilon", 1e-5)))


def _simplified_norm(b: _Node):
    if b.used(1):
        b.fail("its inverse standard deviation output is used (only inference outputs are read)")
    if b.attr("axis", -1) != -1:
        b.fail(f"normalisation over axis {b.attr('axis')}, expected the last axis")
    _rms(b, b.inp(0), b.inp(1), b.node.output[0])


def _layer_norm(b: _Node):
    if b.used(1) or b.used(2):
        b.fail("its mean / inverse standard deviation outputs are used (only inference outputs are read)")
    ins = [t for t in b.node.input[:3]]
    b.op("LayerNormalization", ins, out=b.node.output[0], axis=int(b.attr("axis", -1)),
         epsilon=float(b.attr("epsilon", 1e-5)))


# -- activations ---------------------------------------------------------------------
def _gelu_erf(b: _Node, x: str, out: str):
    """0.5 * x * (1 + erf(x / sqrt(2)))."""
    e = b.op("Erf", [b.op("Div", [x, b.fconst(math.sqrt(2.0), x)])])
    b.op("Mul", [b.op("Mul", [x, b.fconst(0.5, x)]), b.op("Add", [e, b.fconst(1.0, x)])], out=out)


def _gelu_tanh(b: _Node, x: str, out: str):
    """0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))."""
    cube = b.op("Mul", [b.op("Pow", [x, b.fconst(3.0, x)]), b.fconst(0.044715, x)])
    t = b.op("Tanh", [b.op("Mul", [b.op("Add", [x, cube]), b.fconst(math.sqrt(2.0 / math.pi), x)])])
    b.op("Mul", [b.op("Mul", [x, b.fconst(0.5, x)]), b.op("Add", [t, b.fconst(1.0, x)])], out=out)


def _gelu(b: _Node):
    _gelu_erf(b, b.inp(0), b.node.output[0])


def _bias_gelu(b: _Node):
    _gelu_erf(b, b.add_opt(b.inp(0), b.inp(1)), b.node.output[0])


def _fast_gelu(b: _Node):
    _gelu_tanh(b, b.add_opt(b.inp(0), b.inp(1)), b.node.output[0])


def _quick_gelu(b: _Node):
    x = b.inp(0)
    alpha = float(b.attr("alpha", 1.702))
    b.op("Mul", [x, b.op("Sigmoid", [b.op("Mul", [x, b.fconst(alpha, x)])])], out=b.node.output[0])


def _bias_split_gelu(b: _Node):
    """(X + bias) split in halves on the last axis: left * gelu(right)."""
    x = b.op("Add", [b.inp(0), b.inp(1)])
    half = b.op("Div", [b.op("Shape", [x], start=-1), b.ints(2)])
    left, right = b.ops("Split", [x, b.op("Concat", [half, half], axis=0)], 2, axis=-1)
    g = b._name("gelu")
    _gelu_erf(b, right, g)
    b.op("Mul", [left, g], out=b.node.output[0])


def _bias_add(b: _Node):
    b.op("Add", [b.op("Add", [b.inp(0), b.inp(1)]), b.inp(2)], out=b.node.output[0])


def _fused_matmul(b: _Node):
    """alpha * op(A) @ op(B), op a transpose of the last two axes."""
    if b.attr("transBatchA", 0) or b.attr("transBatchB", 0):
        b.fail("transBatchA / transBatchB (batch-axis transposes) are not expanded; fuse without FusedMatMul")
    a, m = b.inp(0), b.inp(1)
    for k, flag in enumerate(("transA", "transB")):
        if b.attr(flag, 0):
            t = b.inp(k)
            rank = len(_shape(b, t) or ())
            if rank < 2:
                b.fail(f"{flag} on an input of unknown rank")
            perm = list(range(rank - 2)) + [rank - 1, rank - 2]
            tr = b.op("Transpose", [t], perm=perm)
            a, m = (tr, m) if k == 0 else (a, tr)
    alpha = float(b.attr("alpha", 1.0))
    if alpha == 1.0:
        b.op("MatMul", [a, m], out=b.node.output[0])
    else:
        b.op("Mul", [b.op("MatMul", [a, m]), b.fconst(alpha, b.inp(0))], out=b.node.output[0])


def _shape(b: _Node, t: str):
    return b.shapes.get(t)


# -- attention -----------------------------------------------------------------------
def _heads(b: _Node, x: str, n: int, perm) -> str:
    """[b, s, n*h] -> [b, s, n, h] -> transposed by ``perm`` (HF's view + transpose)."""
    return b.op("Transpose", [b.op("Reshape", [x, b.ints(0, 0, n, -1)])], perm=perm)


def _padding_bias(b: _Node, mask: str, like: str) -> str:
    """A [batch, total] 1/0 mask as the additive [batch, 1, 1, total] bias the spec defines:
    (1 - mask) * mask_filter_value."""
    fill = float(b.attr("mask_filter_value", -10000.0))
    m = b.op("CastLike", [mask, like])
    bias = b.op("Mul", [b.op("Sub", [b.fconst(1.0, like), m]), b.fconst(fill, like)])
    return b.op("Unsqueeze", [bias, b.ints(1, 2)])


def _causal_bias(b: _Node, q: str, k: str, like: str, window: int = -1) -> str:
    """[q, t] additive mask: query i (the last of t positions are the queries) sees key j <= i + t - q,
    and with a window w only keys j > i + t - q - w."""
    sq = b.op("Shape", [q], start=2, end=3)
    tk = b.op("Shape", [k], start=2, end=3)
    zero, one = b.ints(0), b.ints(1)
    qpos = b.op("Add", [b.op("Range", [b.op("Squeeze", [zero]), b.op("Squeeze", [sq]), b.op("Squeeze", [one])]),
                        b.op("Squeeze", [b.op("Sub", [tk, sq])])])
    kpos = b.op("Range", [b.op("Squeeze", [zero]), b.op("Squeeze", [tk]), b.op("Squeeze", [one])])
    qcol = b.op("Unsqueeze", [qpos, b.ints(1)])
    allowed = b.op("LessOrEqual", [b.op("Unsqueeze", [kpos, b.ints(0)]), qcol])
    if window > 0:
        allowed = b.op("And", [allowed, b.op("Greater", [b.op("Unsqueeze", [kpos, b.ints(0)]),
                                                          b.op("Sub", [qcol, b.ints(window)])])])
    return b.op("Where", [allowed, b.fconst(0.0, like), b.fconst(_NEG, like)])


def _sdpa(b: _Node, q: str, k: str, v: str, heads: int, head_dim: int | None, biases: list, out: str,
          scale=None, kv_heads: int | None = None, causal: bool = False, window: int = -1, softcap: float = 0.0):
    """softmax(q k^T * scale + biases) v on [b, n, s, h] tensors, GQA by repeating K/V heads,
    written back as [b, s, n*h] into ``out``."""
    if kv_heads and kv_heads != heads:
        k, v = (_repeat_kv(b, t, kv_heads, heads // kv_heads) for t in (k, v))
    if scale is None or scale == 0.0:
        if not head_dim:
            b.fail("cannot tell the head size (give the scale attribute or static hidden sizes)")
        scale = 1.0 / math.sqrt(head_dim)
    kt = b.op("Transpose", [k], perm=[0, 1, 3, 2])
    s = b.op("Mul", [b.op("MatMul", [q, kt]), b.fconst(float(scale), q)])
    if softcap:
        s = b.op("Mul", [b.op("Tanh", [b.op("Div", [s, b.fconst(softcap, q)])]), b.fconst(softcap, q)])
    if causal:
        s = b.op("Add", [s, _causal_bias(b, q, k, q, window)])
    for t in biases:
        s = b.op("Add", [s, t])
    p = b.op("Softmax", [s], axis=-1)
    o = b.op("Transpose", [b.op("MatMul", [p, v])], perm=[0, 2, 1, 3])
    b.op("Reshape", [o, b.ints(0, 0, -1)], out=out)


def _repeat_kv(b: _Node, t: str, kv_heads: int, rep: int) -> str:
    """HF's repeat_kv: [b, kv, s, h] -> [b, kv, rep, s, h] -> [b, kv*rep, s, h]."""
    x = b.op("Unsqueeze", [t, b.ints(2)])
    shape = b.op("Shape", [x])
    target = b.op("Concat", [b.op("Slice", [shape, b.ints(0), b.ints(2)]), b.ints(rep),
                             b.op("Slice", [shape, b.ints(3), b.ints(5)])], axis=0)
    e = b.op("Expand", [x, target])
    return b.op("Reshape", [e, b.ints(0, kv_heads * rep, -1, 0)])


def _attention(b: _Node):
    """Attention: one [in, q+k+v] projection of the input, bias, optional mask and attention bias."""
    n = int(b.attr("num_heads"))
    if b.inp(4) or b.used(1):
        b.fail("past / present state (a fused decoder with cache); fuse the export without past")
    if b.attr("do_rotary", 0) or b.attr("past_present_share_buffer", 0):
        b.fail("do_rotary / past_present_share_buffer forms are not expanded")
    if b.inp(6) or b.inp(7):
        b.fail("past_sequence_length / attention_bias-with-past inputs are not expanded")
    w = b.inp(1)
    sizes = list(b.attr("qkv_hidden_sizes", []) or [])
    if not sizes:
        wshape = _shape(b, w)
        if not wshape or not isinstance(wshape[-1], int) or wshape[-1] % 3:
            b.fail("weights of unknown width and no qkv_hidden_sizes")
        sizes = [wshape[-1] // 3] * 3
    if sizes[0] != sizes[1]:
        b.fail(f"query and key widths differ (qkv_hidden_sizes {sizes})")
    qkv = b.add_opt(b.op("MatMul", [b.inp(0), w]), b.inp(2))
    q, k, v = b.ops("Split", [qkv, b.ints(*sizes)], 3, axis=-1)
    qh, kh, vh = (_heads(b, t, n, [0, 2, 1, 3]) for t in (q, k, v))
    biases = []
    if b.inp(3):
        biases.append(_mask_index(b, b.inp(3), b.inp(0)))
    if b.inp(5):
        biases.append(b.inp(5))
    _sdpa(b, qh, kh, vh, n, sizes[0] // n, biases, b.node.output[0], scale=b.attr("scale"),
          causal=bool(b.attr("unidirectional", 0)))


def _mask_index(b: _Node, mask: str, like: str) -> str:
    shape = _shape(b, mask)
    if shape is None or len(shape) != 2:
        b.fail(f"mask_index of rank {len(shape) if shape else 'unknown'}: only the 2-D [batch, total] 1/0 "
               "mask is expanded (export with a raw attention mask)")
    return _padding_bias(b, mask, like)


def _mha(b: _Node):
    """MultiHeadAttention: separate Q, K, V ([b, s, n*h], or K/V already [b, n, t, h]), optional bias,
    key padding mask, attention bias and past/present K/V ([b, n, past, h])."""
    n = int(b.attr("num_heads"))
    q, k, v, bias = b.inp(0), b.inp(1), b.inp(2), b.inp(3)
    qs = _shape(b, q)
    if not k or (qs is not None and len(qs) == 5):
        b.fail("packed QKV (query [b, s, n, 3, h] or no key): unpack the projections or fuse without packing")
    ks = _shape(b, k)
    if ks is not None and len(ks) == 5:
        b.fail("packed KV (key [b, s, n, 2, h]): unpack the projections or fuse without packing")
    if b.inp(8) or b.inp(9):
        b.fail("past_sequence_length / cache_indirection (beam search buffers) are not expanded")
    hidden = qs[-1] if qs and isinstance(qs[-1], int) else None
    if bias:
        parts = b.ops("Split", [bias, b.op("Concat", [b.op("Shape", [q], start=-1)] * 3, axis=0)], 3, axis=0)
        q = b.op("Add", [q, parts[0]])
    head_dim = hidden // n if hidden else None
    qh = _heads(b, q, n, [0, 2, 1, 3])
    kv = []
    for k_, t in enumerate((k, v)):
        if _shape(b, t) is not None and len(_shape(b, t)) == 4:     # already [b, n, t, h] (cross attention)
            if bias:
                b.fail("bias with 4-D key / value")
            kv.append(t)
            continue
        if bias:
            t = b.op("Add", [t, parts[k_ + 1]])
        kv.append(_heads(b, t, n, [0, 2, 1, 3]))
    for k_, past in ((0, b.inp(6)), (1, b.inp(7))):
        if past:
            kv[k_] = b.op("Concat", [past, kv[k_]], axis=2)
        if b.used(k_ + 1):
            b.op("Identity", [kv[k_]], out=b.node.output[k_ + 1])
    biases = []
    if b.inp(4):
        biases.append(_mask_index(b, b.inp(4), b.inp(0)))
    if b.inp(5):
        biases.append(b.inp(5))
    _sdpa(b, qh, kv[0], kv[1], n, head_dim, biases, b.node.output[0], scale=b.attr("scale"),
          causal=bool(b.attr("unidirectional", 0)))


# -- rotary and grouped-query attention ----------------------------------------------
def _rotate(b: _Node, x: str, cos_cache: str, sin_cache: str, pos: str, interleaved: bool, rdim: int,
            layout: str, heads: int | None, head_dim: int, out: str | None = None) -> str:
    """The contrib rotary of ``x`` ([b, s, n*h] 'bsd' or [b, n, s, h] 'bnsh'): cos/sin rows of the
    caches gathered at ``pos`` ([b, s]), rotate-half (or interleaved pairs) over the first ``rdim``."""
    if interleaved:
        b.fail("interleaved rotary (rotary_interleaved=1) is not expanded")
    if layout == "bsd":
        x4 = _heads(b, x, heads, [0, 2, 1, 3])
    else:
        x4 = x
    # rows gathered from a [1, max, rdim/2] view: a Gather of a 2-D weight would read as an embedding
    cos, sin = (b.op("Transpose", [b.op("Gather", [b.op("Unsqueeze", [c, b.ints(0)]), pos], axis=1)],
                     perm=[1, 0, 2, 3]) for c in (cos_cache, sin_cache))    # [b, 1, s, rdim/2]
    cos, sin = (b.op("Concat", [t, t], axis=-1) for t in (cos, sin))      # [b, 1, s, rdim]
    xr = b.op("Slice", [x4, b.ints(0), b.ints(rdim), b.ints(-1)])
    half = rdim // 2
    x1 = b.op("Slice", [xr, b.ints(0), b.ints(half), b.ints(-1)])
    x2 = b.op("Slice", [xr, b.ints(half), b.ints(rdim), b.ints(-1)])
    rot = b.op("Concat", [b.op("Neg", [x2]), x1], axis=-1)
    y = b.op("Add", [b.op("Mul", [xr, cos]), b.op("Mul", [rot, sin])])
    if rdim < head_dim:     # partial rotary: the rest of each head passes through
        rest = b.op("Slice", [x4, b.ints(rdim), b.ints(head_dim), b.ints(-1)])
        y = b.op("Concat", [y, rest], axis=-1)
    if layout == "bsd":
        return b.op("Reshape", [b.op("Transpose", [y], perm=[0, 2, 1, 3]), b.ints(0, 0, -1)], out=out)
    return b.op("Identity", [y], out=out) if out else y


def _positions(b: _Node, pos: str, like_bsd: str) -> str:
    """Contrib position_ids: [b, s] as is, or a 1-D [1] start offset: offset + arange(s) per batch."""
    ps = _shape(b, pos)
    if ps is not None and len(ps) == 2:
        return pos
    if ps is not None and len(ps) == 1:
        s = b.op("Squeeze", [b.op("Shape", [like_bsd], start=1, end=2)])
        r = b.op("Range", [b.op("Squeeze", [b.ints(0)]), s, b.op("Squeeze", [b.ints(1)])])
        return b.op("Unsqueeze", [b.op("Add", [r, b.op("Squeeze", [pos])]), b.ints(0)])
    return b.fail("position_ids of unknown rank")


def _rotary(b: _Node):
    if b.attr("is_packed_batching", 0):
        b.fail("packed (ragged) batches: export with padded batches")
    x = b.inp(0)
    xs = _shape(b, x)
    if xs is None or len(xs) not in (3, 4):
        b.fail("input of unknown rank (expected [b, s, n*h] or [b, n, s, h])")
    cs = _shape(b, b.inp(2))
    if not cs or not isinstance(cs[-1], int):
        b.fail("cos_cache of unknown width")
    rdim = int(b.attr("rotary_embedding_dim", 0) or 2 * cs[-1])
    n = int(b.attr("num_heads", 0) or 0)
    if len(xs) == 3:
        if not n:
            n = xs[-1] // rdim if isinstance(xs[-1], int) and not b.attr("rotary_embedding_dim", 0) else 0
        if not n:
            b.fail("3-D input without num_heads")
        layout = "bsd"
        dh = xs[-1] // n if isinstance(xs[-1], int) else None
    else:
        layout, dh = "bnsh", xs[-1] if isinstance(xs[-1], int) else None
    if not dh:
        b.fail("input of unknown head size")
    if b.attr("scale", 1.0) != 1.0:
        b.fail("a position scale other than 1")
    like = x if layout == "bsd" else b.op("Transpose", [x], perm=[0, 2, 1, 3])
    pos = _positions(b, b.inp(1), like)
    _rotate(b, x, b.inp(2), b.inp(3), pos, bool(b.attr("interleaved", 0)), rdim, layout, n, dh, out=b.node.output[0])


def _gqa(b: _Node):
    """GroupQueryAttention with separate Q/K/V ([b, s, n*h]) and past K/V [b, kv, past, h] appended
    (no shared buffer); always causal, seqlens_k masking the keys past each row's length."""
    n, kvn = int(b.attr("num_heads")), int(b.attr("kv_num_heads"))
    q, k, v = b.inp(0), b.inp(1), b.inp(2)
    if not k:
        b.fail("packed QKV (no key input): unpack the projections or fuse without packing")
    if b.inp(10) or b.inp(11) or b.attr("smooth_softmax", 0):
        b.fail("attention_bias / head_sink / smooth_softmax forms are not expanded")
    qs = _shape(b, q)
    if not qs or not isinstance(qs[-1], int):
        b.fail("query of unknown width")
    dh = qs[-1] // n
    qh, kh, vh = _heads(b, q, n, [0, 2, 1, 3]), _heads(b, k, kvn, [0, 2, 1, 3]), _heads(b, v, kvn, [0, 2, 1, 3])
    # present = past ++ new, as a plain session runs it; a buffer shared by IO binding (genai's
    # max-length cache) is the same attention with the cache held in place, which the IR's KV state is
    past = [b.inp(3), b.inp(4)]
    pos = None
    if b.attr("do_rotary", 0):
        if not (b.inp(7) and b.inp(8)):
            b.fail("do_rotary without cos_cache / sin_cache")
        cs = _shape(b, b.inp(7))
        rdim = 2 * int(cs[-1]) if cs and isinstance(cs[-1], int) else dh
        pos = b.inp(9) or _seq_positions(b, q)
        inter = bool(b.attr("rotary_interleaved", 0))
        qh = _rotate(b, qh, b.inp(7), b.inp(8), pos, inter, rdim, "bnsh", n, dh)
        kh = _rotate(b, kh, b.inp(7), b.inp(8), pos, inter, rdim, "bnsh", kvn, dh)
    kv = [kh, vh]
    for i in range(2):
        if past[i]:
            kv[i] = b.op("Concat", [past[i], kv[i]], axis=2)
        if b.used(i + 1):
            b.op("Identity", [kv[i]], out=b.node.output[i + 1])
    window = int(b.attr("local_window_size", -1))
    biases = [_seqlens_bias(b, b.inp(5), kv[0], q)] if b.inp(5) else []
    _sdpa(b, qh, kv[0], kv[1], n, dh, biases, b.node.output[0], scale=b.attr("scale"), kv_heads=kvn,
          causal=True, window=window, softcap=float(b.attr("softcap", 0.0)))


def _seq_positions(b: _Node, q: str) -> str:
    """do_rotary without position_ids: the spec derives them from seqlens_k per row; refused."""
    b.fail("do_rotary without position_ids (positions from seqlens_k) is not expanded")


def _seqlens_bias(b: _Node, seqlens: str, k: str, like: str) -> str:
    """Keys at or past each row's total length seqlens_k + 1 are masked: [b, 1, 1, t]."""
    tk = b.op("Squeeze", [b.op("Shape", [k], start=2, end=3)])
    kpos = b.op("Range", [b.op("Squeeze", [b.ints(0)]), tk, b.op("Squeeze", [b.ints(1)])])
    total = b.op("Add", [b.op("Cast", [seqlens], to=onnx.TensorProto.INT64), b.ints(1)])
    valid = b.op("Less", [b.op("Unsqueeze", [kpos, b.ints(0)]), b.op("Unsqueeze", [total, b.ints(1)])])
    bias = b.op("Where", [valid, b.fconst(0.0, like), b.fconst(_NEG, like)])
    return b.op("Unsqueeze", [bias, b.ints(1, 2)])


EXPANSIONS = {
    "SkipLayerNormalization": lambda b: _skip_norm(b, simplified=False),
    "SkipSimplifiedLayerNormalization": lambda b: _skip_norm(b, simplified=True),
    "SimplifiedLayerNormalization": _simplified_norm,
    "LayerNormalization": _layer_norm,
    "Gelu": _gelu, "BiasGelu": _bias_gelu, "FastGelu": _fast_gelu, "QuickGelu": _quick_gelu,
    "BiasSplitGelu": _bias_split_gelu, "BiasAdd": _bias_add, "FusedMatMul": _fused_matmul,
    "Attention": _attention, "MultiHeadAttention": _mha, "GroupQueryAttention": _gqa,
    "RotaryEmbedding": _rotary,
}


def _shapes(model: onnx.ModelProto) -> tuple[dict, dict]:
    shapes, elem = {}, {}
    g = model.graph
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                    for d in tt.shape.dim)
        elem[vi.name] = tt.elem_type
    for t in g.initializer:
        shapes[t.name], elem[t.name] = tuple(t.dims), t.data_type
    return shapes, elem


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shapes through contrib ops: onnxruntime's symbolic shape inference knows their schemas
    (onnx's does not); a file it cannot read keeps the shapes it has."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    import contextlib
    import io
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return SymbolicShapeInference.infer_shapes(model, auto_merge=True, guess_output_rank=True)
    except Exception:  # it asserts on what it does not know; the expansions then refuse in one line
        return model


def expand_contrib(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with every com.microsoft node replaced by standard ONNX; unchanged if none."""
    if not has_contrib(model):
        return model
    shapes, elem = _shapes(model)
    if any(t and t not in shapes for n in model.graph.node if n.domain == MS or n.op_type in _ORT_DEFAULT_DOMAIN
           for t in n.input):
        model = _infer(model)
        shapes, elem = _shapes(model)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=17)
    read = {t for n in model.graph.node for t in n.input if t} | {o.name for o in model.graph.output}
    nodes = []
    for i, node in enumerate(model.graph.node):
        if node.domain != MS and not (node.domain in ("", "ai.onnx") and node.op_type in _ORT_DEFAULT_DOMAIN):
            nodes.append(node)
            continue
        b = _Node(node, i, opset, elem, shapes, read)
        fn = EXPANSIONS.get(node.op_type)
        if fn is None:
            b.fail(f"onnxruntime contrib op without a standard-ONNX expansion in wafercc (known: "
                   f"{', '.join(sorted(EXPANSIONS))}); lower the unfused export instead")
        fn(b)
        nodes.extend(b.out)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    kept = [o for o in out.opset_import if o.domain != MS]
    del out.opset_import[:]
    out.opset_import.extend(kept)
    return out
