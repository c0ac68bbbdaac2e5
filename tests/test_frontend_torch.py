"""torch / Hugging Face config frontends: nn.Module -> ONNX -> IR, meta-device models,
reference configs, the compile API and its on-disk cache."""
from __future__ import annotations

import json

import onnx
import pytest
import torch

import wafercc
from wafercc import models_registry as reg
from wafercc.errors import FrontendError, ModelConfigError, WaferccError
from wafercc.frontend.hf_config import from_config
from wafercc.frontend.torch_frontend import compile_module, to_onnx
from wafercc.ir import ValueKind, print_graph

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=128, max_position_embeddings=256, head_dim=16)


class Wrap(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


def tiny_llama(meta: bool) -> Wrap:
    import transformers
    cfg = transformers.LlamaConfig(**TINY)
    if meta:
        with torch.device("meta"):
            m = transformers.AutoModelForCausalLM.from_config(cfg)
    else:
        torch.manual_seed(0)
        m = transformers.AutoModelForCausalLM.from_config(cfg)
    return Wrap(m).eval()


def inputs(meta: bool):
    dev = "meta" if meta else "cpu"
    return (torch.zeros(1, 8, dtype=torch.long, device=dev), torch.ones(1, 8, dtype=torch.long, device=dev))


@pytest.fixture(scope="module")
def tiny_graphs():
    real = compile_module(tiny_llama(False), inputs(False), name="tiny")
    meta = compile_module(tiny_llama(True), inputs(True), name="tiny")
    return real, meta


# -- torch frontend -----------------------------------------------------------------
def test_to_onnx_meta_keeps_names_and_shapes_without_data():
    proto = to_onnx(tiny_llama(True), inputs(True))
    inits = {t.name: t for t in proto.graph.initializer}
    q = inits["model.model.layers.0.self_attn.q_proj.weight"]
    assert list(q.dims) == [64, 64] and q.data_location == onnx.TensorProto.EXTERNAL and not q.raw_data
    # rotary inv_freq is recomputed on the CPU: inline
    inv = [t for n, t in inits.items() if n.endswith("rotary_emb.inv_freq")]
    assert inv and inv[0].data_location != onnx.TensorProto.EXTERNAL
    # dynamic token dims
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert all(isinstance(d, str) for d in dims)
    assert proto.ByteSize() < 2_000_000


def test_to_onnx_real_weights_inline():
    proto = to_onnx(tiny_llama(False), inputs(False))
    q = next(t for t in proto.graph.initializer if t.name.endswith("layers.0.self_attn.q_proj.weight"))
    assert q.data_location != onnx.TensorProto.EXTERNAL and len(q.raw_data) == 64 * 64 * 4


def test_export_is_quiet(capfd):
    to_onnx(tiny_llama(True), inputs(True))
    out, err = capfd.readouterr()
    assert "[torch.onnx]" not in out + err


def test_tiny_llama_module_to_ir(tiny_graphs):
    g, _ = tiny_graphs
    assert len(g.layers()) == 2
    att = [n for n in g.nodes if n.op == "attention"]
    assert len(att) == 2
    assert all(n.attrs.get("num_kv_heads") == 2 for n in att)
    assert {n.layer for n in att} == {0, 1}


def test_meta_module_gives_same_ir(tiny_graphs):
    real, meta = tiny_graphs
    assert print_graph(meta) == print_graph(real)


def test_export_failure_is_frontend_error():
    class Bad(torch.nn.Module):
        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: not exportable
                return x + 1
            return x - 1
    with pytest.raises(FrontendError) as ei:
        to_onnx(Bad(), (torch.ones(2, 3),))
    assert "\n" not in str(ei.value)
    with pytest.raises(FrontendError):
        to_onnx("not a module", (torch.ones(1),))


# -- Hugging Face configs ---------------------------------------------------------------
def test_unknown_model_type_is_model_config_error(tmp_path):
    with pytest.raises(ModelConfigError, match="unknown model_type 'no_such_arch'") as ei:
        from_config({"model_type": "no_such_arch", "hidden_size": 8})
    assert "\n" not in str(ei.value) and len(str(ei.value)) < 300
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"model_type": "no_such_arch"}))
    with pytest.raises(ModelConfigError):
        from_config(tmp_path)
    with pytest.raises(ModelConfigError):
        from_config({"hidden_size": 8})  # no model_type
    with pytest.raises(ModelConfigError):
        from_config("no-such-reference-model")


def test_config_dict_truncated_layers():
    cfg = reg.config("llama-3.2-1b")
    g = from_config(cfg, layers=2)
    assert len(g.layers()) == 2
    assert g.name == "llama" and g.meta["model_type"] == "llama"


@pytest.mark.slow
def test_reference_llama_3_2_1b_params():
    g = from_config("llama-3.2-1b")
    from wafercc.ir import model_facts
    facts = model_facts(g)
    public = reg.reference("llama-3.2-1b").public_params
    assert facts.layers == 16
    assert abs(facts.params - public) / public < 0.01
    assert g.name == "llama-3.2-1b" and g.meta["model_type"] == "llama" and g.meta["hf_config"] == "llama-3.2-1b"
    assert all(v.kind is ValueKind.WEIGHT for v in g.weights())


@pytest.mark.parametrize("key", ["mixtral-8x7b", "qwen3-235b-a22b", "gpt-oss-120b"])
def test_moe_reference_truncated(key):
    g = from_config(key, layers=2)
    assert len(g.layers()) == 2
    assert any(n.op == "moe" for n in g.nodes)


def test_encoder_reference_minilm():
    g = from_config("minilm-l6", layers=2)
    assert len(g.layers()) == 2
    assert g.meta["hf_class"] == "BertModel"


