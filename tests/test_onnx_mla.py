"""Multi-head latent attention (DeepSeek-V2/V3 MLA): the IR attention op's MLA mode (shapes, KV bytes,
FLOPs, verifier) and its reference kernel against a direct NumPy transcription of HF's forward."""
from __future__ import annotations

import math

import numpy as np
import pytest

from graph_util import small_graph
from wafercc.ir import CostContext, ValueKind, DType
from wafercc.ir.verify import verify
from wafercc.sim import Interpreter

H, NOPE, ROPE, R, VD = 2, 6, 4, 8, 5


def _mla_graph(cached=True, **extra):
    g = small_graph([("q", ("batch", "seq", H * NOPE)), ("qr", ("batch", "seq", H * ROPE)),
                     ("lat", ("batch", "seq", R)), ("kr", ("batch", "seq", ROPE))],
                    [("wkv", (R, H * (NOPE + VD)))])
    ins = {"q": "q", "q_rope": "qr", "k": "lat", "v": "kr", "kv_b_w": "wkv"}
    if cached:
        g.add_value("kc", ("batch", 1, "context", R), DType.F32, ValueKind.KV_CACHE)
        g.add_value("vc", ("batch", 1, "context", ROPE), DType.F32, ValueKind.KV_CACHE)
        ins.update(k_cache="kc", v_cache="vc")
    attrs = {"num_heads": H, "num_kv_heads": 1, "head_dim": NOPE + ROPE, "causal": True,
             "kv_lora_rank": R, "rope_dim": ROPE, "v_head_dim": VD, **extra}
    g.add_node("attention", ins, ["o"], name="attn", attrs=attrs)
    g.outputs.append("o")
    return g


