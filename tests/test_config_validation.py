"""Hugging Face configs are checked against a schema (wafercc.frontend.config_schema) before any
model is built: each hostile config of issue 14 is refused in one line, and random mutations of
valid configs either build or raise a one-line WaferccError, never another exception."""
from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fuzz.config_strategies import GPT2, LLAMA, config_dicts, config_texts, fuzz_examples
from wafercc import limits
from wafercc import models_registry as reg
from wafercc.cli import main
from wafercc.errors import ModelConfigError, WaferccError
from wafercc.frontend.hf_config import build_config, checkpoint_dtypes, from_config, load_config_source, prepare


def _write(tmp_path, text: str, name: str = "config.json") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _refused(spec, *needles):
    with pytest.raises(ModelConfigError) as ei:
        prepare(spec)
    msg = str(ei.value)
    assert "\n" not in msg and len(msg) < 400, msg
    for n in needles:
        assert n in msg, (n, msg)
    return msg


@pytest.mark.parametrize("key,value,needles", [
    ("quantization_config", 5, ["'quantization_config'", "got 5", "an object"]),
    ("torch_dtype", "float64", ["'torch_dtype'", "'float64'", "bfloat16"]),
    ("torch_dtype", "float8_e4m3fn", ["'torch_dtype'", "'float8_e4m3fn'"]),
    ("max_position_embeddings", -5, ["'max_position_embeddings'", "got -5", "2.."]),
    ("num_hidden_layers", -1, ["'num_hidden_layers'", "got -1", f"1..{limits.MAX_LAYERS}"]),
    ("num_hidden_layers", 0, ["'num_hidden_layers'", "got 0"]),
    ("num_hidden_layers", 2.0, ["'num_hidden_layers'", "got 2.0"]),
    ("num_hidden_layers", True, ["'num_hidden_layers'", "got True"]),
    ("hidden_size", "64", ["'hidden_size'", "got '64'"]),
    ("vocab_size", 2 ** 63, ["'vocab_size'", f"1..{limits.MAX_VOCAB}"]),
    ("rms_norm_eps", float("nan"), ["'rms_norm_eps'", "finite"]),
    ("architectures", "LlamaForCausalLM", ["'architectures'", "a list"]),
])
def test_a_bad_common_key_is_refused_naming_it(key, value, needles):
    _refused(dict(LLAMA, **{key: value}), *needles)


def test_a_billion_layers_is_refused_by_the_limit_before_building():
    t = time.perf_counter()
    _refused(dict(LLAMA, num_hidden_layers=1_000_000_000), "1000000000", "MAX_LAYERS")
    assert time.perf_counter() - t < 2   # it used to hang building the meta model


def test_a_one_position_decoder_is_refused_not_compiled_kv_less():
    # at one position the exported mask shows nothing, and the decoder lowered as bidirectional
    _refused(dict(LLAMA, max_position_embeddings=1), "'max_position_embeddings'", "got 1", "causal mask")
    config = build_config(dict(LLAMA, max_position_embeddings=limits.MIN_POSITIONS))
    assert config.max_position_embeddings == limits.MIN_POSITIONS


def test_two_positions_still_lower_a_causal_decoder():
    g = from_config(dict(LLAMA, max_position_embeddings=limits.MIN_POSITIONS))
    attn = [n for n in g.nodes if n.op == "attention"]
    assert attn and all(n.attrs["causal"] for n in attn)


