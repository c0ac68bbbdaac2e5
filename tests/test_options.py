"""Compile options: one table of knobs, the defaults in the options dataclasses only, the CLI flags
and API keywords derived from it and mapping to the same fields."""
from __future__ import annotations

import argparse
import os
import re

import pytest

from wafercc.cli import _parser
from wafercc.ir import DEFAULT_CONTEXT, DType
from wafercc.options import KNOBS, CompileOptions, OptionError, add_cli_flags, build_options, default, options_from_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*argv) -> CompileOptions:
    p = argparse.ArgumentParser()
    add_cli_flags(p)
    return options_from_cli(p.parse_args(list(argv)))


def test_no_flags_and_no_keywords_are_the_dataclass_defaults():
    assert _cli() == build_options() == CompileOptions()
    assert build_options().plan.context == DEFAULT_CONTEXT


@pytest.mark.parametrize("argv,kw", [
    (["--context", "4096", "--batch", "4"], {"context": 4096, "batch": 4}),
    (["--dtype", "fp8", "--kv-dtype", "bf16"], {"dtype": "fp8", "kv_dtype": DType.BF16}),
    (["--dtype-override", "moe=fp4", "--dtype-override", "lm_head=bf16"], {"dtype_override": ["moe=fp4", "lm_head=bf16"]}),
    (["--layout", "spares", "--seed", "7"], {"layout": "spares", "seed": 7}),
    (["--no-curve", "--no-cache", "--prompt-tokens", "64"], {"curve": False, "cache": False, "prompt_tokens": 64}),
    (["--speculative", "llama-3.2-1b", "--spec-tokens", "3"], {"speculative": "llama-3.2-1b", "spec_tokens": 3}),
    (["--until", "place", "--max-wafers", "2", "--kv-placement", "dedicated"],
     {"until": "place", "max_wafers": 2, "kv_placement": "dedicated"}),
])
def test_cli_flags_and_api_keywords_build_the_same_options(argv, kw):
    assert _cli(*argv) == build_options(**kw)


def test_seed_reaches_the_device_every_solver_and_the_placer():
    o = build_options(seed=5)
    assert o.seed == o.plan.solver.seed == o.place.seed == 5


def test_every_knob_has_a_documented_flag_with_its_default():
    helps = " ".join(_parser()._subparsers._group_actions[0].choices["compile"].format_help().split())
    for k in KNOBS:
        assert k.flag in helps, k.flag
        d = default(k)
        if d not in (None, ()) and k.cli == "value":
            assert f"(default {d})" in helps, k.name


def test_bad_values_name_the_option():
    for kw, msg in [({"context": "many"}, "option context"), ({"layout": "spiral"}, "layout 'spiral'"),
                    ({"spec_tokens": 3}, "need speculative"), ({"until": "lunch"}, "until 'lunch'"),
                    ({"seed": 2 ** 31}, "seed 2147483648"), ({"dtype": "fp7"}, "--dtype")]:
        with pytest.raises(Exception, match=re.escape(msg)) as e:
            build_options(**kw)
        assert isinstance(e.value, OptionError) or type(e.value).__name__ == "PlanError"


def test_the_context_default_is_written_once():
    """The default context lives in ir/facts.py (DEFAULT_CONTEXT), nowhere else in the compiler."""
    hits = []
    for top in ("wafercc", "passes", "ir"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(dirpath, f)
                    for i, line in enumerate(open(path, encoding="utf-8"), 1):
                        if re.search(r"\b8192\b", line.split("#")[0]):
                            hits.append(f"{os.path.relpath(path, ROOT)}:{i}")
    assert len(hits) == 1 and hits[0].startswith("ir/facts.py:"), hits
