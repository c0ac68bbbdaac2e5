"""KV-cache exports: past_key_values.* inputs appended to K and V, present.* outputs (optimum's
with-past decoders, torch exports of a DynamicCache) lower to the same attention with its KV cache
as the plain export."""
from __future__ import annotations

import pytest
import torch

import wafercc

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=128, max_position_embeddings=256, head_dim=16)
LAYERS, KV_HEADS, HEAD_DIM = TINY["num_hidden_layers"], TINY["num_key_value_heads"], TINY["head_dim"]


class WithPast(torch.nn.Module):
    """forward(input_ids, attention_mask, *past) -> (logits, *present), as a with-past decoder."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, *past):
        from transformers.cache_utils import DynamicCache
        cache = DynamicCache()
        for i in range(0, len(past), 2):
            cache.update(past[i], past[i + 1], i // 2)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, use_cache=True)
        present = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        return (out.logits, *present)


def _export(tmp_path, dynamo: bool):
    import transformers
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY)).eval()
    past_len = 5
    past = [torch.randn(1, KV_HEADS, past_len, HEAD_DIM) for _ in range(2 * LAYERS)]
    ids, mask = torch.zeros(1, 1, dtype=torch.long), torch.ones(1, past_len + 1, dtype=torch.long)
    names = ["input_ids", "attention_mask"] + [f"past_key_values.{i}.{kv}" for i in range(LAYERS)
                                              for kv in ("key", "value")]
    outs = ["logits"] + [f"present.{i}.{kv}" for i in range(LAYERS) for kv in ("key", "value")]
    path = tmp_path / ("past_dynamo.onnx" if dynamo else "past_ts.onnx")
    if dynamo:
        torch.onnx.export(WithPast(model), (ids, mask, *past), input_names=names, output_names=outs,
                          dynamo=True, optimize=False).save(str(path))
    else:
        axes = {"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "t"},
                **{n: {0: "b", 2: "p"} for n in names[2:]}}
        torch.onnx.export(WithPast(model), (ids, mask, *past), str(path), input_names=names, output_names=outs,
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    return path, sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_with_past_export_lowers_to_attention_with_its_kv_cache(tmp_path, dynamo):
    path, torch_params = _export(tmp_path, dynamo)
    c = wafercc.compile(path, until="ir", cache=False)
    f = c.facts
    assert f.layers == LAYERS and f.op_counts["attention"] == LAYERS
    assert f.kv_bytes_per_token == 2 * LAYERS * KV_HEADS * HEAD_DIM * 4          # fp32 K and V per token
    attn = [n for n in c.graph.nodes if n.op == "attention"]
    assert all(n.attrs["causal"] and "k_cache" in n.inputs and "v_cache" in n.inputs for n in attn)
    assert [o for o in c.graph.outputs] and all("present" not in o for o in c.graph.outputs)
    if dynamo:
        assert f.params == torch_params
    else:   # the TorchScript exporter folds a few weights into constants; never more than it had
        assert 0.99 * torch_params <= f.params <= torch_params


def test_with_past_export_plans_like_the_plain_one(tmp_path):
    path, _ = _export(tmp_path, True)
    past = wafercc.compile(path, until="plan", cache=False)
    assert past.plan.used == 1 and past.plan.memory.kv_bytes > 0


def test_static_shape_export_with_folded_positions_and_mask(tmp_path):
    """torch.onnx.export(dynamo=True) with its defaults (optimized, static shapes) folds GPT-2's
    position lookup to a [1, S, D] constant and its causal mask to a [1, 1, S, S] constant: the
    lifter reads them as a position table (with a warning: its rows are the traced length) and a
    causal mask, and the IR computes what onnxruntime computes."""
    import numpy as np
    import transformers

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=1000, n_positions=128)
    model = transformers.GPT2LMHeadModel(cfg).eval()

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids):
            return self.m(input_ids=input_ids, use_cache=False).logits

    path = tmp_path / "gpt2_default.onnx"
    torch.onnx.export(Logits(model), (torch.zeros(1, 16, dtype=torch.long),), dynamo=True).save(str(path))
    with pytest.warns(UserWarning, match="position table the exporter folded to the traced length \\(16 rows\\)"):
        c = wafercc.compile(path, until="ir", cache=False)
    attn = [n for n in c.graph.nodes if n.op == "attention"]
    assert len(attn) == 2 and all(n.attrs["causal"] for n in attn)
    assert c.facts.kv_bytes_per_token == 2 * 2 * 64 * 4
    # the IR, run by the NumPy reference interpreter, against onnxruntime on the traced 16 tokens
    import onnxruntime as ort

    from wafercc.sim.reference import Interpreter
    from wafercc.sim.weights import load_weights
    ids = (np.arange(16, dtype=np.int64)[None] * 7) % 1000
    interp = Interpreter(c.graph, load_weights(c.graph, path), None, context=64)
    interp.reset(1)
    got = interp.step(ids, np.ones_like(ids), {})[c.graph.outputs[0]]
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input_ids": ids})[0]
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    # and the placed program, tile by tile (scope-less exporter nodes stay with their layer)
    from wafercc.sim.run import compare_with_onnxruntime
    out = tmp_path / "out"
    with pytest.warns(UserWarning):
        wafercc.compile(path, context=64, cache=False, curve=False).save(str(out))
    assert max(compare_with_onnxruntime(str(out), str(path), ids, 1).errors) < 1e-4
