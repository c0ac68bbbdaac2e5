"""Compile options, target files and defect specs are validated with their units and bounds
(wafercc.limits, wafercc.target.schema): each hostile value of issue 14 is refused in one line with
exit 2, and random command lines never end in another exception."""
from __future__ import annotations

import argparse
import time

import pytest
from hypothesis import HealthCheck, given, settings

from fuzz.config_strategies import cli_argvs, defect_specs, fuzz_examples
from wafercc import limits
from wafercc.cli import main
from wafercc.errors import WaferccError
from wafercc.options import KNOBS, OptionError, add_cli_flags, build_options, options_from_cli
from wafercc.target import load_target
from wafercc.target.defects import generate_defects, parse_defect_spec
from wafercc.target.device import Device
from wafercc.target.errors import DefectSpecError, TargetError
from wafercc.target.loader import resolve


def _one_line(e: BaseException, *needles):
    msg = str(e)
    assert msg and "\n" not in msg and len(msg) < 400, msg
    for n in needles:
        assert n in msg, (n, msg)


def _cli_error(capsys, argv) -> str:
    """Run ``wafercc compile`` on a missing model; the options must fail first, in one line, exit 2."""
    try:
        code = main(["compile", "/nonexistent/model.onnx", *argv])
    except SystemExit as e:          # argparse's own usage errors
        code = e.code
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and err and err[-1].startswith("wafercc: error: "), (code, err)
    assert "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.mark.parametrize("argv,needles", [
    (["--seed=-1"], ["seed -1", "0..2147483647"]),
    (["--seed", "2147483648"], ["seed 2147483648", "MAX_SEED"]),          # CP-SAT's random_seed is an int32
    (["--context", str(10 ** 12)], ["context 1000000000000", f"1..{limits.MAX_CONTEXT} tokens"]),
    (["--context", "1e3"], ["context", "an integer", "'1e3'"]),
    (["--context", "9" * 5000], ["context", "5000-character"]),
    (["--wafers", str(2 ** 31)], ["wafers 2147483648", f"1..{limits.MAX_WAFERS} wafers"]),
    (["--max-wafers", "0"], ["max_wafers 0"]),
    (["--batch", str(10 ** 9)], ["batch", "MAX_BATCH"]),
    (["--layers=-1"], ["layers -1", "MAX_LAYERS"]),
    (["--prompt-tokens", "0"], ["prompt_tokens 0"]),
    (["--speculative", "llama-3.2-1b", "--spec-acceptance", "nan"], ["spec_acceptance", "finite"]),
    (["--speculative", "llama-3.2-1b", "--spec-acceptance", "1.5"], ["spec_acceptance 1.5", "0.0..1.0"]),
    (["--dtype", "bool"], ["--dtype 'bool'", "not a storage dtype"]),
    (["--dtype="], ["unknown dtype ''", "storage dtype"]),
    (["--kv-dtype", "i64"], ["--kv-dtype 'i64'"]),
    (["--dtype-override", "moe=bool"], ["'bool'", "storage dtype"]),
    (["--defects", "clustered:rate=0.5,size=1e308"], ["size='1e308'", "MAX_CLUSTER_SIZE"]),
    (["--defects", "+".join(["random:0.01"] * 17)], ["17 terms", "MAX_DEFECT_TERMS"]),
    (["--defects", "random:seed=-1,rate=0.1"], ["seed='-1'"]),
])
def test_bad_options_exit_2_in_one_line(capsys, argv, needles):
    line = _cli_error(capsys, argv)
    for n in needles:
        assert n in line, (n, line)


def test_options_accept_their_bounds():
    o = build_options(seed=limits.MAX_SEED, context=limits.MAX_CONTEXT, wafers=limits.MAX_WAFERS,
                      max_wafers=limits.MAX_WAFERS, batch=limits.MAX_BATCH, layers=limits.MAX_LAYERS)
    assert (o.seed, o.plan.context, o.plan.wafers) == (limits.MAX_SEED, limits.MAX_CONTEXT, limits.MAX_WAFERS)
    with pytest.raises(OptionError):
        build_options(context=limits.MAX_CONTEXT + 1)


def test_every_integer_knob_has_bounds_shown_in_help():
    p = argparse.ArgumentParser()
    add_cli_flags(p)
    helps = " ".join(p.format_help().split())
    for k in KNOBS:
        if k.parse is not None and k.parse.__name__ in ("_int", "_float"):
            assert k.bounds is not None, k.name
            assert f"{k.bounds[0]}..{k.bounds[1]}" in helps, k.name


def test_cli_strings_and_api_values_are_bounded_alike():
    p = argparse.ArgumentParser()
    add_cli_flags(p)
    for argv, kw in [(["--context", str(10 ** 12)], {"context": 10 ** 12}), (["--seed=-1"], {"seed": -1})]:
        with pytest.raises(OptionError) as a:
            options_from_cli(p.parse_args(argv))
        with pytest.raises(OptionError) as b:
            build_options(**kw)
        assert str(a.value) == str(b.value)


# ---- target files ----

def _preset() -> str:
    with open(resolve("wse3"), encoding="utf-8") as f:
        return f.read()


