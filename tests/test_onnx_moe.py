"""Mixture-of-experts routers: group-limited sigmoid routing with a score-correction bias (DeepSeek-V3,
GLM-4-MoE) lifted from an export, the interpreter against onnxruntime, the kernel against a direct
reference, and the bias counted as torch does (a buffer, no parameter)."""
from __future__ import annotations

import numpy as np
import pytest

from graph_util import small_graph
from wafercc.frontend.onnx_frontend import lower_onnx
from wafercc.ir import model_facts
from wafercc.sim import Interpreter, load_weights
from wafercc.sim.kernels import route_tokens


def _glm_moe_block(n_group=4, topk_group=2, top_k=3):
    import torch
    import transformers
    from transformers.models.glm4_moe.modeling_glm4_moe import Glm4MoeMoE

    cfg = transformers.Glm4MoeConfig(hidden_size=16, moe_intermediate_size=8, n_routed_experts=8,
                                     num_experts_per_tok=top_k, n_group=n_group, topk_group=topk_group,
                                     n_shared_experts=1, routed_scaling_factor=2.5)
    cfg._experts_implementation = "batched_mm"

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(32, 16)
            self.moe = Glm4MoeMoE(cfg)

        def forward(self, input_ids):
            return self.moe(self.emb(input_ids))

    torch.manual_seed(0)
    m = Block().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
        m.moe.gate.e_score_correction_bias.normal_(0, 0.3)  # a buffer, zeros at init
    return m


@pytest.fixture(scope="module", params=["legacy", "dynamo-static"])
def glm_block(request, tmp_path_factory):
    """The legacy exporter (dynamic shapes), and dynamo with static shapes: its optimiser folds the
    group mask's zeros_like into an initializer inside the router."""
    import contextlib
    import io
    import warnings

    import torch
    m = _glm_moe_block()
    path = str(tmp_path_factory.mktemp("moe") / f"glm_moe_{request.param}.onnx")
    ids = torch.randint(0, 32, (3, 9))
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        if request.param == "legacy":
            torch.onnx.export(m, (ids,), path, dynamo=False, opset_version=17, input_names=["input_ids"],
                              dynamic_axes={"input_ids": {0: "batch", 1: "seq"}})
        else:
            torch.onnx.export(m, (ids,), path, dynamo=True, opset_version=18, input_names=["input_ids"])
    return m, path


def test_group_limited_router_is_recognised(glm_block):
    m, path = glm_block
    g = lower_onnx(path)
    moe = [n for n in g.nodes if n.op == "moe"]
    assert len(moe) == 1
    at = moe[0].attrs
    assert at["router_fn"] == "sigmoid_topk" and at["normalize_topk"]
    assert (at["n_group"], at["topk_group"], at["group_score_k"]) == (4, 2, 2)
    assert at["routed_scaling_factor"] == pytest.approx(2.5) and at["activation"] == "silu"
    assert "router_score_bias" in moe[0].inputs
    # the correction bias is a registered buffer: torch's parameter count leaves it out
    assert model_facts(g).params == sum(p.numel() for p in m.parameters())


def test_group_limited_router_matches_onnxruntime(glm_block):
    import onnxruntime as ort
    _, path = glm_block
    g = lower_onnx(path)
    ids = np.random.default_rng(1).integers(0, 32, (3, 9))
    got = next(iter(Interpreter(g, load_weights(g, path)).step(inputs={"input_ids": ids}).values()))
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input_ids": ids})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _route_reference(logits, bias, n_group, topk_group, k, scale):
    """DeepSeek-V3's router written out token by token."""
    scores = 1 / (1 + np.exp(-logits))
    idx, wts = [], []
    for s in scores:
        c = s + bias
        groups = c.reshape(n_group, -1)
        gscore = np.sort(groups, axis=1)[:, -2:].sum(axis=1)
        keep = np.argsort(-gscore, kind="stable")[:topk_group]
        masked = np.full_like(c, -np.inf)
        for gi in keep:
            lo = gi * groups.shape[1]
            masked[lo:lo + groups.shape[1]] = c[lo:lo + groups.shape[1]]
        top = np.argsort(-masked, kind="stable")[:k]
        w = s[top] / s[top].sum() * scale
        idx.append(top)
        wts.append(w)
    return np.array(idx), np.array(wts)


def test_route_tokens_grouped_against_reference():
    rng = np.random.default_rng(3)
    logits, bias = rng.normal(size=(20, 12)), rng.normal(size=12) * 0.5
    at = {"router_fn": "sigmoid_topk", "normalize_topk": True, "n_group": 3, "topk_group": 2,
          "group_score_k": 2, "group_fill": None, "routed_scaling_factor": 1.5}
    idx, wts = route_tokens(logits, at, 3, bias)
    ridx, rwts = _route_reference(logits, bias, 3, 2, 3, 1.5)
    np.testing.assert_array_equal(np.sort(idx, axis=1), np.sort(ridx, axis=1))
    order = np.argsort(idx, axis=1), np.argsort(ridx, axis=1)
    np.testing.assert_allclose(np.take_along_axis(wts, order[0], 1), np.take_along_axis(rwts, order[1], 1))
    # the bias moves the choice but never the weights: without groups or bias, plain sigmoid top-k
    flat = dict(at, n_group=1, topk_group=0, routed_scaling_factor=1.0, normalize_topk=False)
    idx, wts = route_tokens(logits, flat, 2)
    np.testing.assert_allclose(wts, np.sort(1 / (1 + np.exp(-logits)), axis=1)[:, ::-1][:, :2])


def test_score_bias_is_a_buffer_in_the_param_count():
    d, e, i = 4, 4, 2
    g = small_graph([("x", ("batch", "seq", d))],
                    [("r", (d, e)), ("gu", (e, d, 2 * i)), ("dn", (e, i, d)), ("sb", (e,))])
    g.add_node("moe", {"x": "x", "router_w": "r", "gate_up_w": "gu", "down_w": "dn", "router_score_bias": "sb"},
               ["y"], attrs={"num_experts": e, "top_k": 2, "hidden": d, "intermediate": i, "gated": True,
                             "activation": "silu", "router_fn": "sigmoid_topk", "n_group": 2, "topk_group": 1})
    g.outputs = ["y"]
    facts = model_facts(g)
    assert facts.params == d * e + e * d * 2 * i + e * i * d
    assert facts.weight_bytes == 4 * (facts.params + e)  # still resident
