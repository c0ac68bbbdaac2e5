"""Hypothesis strategies for hostile Hugging Face configs and compile-option command lines.

Configs are mutations of small valid ones (a Llama, a GPT-2 written with its own key names, a BERT
encoder, a Mixtral): keys set to wrong types, huge / negative / zero numbers, non-finite floats,
strings, deep nesting; keys deleted; keys added.  ``config_texts`` yields JSON text, so it can carry
what Python's json module cannot write (5000-digit integers, 100,000-deep arrays, NaN).  Command
lines draw each compile flag with a value that is sometimes valid and often not.

    from fuzz.config_strategies import config_dicts, config_texts, cli_argvs, fuzz_examples
"""
from __future__ import annotations

import json
import os

from hypothesis import strategies as st


def fuzz_examples(default: int) -> int:
    """Examples per fuzz test: ``default`` in CI, ``WAFERCC_FUZZ_EXAMPLES`` for a long run."""
    return int(os.environ.get("WAFERCC_FUZZ_EXAMPLES", default))

LLAMA = dict(model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
             num_key_value_heads=1, vocab_size=64, max_position_embeddings=64, head_dim=16, torch_dtype="bfloat16")
GPT2 = dict(model_type="gpt2", n_embd=32, n_layer=1, n_head=2, vocab_size=64, n_positions=64, n_inner=64)
BERT = dict(model_type="bert", hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            vocab_size=64, max_position_embeddings=64)
MIXTRAL = dict(LLAMA, model_type="mixtral", num_local_experts=4, num_experts_per_tok=2)
BASES = (LLAMA, GPT2, BERT, MIXTRAL)

# keys every config shares (under some name), plus a few that only some architectures read
KEYS = ("model_type", "hidden_size", "n_embd", "intermediate_size", "num_hidden_layers", "n_layer",
        "num_attention_heads", "n_head", "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings",
        "n_positions", "torch_dtype", "dtype", "quantization_config", "num_local_experts", "num_experts_per_tok",
        "sliding_window", "layer_types", "architectures", "rms_norm_eps", "rope_theta", "hidden_act",
        "tie_word_embeddings", "text_config", "rope_scaling", "attention_bias", "some_unknown_key")

_DEEP = "\x00deep\x00"      # placeholders replaced in the JSON text by what json.dumps cannot write
_BIGINT = "\x00bigint\x00"
_NAN = "\x00nan\x00"

numbers = st.one_of(
    st.integers(-3, 3), st.integers(-2 ** 70, 2 ** 70), st.sampled_from([2 ** 31, 2 ** 31 - 1, 10 ** 9, 10 ** 12, 2 ** 63]),
    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([0.5, 1e308, -1e-300, 64.0]))
scalars = st.one_of(numbers, st.booleans(), st.none(), st.text(max_size=12),
                    st.sampled_from(["", "float64", "bool", "auto", "bfloat16", "int8", "llama", "silu"]))


def _nested(depth: int):
    """[[...[1]...]] built iteratively (``depth`` levels)."""
    v = 1
    for _ in range(depth):
        v = [v]
    return v


def values(deep: int = 200):
    """A hostile value for a config key; ``deep`` is the deepest nesting drawn as a Python object."""
    return st.one_of(
        scalars,
        st.lists(scalars, max_size=4),
        st.dictionaries(st.text(max_size=6), scalars, max_size=3),
        st.sampled_from([5, [], {}, {"quant_method": 5}, {"quant_method": "mxfp4"}, ["a"] * 3]),
        st.integers(1, deep).map(_nested),
    )


@st.composite
def config_dicts(draw, deep: int = 200):
    """A mutated config dict (Python objects: what an API caller could pass)."""
    cfg = dict(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.one_of(st.sampled_from(KEYS), st.sampled_from(sorted(cfg))))
        action = draw(st.sampled_from(["set", "set", "set", "delete", "nest"]))
        if action == "delete":
            cfg.pop(key, None)
        elif action == "nest":
            cfg[key] = {"model_type": cfg.get("model_type"), key: draw(values(deep))}
        else:
            cfg[key] = draw(values(deep))
    return cfg


