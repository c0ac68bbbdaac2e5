"""Files fused for onnxruntime (com.microsoft contrib ops) lower like the exports they came from:
onnxruntime's transformer optimizer and onnxscript's ort_fusions run here on tiny exports, and a
hand-built Llama-style GroupQueryAttention + RotaryEmbedding decoder with past covers what the
installed fusers do not emit on them (onnxruntime-genai's form)."""
from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import wafercc
from wafercc.errors import WaferccError

sys.path.insert(0, os.path.dirname(__file__))
from onnx_compare import ir_vs_onnxruntime  # noqa: E402
from tiny_hf import build, export, inputs, param_count  # noqa: E402

from corpus import fuse  # noqa: E402


def _contrib_ops(path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node if n.domain == "com.microsoft"}


def _kv(arch) -> int:
    return 2 * 2 * 64 * 4 if arch == "gpt2" else 2 * 2 * 2 * 16 * 4   # layers x (gpt2: 4 x 16 | llama: 2 kv x 16)


@pytest.fixture(scope="module")
def fused(tmp_path_factory):
    """(arch, fuser) -> (fused path, torch params), built once for the module."""
    d = tmp_path_factory.mktemp("fused")
    cache = {}

    def get(arch, fuser):
        if (arch, fuser) not in cache:
            m = build(arch)
            src, out = d / f"{arch}-{fuser}-src.onnx", d / f"{arch}-{fuser}.onnx"
            if fuser == "ort":
                export(m, str(src), "legacy17")
            else:   # static shapes: onnxscript's MHA fusion of a dynamic-shape GPT-2 leaves a Gemm on rank 3
                with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                        contextlib.redirect_stderr(io.StringIO()):
                    warnings.simplefilter("ignore")
                    torch.onnx.export(m, inputs(), str(src), dynamo=True, opset_version=18,
                                      input_names=["input_ids", "attention_mask"])
            if fuser == "ort":
                fuse.ort_optimizer(arch, str(src), str(out))
            else:
                fuse.ort_fusions(str(src), str(out))
            cache[arch, fuser] = out, param_count(m)
        return cache[arch, fuser]
    return get


@pytest.mark.parametrize("arch,fuser,ops", [
    ("gpt2", "ort", {"SkipLayerNormalization", "FastGelu"}),
    ("gpt2", "onnxscript", {"SkipLayerNormalization", "MultiHeadAttention"}),
    ("llama", "onnxscript", {"SkipSimplifiedLayerNormalization"}),
])
def test_fused_decoder_lowers_with_torch_params_and_onnxruntime_numerics(fused, arch, fuser, ops):
    path, params = fused(arch, fuser)
    assert ops <= _contrib_ops(path)
    c = wafercc.compile(path, until="ir", cache=False)
    assert c.facts.op_counts["attention"] == 2
    assert c.facts.params == params and c.facts.kv_bytes_per_token == _kv(arch)
    if (arch, fuser) != ("gpt2", "onnxscript"):   # onnxscript 0.7.2's MHA fusion leaves GPT-2's Gemm
        assert ir_vs_onnxruntime(c.graph, path) < 1e-4   # on a rank-3 output: onnxruntime cannot load it


def test_fused_encoder_attention_and_bias_gelu(fused):
    """onnxscript fuses BERT's attention into one Attention (a [64, 192] QKV weight and bias) and its
    MLP into BiasGelu: the expansion is HF's eager attention and an erf gelu."""
    path, params = fused("bert", "onnxscript")
    assert {"Attention", "BiasGelu", "SkipLayerNormalization"} <= _contrib_ops(path)
    c = wafercc.compile(path, until="ir", cache=False)
    assert c.facts.op_counts["attention"] == 2 and c.facts.kv_bytes_per_token == 0
    pooler = 64 * 64 + 64          # BertModel's pooler: not on the path to last_hidden_state
    assert c.facts.params == params - pooler
    acts = {n.attrs.get("fn") for n in c.graph.nodes if n.op == "activation"}
    assert "gelu" in acts


# -- a GroupQueryAttention decoder with past, as onnxruntime-genai writes Llama ---------------------
H, HEADS, KV, DH, V, MAXPOS = 64, 4, 2, 16, 128, 64


