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
