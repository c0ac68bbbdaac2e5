"""nn.Module example inputs in every accepted form, exporter failures as one clean line, and configs
that need trust_remote_code."""
from __future__ import annotations

import inspect
import json

import pytest
import torch

import wafercc
from wafercc.cli import main
from wafercc.errors import FrontendError, ModelConfigError, one_line, shorten
from wafercc.frontend.hf_config import from_config
from wafercc.frontend.load import module_identity
from wafercc.frontend.torch_frontend import compile_module, to_onnx
from wafercc.frontend.torch_inputs import split_inputs
from wafercc.ir import print_graph

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=128, max_position_embeddings=256, head_dim=16)


def _llama():
    import transformers
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(transformers.LlamaConfig(**TINY))


class Named(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


class Passthrough(torch.nn.Module):
    """A thin wrapper: forward(*args, **kwargs) -> the model's logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *args, **kwargs):
        return self.model(*args, use_cache=False, **kwargs).logits


IDS = torch.zeros(1, 8, dtype=torch.long, device="meta")
MASK = torch.ones(1, 8, dtype=torch.long, device="meta")


@pytest.fixture(scope="module")
def reference():
    return print_graph(compile_module(Named(_llama()), (IDS, MASK), name="t"))


def test_split_inputs_forms():
    assert split_inputs(IDS) == ((IDS,), {})
    assert split_inputs([IDS, MASK]) == ((IDS, MASK), {})
    assert split_inputs({"input_ids": IDS}) == ((), {"input_ids": IDS})
    assert split_inputs(((IDS,), {"attention_mask": MASK})) == ((IDS,), {"attention_mask": MASK})
    assert split_inputs((IDS, {"attention_mask": MASK})) == ((IDS,), {"attention_mask": MASK})  # torch's rule
    with pytest.raises(FrontendError, match="example_inputs is a int, expected a tensor"):
        split_inputs(3)
    with pytest.raises(FrontendError, match="need str keys"):
        split_inputs({1: IDS})


@pytest.mark.parametrize("wrapper, example", [
    (Named, IDS),                                       # a single tensor
    (Named, {"input_ids": IDS, "attention_mask": MASK}),  # keyword args
    (Named, ((IDS,), {"attention_mask": MASK})),       # (args, kwargs)
    (Passthrough, {"input_ids": IDS, "attention_mask": MASK}),  # into **kwargs
], ids=["tensor", "kwargs", "pair", "varkw-kwargs"])
def test_example_input_forms_give_the_same_ir(reference, wrapper, example):
    module = wrapper(_llama())
    assert print_graph(compile_module(module, example, name="t")) == reference
    assert "forward" not in module.__dict__  # the export's named signature is undone


@pytest.mark.parametrize("example", [(IDS, MASK), ((IDS,), {"attention_mask": MASK})], ids=["args", "pair"])
def test_varargs_wrapper_positional(reference, example):
    graph = print_graph(compile_module(Passthrough(_llama()), example, name="t"))
    assert graph.replace("args_0", "input_ids") == reference  # ONNX names *args inputs args_0, ...


def test_inputs_that_do_not_fit_forward():
    with pytest.raises(FrontendError, match=r"do not fit forward\(input_ids, attention_mask=None\)"):
        to_onnx(Named(_llama()), {"ids": IDS})


def test_module_identity_of_input_forms():
    m = Named(_llama())
    same = [module_identity(m, f) for f in ((IDS, {"attention_mask": MASK}), ((IDS,), {"attention_mask": MASK}))]
    assert same[0] == same[1]
    assert module_identity(m, {"input_ids": IDS}) != module_identity(m, (IDS,))


def test_compile_accepts_kwargs(tmp_path, monkeypatch):
    monkeypatch.setenv("WAFERCC_CACHE_DIR", str(tmp_path))
    r = wafercc.compile(Passthrough(_llama()), {"input_ids": IDS, "attention_mask": MASK}, until="ir")
    assert r.source == "module" and r.facts.layers == 2 and not r.cached
    assert wafercc.compile(Passthrough(_llama()), {"input_ids": IDS, "attention_mask": MASK}, until="ir").cached


# -- exporter failures ---------------------------------------------------------------------

class RaisesInForward(torch.nn.Module):
    def forward(self, x):
        raise ValueError("forward rejects these inputs: " + "a long explanation " * 30)


class Eigenvalues(torch.nn.Module):  # an op no ONNX function exists for
    def forward(self, x):
        return torch.linalg.eigvals(x).real


def _export_message(module) -> str:
    with pytest.raises(FrontendError) as ei:
        to_onnx(module, (torch.ones(4, 4),))
    msg = str(ei.value)
    assert "\n" not in msg and "\x1b" not in msg and len(msg) <= 300
    assert "This is step" not in msg and "Failed to export" not in msg
    return msg


def test_error_raised_inside_tracing_is_one_clean_line():
    msg = _export_message(RaisesInForward())
    assert msg.startswith("RaisesInForward: torch.onnx.export failed: ValueError: forward rejects these inputs")
    line = inspect.getsourcelines(RaisesInForward.forward)[1] + 1
    assert "…" in msg and msg.endswith(f"(at test_frontend_inputs.py:{line} in forward)")


def test_unsupported_construct_is_one_clean_line():
    msg = _export_message(Eigenvalues())
    assert "DispatchError: No ONNX function found for" in msg and "aten.linalg_eig" in msg


def test_one_line_strips_ansi_and_banners():
    e = RuntimeError("Failed to export the model with torch.export. \x1b[96mThis is step 1/3\x1b[0m.\n"
                     "- Modify the model code\n\n## Exception summary\n\n<class 'torch.foo.Guard'>: bad \x1b[1mguard\x1b[0m\n")
    assert one_line(e) == "Guard: bad guard"
    assert one_line(KeyError()) == "KeyError"
    assert shorten("alpha beta gamma delta", 15) == "alpha beta…"


# -- trust_remote_code configs --------------------------------------------------------------

REMOTE = {"model_type": "deepseek_v2_remote", "architectures": ["DeepseekV2ForCausalLM"],
          "auto_map": {"AutoConfig": "configuration_deepseek.DeepseekV2Config",
                       "AutoModelForCausalLM": "deepseek-ai/DeepSeek-V2--modeling_deepseek.DeepseekV2ForCausalLM"},
          "hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 128}


def test_remote_code_config_is_named(tmp_path, capsys):
    with pytest.raises(ModelConfigError) as ei:
        from_config(REMOTE)
    msg = str(ei.value)
    assert "\n" not in msg
    assert "model_type 'deepseek_v2_remote'" in msg and "trust_remote_code" in msg
    assert "'deepseek-ai/DeepSeek-V2--modeling_deepseek.DeepseekV2ForCausalLM'" in msg
    assert "export the model to ONNX yourself" in msg and ".onnx" in msg
    path = tmp_path / "config.json"
    path.write_text(json.dumps(REMOTE))
    assert main(["compile", str(path), "--no-cache", "-o", str(tmp_path / "out")]) == 2
    assert "trust_remote_code" in capsys.readouterr().err


def test_unknown_model_type_without_auto_map_unchanged():
    with pytest.raises(ModelConfigError, match="unknown model_type 'nope_arch'"):
        from_config({"model_type": "nope_arch"})


@pytest.mark.parametrize("api", [True, False])
def test_directory_without_config_json(tmp_path, capsys, api):
    (tmp_path / "weights.bin").write_bytes(b"x")
    if api:
        with pytest.raises(wafercc.errors.InputFileError, match="directory has no config.json"):
            wafercc.compile(str(tmp_path), until="ir")
        return
    assert main(["compile", str(tmp_path), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "directory has no config.json" in err[0], err
    assert not (tmp_path / "out").exists()