@pytest.mark.parametrize("text,needle", [
    ('{"model_type": "llama", "hidden_size": ' + "9" * 5000 + "}", "5000 digits"),
    ('{"model_type": "llama", "x": ' + "[" * 100000 + "]" * 100000 + "}", "nested 100001 levels"),
    ('{"model_type": "llama", "hidden_size": NaN}', "NaN is not a number JSON allows"),
    ('{"model_type": "llama", "rope_theta": 1e999}', "overflows a float"),
    ('{"model_type": "llama", ', "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
], ids=["bigint", "deep", "nan", "overflow", "truncated", "array"])
def test_hostile_json_is_one_line(tmp_path, text, needle):
    path = _write(tmp_path, text)
    with pytest.raises(WaferccError) as ei:
        load_config_source(path)
    assert needle in str(ei.value) and "\n" not in str(ei.value)
    assert str(ei.value).startswith(path)


def test_binary_and_oversized_configs(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(WaferccError, match="not a UTF-8 text file"):
        load_config_source(str(path))
    path.write_text('{"pad": "' + "x" * limits.MAX_CONFIG_BYTES + '"}')
    with pytest.raises(WaferccError, match="at most"):
        load_config_source(str(path))


def test_deep_dict_from_the_api_is_one_line():
    v = 1
    for _ in range(100000):
        v = [v]
    _refused(dict(LLAMA, x=v), "nested more than")


@pytest.mark.parametrize("over,needles", [
    (dict(hidden_size=48, num_attention_heads=5, head_dim=None), ["'num_attention_heads'", "divisor of hidden_size 48"]),
    (dict(num_key_value_heads=3, num_attention_heads=4, head_dim=8), ["'num_key_value_heads'", "divisor of num_attention_heads 4"]),
    (dict(layer_types=["full_attention"] * 3), ["'layer_types'", "one per layer (1)"]),
])
def test_relations(over, needles):
    cfg = {k: v for k, v in dict(LLAMA, **over).items() if v is not None}
    _refused(cfg, *needles)


def test_explicit_head_dim_lifts_the_divisibility_relation():
    build_config(dict(LLAMA, hidden_size=48, num_attention_heads=4, num_key_value_heads=2, head_dim=16))


def test_relations_see_transformers_defaults():
    # no head count given: GPT-2's default (12) must still divide the given width
    cfg = {k: v for k, v in GPT2.items() if k != "n_head"}
    _refused(dict(cfg, n_embd=50), "(as transformers built it)", "got 12", "divisor of hidden_size 50")
    # LlamaConfig checks the same relation itself: its reason is kept, in one line
    cfg = {k: v for k, v in LLAMA.items() if k not in ("num_attention_heads", "num_key_value_heads", "head_dim")}
    _refused(dict(cfg, hidden_size=48), "hidden size (48) is not a multiple", "(32)")


def test_experts_per_token_at_most_the_experts():
    _refused(dict(LLAMA, model_type="mixtral", num_local_experts=2, num_experts_per_tok=3), "at most the 2 experts")


def test_model_specific_key_names_are_checked_as_the_common_key():
    # GPT-2 writes num_hidden_layers as n_layer and num_attention_heads as n_head (its attribute_map)
    _refused(dict(GPT2, n_layer=-1), "'n_layer'", "got -1")
    _refused(dict(GPT2, n_head=5), "'n_head'", "divisor of hidden_size 32")
    _refused(dict(GPT2, n_positions=1), "'n_positions'")


def test_nested_sub_configs_are_checked():
    cfg = {"model_type": "llava", "text_config": dict(LLAMA, num_hidden_layers=-1)}
    _refused(cfg, "'text_config.num_hidden_layers'")
    _refused({"model_type": "llava", "text_config": 5}, "'text_config'", "nested config")


def test_unknown_keys_are_left_to_transformers():
    build_config(dict(LLAMA, some_unknown_key=[1, {"a": None}], attention_bias=True))


def test_every_reference_config_passes_the_schema():
    for key in reg.names():
        build_config(reg.config(key), where=key)


def test_checkpoint_dtypes_of_auto_and_of_a_non_dict_quantization():
    assert checkpoint_dtypes({"torch_dtype": "auto"}) is None
    _refused(dict(LLAMA, torch_dtype="auto"), "'torch_dtype'", "'auto'")   # a loading argument, not a format
    assert checkpoint_dtypes({"torch_dtype": "bfloat16", "quantization_config": 5})["dtype"] == "bfloat16"


def test_the_cli_exits_2_with_one_line(tmp_path, capsys):
    path = _write(tmp_path, json.dumps(dict(LLAMA, quantization_config=5)))
    assert main(["compile", path, "--until", "ir", "--no-cache", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("wafercc: error: ") and "quantization_config" in err[0], err
    assert not (tmp_path / "out").exists()


# ---- fuzzing: mutated configs build, or are refused in one line ----

def _outcome(spec) -> str:
    try:
        prepare(spec)
    except WaferccError as e:
        msg = str(e)
        assert msg and "\n" not in msg and len(msg) < 600, msg
        return "refused"
    return "built"


_FUZZ = settings(max_examples=fuzz_examples(150), deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@_FUZZ
@given(config_dicts())
def test_fuzz_config_dicts(cfg):
    _outcome(cfg)


@_FUZZ
@given(config_texts())
def test_fuzz_config_files(tmp_path_factory, text):
    _outcome(_write(tmp_path_factory.mktemp("cfg"), text))


_VALID = st.fixed_dictionaries({
    "hidden_size": st.sampled_from([16, 32, 48]), "num_attention_heads": st.sampled_from([1, 2, 4]),
    "num_hidden_layers": st.integers(1, 2), "max_position_embeddings": st.sampled_from([2, 3, 17, 64]),
    "torch_dtype": st.sampled_from(["bfloat16", "float16", "float32"]),
})


# each example exports a model (seconds): a few, and no shrinking (it would export dozens more)
@settings(max_examples=3, deadline=None, derandomize=True, database=None, phases=[Phase.explicit, Phase.generate])
@given(_VALID)
def test_fuzz_valid_mutations_lower(over):
    cfg = {k: v for k, v in LLAMA.items() if k not in ("head_dim", "num_key_value_heads")}
    cfg.update(over)
    if cfg["hidden_size"] % cfg["num_attention_heads"]:
        with pytest.raises(ModelConfigError, match="divisor"):
            prepare(cfg)
        return
    g = from_config(cfg)
    assert len([n for n in g.nodes if n.op == "attention"]) == cfg["num_hidden_layers"]
