"""Tied or deduplicated initializers are counted once, with or without their external data."""
import contextlib
import io
import warnings

import numpy as np
import onnx
import pytest
import torch
import transformers
from onnx import TensorProto, helper, numpy_helper

from wafercc.frontend.onnx_frontend import lower_onnx
from wafercc.frontend.onnx_ties import TiedWeightWarning
from wafercc.ir import model_facts

VOCAB, DIM = 1000, 64


def _lower(path):
    """(params, messages of TiedWeightWarnings) of an ONNX file."""
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter("always")
        g = lower_onnx(path)
    return model_facts(g).params, [str(w.message) for w in ws if w.category is TiedWeightWarning], g


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """A tiny GPT-2 (tied LM head) exported by both torch exporters with external data."""
    cfg = transformers.GPT2Config(n_embd=DIM, n_layer=2, n_head=4, vocab_size=VOCAB, n_positions=128,
                                  bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # distinct values, so no exporter merges equal parameters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, ids, mask):
            return self.m(input_ids=ids, attention_mask=mask, use_cache=False).logits

    module = Logits(model).eval()
    args = (torch.randint(0, VOCAB, (2, 8)), torch.ones((2, 8), dtype=torch.long))
    names = ["input_ids", "attention_mask"]
    d = tmp_path_factory.mktemp("gpt2")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        b, s = torch.export.Dim("batch"), torch.export.Dim("seq")
        torch.onnx.export(module, args, str(d / "dynamo.onnx"), dynamo=True, external_data=True,
                          dynamic_shapes={"ids": {0: b, 1: s}, "mask": {0: b, 1: s}}, input_names=names)
        torch.onnx.export(module, args, str(d / "legacy.onnx"), dynamo=False, opset_version=17,
                          input_names=names, dynamic_axes={n: {0: "batch", 1: "seq"} for n in names})
    legacy = onnx.load(str(d / "legacy.onnx"))
    onnx.save(legacy, str(d / "legacy.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="legacy.onnx.data", size_threshold=0)
    return d, sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
def test_gpt2_tied_head_counted_once_with_data(gpt2, exporter):
    d, torch_params = gpt2
    params, warned, _ = _lower(d / f"{exporter}.onnx")
    assert params == torch_params
    assert not warned


def test_gpt2_without_data(gpt2, tmp_path):
    d, torch_params = gpt2
    for exporter in ("dynamo", "legacy"):
        (tmp_path / f"{exporter}.onnx").write_bytes((d / f"{exporter}.onnx").read_bytes())  # no data file
    # dynamo: one initializer feeds the Gather and (through a Transpose) the LM head
    params, warned, _ = _lower(tmp_path / "dynamo.onnx")
    assert params == torch_params and not warned
    # TorchScript: the head is a constant-folded transposed copy (onnx::MatMul_N), which an untied head
    # also is; without the data it cannot be proved equal: counted twice, with a warning naming both
    params, warned, _ = _lower(tmp_path / "legacy.onnx")
    assert params == torch_params + VOCAB * DIM
    assert len(warned) == 1 and "'onnx::MatMul_" in warned[0] and "'m.transformer.wte.weight'" in warned[0]
    assert "64,000 parameters" in warned[0]


# -- hand-made graphs: an embedding and an LM head stored as a second initializer ------------------

def _graph(head_name, head_shape, transpose, tmp_path, *, head_values=None, alias=False, data=False):
    emb = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["h"], name="embed")]
    w = head_name
    if transpose:
        nodes.append(helper.make_node("Transpose", [head_name], ["head_t"], perm=[1, 0], name="t"))
        w = "head_t"
    nodes.append(helper.make_node("MatMul", ["h", w], ["y"], name="lm_head"))
    values = head_values if head_values is not None else np.zeros(head_shape, np.float32) + 0.5
    inits = [numpy_helper.from_array(emb, "emb"), numpy_helper.from_array(values, head_name)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "s"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.onnx.data", size_threshold=0)
    if alias:  # a deduplicating saver: both initializers point at the same bytes
        model = onnx.load(str(path), load_external_data=False)
        a, b = model.graph.initializer
        del b.external_data[:]
        b.external_data.extend(a.external_data)
        onnx.save(model, str(path))
    if not data:
        (tmp_path / "m.onnx.data").unlink()
    return path, emb


@pytest.mark.parametrize("case, shape, transpose, once, transpose_w", [
    ("alias", (16, 8), True, True, True),              # same external bytes
    ("emb__1", (16, 8), True, True, True),             # an exporter's copy name, same shape
    ("emb_transposed", (8, 16), False, True, True),    # a copy name, stored transposed
    ("lm_head.weight", (16, 8), True, False, True),    # a separate (untied) head: no warning
])
def test_proofs_without_data(tmp_path, case, shape, transpose, once, transpose_w):
    path, _ = _graph("lm_head.weight" if case == "alias" else case, shape, transpose, tmp_path,
                     alias=case == "alias")
    params, warned, g = _lower(path)
    assert params == 16 * 8 * (1 if once else 2)
    assert not warned
    mm = next(n for n in g.nodes if n.op == "matmul")
    assert (mm.inputs["w"] == "emb") is once
    assert bool(mm.attrs.get("transpose_w")) is transpose_w


def test_transposed_copy_with_data_is_compared(tmp_path):
    emb = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
    path, _ = _graph("onnx::MatMul_7", (8, 16), False, tmp_path, head_values=emb.T.copy(), data=True)
    params, warned, g = _lower(path)
    assert params == 16 * 8 and not warned
    assert next(n for n in g.nodes if n.op == "matmul").attrs.get("transpose_w") is True


def test_unprovable_copy_warns(tmp_path):
    path, _ = _graph("onnx::MatMul_7", (8, 16), False, tmp_path)
    params, warned, _ = _lower(path)
    assert params == 2 * 16 * 8
    assert len(warned) == 1 and "'onnx::MatMul_7' [8, 16]" in warned[0] and "'emb' [16, 8]" in warned[0]