# -- registry -----------------------------------------------------------------------------
def test_registry_lists_reference_models():
    names = reg.names()
    assert {"gpt2", "llama-3.1-70b", "mixtral-8x7b", "minilm-l6"} <= set(names)
    r = reg.reference("llama-3.1-70b")
    assert r.public_params == 70_600_000_000 and r.kind == "decoder" and r.layers == 80
    assert reg.reference("minilm-l6").kind == "encoder"
    with pytest.raises(ModelConfigError):
        reg.reference("nope")


# -- compile API and cache -------------------------------------------------------------------
def test_compile_module_needs_example_inputs():
    with pytest.raises(WaferccError):
        wafercc.compile(tiny_llama(True), until="ir")


def test_compile_module_cached_by_structure(tmp_path, monkeypatch):
    """A module is cached by its structure, not its weights: a second instance with other weights
    is a hit (no re-export), a different architecture a miss."""
    import transformers
    monkeypatch.setenv("WAFERCC_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("WAFERCC_NO_CACHE", raising=False)
    r = wafercc.compile(tiny_llama(True), inputs(True), name="tiny", until="ir")
    assert r.source == "module" and not r.cached and r.facts.layers == 2
    assert len(list((tmp_path / "ir").glob("*.ir.json"))) == 1
    m2 = tiny_llama(True)
    with torch.no_grad():
        for p in m2.parameters():
            p.add_(1.0)
    r2 = wafercc.compile(m2, inputs(True), name="tiny", until="ir")
    assert r2.cached and print_graph(r2.graph) == print_graph(r.graph)
    with torch.device("meta"):
        m3 = Wrap(transformers.AutoModelForCausalLM.from_config(
            transformers.LlamaConfig(**dict(TINY, num_hidden_layers=3)))).eval()
    r3 = wafercc.compile(m3, inputs(True), name="tiny", until="ir")
    assert not r3.cached and r3.facts.layers == 3


def test_compile_cache_hit(tmp_path, monkeypatch):
    monkeypatch.setenv("WAFERCC_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("WAFERCC_NO_CACHE", raising=False)
    cfg = reg.config("llama-3.2-1b")
    cfg["num_hidden_layers"] = 2
    r1 = wafercc.compile(cfg, until="ir")
    assert r1.source == "config" and not r1.cached
    assert len(list((tmp_path / "ir").glob("*.ir.json"))) == 1
    r2 = wafercc.compile(dict(cfg), until="ir")
    assert r2.cached
    assert print_graph(r2.graph) == print_graph(r1.graph) and r2.facts == r1.facts
    # the frontend is not run on a hit
    import wafercc.frontend.load as api

    def boom(*a, **k):
        raise AssertionError("frontend ran on a cache hit")
    monkeypatch.setattr(api, "_lower", boom)
    assert wafercc.compile(cfg, until="ir").cached
    # disabled cache: frontend runs
    with pytest.raises(AssertionError):
        wafercc.compile(cfg, cache=False, until="ir")
    monkeypatch.setenv("WAFERCC_NO_CACHE", "1")
    with pytest.raises(AssertionError):
        wafercc.compile(cfg, until="ir")
    monkeypatch.delenv("WAFERCC_NO_CACHE")
    # a different config is a different key
    cfg2 = dict(cfg, rms_norm_eps=1e-6)
    with pytest.raises(AssertionError):
        wafercc.compile(cfg2, until="ir")


def test_compile_cache_corrupt_entry_is_a_miss(tmp_path, monkeypatch):
    monkeypatch.setenv("WAFERCC_CACHE_DIR", str(tmp_path))
    cfg = reg.config("llama-3.2-1b")
    cfg["num_hidden_layers"] = 1
    r1 = wafercc.compile(cfg, until="ir")
    (entry,) = (tmp_path / "ir").glob("*.ir.json")
    entry.write_text("{not json")
    r2 = wafercc.compile(cfg, until="ir")
    assert not r2.cached and print_graph(r2.graph) == print_graph(r1.graph)
    assert wafercc.compile(cfg, until="ir").cached


def test_compile_onnx_file_cached_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("WAFERCC_CACHE_DIR", str(tmp_path / "cache"))
    proto = to_onnx(tiny_llama(False), inputs(False))
    p = tmp_path / "tiny.onnx"
    onnx.save(proto, p)
    r1 = wafercc.compile(p, until="ir")
    assert r1.source == "onnx" and not r1.cached and r1.graph.name == "tiny" and r1.facts.layers == 2
    assert wafercc.compile(str(p), until="ir").cached


def test_compile_shipped_onnx_cache_hit(tmp_path, monkeypatch):
    from importlib import resources
    src = resources.files("wafercc.models") / "onnx" / "tiny-llama.onnx"
    if not src.is_file():
        pytest.skip("tiny-llama.onnx not shipped")
    monkeypatch.setenv("WAFERCC_CACHE_DIR", str(tmp_path))
    p = tmp_path / "copy.onnx"
    p.write_bytes(src.read_bytes())
    r1 = wafercc.compile(p, until="ir")
    assert not r1.cached and r1.source == "onnx"
    import wafercc.frontend.load as api
    monkeypatch.setattr(api, "_lower", lambda *a, **k: (_ for _ in ()).throw(AssertionError("frontend ran")))
    r2 = wafercc.compile(p, until="ir")
    assert r2.cached and print_graph(r2.graph) == print_graph(r1.graph)
    # same content under another name and another graph name: a different key
    with pytest.raises(AssertionError):
        wafercc.compile(p, name="other", until="ir")
