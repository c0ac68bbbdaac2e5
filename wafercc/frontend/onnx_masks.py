"""What an attention mask means: causal or not, sliding window, padding.

Exporters build masks from the attention mask input and positions in many
ways, so instead of matching their ops we run the mask's subgraph (it never
touches weights) on onnxruntime for a probe sequence and read the result.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx
from onnx import helper

from ..errors import InputFileError, shorten
from . import isolated

PROBE_LENGTHS = (64, 4096)  # a sliding window is seen only if shorter than the probe
RUN_SECONDS = 60.0  # one probe of a mask subgraph takes well under a second


@dataclasses.dataclass(frozen=True)
class MaskFacts:
    causal: bool
    sliding_window: int  # 0: none
    padding: bool        # depends on the attention_mask input


def mask_facts(src, tensor: str, act: set[str], past: frozenset = frozenset()) -> MaskFacts:
    """Facts of a mask tensor; masks computed the same way (one per layer) are probed once.
    ``past``: KV-cache graph inputs (past_key_values.*), probed empty so the mask's lengths agree."""
    cache = src.__dict__.setdefault("_mask_cache", {})
    key = (_signature(src, tensor, act, src.__dict__.setdefault("_mask_sigs", {})), past)
    if key not in cache:
        cache[key] = _analyse(src, tensor, act, past)
    return cache[key]


def _signature(src, t: str, act: set[str], memo: dict) -> int:
    """Structural hash of how ``t`` is computed (op types, attributes, constants, inputs)."""
    if t in memo:
        return memo[t]
    memo[t] = hash(("pending", t))
    node = src.prod(t)
    if node is None or t in act:
        sig = hash(("leaf", t))
    else:
        c = src.const(t)
        if c is not None:
            sig = hash(("const", c.dtype.str, c.shape, c.tobytes()))
        else:
            attrs = tuple(sorted((a.name, str(onnx.helper.get_attribute_value(a))) for a in node.attribute))
            sig = hash((node.op_type, attrs, list(node.output).index(t),
                        tuple(_signature(src, i, act, memo) if i else 0 for i in node.input)))
    memo[t] = sig
    return sig


def _ancestors(src, tensor: str, act: set[str]):
    """Nodes computing ``tensor``; ACT tensors they read (only via Shape) become inputs."""
    seen, stack, nodes, cut = set(), [tensor], set(), set()
    while stack:
        t = stack.pop()
        if t in seen or not t:
            continue
        seen.add(t)
        if t in act:
            cut.add(t)
            continue
        i = src.producer.get(t)
        if i is None:
            continue
        nodes.add(i)
        stack.extend(src.nodes[i].input)
    return sorted(nodes), cut


def _analyse(src, tensor: str, act: set[str], past: frozenset = frozenset()) -> MaskFacts:
    c = src.const(tensor)
    if c is not None:           # folded by a static-shape export: read it as it is
        return _read(np.asarray(c), padding=False)
    if tensor in src.inits:     # folded, and too big to inline: its stored values are the mask
        if not src.has_data(tensor):
            raise InputFileError(f"attention mask '{tensor}' is an initializer whose data is not in the file "
                                 f"(external data absent): cannot tell which keys it masks; export with the "
                                 f"weights or keep the data file beside the model", where=src.where)
        return _read(np.asarray(src.array(tensor)), padding=False)
    sub = Subgraph(src, tensor, act)
    facts = None
    for length in PROBE_LENGTHS:
        try:
            m = _probe(sub, length, past)
        except InputFileError:
            if facts is None:
                raise
            break     # a trace whose index arithmetic holds only up to some length: keep what was seen
        facts = _read(m, sub.padding)
        if facts.sliding_window or not facts.causal or sub.static:
            break  # static inputs: every probe would see the same length
    return facts


def _probe(sub, length: int, past: frozenset) -> np.ndarray:
    """The mask for `length` new tokens; with a KV cache, after a cache of `length // 2` tokens (a
    trace that trims the cache to a sliding window gives a true mask only then)."""
    if not past:
        return sub.run(length, past)
    try:
        return sub.run(length, past, cache_filled=True)
    except InputFileError:
        # an empty cache is no substitute: a trace that trims its cache to a window reads the
        # window only off a filled one, so a mask read that way could silently lose the window
        raise InputFileError(f"attention mask '{sub.tensor}' cannot be evaluated after a cache of {length // 2} tokens "
                             f"(an attention_mask of {length + length // 2}): the export's mask arithmetic is fixed to "
                             f"the cache length it was traced with; export without past inputs, or with dynamo",
                             where=sub.src.where) from None


class Subgraph:
    """The nodes computing an AUX ``tensor`` (a mask, a position bias) from the graph inputs,
    positions and shapes, runnable on onnxruntime for a probe sequence length.  Initializers it
    reads are taken from the file (inline, or external data next to it)."""

    def __init__(self, src, tensor: str, act: set[str], what: str = "attention mask"):
        self.src, self.tensor = src, tensor
        nodes, cut = _ancestors(src, tensor, act)
        for i in nodes:
            n = src.nodes[i]
            if any(t in cut for t in n.input) and n.op_type != "Shape":
                raise InputFileError(f"{what} '{tensor}' depends on activation values via "
                                     f"node '{n.name}' ({n.op_type}); expected a {what} built from inputs and positions",
                                     where=src.where)
        used = {t for i in nodes for t in src.nodes[i].input if t}
        self.nodes = nodes
        self.graph_inputs = [t for t in src.graph_inputs if t in used] + sorted(cut)
        self.inits = [_init_data(src, src.inits[t], tensor, what) for t in sorted(used) if t in src.inits]
        self.used = used
        self.padding = any(t in src.graph_inputs and "mask" in t.lower() for t in used)
        self.static = all(isinstance(d, int) and d > 0 for t in self.graph_inputs for d in src.shapes.get(t, (None,)))

    def run(self, length: int, past: frozenset = frozenset(), cache_filled: bool = False) -> np.ndarray:
        return _run(self.src, self.nodes, self.graph_inputs, self.inits, self.tensor, length, past, cache_filled)