def _gqa_model(path, rotary_nodes: bool, theta: float = 10000.0):
    """One layer: embedding, SimplifiedLayerNormalization, q/k/v MatMuls, rotary (RotaryEmbedding
    nodes, or GQA's do_rotary), GroupQueryAttention with past, o-proj, SkipSimplifiedLayerNormalization,
    FastGelu MLP, lm head. Positions, seqlens_k and total length computed from the mask (genai's form)."""
    rng = np.random.default_rng(0)
    w = {n: (rng.standard_normal(s) * 0.1).astype(np.float32) for n, s in [
        ("embed", (V, H)), ("ln1", (H,)), ("wq", (H, HEADS * DH)), ("wk", (H, KV * DH)), ("wv", (H, KV * DH)),
        ("wo", (HEADS * DH, H)), ("ln2", (H,)), ("w1", (H, 128)), ("b1", (128,)), ("w2", (128, H)),
        ("lnf", (H,)), ("head", (H, V))]}
    for n in ("ln1", "ln2", "lnf"):
        w[n] += 1.0
    inv = theta ** (-np.arange(0, DH, 2) / DH)
    ang = np.arange(MAXPOS)[:, None] * inv[None]
    w["cos"], w["sin"] = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for n, a in w.items()]
    inits += [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
              [("one", [1]), ("axis1", [1]), ("zero_s", 0), ("one_s", 1)]]
    ms = "com.microsoft"
    nodes = [
        helper.make_node("Gather", ["embed", "input_ids"], ["x0"]),
        helper.make_node("SimplifiedLayerNormalization", ["x0", "ln1"], ["h1"], epsilon=1e-5, axis=-1),
        helper.make_node("MatMul", ["h1", "wq"], ["q"]), helper.make_node("MatMul", ["h1", "wk"], ["k"]),
        helper.make_node("MatMul", ["h1", "wv"], ["v"]),
        # seqlens_k = sum(mask) - 1, total = mask width; positions = past + arange(s)
        helper.make_node("ReduceSum", ["attention_mask", "axis1"], ["msum"], keepdims=0),
        helper.make_node("Sub", ["msum", "one"], ["sl64"]),
        helper.make_node("Cast", ["sl64"], ["seqlens_k"], to=TensorProto.INT32),
        helper.make_node("Shape", ["attention_mask"], ["tot64"], start=1, end=2),
        helper.make_node("Squeeze", ["tot64"], ["tot64s"]),
        helper.make_node("Cast", ["tot64s"], ["total"], to=TensorProto.INT32),
        helper.make_node("Shape", ["input_ids"], ["s1"], start=1, end=2),
        helper.make_node("Squeeze", ["s1"], ["s"]),
        helper.make_node("Sub", ["tot64s", "s"], ["past_len"]),
        helper.make_node("Range", ["past_len", "tot64s", "one_s"], ["pos1"]),
        helper.make_node("Unsqueeze", ["pos1", "zero1"], ["pos_row"]),
        helper.make_node("Shape", ["input_ids"], ["ids_shape"]),
        helper.make_node("Expand", ["pos_row", "ids_shape"], ["pos"]),
    ]
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "zero1"))
    gqa_in = ["q", "k", "v", "past_key", "past_value", "seqlens_k", "total"]
    gqa_kw = dict(num_heads=HEADS, kv_num_heads=KV)
    if rotary_nodes:
        nodes += [helper.make_node("RotaryEmbedding", ["q", "pos", "cos", "sin"], ["qr"], domain=ms, num_heads=HEADS),
                  helper.make_node("RotaryEmbedding", ["k", "pos", "cos", "sin"], ["kr"], domain=ms, num_heads=KV)]
        gqa_in[:2] = ["qr", "kr"]
    else:
        gqa_in += ["cos", "sin", "pos"]
        gqa_kw["do_rotary"] = 1
    nodes += [
        helper.make_node("GroupQueryAttention", gqa_in, ["attn", "present_key", "present_value"], domain=ms,
                         **gqa_kw),
        helper.make_node("MatMul", ["attn", "wo"], ["o"]),
        helper.make_node("SkipSimplifiedLayerNormalization", ["o", "x0", "ln2"], ["h2", "", "", "x1"],
                         domain=ms, epsilon=1e-5),
        helper.make_node("MatMul", ["h2", "w1"], ["f1"]),
        helper.make_node("FastGelu", ["f1", "b1"], ["g"], domain=ms),
        helper.make_node("MatMul", ["g", "w2"], ["f2"]),
        helper.make_node("SkipSimplifiedLayerNormalization", ["f2", "x1", "lnf"], ["hf"], domain=ms, epsilon=1e-5),
        helper.make_node("MatMul", ["hf", "head"], ["logits"]),
    ]
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    graph = helper.make_graph(nodes, "gqa", [
        helper.make_tensor_value_info("input_ids", i64, ["b", "s"]),
        helper.make_tensor_value_info("attention_mask", i64, ["b", "t"]),
        helper.make_tensor_value_info("past_key", f32, ["b", KV, "p", DH]),
        helper.make_tensor_value_info("past_value", f32, ["b", KV, "p", DH])],
        [helper.make_tensor_value_info("logits", f32, ["b", "s", V]),
         helper.make_tensor_value_info("present_key", f32, ["b", KV, "t", DH]),
         helper.make_tensor_value_info("present_value", f32, ["b", KV, "t", DH])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ms, 1)])
    onnx.save(model, str(path))
    return sum(a.size for a in w.values() if a is not w["cos"] and a is not w["sin"])


