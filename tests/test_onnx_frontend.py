"""ONNX files from both torch exporters lift to the expected IR for each architecture."""
import pytest

from tiny_hf import build, export, param_count
from wafercc.frontend.onnx_frontend import lower_onnx
from wafercc.ir import model_facts, print_graph

ARCHS = {
    # arch: (expected op kinds present, causal, layer-0 sliding window)
    "llama": ({"rotary", "attention", "norm", "matmul", "activation"}, True, 0),
    "qwen3": ({"rotary", "attention", "norm", "matmul"}, True, 0),
    "mixtral": ({"moe", "attention", "rotary"}, True, 0),
    "qwen3_moe": ({"moe", "attention"}, True, 0),
    "gpt_oss": ({"moe", "attention", "rotary"}, True, 8),
    "gpt2": ({"attention", "norm", "layout", "activation"}, True, 0),
    "bert": ({"attention", "norm", "activation", "embedding"}, False, 0),
}
EXPORTERS = ["dynamo18", "legacy17"]


@pytest.fixture(scope="module")
def models():
    return {}


def _lower(tmp_path_factory, models, arch, exporter):
    key = (arch, exporter)
    if key not in models:
        module = build(arch)
        path = tmp_path_factory.mktemp(arch) / f"{arch}-{exporter}.onnx"
        export(module, str(path), exporter)
        models[key] = (module, lower_onnx(path))
    return models[key]


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_architecture_lifts(tmp_path_factory, models, arch, exporter):
    module, graph = _lower(tmp_path_factory, models, arch, exporter)
    ops, causal, window = ARCHS[arch]
    facts = model_facts(graph)
    assert facts.layers == 2
    assert ops <= set(facts.op_counts), facts.op_counts
    attn = [n for n in graph.nodes if n.op == "attention"]
    assert len(attn) == 2
    assert all(n.attrs["causal"] == causal for n in attn)
    assert attn[0].attrs.get("sliding_window", 0) == window
    assert attn[1].attrs.get("sliding_window", 0) == 0
    assert attn[0].attrs["num_heads"] == 4 and attn[0].attrs["head_dim"] == 16
    kv_heads = 4 if arch in ("gpt2", "bert") else 2
    assert attn[0].attrs["num_kv_heads"] == kv_heads
    # KV cache: decoders keep K and V per token, encoders keep none
    per_token = 2 * 2 * kv_heads * 16 * 4 if causal else 0
    assert facts.kv_bytes_per_token == per_token
    expected = param_count(module)
    if arch == "bert":  # the pooler does not feed last_hidden_state, so it is not exported
        expected -= param_count(module.model.pooler)
    # GPT-2 ties its LM head to the token embedding; exporters store a transposed
    # copy, which the lifter recognises from the inline data and counts once
    assert facts.params == expected
    assert [n.layer for n in graph.nodes if n.op == "attention"] == [0, 1]


def _signature(g):
    # storage orientation of weights differs between exporters; the math does not
    return [(n.op, n.layer, tuple(g.values[n.outputs[0]].shape),
             {k: v for k, v in n.attrs.items() if k != "theta" and "transpose" not in k}) for n in g.nodes]


@pytest.mark.parametrize("arch", ["llama", "mixtral"])
@pytest.mark.parametrize("other", ["legacy17", "legacy20", "dynamo23", "dynamo25"])
def test_exporters_and_opsets_agree(tmp_path_factory, models, arch, other):
    """Every exporter and opset gives the same ops, shapes and parameter count
    (opset 23+ brings the ONNX Attention, RMSNormalization and RotaryEmbedding ops)."""
    base = _lower(tmp_path_factory, models, arch, "dynamo18")[1]
    g = _lower(tmp_path_factory, models, arch, other)[1]
    assert _signature(g) == _signature(base)
    assert model_facts(g).params == model_facts(base).params


@pytest.mark.parametrize("arch", ["llama", "qwen3_moe", "bert"])
def test_onnx_file_and_torch_module_give_the_same_ir(tmp_path_factory, models, arch):
    """A user's ONNX export and wafercc.compile on the module itself agree."""
    from wafercc.frontend.torch_frontend import compile_module
    from tiny_hf import inputs
    module, from_file = _lower(tmp_path_factory, models, arch, "dynamo18")
    from_module = compile_module(module, inputs(), name=from_file.name)
    assert _signature(from_module) == _signature(from_file)
    assert model_facts(from_module).params == model_facts(from_file).params


def test_moe_attributes(tmp_path_factory, models):
    _, g = _lower(tmp_path_factory, models, "gpt_oss", "dynamo18")
    moe = [n for n in g.nodes if n.op == "moe"][0]
    assert moe.attrs["num_experts"] == 4 and moe.attrs["top_k"] == 2
    assert moe.attrs["activation"] == "swiglu_clamped" and moe.attrs["gate_up_interleaved"]
    assert moe.attrs["router_fn"] == "topk_softmax"
    assert {"router_b", "gate_up_b", "down_b"} <= set(moe.inputs)
    attn = [n for n in g.nodes if n.op == "attention"][0]
    assert "sinks" in attn.inputs
    _, g = _lower(tmp_path_factory, models, "mixtral", "dynamo18")
    moe = [n for n in g.nodes if n.op == "moe"][0]
    assert moe.attrs["activation"] == "silu" and moe.attrs["normalize_topk"]
    assert moe.attrs["router_fn"] == "softmax_topk"


def test_text_form_round_trips(tmp_path_factory, models):
    from wafercc.ir import parse_graph
    _, g = _lower(tmp_path_factory, models, "qwen3", "dynamo18")
    text = print_graph(g)
    assert print_graph(parse_graph(text)) == text


def test_opset23_uses_fused_onnx_ops(tmp_path_factory, models):
    """The opset-23 export really goes through Attention / RMSNormalization / RotaryEmbedding."""
    import onnx
    _lower(tmp_path_factory, models, "llama", "dynamo23")
    path = next(tmp_path_factory.getbasetemp().rglob("llama-dynamo23.onnx"))
    ops = {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
    assert {"Attention", "RMSNormalization", "RotaryEmbedding"} <= ops