def _hf(q, qr, lat, kr, w):
    """HF DeepseekV3Attention after the projections and rotary: expand_kv, cat, causal softmax."""
    b, s, _ = q.shape
    qh = np.concatenate([q.reshape(b, s, H, NOPE), qr.reshape(b, s, H, ROPE)], -1).transpose(0, 2, 1, 3)
    kv = (lat @ w).reshape(b, s, H, NOPE + VD).transpose(0, 2, 1, 3)
    k = np.concatenate([kv[..., :NOPE], np.broadcast_to(kr[:, None], (b, H, s, ROPE))], -1)
    sc = qh @ k.transpose(0, 1, 3, 2) / math.sqrt(NOPE + ROPE)
    sc = np.where(np.tril(np.ones((s, s), bool)), sc, -np.inf)
    p = np.exp(sc - sc.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return (p @ kv[..., NOPE:]).transpose(0, 2, 1, 3).reshape(b, s, H * VD)


def test_mla_shapes_kv_bytes_and_flops():
    g = _mla_graph()
    verify(g)
    assert g.values["o"].shape == ("batch", "seq", H * VD)
    node = g.nodes[0]
    c = g.node_cost(node, CostContext({"batch": 1, "seq": 1, "context": 100}))
    assert c.kv_bytes_per_token == (R + ROPE) * 4          # what HF caches: the latent and the rope key
    assert c.weight_bytes == R * H * (NOPE + VD) * 4
    # the expanded form: every attended key up-projected once, QK^T over nope + rope, PV over v
    assert c.flops == 100 * 2 * R * H * (NOPE + VD) + H * 100 * (2 * (NOPE + ROPE) + 2 * VD + 5)


def test_mla_verifier_rejects_bad_operands():
    g = _mla_graph(num_kv_heads=2)
    with pytest.raises(Exception, match="num_kv_heads must be 1"):
        verify(g)
    g = _mla_graph()
    g.values["wkv"].shape = (R, H * NOPE)
    with pytest.raises(Exception, match="kv_b_w"):
        verify(g)
    g = _mla_graph()
    g.values["kc"].shape = ("batch", 1, "context", NOPE + ROPE)   # a per-head K cache is not MLA's row
    with pytest.raises(Exception, match="k_cache"):
        verify(g)


def test_mla_kernel_matches_hf_and_decode_equals_prefill():
    rng = np.random.default_rng(0)
    s = 5
    x = {n: rng.normal(size=(1, s, d)).astype(np.float32)
         for n, d in (("q", H * NOPE), ("qr", H * ROPE), ("lat", R), ("kr", ROPE))}
    w = rng.normal(size=(R, H * (NOPE + VD))).astype(np.float32)
    want = _hf(x["q"], x["qr"], x["lat"], x["kr"], w)
    it = Interpreter(_mla_graph(), {"wkv": w})
    full = it.step(inputs=x)["o"]
    np.testing.assert_allclose(full, want, rtol=1e-4, atol=1e-5)
    assert it.kv["attn"]["k"].shape[1::2] == (1, R) and it.kv["attn"]["v"].shape[3] == ROPE
    it.reset()
    it.step(inputs={n: a[:, :3] for n, a in x.items()})
    for j in (3, 4):   # decode: one token at a time against the cached latent and rope key
        o = it.step(inputs={n: a[:, j:j + 1] for n, a in x.items()})["o"]
        np.testing.assert_allclose(o[:, 0], want[:, j], rtol=1e-4, atol=1e-5)
    # no cache: the same numbers
    np.testing.assert_allclose(Interpreter(_mla_graph(cached=False), {"wkv": w}).step(inputs=x)["o"], want,
                               rtol=1e-4, atol=1e-5)


# -- the ONNX frontend: DeepSeek-V3 exports lowered to the MLA mode ---------------------------------

def _ort_logits(path, ids, past=None):
    import onnxruntime as ort
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = {i.name: i for i in sess.get_inputs()}
    feeds = {"input_ids": ids, "attention_mask": np.ones((ids.shape[0], ids.shape[1] + (
        next(iter(past.values())).shape[2] if past else 0)), np.int64)}
    if past is None and any(n.startswith("past") for n in names):   # a with-past export: an empty cache
        past = {n: np.zeros([ids.shape[0] if k == 0 else 0 if k == 2 else d for k, d in enumerate(i.shape)],
                            np.float32) for n, i in names.items() if n.startswith("past")}
    feeds.update(past or {})
    outs = sess.run(None, {n: feeds[n] for n in names})
    present = {o.name.replace("present", "past"): v for o, v in zip(sess.get_outputs(), outs)
               if o.name.startswith("present")}
    return outs[0], present


def _check_deepseek(path, rec=None, h=4, nope=16, rope=8, r=16, dv=16):
    import wafercc
    from wafercc.sim.reference import Interpreter
    from wafercc.sim.weights import load_weights

    c = wafercc.compile(path, until="ir", cache=False)
    attn = [n for n in c.graph.nodes if n.op == "attention"]
    assert len(attn) == 2 and all(n.attrs["kv_lora_rank"] == r and n.attrs["rope_dim"] == rope and
                                  n.attrs["v_head_dim"] == dv and n.attrs["num_heads"] == h and
                                  n.attrs["head_dim"] == nope + rope and n.attrs["causal"] for n in attn)
    assert not any("scale" in n.attrs for n in attn)              # 1/sqrt(nope + rope), split over q and k
    rot = [n for n in c.graph.nodes if n.op == "rotary"]
    assert sorted(n.attrs["num_heads"] for n in rot) == [1, 1, h, h]
    assert not {n.op for n in c.graph.nodes} & {"softmax", "scatter"}
    if rec is not None:
        assert c.facts.params == rec["params_torch"]
        assert c.facts.kv_bytes_per_token == rec["kv_bytes_per_token"] == 2 * (r + rope) * 4
    ids = np.array([[3, 10, 17, 24, 31, 38]])
    want, present = _ort_logits(path, ids[:, :5])
    it = Interpreter(c.graph, load_weights(c.graph, path), None, context=16)
    it.reset(1)
    got = it.step(ids[:, :5], np.ones((1, 5), np.int64), {})[c.graph.outputs[0]]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    if present:   # decode one token against onnxruntime's own cache (the latent and rope-key rows)
        want, _ = _ort_logits(path, ids[:, 5:], present)
        got = it.step(ids[:, 5:], np.ones((1, 1), np.int64), {})[c.graph.outputs[0]]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    return c


@pytest.mark.parametrize("variant", ["ts17", "ts17-past"])
def test_deepseek_v3_export_lowers_to_mla(tmp_path, variant):
    """The corpus's DeepSeek-V3 (rope_interleave, new_empty + ScatterND key assembly): one MLA attention
    per layer with torch's params and the latent + rope-key cache, numbers equal to onnxruntime's."""
    from corpus import build, variants
    rec = build.build_entry(str(tmp_path), "deepseek_v3", variants.VARIANTS[variant])
    assert rec["export_error"] is None, rec
    _check_deepseek(f"{tmp_path}/{rec['path']}", rec)


@pytest.mark.parametrize("extra", [{"rope_interleave": False}, {"q_lora_rank": None, "attention_bias": True}],
                         ids=["rotate_half", "q_proj-biases"])
def test_mla_config_forms_and_unrecognised_attention(tmp_path, extra):
    """rope_interleave off (rotate_half on both rope parts), and a direct q_proj with biased projections
    (DeepSeek-V2-Lite's form), lower too; an MLA whose inside is read elsewhere (here a graph output of
    the up-projected keys) is refused by name, not lowered wrongly."""
    import onnx
    import torch
    import transformers
    from tiny_hf import LogitsOf, export
    from wafercc.errors import UnsupportedOpError
    from wafercc.frontend.onnx_frontend import lower_onnx

    cfg = transformers.DeepseekV3Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=2, vocab_size=128,
                                        kv_lora_rank=8, qk_nope_head_dim=8, qk_rope_head_dim=4,
                                        v_head_dim=6, first_k_dense_replace=2, max_position_embeddings=64,
                                        **{"q_lora_rank": 16, **extra})
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():   # distinct norm scales (all-ones ones would read as tied copies)
        for n, p in model.named_parameters():
            if p.ndim == 1:
                p.uniform_(0.5, 1.5)
    path = str(tmp_path / "mla.onnx")
    export(LogitsOf(model, False).eval(), path, "legacy17")
    c = _check_deepseek(path, h=2, nope=8, rope=4, r=8, dv=6)
    assert all(bool(n.attrs.get("interleaved")) == cfg.rope_interleave for n in c.graph.nodes if n.op == "rotary")
    assert c.facts.params == sum(p.numel() for p in model.parameters())
    m = onnx.load(path)
    kv_b = next(n for n in m.graph.node if n.op_type == "MatMul" and "kv_b_proj" in n.name)
    m.graph.output.append(onnx.helper.make_tensor_value_info(kv_b.output[0], onnx.TensorProto.FLOAT, None))
    onnx.save(m, str(tmp_path / "leak.onnx"))
    with pytest.raises(UnsupportedOpError, match=r"multi-head latent attention \(MLA: each token's 8-wide latent "
                                                 r"and 4-wide shared rotary key.*was not recognised"):
        lower_onnx(str(tmp_path / "leak.onnx"))