def test_a_binary_target_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "wafer.toml"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(TargetError) as ei:
        load_target(str(path))
    _one_line(ei.value, str(path), "not a UTF-8 text file")
    assert "not a UTF-8" in _cli_error(capsys, ["--target", str(path)])


@pytest.mark.parametrize("old,new,needles", [
    ("value = 762", "value = " + "9" * 5000, ["5000 digits", "MAX_INT_DIGITS"]),
    ("value = 762", "value = 1000000000", ["'mesh.fabric_width'", f"at most {limits.MAX_FABRIC_SIDE} cores"]),
    ('value = 48, unit = "KiB"', 'value = 1e308, unit = "GiB"', ["'core.sram'", "finite"]),
    ('value = 48, unit = "KiB"', 'value = 2, unit = "GiB"', ["'core.sram'", "at most 1073741824 B"]),
    ("value = 24,", "value = 100000,", ["'fabric.colors'", "at most 1024"]),
], ids=["bigint", "huge-mesh", "overflow", "huge-sram", "colors"])
def test_target_fields_are_bounded(tmp_path, old, new, needles):
    text = _preset()
    assert old in text, old
    path = tmp_path / "t.toml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(TargetError) as ei:
        load_target(str(path))
    _one_line(ei.value, str(path), *needles)


def test_deep_and_oversized_target_files(tmp_path):
    path = tmp_path / "deep.toml"
    path.write_text(_preset() + "\nx = " + "[" * 100000 + "]" * 100000 + "\n", encoding="utf-8")
    with pytest.raises(TargetError) as ei:
        load_target(str(path))
    _one_line(ei.value, "nested 100000 levels", "MAX_JSON_DEPTH")
    path = tmp_path / "big.toml"
    path.write_text("# " + "x" * limits.MAX_TARGET_BYTES, encoding="utf-8")
    with pytest.raises(TargetError) as ei:
        load_target(str(path))
    _one_line(ei.value, "at most")


def test_a_string_holding_brackets_is_not_nesting(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(_preset().replace('name = "wse3"', 'name = "' + "[" * 100 + '"', 1), encoding="utf-8")
    assert load_target(str(path)).name == "[" * 100


# ---- defect specs and defect-map files ----

@pytest.mark.parametrize("spec,needle", [
    ("clustered:rate=0.5,size=1e308", "MAX_CLUSTER_SIZE"), ("clustered:rate=0.1,size=inf", "size='inf'"),
    ("dies:count=99999999999999999999999", "MAX_DEFECT_COUNT"), ("random:rate=nan", "fraction"),
    ("random:seed=2147483648,rate=0.1", "MAX_SEED"),
])
def test_defect_parameters_are_bounded(spec, needle):
    with pytest.raises(DefectSpecError) as ei:
        parse_defect_spec(spec)
    _one_line(ei.value, needle)


def test_clusters_that_would_kill_the_wafer_many_times_over_are_refused_fast():
    t0 = time.perf_counter()
    with pytest.raises(DefectSpecError) as ei:
        generate_defects(parse_defect_spec("clustered:count=100000,size=100000"), load_target("wse3"), 0, 0)
    _one_line(ei.value, "count x size", "883350 cores")
    assert time.perf_counter() - t0 < 5


@pytest.mark.parametrize("text,needle", [
    ('{"version": 1, "all": {"dead_cores": [[1180591620717411303424, 0]]}}', "integers of at most"),
    ('{"version": 1, "wafers": {"\\u00b2": {}}}', "expected a wafer index"),
    ('{"version": true}', "expected 1"),
    ('{"version": 1, "all": ' + "[" * 100000 + "]" * 100000 + "}", "nested 100001 levels"),
    ('{"version": 1, "x": ' + "9" * 5000 + "}", "5000 digits"),
], ids=["bigint-core", "unicode-digit", "bool-version", "deep", "bigint"])
def test_hostile_defect_files(tmp_path, text, needle):
    path = tmp_path / "d.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DefectSpecError) as ei:
        parse_defect_spec(f"file:{path}")
    _one_line(ei.value, needle)
    path.write_bytes(b"\xff\xfe binary")
    with pytest.raises(DefectSpecError, match="not a UTF-8 text file"):
        parse_defect_spec(f"file:{path}")


# ---- fuzzing ----

_FUZZ = settings(max_examples=fuzz_examples(120), deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@_FUZZ
@given(argv=cli_argvs())
def test_fuzz_command_lines(capsys, argv):
    """Any compile command line fails in one line with exit 2 (the model is missing), and when its
    options are valid, its target loads and wafer 0's defect map is generated, or refused in one line."""
    _cli_error(capsys, argv)
    p = argparse.ArgumentParser(exit_on_error=False)
    add_cli_flags(p)
    try:
        o = options_from_cli(p.parse_args(argv))
        Device(load_target(o.target), o.defects, o.seed).wafer(0)
    except WaferccError as e:
        _one_line(e)
    except argparse.ArgumentError:
        pass                            # an invalid choice: the real CLI refused it above, exit 2


@settings(max_examples=fuzz_examples(100), deadline=None, derandomize=True, database=None)
@given(spec=defect_specs)
def test_fuzz_defect_specs(spec):
    try:
        generate_defects(parse_defect_spec(spec), load_target("wse3"), 0, 1)
    except WaferccError as e:
        _one_line(e)
