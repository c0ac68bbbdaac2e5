"""The speed-of-light bound (wafercc/perf/bound.py, docs/cost-model.md "Speed of light"): below every
prediction, each term moves with the hardware figure it divides by, and the report's fields agree."""
from __future__ import annotations

import os

import numpy as np
import pytest

import wafercc
from wafercc.cli import main
from wafercc.perf import bound
from wafercc.target import load_target

from report_fields import check_speed_of_light
from target_util import tiny_target, write_variant

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "models", "onnx", "tiny-llama.onnx")
MOE = os.path.join(ROOT, "models", "onnx", "tiny-moe.onnx")


def _compile(model=TINY, **kw):
    return wafercc.compile(model, prompt_tokens=64, curve=False, **kw)


@pytest.fixture(scope="module")
def tiny():
    return _compile()


def _sol(c, target):
    """The section recomputed for the same schedule on another target file."""
    return bound.speed_of_light(c.program, c.graph, c.plan, target, c.device, c.performance_section)


@pytest.mark.parametrize("model,kw", [
    (TINY, {}),
    (TINY, {"target": "wse2"}),
    (TINY, {"batch": 4, "context": 512}),
    (TINY, {"wafers": 2}),
    (MOE, {}),
])
def test_bound_is_below_every_prediction(model, kw):
    c = _compile(model, **kw)
    r = c.report
    check_speed_of_light(r)
    s = r["speed_of_light"]
    assert 0 < s["prediction_fraction"] <= 1
    assert s["time_per_output_token_s"] <= r["performance"]["time_per_output_token_s"]
    assert 0 < s["at_batch"]["prediction_fraction"] <= 1
    assert len(s["per_wafer"]) == r["wafers"]["used"]


def test_bound_is_below_the_prediction_on_a_tiny_target(tmp_path):
    tiny_target(tmp_path, 40, 30)
    c = _compile(target=str(tmp_path / "tiny-40x30.toml"))
    check_speed_of_light(c.report)
    assert c.report["speed_of_light"]["prediction_fraction"] <= 1


def test_doubling_the_clock_halves_every_on_wafer_term(tiny, tmp_path):
    base = _sol(tiny, tiny.target)
    fast = _sol(tiny, load_target(write_variant(tmp_path, "clock = { value = 1.1,", "clock = { value = 2.2,")))
    for k in ("compute", "sram", "fabric_chain"):
        assert fast["terms_s"][k] == pytest.approx(base["terms_s"][k] / 2, rel=1e-9)
    assert fast["time_per_output_token_s"] == pytest.approx(base["time_per_output_token_s"] / 2, rel=1e-9)


def test_sram_bandwidth_moves_only_the_sram_term(tiny, tmp_path):
    base = _sol(tiny, tiny.target)
    wide = _sol(tiny, load_target(write_variant(tmp_path, "sram_read_bandwidth = { value = 16,",
                                                "sram_read_bandwidth = { value = 32,")))
    assert wide["terms_s"]["sram"] == pytest.approx(base["terms_s"]["sram"] / 2, rel=1e-9)
    assert wide["terms_s"]["compute"] == pytest.approx(base["terms_s"]["compute"], rel=1e-12)
    assert wide["time_per_output_token_s"] <= base["time_per_output_token_s"]


def test_more_simd_lanes_cut_the_compute_term(tiny, tmp_path):
    base = _sol(tiny, tiny.target)
    wide = _sol(tiny, load_target(write_variant(tmp_path, "simd_lanes_fp16 = { value = 8,",
                                                "simd_lanes_fp16 = { value = 16,")))
    assert wide["terms_s"]["compute"] == pytest.approx(base["terms_s"]["compute"] / 2, rel=1e-9)
    assert wide["terms_s"]["fabric_chain"] <= base["terms_s"]["fabric_chain"]


