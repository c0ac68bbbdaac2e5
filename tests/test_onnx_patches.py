"""Pixel inputs (wafercc.frontend.onnx_patches): a ViT-style patch embedding lowers to patch rows, a
matmul, prefix_tokens ops and a position lookup; the interpreter runs it like onnxruntime; other convs
are refused in one line; the HF-config frontend builds images for vision configs."""
from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from wafercc.errors import UnsupportedOpError
from wafercc.frontend.onnx_frontend import lower_onnx_model
from wafercc.frontend.onnx_patches import patch_rows
from wafercc.ir import BATCH, SEQ, model_facts
from wafercc.sim import Interpreter, SimulationError
from wafercc.sim.weights import check_weights

C, H, W, KH, KW, D = 2, 4, 6, 2, 3, 8          # a 2 x 2 grid of 2 x 3 patches, width 8
N, F = (H // KH) * (W // KW), C * KH * KW


def _rng():
    return np.random.default_rng(0)


def _init(name, shape):
    return numpy_helper.from_array(_rng().standard_normal(shape).astype(np.float32) + hash(name) % 7, name)


def _model(*, tokens=("cls", "dist"), pos_after=True, channels_last=False, conv_attrs=None,
           batch="batch", folded=0):
    """pixels -> Conv -> tokens [b, N, D] -> Concat(learned tokens, patches) -> + positions -> Relu."""
    nodes, inits = [], [_init("conv.w", (D, C, KH, KW)), _init("conv.b", (D,))]
    attrs = {**dict(kernel_shape=[KH, KW], strides=[KH, KW], pads=[0, 0, 0, 0], group=1), **(conv_attrs or {})}
    nodes.append(helper.make_node("Conv", ["pixels", "conv.w", "conv.b"], ["conv"], name="/emb/proj/Conv", **attrs))
    if channels_last:
        nodes.append(helper.make_node("Transpose", ["conv"], ["cl"], perm=[0, 2, 3, 1]))
        inits.append(numpy_helper.from_array(np.array([0, -1, D], np.int64), "shape"))
        nodes.append(helper.make_node("Reshape", ["cl", "shape"], ["tok"]))
    else:
        nodes.append(helper.make_node("Reshape", ["conv", "shape"], ["flat"]))
        inits.append(numpy_helper.from_array(np.array([0, D, -1], np.int64), "shape"))
    if not channels_last:
        nodes.append(helper.make_node("Transpose", ["flat"], ["tok"], perm=[0, 2, 1]))
    t = "tok"
    n_tok = len(tokens)
    if not pos_after:
        inits.append(_init("pos", (1, N, D)))
        nodes.append(helper.make_node("Add", [t, "pos"], ["tok_pos"]))
        t = "tok_pos"
    cat_in = []
    for name, v in (("zero", [0]), ("one", [1]), ("ones2", [1, 1])):
        inits.append(numpy_helper.from_array(np.array(v, np.int64), name))
    nodes += [helper.make_node("Shape", ["pixels"], ["px_shape"]),        # [batch, 1, 1], as torch's expand
              helper.make_node("Slice", ["px_shape", "zero", "one"], ["px_batch"]),
              helper.make_node("Concat", ["px_batch", "ones2"], ["ones3"], axis=0)]
    for name in tokens:
        if folded:
            row = _rng().standard_normal((1, 1, D)).astype(np.float32)
            inits.append(numpy_helper.from_array(np.repeat(row, folded, axis=0), name))
            cat_in.append(name)
        else:
            inits.append(_init(name, (1, 1, D)))
            nodes.append(helper.make_node("Expand", [name, "ones3"], [name + ".x"]))
            cat_in.append(name + ".x")
    if tokens:
        nodes.append(helper.make_node("Concat", cat_in + [t], ["cat"], axis=1))
        t = "cat"
    if pos_after:
        inits.append(_init("pos", (1, N + n_tok, D)))
        nodes.append(helper.make_node("Add", [t, "pos"], ["emb"]))
        t = "emb"
    nodes.append(helper.make_node("Relu", [t], ["out"]))
    g = helper.make_graph(nodes, "vit", [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [batch, C, H, W])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _lower(model):
    m = onnx.shape_inference.infer_shapes(model)
    return lower_onnx_model(m, "vit")


def _run_both(model, graph, batch=2):
    import onnxruntime as ort
    img = _rng().standard_normal((batch, C, H, W)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"pixels": img})[0]
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    interp = Interpreter(graph, weights)
    rows = patch_rows(img, graph.meta["pixel_inputs"]["pixels"])
    got = interp.step(None, None, {"pixels": rows})[graph.outputs[0]]
    return got, ref


def test_patch_embedding_lowers_to_patch_rows_and_counts_params():
    graph = _lower(_model())
    assert graph.values["pixels"].shape == (BATCH, SEQ, F)
    assert graph.meta["pixel_inputs"]["pixels"] == {"image": [C, H, W], "patch": [KH, KW], "prefix_rows": 2}
    ops = [n.op for n in graph.nodes]
    assert ops[0] == "matmul" and graph.nodes[0].attrs == {"transpose_w": True}
    assert graph.values["conv.w"].shape == (D, F)
    prefix = [n for n in graph.nodes if n.op == "prefix_tokens"]
    assert [(n.inputs["tokens"], n.attrs["start"]) for n in prefix] == [("cls", 0), ("dist", 1)]
    # conv kernel + bias, two learned tokens, the position table: each once, as torch counts them
    assert model_facts(graph).params == D * F + D + 2 * D + (N + 2) * D


@pytest.mark.parametrize("kw", [dict(), dict(channels_last=True), dict(pos_after=False), dict(tokens=()),
                                dict(tokens=("cls",), channels_last=True, pos_after=False)])
def test_interpreter_matches_onnxruntime(kw):
    model = _model(**kw)
    got, ref = _run_both(model, _lower(model))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_token_folded_to_the_traced_batch_counts_one_copy():
    model = _model(tokens=("cls",), folded=2, batch=2)
    with pytest.warns(UserWarning, match="expanded to the traced batch"):
        graph = _lower(model)
    assert graph.values["cls"].shape == (1, D)
    assert model_facts(graph).params == D * F + D + D + (N + 1) * D
    got, ref = _run_both(model, graph)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    # the copies must really be copies
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    w["cls"] = w["cls"] + np.arange(2, dtype=np.float32)[:, None, None]
    with pytest.raises(SimulationError, match="copies differ"):
        check_weights(graph, w)


@pytest.mark.parametrize("attrs, why", [
    (dict(strides=[1, 1]), "stride"),
    (dict(pads=[1, 1, 1, 1]), "padded"),
    (dict(dilations=[2, 2]), "dilated"),
])
def test_other_convs_are_refused_in_one_line(attrs, why):
    with pytest.raises(UnsupportedOpError) as e:
        _lower(_model(conv_attrs=attrs))
    msg = str(e.value)
    assert "\n" not in msg and "not a patch embedding" in msg and why in msg and "/emb/proj/Conv" in msg


def test_prefix_tokens_shape_checks():
    from wafercc.ir import DType, Graph, ValueKind, verify
    g = Graph("p")
    g.add_value("x", (BATCH, 3, D), DType.F32, ValueKind.INPUT)
    g.add_value("t", (2, D), DType.F32, ValueKind.WEIGHT)
    g.add_node("prefix_tokens", {"x": "x", "tokens": "t"}, ["y"], attrs={"start": 1})
    g.outputs.append("y")
    verify(g)
    with pytest.raises(Exception, match="do not fit"):
        g.add_node("prefix_tokens", {"x": "x", "tokens": "t"}, ["z"], attrs={"start": 2})


def test_patch_rows_order_is_the_conv_kernel_order():
    img = np.arange(C * H * W, dtype=np.float32).reshape(1, C, H, W)
    rows = patch_rows(img, {"image": [C, H, W], "patch": [KH, KW], "prefix_rows": 1})
    assert rows.shape == (1, 1 + N, F) and not rows[0, 0].any()
    np.testing.assert_array_equal(rows[0, 1 + 1], img[0, :, 0:KH, KW:2 * KW].reshape(-1))   # patch (0, 1)


def test_hf_config_builds_images_for_vision_models():
    from wafercc.frontend import hf_config
    config = hf_config.build_config(dict(model_type="vit", hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, image_size=16,
                                         patch_size=8, num_channels=3))
    wrapper, causal = hf_config.build_meta_model(config)
    assert not causal and wrapper.input_names == ["pixel_values"]
    (px,) = hf_config.example_inputs(wrapper, config)
    assert tuple(px.shape) == (1, 3, 16, 16) and px.is_floating_point()


def test_vit_config_compiles():
    from wafercc.frontend.hf_config import from_config
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        graph = from_config(dict(model_type="vit", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, image_size=16, patch_size=8, num_channels=3,
                                 architectures=["ViTModel"]))
    assert graph.meta["pixel_inputs"]["pixel_values"] == {"image": [3, 16, 16], "patch": [8, 8], "prefix_rows": 1}
    # conv 32x192+32, cls 32, positions 5x32, one layer; the unused pooler is not exported
    layer = 4 * (32 * 32 + 32) + 2 * 32 * 64 + 64 + 32 + 4 * 32
    assert model_facts(graph).params == 32 * 192 + 32 + 32 + 5 * 32 + layer + 2 * 32


def test_simulate_compare_on_a_tiny_vit(tmp_path):
    """Export a 1-layer ViT, compile it onto the wafer, run it tile by tile on images against onnxruntime."""
    import torch
    import transformers

    from wafercc.cli import main
    from wafercc.sim.run import compare_with_onnxruntime

    cfg = transformers.ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                 image_size=16, patch_size=8, num_channels=3)
    torch.manual_seed(0)
    model = transformers.ViTModel(cfg).eval()

    class Vision(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, pixel_values):
            return self.model(pixel_values=pixel_values).last_hidden_state

    path = str(tmp_path / "vit.onnx")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(Vision().eval(), (torch.randn(2, 3, 16, 16),), path, dynamo=False, opset_version=17,
                          input_names=["pixel_values"], dynamic_axes={"pixel_values": {0: "batch"}})
        assert main(["compile", path, "-o", str(tmp_path / "out"), "--no-curve", "--format", "json",
                     "--no-cache"]) == 0
    seeded = compare_with_onnxruntime(tmp_path / "out", path, np.array([[1], [2]]), 2)
    assert seeded.ok and len(seeded.errors) == 2 and seeded.simulation.calls.get("matmul"), seeded.errors
    images = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    given = compare_with_onnxruntime(tmp_path / "out", path, images, 1)
    assert given.ok and given.simulation.logits[0].shape == (1, 5, 32), given.errors