def _init_data(src, init, tensor: str, what: str):
    """An initializer with its values: external data is read from its side file when that exists."""
    if init.data_location != onnx.TensorProto.EXTERNAL:
        return init
    if not src.has_data(init.name) and what == "attention mask" and _relative_table(src, init.name):
        # a relative position table (onnx_bias): the bias's values do not change what is masked
        from onnx import numpy_helper
        dt = helper.tensor_dtype_to_np_dtype(init.data_type) if init.data_type != onnx.TensorProto.BFLOAT16 \
            else np.float32
        return numpy_helper.from_array(np.zeros(tuple(init.dims), dt), init.name)
    if not src.has_data(init.name):
        loc = next((e.value for e in init.external_data if e.key == "location"), "?")
        raise InputFileError(f"{what} '{tensor}' needs initializer '{init.name}' whose data is in the "
                             f"side file '{loc}', which is not next to the model: copy it alongside", where=src.where)
    from onnx import numpy_helper
    return numpy_helper.from_array(src.array(init.name), init.name)


def _run(src, nodes, graph_inputs, inits, tensor, length, past=frozenset(), cache_filled=False):
    import onnxruntime as ort
    vis = []
    feeds = {}
    for t in graph_inputs:
        shape = src.shapes.get(t)
        elem = src.elem.get(t, onnx.TensorProto.INT64)
        if shape is None:
            raise InputFileError(f"graph input '{t}' has no shape; cannot analyse the attention mask", where=src.where)
        dims = [d if isinstance(d, int) and d > 0 else None for d in shape]
        # with a KV cache, a cache of `length` earlier tokens: a trace that trims the cache to a
        # window (a static Slice of the past) only gives a true mask for a cache at least that long
        cached = length // 2 if past and cache_filled else 0
        concrete = []
        for k, d in enumerate(dims):
            last = k == len(dims) - 1
            concrete.append(d if d is not None else (1 if k == 0 else cached if t in past and k == 2
                                                     else length + cached if "mask" in t.lower() and last
                                                     else length))
        vis.append(helper.make_tensor_value_info(t, elem, [None] * len(shape)))
        dtype = helper.tensor_dtype_to_np_dtype(elem)
        if "mask" in t.lower():
            feeds[t] = np.ones(concrete, dtype=dtype)
        elif "position" in t.lower():
            feeds[t] = np.broadcast_to(np.arange(cached, cached + length, dtype=dtype), concrete).copy()
        else:
            feeds[t] = np.zeros(concrete, dtype=dtype)
    out = helper.make_empty_tensor_value_info(tensor)
    graph = helper.make_graph([_f32(src.nodes[i]) for i in nodes], "mask", vis, [out],
                              initializer=[_f32_tensor(t) for t in inits])
    model = helper.make_model(graph, opset_imports=list(src.model.opset_import), ir_version=src.model.ir_version)
    blob = model.SerializeToString()

    def evaluate():
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 3
        sess = ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])
        return np.asarray(sess.run([tensor], feeds)[0])
    try:  # a hostile attribute can abort onnxruntime: it runs in a child process
        return isolated.call(evaluate, timeout=RUN_SECONDS)
    except isolated.NativeFailure as e:
        raise InputFileError(f"cannot evaluate attention mask '{tensor}': onnxruntime {shorten(str(e), 200)}",
                             where=src.where) from None


def _relative_table(src, name: str) -> bool:
    from .onnx_bias import relative_lookup
    users = src.users(name)
    return bool(users) and all(u.op_type == "Gather" and relative_lookup(src, u) is not None for u in users)


def _f32_tensor(t):
    """onnxruntime's CPU kernels lack bfloat16 for mask ops; masks only need the order of values."""
    if t.data_type != onnx.TensorProto.BFLOAT16:
        return t
    from onnx import numpy_helper
    return numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name)


def _f32(node):
    bf16 = onnx.TensorProto.BFLOAT16
    if not any(a.i == bf16 or a.t.data_type == bf16 for a in node.attribute):
        return node
    new = onnx.NodeProto()
    new.CopyFrom(node)
    for a in new.attribute:
        if a.name == "to" and a.i == bf16:
            a.i = onnx.TensorProto.FLOAT
        if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == bf16:
            a.t.CopyFrom(_f32_tensor(a.t))
    return new


def _read(m: np.ndarray, padding: bool) -> MaskFacts:
    while m.ndim > 2:
        m = m[0]
    allowed = m if m.dtype == np.bool_ else m > -1e4  # additive masks: 0 allowed, large negative masked
    q, k = allowed.shape
    off = k - q  # keys before the first query (cache)
    future_allowed = np.triu(allowed, k=off + 1).any()
    causal = bool(k > off + 1 and not future_allowed)
    window = 0
    if causal:
        # first allowed key of each row; keys before it (but in the past) are outside the window
        first = np.argmax(allowed, axis=1)
        rows = np.arange(q)
        cut = (first > 0) & allowed[rows, first]
        if cut.any():
            window = int((rows + off - first + 1)[cut].min())
    return MaskFacts(causal=causal, sliding_window=window, padding=padding)
