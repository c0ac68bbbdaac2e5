"""Attention position biases: T5's relative position buckets (a learned [buckets, heads] table) and
ALiBi slopes, in the IR op (verifier, FLOPs), the interpreter and the ONNX frontend."""
from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pytest
import torch

from graph_util import small_graph
from wafercc.ir import verify
from wafercc.ir.ops import OPS, CostContext, relative_position_bucket
from wafercc.sim import Interpreter


@pytest.mark.parametrize("nb,md,bi", [(32, 128, True), (32, 128, False), (16, 50, True), (8, 20, False)])
def test_relative_bucket_matches_transformers(nb, md, bi):
    from transformers.models.t5.modeling_t5 import T5Attention
    rel = torch.arange(-400, 401)
    want = T5Attention._relative_position_bucket(rel, bidirectional=bi, num_buckets=nb, max_distance=md).numpy()
    np.testing.assert_array_equal(relative_position_bucket(rel.numpy(), nb, md, bi), want)


def _graph(bias, table=None, heads=2, dh=2, causal=False):
    g = small_graph([(r, ("batch", "seq", heads * dh)) for r in "qkv"], [("tab", table.shape)] if table is not None else [])
    ins = {"q": "q", "k": "k", "v": "v"}
    if table is not None:
        ins["bias_table"] = "tab"
    g.add_node("attention", ins, ["o"], name="attn", attrs={"num_heads": heads, "num_kv_heads": heads, "head_dim": dh,
                                                          "causal": causal, "position_bias": bias})
    g.outputs = ["o"]
    return g


def _reference(q, k, v, bias, heads, dh, causal):
    s = q.shape[1]
    qh, kh, vh = (x.reshape(1, s, heads, dh).transpose(0, 2, 1, 3) for x in (q, k, v))
    sc = qh @ kh.transpose(0, 1, 3, 2) / np.sqrt(dh) + bias
    if causal:
        sc = np.where(np.tril(np.ones((s, s), bool)), sc, -np.inf)
    p = np.exp(sc - sc.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return (p @ vh).transpose(0, 2, 1, 3).reshape(1, s, heads * dh)


def test_kernel_applies_alibi_and_relative_bias():
    rng = np.random.default_rng(0)
    s, heads, dh = 12, 2, 2
    q, k, v = (rng.normal(size=(1, s, heads * dh)) for _ in range(3))
    rel = np.arange(s)[None, :] - np.arange(s)[:, None]           # key - query
    slopes = [0.5, 0.125]
    o = Interpreter(_graph({"kind": "alibi", "slopes": slopes}, causal=True), {}).step(inputs={"q": q, "k": k, "v": v})["o"]
    want = _reference(q, k, v, np.array(slopes)[:, None, None] * rel, heads, dh, True)
    np.testing.assert_allclose(o, want, rtol=1e-5, atol=1e-6)
    table = rng.normal(size=(8, heads))
    pb = {"kind": "relative", "num_buckets": 8, "max_distance": 6, "bidirectional": True}
    o = Interpreter(_graph(pb, table), {"tab": table}).step(inputs={"q": q, "k": k, "v": v})["o"]
    bias = np.moveaxis(table[relative_position_bucket(rel, 8, 6, True)], -1, 0)
    np.testing.assert_allclose(o, _reference(q, k, v, bias, heads, dh, False), rtol=1e-5, atol=1e-6)
    # without the bias the output differs: the test would see a dropped bias
    assert np.abs(o - _reference(q, k, v, 0.0, heads, dh, False)).max() > 1e-2


def test_verifier_and_flops():
    pb = {"kind": "relative", "num_buckets": 8, "max_distance": 6, "bidirectional": True}
    verify(_graph(pb, np.zeros((8, 2))))
    bad = [({"kind": "alibi", "slopes": [0.5]}, None, "slopes"),
           ({"kind": "rope"}, None, "kind"),
           (pb, None, "needs operand bias_table"),
           (pb, np.zeros((6, 2)), "expected \\[8, 2\\]"),
           ({**pb, "max_distance": 2}, np.zeros((8, 2)), "must exceed"),
           ({"kind": "alibi", "slopes": [1.0, 2.0]}, np.zeros((8, 2)), "without a relative")]
    for b, table, msg in bad:
        with pytest.raises(Exception, match=msg):
            verify(_graph(b, table))
    g0, g1 = _graph(None), _graph({"kind": "alibi", "slopes": [1.0, 2.0]})
    ctx = CostContext({"batch": 1, "seq": 10})
    f0, f1 = (g.node_cost(g.nodes[0], ctx).flops for g in (g0, g1))
    assert f1 - f0 == 2 * 10 * 10          # one add per score: heads x query x key pairs
    assert OPS["attention"].operand("bias_table").optional


def _export(model, inputs, path):
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, inputs, str(path), input_names=["input_ids", "attention_mask"], output_names=["y"],
                          dynamo=False, opset_version=17,
                          dynamic_axes={n: {0: "batch", 1: "seq"} for n in ("input_ids", "attention_mask", "y")})


