"""The speed-of-light per-op floors (wafercc/perf/bound.py, docs/cost-model.md "Speed of light"): each
term on a hand-computed shape, the shape cells' envelope, and the bound below both the analytic
prediction and the event replay over models, meshes and mappings."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from wafercc.cli import main
from wafercc.perf import bound
from wafercc.perf.eventsim import compare_with_analytic
from wafercc.target import load_target

from target_util import tiny_target

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "models", "onnx", "tiny-llama.onnx")
MOE = os.path.join(ROOT, "models", "onnx", "tiny-moe.onnx")
# wse3: 1-cycle hops, 4 links x 4 B = 16 B/cycle in and out of a core, 8 MACs and 16 B of SRAM per cycle


@pytest.fixture(scope="module")
def fab():
    return bound._Fabric(load_target("wse3"))


def _gemv(fab, k, n, a, b, bits=16, act=2.0):
    """The floor of the one shape a x b."""
    t, ok = fab.gemv_cells(k, n, bits, act, np.array([a]), np.array([a]), np.array([b]), np.array([b]))
    assert ok[0]
    return float(t[0])


def test_partial_sums_must_leave_the_core(fab):
    # a = 2, b = 1, k = 4, n = 64: 2 inputs (0.25 cycles), then 64 fp32 partials over 16 B/cycle = 16;
    # 1 hop in, the 2-part tree's add (1): 1 + 0.25 + 16 + 1
    assert _gemv(fab, 4, 64, 2, 1) == pytest.approx(18.25)
    # one row split: the core is the root, its outputs need no partial message, only its 64 x 4 MACs (32)
    assert _gemv(fab, 4, 64, 1, 1) == pytest.approx(1 + 32)


def test_the_input_slice_must_be_taken_in(fab):
    # 64 bf16 inputs over 16 B/cycle = 8, the 64 MACs (8) and reads (8) stream beside them, then the
    # last input's MAC (1/8): 1 hop + 8 + 0.125
    assert _gemv(fab, 64, 1, 1, 1) == pytest.approx(9.125)


def test_the_tree_after_every_core(fab):
    # 8 row splits of one input each: ready at 1 + 0.125 + 0.25 (one fp32 partial); ceil(log2 8) = 3
    # adds (more than the 2 hops to the farthest of 8 cores)
    assert _gemv(fab, 8, 1, 8, 1) == pytest.approx(1.375 + 3)
    slow = bound._Fabric(load_target("wse3"), step=35.0)
    assert _gemv(slow, 8, 1, 8, 1) == pytest.approx(1.375 + 3 * 35)
    # the pipelined tree counts the message length once: 16 partials of 64 B, not 3 x 4 cycles
    assert _gemv(fab, 8, 16, 8, 1) == pytest.approx(1 + 0.125 + 4 + 3)


def test_the_input_comes_from_another_core(fab):
    # x_1 fans out to 5 cores from a producer that is none of them: radius 2 (the ball of 1 holds 5,
    # one of them the producer), then its MAC (1/8)
    assert _gemv(fab, 1, 5, 1, 5) == pytest.approx(2.125)
    assert bound.diamond_radius(5) == 1 and bound.diamond_radius(6) == 2


def test_kv_partials_combine_over_the_positions(fab):
    # 4 positions on 4 cores, group 2, head_dim 8, bf16: the query (2 x 8 x 2 B = 2 cycles; the new K, V
    # row goes to one core only), then the partial 2 x (8 + 2) x 4 B = 5 cycles; the 4 cores' tree: 2 adds
    a = np.array([4])
    t, ok = fab.kv_cells(4, 2 * 8 * 16, 2, 8, 2.0, a, a)
    assert ok[0] and t[0] == pytest.approx(1 + 2 + 5 + 2)
    # one core: no partial leaves it; its 2 x 4 x 2 x 8 MACs (16 cycles) bind
    one = np.array([1])
    t, _ = fab.kv_cells(4, 2 * 8 * 16, 2, 8, 2.0, one, one)
    assert t[0] == pytest.approx(1 + 16)


def test_a_cell_is_a_floor_of_every_shape_in_it():
    """The minimum over cells is no more than the floor of any integer shape (brute force)."""
    fab = bound._Fabric(load_target("wse3"), max_cores=300)
    for k, n in ((7, 13), (24, 5), (40, 33)):
        best = fab.gemv(k, n, 16, 2.0)
        shapes = [(a, b) for a in range(1, k + 1) for b in range(1, n + 1) if a * b <= fab.max_cores]
        floors = [_gemv(fab, k, n, a, b) for a, b in shapes]
        assert best <= min(floors) + 1e-9
        lo, hi = bound._cells(k)
        for a_lo, a_hi in zip(lo, hi):       # each cell is below every shape inside it
            t, ok = fab.gemv_cells(k, n, 16, 2.0, np.array([[a_lo]]), np.array([[a_hi]]),
                                   np.array([[1]]), np.array([[n]]))
            inside = [f for (a, _), f in zip(shapes, floors) if a_lo <= a <= a_hi]
            assert not inside or t[0, 0] <= min(inside) + 1e-9
    for positions in (5, 12):
        best = fab.kv(positions, 256, 2, 8, 2.0)
        for a in range(1, min(positions * 16, fab.max_cores) + 1):
            t, ok = fab.kv_cells(positions, 256, 2, 8, 2.0, np.array([a]), np.array([a]))
            assert best <= t[0] + 1e-9


def test_cells_cover_every_split_once():
    for m in (1, 2, 3, 17, 100, 4096, 14336):
        lo, hi = bound._cells(m)
        assert lo[0] == 1 and hi[-1] == m and np.all(lo[1:] == hi[:-1] + 1) and np.all(lo <= hi)
        # ceil(log2) is constant inside a cell, so the tree's depth is never relaxed
        assert np.all(bound._log2_ceil(lo) == bound._log2_ceil(hi))


CASES = [
    ("tiny-llama regions", [TINY, "--mapping", "regions"]),
    ("tiny-llama groups:2", [TINY, "--mapping", "groups:2"]),
    ("tiny-llama wafer", [TINY, "--mapping", "wafer"]),
    ("tiny-llama 2 wafers", [TINY, "--wafers", "2"]),
    ("tiny-llama chains", [TINY, "--reduction", "chain"]),
    ("tiny-moe regions", [MOE, "--mapping", "regions"]),
    ("tiny-moe wafer", [MOE, "--mapping", "wafer"]),
    ("tiny-llama 40x30 regions", [TINY, "--target", "SMALL", "--mapping", "regions"]),
    ("tiny-llama 40x30 wafer", [TINY, "--target", "SMALL", "--mapping", "wafer"]),
    ("tiny-moe 40x30 groups:2", [MOE, "--target", "SMALL", "--mapping", "groups:2"]),
    ("llama-3.2-1b 2 layers wafer", ["llama-3.2-1b", "--layers", "2", "--mapping", "wafer"]),
]


@pytest.mark.parametrize("name,args", CASES, ids=[c[0] for c in CASES])
def test_the_bound_is_below_the_prediction_and_the_replay(name, args, tmp_path):
    small = tiny_target(tmp_path, 40, 30) and str(tmp_path / "tiny-40x30.toml")
    out = str(tmp_path / "out")
    args = [small if a == "SMALL" else a for a in args]
    assert main(["compile", *args, "-o", out, "--no-cache", "--no-curve", "--prompt-tokens", "64"]) == 0
    with open(os.path.join(out, "report.json"), encoding="utf-8") as f:
        r = json.load(f)
    s = r["speed_of_light"]
    replay = compare_with_analytic(out)
    assert s["reduction_step_cycles"] == 1.0
    for floor in (s["time_per_output_token_s"], s["at_fitted_reduce_step"]["time_per_output_token_s"]):
        assert 0 < floor <= r["performance"]["time_per_output_token_s"]
        assert floor <= replay["event_seconds"] and floor <= replay["analytic_seconds"]
    assert s["time_per_output_token_s"] <= s["at_fitted_reduce_step"]["time_per_output_token_s"]


def _brute_round_trip(m: int, span: int = 9) -> int:
    pts = [(x, y) for x in range(-span, span + 1) for y in range(-span, span + 1) if (x, y) != (0, 0)]
    return min(sorted(abs(x) + abs(y) + abs(x - rx) + abs(y - ry) for x, y in pts)[m - 1]
               for rx in range(6) for ry in range(6))


def test_round_trip_hops_match_a_brute_force():
    for m in (1, 2, 4, 5, 8, 12, 20, 33, 50):
        assert bound.round_trip_hops(m) == _brute_round_trip(m)
    assert list(bound.round_trip_hops(np.array([1, 5, 50]))) == [1, 3, 10]


def test_kv_query_out_and_partials_back(fab):
    # 50 positions on 50 cores, one query head of dim 1: the query must reach all 50 from one producer
    # and a partial from each must reach one output's root: 10 hops in all (twice the fan-out's 5),
    # then the root's add; the tree alone (1.875 ready + 6 adds) and the fan-out (5 + 0.75 + 1) are less
    a = np.array([50])
    t, ok = fab.kv_cells(50, 32, 1, 1, 2.0, a, a)
    assert ok[0] and t[0] == pytest.approx(10 + 1)