@st.composite
def config_texts(draw):
    """A config.json text: a mutated config, sometimes carrying a 5000-digit integer, 100,000-deep
    nesting or a NaN literal, sometimes cut short."""
    cfg = draw(config_dicts(deep=8))
    special = draw(st.sampled_from([None, None, _DEEP, _BIGINT, _NAN]))
    if special:
        cfg[draw(st.sampled_from(KEYS))] = special
    text = json.dumps(cfg)
    text = (text.replace(json.dumps(_DEEP), "[" * 100000 + "]" * 100000)
            .replace(json.dumps(_BIGINT), "9" * 5000).replace(json.dumps(_NAN), "NaN"))
    if draw(st.integers(0, 9)) == 0:
        text = text[:draw(st.integers(0, len(text)))]
    return text


# ---- compile options on the command line ----
INT_FLAGS = ("--seed", "--context", "--batch", "--wafers", "--max-wafers", "--layers", "--prompt-tokens",
             "--spec-tokens")
int_strings = st.one_of(
    st.integers(-2 ** 40, 2 ** 40).map(str),
    st.sampled_from(["0", "-1", "1", "2147483647", "2147483648", str(10 ** 12), str(2 ** 31), "9" * 5000,
                     "1e3", "", " 7", "0x10", "1_000", "nan", "٣"]))
dtype_strings = st.sampled_from(["bf16", "fp8", "fp4", "int8", "bool", "", "i64", "float64", "BF16", "f4e2m1",
                                 "x" * 300])
defect_terms = st.one_of(
    st.sampled_from(["none", "default", "random:0.01", "random:rate=1%", "dies:1", "links:0.001",
                     "clustered:rate=0.5,size=1e308", "clustered:rate=0.01,size=8", "clustered:count=5",
                     "clustered:count=100000,size=100000", "random:rate=nan", "random:seed=-1,rate=0.1",
                     "dies:count=99999999999999999999999", "random", "bogus:1", "file:", "file:/nonexistent.json",
                     "random:0.01,0.02", "clustered:size=inf,rate=0.1", ""]),
    st.builds(lambda k, p, v: f"{k}:{p}={v}", st.sampled_from(["random", "clustered", "dies", "links"]),
              st.sampled_from(["rate", "size", "count", "seed", "x"]),
              st.one_of(int_strings, st.floats().map(repr), st.text(max_size=5))))
defect_specs = st.lists(defect_terms, min_size=1, max_size=20).map("+".join)


@st.composite
def cli_argvs(draw):
    """Compile flags (no MODEL): each drawn flag with a valid or hostile value."""
    argv: list[str] = []
    for _ in range(draw(st.integers(1, 4))):
        flag = draw(st.sampled_from(INT_FLAGS + ("--dtype", "--kv-dtype", "--dtype-override", "--defects",
                                                 "--spec-acceptance", "--target", "--until", "--layout",
                                                 "--kv-placement", "--speculative")))
        if flag in INT_FLAGS:
            value = draw(int_strings)
        elif flag in ("--dtype", "--kv-dtype"):
            value = draw(dtype_strings)
        elif flag == "--dtype-override":
            value = draw(st.builds(lambda p, d: f"{p}={d}", st.sampled_from(["moe", "", "(", "lm_head"]), dtype_strings))
        elif flag == "--defects":
            value = draw(defect_specs)
        elif flag == "--spec-acceptance":
            value = draw(st.one_of(st.floats().map(repr), st.sampled_from(["0.5", "1.5", "nan", "-inf", ""])))
        elif flag == "--target":
            value = draw(st.sampled_from(["wse2", "wse3", "wse9", "", "/nonexistent.toml", "/dev/null"]))
        elif flag == "--until":
            value = draw(st.sampled_from(["ir", "plan", "lunch", ""]))
        elif flag == "--layout":
            value = draw(st.sampled_from(["lanes", "spares", "spiral"]))
        elif flag == "--kv-placement":
            value = draw(st.sampled_from(["beside", "dedicated", "nowhere"]))
        else:
            value = draw(st.sampled_from(["llama-3.2-1b", "/nonexistent.onnx"]))
        argv += [f"{flag}={value}"]
    return argv