@pytest.mark.parametrize("rotary_nodes", [True, False], ids=["RotaryEmbedding", "do_rotary"])
def test_group_query_attention_with_past_and_rotary(tmp_path, rotary_nodes):
    import onnxruntime as ort

    from wafercc.sim.reference import Interpreter
    from wafercc.sim.weights import load_weights
    path = tmp_path / "gqa.onnx"
    params = _gqa_model(path, rotary_nodes, theta=500.0)
    c = wafercc.compile(path, until="ir", cache=False)
    attn = [n for n in c.graph.nodes if n.op == "attention"]
    assert len(attn) == 1 and attn[0].attrs["causal"] and attn[0].attrs["num_kv_heads"] == KV
    rot = [n for n in c.graph.nodes if n.op == "rotary"]
    assert len(rot) == 2 and all(n.attrs.get("theta") == 500.0 for n in rot)
    assert c.facts.params == params and c.facts.kv_bytes_per_token == 2 * KV * DH * 4
    # the IR's prefill and one decode step against onnxruntime feeding its own present back
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    interp = Interpreter(c.graph, load_weights(c.graph, path), None, context=64)
    interp.reset(2)
    ids = (np.arange(16, dtype=np.int64).reshape(2, 8) * 7 + 3) % V
    past = np.zeros((2, KV, 0, DH), np.float32)
    pk, pv = past, past
    for step in (ids, ids[:, :1] + 1):
        total = pk.shape[2] + step.shape[1]
        want, pk, pv = sess.run(None, {"input_ids": step, "attention_mask": np.ones((2, total), np.int64),
                                       "past_key": pk, "past_value": pv})
        got = interp.step(step, np.ones_like(step), {})[c.graph.outputs[0]]   # the IR keeps its own cache
        assert np.abs(got - want).max() / np.abs(want).max() < 1e-4


def _one_node_model(path, node, inputs, outputs):
    graph = helper.make_graph([helper.make_node("Gather", ["embed", "input_ids"], ["x"]), node], "m",
                              [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"]), *inputs],
                              outputs, [numpy_helper.from_array(np.ones((V, H), np.float32), "embed")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("com.microsoft", 1)]), str(path))


@pytest.mark.parametrize("node,why", [
    (helper.make_node("MultiHeadAttention", ["x5"], ["y"], domain="com.microsoft", num_heads=4, name="mha"),
     "packed QKV"),
    (helper.make_node("Inverse", ["x"], ["y"], domain="com.microsoft", name="inv"),
     "contrib op without a standard-ONNX expansion"),
    (helper.make_node("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"], domain="com.microsoft",
                      num_heads=4, is_packed_batching=1, name="rot"), "packed \\(ragged\\) batches"),
])
def test_inexpressible_contrib_forms_are_refused_in_one_line(tmp_path, node, why):
    path = tmp_path / "m.onnx"
    f32 = TensorProto.FLOAT
    extra = [helper.make_tensor_value_info("x5", f32, ["b", "s", 4, 3, 16]),
             helper.make_tensor_value_info("pos", TensorProto.INT64, ["b", "s"]),
             helper.make_tensor_value_info("cos", f32, [64, 8]), helper.make_tensor_value_info("sin", f32, [64, 8])]
    _one_node_model(path, node, [e for e in extra if e.name in node.input],
                    [helper.make_tensor_value_info("y", f32, None)])
    with pytest.raises(WaferccError, match=f"node '{node.name}'.*{why}") as e:
        wafercc.compile(path, until="ir", cache=False)
    assert "\n" not in str(e.value)


def test_reordered_partial_rotary_keeps_its_width_and_theta(tmp_path):
    """onnxruntime's optimizer reorders Phi-3's partial-rotary nodes, so a slice bound read off cos's
    shape came first among the rotation's trig inputs: it was taken for the table (rotary_dim 2, no
    theta), 2.9e-2 off onnxruntime with torch's counts, silently."""
    from corpus import archs, variants
    src, out = tmp_path / "src.onnx", tmp_path / "fused.onnx"
    variants.export("phi3", variants.VARIANTS["ts17"], str(src))
    fuse.ort_optimizer("phi3", str(src), str(out))
    c = wafercc.compile(out, until="ir", cache=False)
    rot = [nd for nd in c.graph.nodes if nd.op == "rotary"]
    assert rot and all(nd.attrs.get("rotary_dim", 0) in (0, 16) and nd.attrs["theta"] == 10000.0 for nd in rot)
    assert c.facts.params == archs.unique_param_count(archs.build_model("phi3"))
    assert ir_vs_onnxruntime(c.graph, out) < 1e-4
