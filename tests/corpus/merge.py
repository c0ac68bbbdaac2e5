"""optimum's "merged" decoder layout, reproduced (optimum-onnx pins transformers below the version the
project uses, so it is not a test dependency; `optimum.onnx.merge_decoders` writes the same layout):

- the decoder without past (inputs ids and mask; outputs logits and present.*) and the decoder with
  past become the else and then branches of one ``If`` on a ``use_cache_branch`` bool[1] graph input;
- the graph's inputs are the union of both decoders' (so the past inputs too); its outputs the
  decoder's;
- initializers with equal contents are shared by both branches from the outer graph (a name the two
  files give different contents is made unique); scalars and 1-D int initializers stay in their branch,
  as optimum keeps them.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import warnings

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from corpus import archs


class DecoderPresent(archs._Wrapper):
    """forward(input_ids, attention_mask) -> (logits, present k0, v0, ...): optimum's decoder_model.onnx."""

    def forward(self, input_ids, attention_mask):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True)
        return (out.logits, *[t for layer in out.cache.layers for t in (layer.keys, layer.values)])


def export_prefill(arch: str, path: str, with_past_inputs: dict) -> None:
    """The no-past decoder of a merged pair, TorchScript opset 17 with dynamic axes like ts17-past."""
    from corpus.variants import _axes
    model = archs.build_model(arch)
    inputs = archs.example_inputs(arch, model)
    outs = ["logits", *[n.replace("past.", "present.") for n in with_past_inputs if n.startswith("past.")]]
    axes = _axes(list(inputs) + outs, past=False)
    for n in outs[1:]:
        axes[n] = {0: "batch", 2: "total_seq"}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(DecoderPresent(model).eval(), tuple(inputs.values()), path, dynamo=False, opset_version=17,
                          input_names=list(inputs), output_names=outs, dynamic_axes=axes)


def _digest(t: onnx.TensorProto) -> str:
    return hashlib.sha256(numpy_helper.to_array(t).tobytes() + str(t.dims).encode() + bytes([t.data_type])).hexdigest()


def _stays_in_branch(t: onnx.TensorProto) -> bool:
    return len(t.dims) == 0 or (len(t.dims) == 1 and t.data_type in (onnx.TensorProto.INT32, onnx.TensorProto.INT64))


def merge(decoder_path: str, with_past_path: str, out_path: str) -> None:
    models = [onnx.load(decoder_path), onnx.load(with_past_path)]
    shared, by_digest, branches = {}, {}, []
    for k, m in enumerate(models):
        rename, local = {}, []
        for t in m.graph.initializer:
            if _stays_in_branch(t):
                local.append(t)
                continue
            d = _digest(t)
            if d in by_digest:
                rename[t.name] = by_digest[d]
                continue
            name = t.name if t.name not in shared else f"{t.name}_merged_{k}"
            c = onnx.TensorProto()
            c.CopyFrom(t)
            c.name = name
            shared[name] = c
            by_digest[d] = name
            rename[t.name] = name
        nodes = []
        for n in m.graph.node:
            c = onnx.NodeProto()
            c.CopyFrom(n)
            c.input[:] = [rename.get(t, t) for t in n.input]
            nodes.append(c)
        branches.append(helper.make_graph(nodes, ["no_past", "with_past"][k], [], list(m.graph.output),
                                          initializer=local))
    inputs = {i.name: i for m in models for i in m.graph.input if i.name not in {t.name for t in m.graph.initializer}}
    switch = helper.make_tensor_value_info("use_cache_branch", onnx.TensorProto.BOOL, [1])
    node = helper.make_node("If", ["use_cache_branch"], [o.name for o in models[0].graph.output], name="optimum::if",
                            then_branch=branches[1], else_branch=branches[0])
    g = helper.make_graph([node], "merged", [*inputs.values(), switch], list(models[0].graph.output),
                          initializer=list(shared.values()))
    merged = helper.make_model(g, opset_imports=list(models[0].opset_import), ir_version=9)
    onnx.save(merged, out_path)


def past_feeds_are_empty(sess, batch: int) -> dict:
    """onnxruntime feeds of a merged file's past inputs for the no-past branch (optimum's own dummy)."""
    feeds = {}
    for i in sess.get_inputs():
        if i.name.startswith("past."):
            feeds[i.name] = np.zeros([batch if k == 0 else 0 if k == 2 else d for k, d in enumerate(i.shape)],
                                     np.float32)
    return feeds