def test_a_slower_reduction_step_only_raises_the_chain(tiny):
    s = tiny.report["speed_of_light"]
    fitted = s["at_fitted_reduce_step"]
    assert fitted["reduction_step_cycles"] > s["reduction_step_cycles"] == 1.0
    assert fitted["time_per_output_token_s"] > s["time_per_output_token_s"]
    assert fitted["time_per_output_token_s"] <= tiny.report["performance"]["time_per_output_token_s"]


def test_doubling_wafers_does_not_raise_the_on_wafer_bound(tiny):
    two = _compile(wafers=2)
    one_s, two_s = tiny.report["speed_of_light"], two.report["speed_of_light"]
    assert two_s["terms_s"]["fabric_chain"] <= one_s["terms_s"]["fabric_chain"]
    assert max(w["compute_s"] for w in two_s["per_wafer"]) <= one_s["terms_s"]["compute"] * 1.01
    assert max(w["sram_s"] for w in two_s["per_wafer"]) <= one_s["terms_s"]["sram"] * 1.01
    # what the second wafer adds is its boundary: the off-wafer latency and the activation bytes
    assert two_s["terms_s"]["inter_wafer"] >= two.target.io.off_wafer_latency
    assert (two_s["time_per_output_token_s"] - two_s["terms_s"]["inter_wafer"]
            <= one_s["time_per_output_token_s"] * 1.01)


def test_a_model_without_kv_cache_reads_no_kv():
    c = wafercc.compile("minilm-l6", curve=False)
    s = c.report["speed_of_light"]
    assert all(w["kv_bytes_read"] == 0 and w["sram_kv_s"] == 0 for w in s["per_wafer"])
    assert s["terms_s"]["sram"] > 0 and s["prediction_fraction"] <= 1


def test_kv_reads_grow_with_the_decode_position(tiny):
    short = tiny.report["speed_of_light"]
    longer = wafercc.compile(TINY, prompt_tokens=256, curve=False).report["speed_of_light"]
    assert longer["decode_context_tokens"] > short["decode_context_tokens"]
    assert longer["per_wafer"][0]["kv_bytes_read"] > short["per_wafer"][0]["kv_bytes_read"]
    assert longer["per_wafer"][0]["weight_bytes_read"] == short["per_wafer"][0]["weight_bytes_read"]


def test_diamond_radius_counts_the_manhattan_ball():
    def ball(r):
        return sum(1 for x in range(-r, r + 1) for y in range(-r, r + 1) if abs(x) + abs(y) <= r)
    for n in range(1, 200):
        r = bound.diamond_radius(n)
        assert ball(r) >= n and (r == 0 or ball(r - 1) < n)


def test_the_best_gemv_shape_beats_fixed_shapes():
    """The per-op floor is the minimum over shapes: no single-row or single-column shape is faster."""
    t = load_target("wse3")
    fab = bound._Fabric(t)
    k, n, bits, act = 4096, 4096, 16, 2.0
    best = fab.gemv(k, n, bits, act)
    need = fab.cores(k * n * bits / 8)
    one = np.array([1])
    one_row = fab.gemv_cells(k, n, bits, act, one, one, one * need, one * need)[0][0]
    one_col = fab.gemv_cells(k, n, bits, act, one * need, one * need, one, one)[0][0]
    assert 0 < best <= min(one_row, one_col)
    slow = bound._Fabric(t, step=35.0)
    assert slow.gemv(k, n, bits, act) >= best


def test_cli_prints_the_speed_of_light_line(tmp_path, capsys):
    assert main(["compile", TINY, "-o", str(tmp_path / "out"), "--prompt-tokens", "64", "--no-curve"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("speed of light:"))
    assert "tok/s/user" in line and "% of it" in line


def test_the_best_attention_shape_beats_one_position_per_core():
    t = load_target("wse3")
    fab = bound._Fabric(t)
    positions, bits, group, hd, act = 1024, 128 * 2 * 16, 4, 128, 2.0
    best = fab.kv(positions, bits, group, hd, act)
    a = np.array([positions])
    one_each = fab.kv_cells(positions, bits, group, hd, act, a, a)[0][0]
    assert 0 < best <= one_each
    assert fab.kv(2 * positions, bits, group, hd, act) >= best     # more context never helps