class _Out(torch.nn.Module):
    def __init__(self, m, field):
        super().__init__()
        self.m, self.field = m, field

    def forward(self, input_ids, attention_mask):
        kw = {} if self.field == "last_hidden_state" else {"use_cache": False}
        return getattr(self.m(input_ids=input_ids, attention_mask=attention_mask, **kw), self.field)


@pytest.mark.parametrize("arch", ["t5", "bloom"])
def test_export_lowers_with_position_bias_and_matches_onnxruntime(arch, tmp_path):
    """T5's relative position table (Gather by bucketed key - query positions, computed once and
    shared by the layers) and BLOOM's ALiBi (slopes times the key positions, through a fused
    [b, s, heads, 3, head_dim] QKV and bmm-shaped scores) become position_bias on the IR attention;
    the table is a counted weight; the IR computes what onnxruntime computes on 150 tokens."""
    import onnxruntime as ort
    import transformers

    import wafercc
    from wafercc.sim.weights import load_weights
    torch.manual_seed(0)
    if arch == "t5":
        cfg = transformers.T5Config(d_model=64, d_kv=16, d_ff=128, num_heads=4, num_layers=2, vocab_size=128)
        model, field = transformers.T5EncoderModel(cfg).eval(), "last_hidden_state"
    else:
        cfg = transformers.BloomConfig(hidden_size=64, n_head=4, n_layer=2, vocab_size=128)
        model, field = transformers.BloomForCausalLM(cfg).eval(), "logits"
    with torch.no_grad():   # distinct values everywhere (norm weights start at 1: they would look tied)
        for prm in model.parameters():
            prm.add_(0.02 * torch.randn_like(prm))
    ids = (np.arange(150, dtype=np.int64)[None] * 7) % 128
    path = tmp_path / "m.onnx"
    _export(_Out(model, field), (torch.tensor(ids[:, :8]), torch.ones(1, 8, dtype=torch.long)), path)
    c = wafercc.compile(path, until="ir", cache=False)
    attn = [n for n in c.graph.nodes if n.op == "attention"]
    assert len(attn) == 2
    pbs = [n.attrs["position_bias"] for n in attn]
    if arch == "t5":
        assert pbs == [{"kind": "relative", "num_buckets": 32, "max_distance": 128, "bidirectional": True}] * 2
        assert len({n.inputs["bias_table"] for n in attn}) == 1       # layer 0's table, reused
    else:
        slopes = [2 ** (-8 * (i + 1) / 4) for i in range(4)]
        for pb in pbs:
            assert pb["kind"] == "alibi" and np.allclose(pb["slopes"], slopes, rtol=1e-5)
    params = sum(p.numel() for p in {p.data_ptr(): p for p in model.parameters()}.values())
    assert c.facts.params == params
    interp = Interpreter(c.graph, load_weights(c.graph, path), None, context=256)
    interp.reset(1)
    got = interp.step(ids, np.ones_like(ids), {})[c.graph.outputs[0]]
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