def test_clip_vision_bias_free_conv_and_expanded_class_token(tmp_path):
    """CLIP's vision tower: a patch conv without bias (its dynamo/meta export passes Expand(0)), a
    [D] class embedding expanded to the batch, and a pre-layernorm: lowers from its config with the
    parameters of the file's graph, and its TorchScript export computes what onnxruntime computes."""
    import numpy as np
    import torch
    import transformers

    from wafercc.frontend.hf_config import from_config
    from wafercc.sim.run import compare_with_onnxruntime
    cfg = dict(model_type="clip_vision_model", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, image_size=32, patch_size=8)
    g = from_config(cfg)
    assert [n.op for n in g.nodes].count("prefix_tokens") == 1
    config = transformers.AutoConfig.for_model(**cfg)
    torch.manual_seed(0)
    model = transformers.CLIPVisionModel(config).eval()
    # torch counts the unused post-layernorm (last_hidden_state is read before it): 2 x 64
    assert model_facts(g).params == sum(p.numel() for p in model.parameters()) - 128

    class Hidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, pixel_values):
            return self.m(pixel_values=pixel_values).last_hidden_state

    path = tmp_path / "clip.onnx"
    torch.onnx.export(Hidden(model), (torch.randn(1, 3, 32, 32),), str(path), dynamo=False, opset_version=17,
                      input_names=["pixel_values"], dynamic_axes={"pixel_values": {0: "batch"}})
    import wafercc
    out = tmp_path / "out"
    wafercc.compile(path, cache=False, curve=False).save(str(out))
    assert max(compare_with_onnxruntime(str(out), str(path), np.array([[1, 2], [3, 4]]), 1).errors) < 1e-4
