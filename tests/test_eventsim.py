"""The event-driven replay (wafercc.perf.eventsim) against the analytic timing model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from wafercc.cli import main
from wafercc.perf.model import deferred_deps
from wafercc.perf.eventsim import compare_with_analytic, simulate_timing

from target_util import tiny_target

MODELS = Path(__file__).resolve().parents[1] / "models" / "onnx"


def _compile(out: Path, model: str, *extra: str) -> str:
    code = main(["compile", str(MODELS / model), "-o", str(out), "--context", "128", "--no-cache",
                 "--format", "json", *extra])
    assert code == 0 and (out / "schedule.json").exists()
    return str(out)


@pytest.fixture(scope="module")
def schedules(tmp_path_factory):
    base = tmp_path_factory.mktemp("eventsim")
    tiny = tiny_target(base, 40, 40)                     # usable 33 x 38: fits tiny-llama on one wafer
    return {
        "llama": _compile(base / "llama", "tiny-llama.onnx", "--target", "wse3"),
        "moe": _compile(base / "moe", "tiny-moe.onnx", "--target", "wse3"),
        "tiny-2w": _compile(base / "tiny2", "tiny-llama.onnx", "--target", str(tiny.path),
                            "--defects", "random:0.01", "--wafers", "2"),
    }


@pytest.mark.parametrize("name", ["llama", "moe", "tiny-2w"])
def test_agrees_with_analytic(schedules, name):
    c = compare_with_analytic(schedules[name])
    # the rebuilt Program reads the schedule as the writer did (act bytes, context, boundaries)
    assert c["analytic_cycles"] == pytest.approx(c["analytic_timeline_cycles"], abs=2)
    assert abs(c["relative_difference"]) < 0.10, c


@pytest.mark.parametrize("name", ["llama", "moe", "tiny-2w"])
def test_op_order_and_determinism(schedules, name):
    r1, r2 = simulate_timing(schedules[name]), simulate_timing(schedules[name])
    assert r1 == r2
    doc = json.loads((Path(schedules[name]) / "schedule.json").read_text())
    assert len(r1.wafers) == len(doc["wafers"])
    prev_global = 0.0
    for w, wj in zip(r1.wafers, doc["wafers"]):
        assert len(w["op_start"]) == len(w["op_end"]) == len(wj["ops"])
        for i, (s, e, op) in enumerate(zip(w["op_start"], w["op_end"], wj["ops"])):
            assert 0 <= s <= e
            late = deferred_deps(op, wj["ops"])     # a GEMV reading an RMS norm starts with it, ends after it
            assert all(w["op_end"][d] <= s for d in op["deps"] if d not in late), (i, op["name"])
            assert all(w["op_start"][d] <= s and w["op_end"][d] <= e for d in late), (i, op["name"])
        assert w["cycles"] == pytest.approx(max(w["op_end"]))
        assert w["arrive"] >= prev_global
        prev_global = w["arrive"] + w["cycles"]
    assert r1.total_cycles == pytest.approx(prev_global)
    assert r1.seconds > 0 and r1.link_stats["links_used"] > 0
    if len(r1.wafers) > 1:   # a boundary costs at least the inter-wafer latency (5 us = 5500 cycles)
        assert all(b > 5000 for b in r1.boundary_cycles)


def test_contention_free_is_not_slower(schedules):
    d = schedules["llama"]
    assert simulate_timing(d, contention=False).total_cycles <= simulate_timing(d).total_cycles
    # store-and-forward pays every link's serialisation: slower than cut-through
    assert simulate_timing(d, cut_through=False).total_cycles > simulate_timing(d).total_cycles


def _link(r: int, c: int, d: int, cols: int) -> int:
    return (r * cols + c) * 4 + d


def _mini(tmp_path: Path, detour: bool) -> str:
    """One gemv op, a 2 x 2 grid on cores (0..1, 0..1) of wse3; broadcasts 0->1 and 2->3 along the rows,
    reductions 0->2 and 1->3 down the columns.  With ``detour`` row 1's broadcast goes up through
    core (0, 0) and shares the link (0, 0) east with row 0's, which starts at the same time."""
    from wafercc.target import load_target
    cols = load_target("wse3").usable_cols
    E, S, N = 0, 1, 3
    b1 = [_link(1, 0, N, cols), _link(0, 0, E, cols), _link(0, 1, S, cols)] if detour else [_link(1, 0, E, cols)]
    routes = [[_link(0, 0, E, cols)], b1, [_link(0, 0, S, cols)], [_link(0, 1, S, cols)]]
    grid = {"grid": 0, "operand": "w", "experts": 1, "rows": 2, "cols": 2, "k": 128, "n": 8, "tile_k": 64,
            "tile_n": 4, "unit_bits": 16, "broadcast_hops": 3 if detour else 1, "broadcast_links": 1,
            "reduction_hops": 1, "reduction_links": 1}
    op = {"id": 0, "name": "mm", "op": "matmul", "role": "gemv", "layer": 0, "host": None, "flops": 2048.0,
          "grids": [grid], "act_in_hops": 0}
    doc = {"schema": "wafercc.schedule/2", "target": "wse3", "timeline": {"prompt_tokens": 16, "wafers": []},
           "wafers": [{"index": 0, "ops": [op], "inter_wafer": []}]}
    out = tmp_path / ("detour" if detour else "direct")
    out.mkdir()
    (out / "schedule.json").write_text(json.dumps(doc))
    np.savez(out / "wafer0.npz", tile_op=np.zeros(4, np.int32), tile_grid=np.zeros(4, np.int16),
             tile_col=np.array([0, 1, 0, 1], np.int32), route_src_tile=np.array([0, 2, 0, 1]),
             route_dst_tile=np.array([1, 3, 2, 3]), route_kind=np.array([0, 0, 1, 1], np.int8),
             route_op_src=np.zeros(4, np.int32), route_op_dst=np.zeros(4, np.int32),
             route_offsets=np.cumsum([0] + [len(r) for r in routes]), route_links=np.array(sum(routes, []), np.int32))
    return str(out)


def test_forced_contention(tmp_path):
    d = _mini(tmp_path, detour=True)
    sim, free = simulate_timing(d, act_bytes=2), simulate_timing(d, act_bytes=2, contention=False)
    w = 64 * 2 / 4                                       # tile_k x act bytes / link bytes = 32 wavelets
    st = sim.link_stats
    assert st["max_queue_delay"] > 0 and st["most_contended"]["messages"] == 2
    assert (st["most_contended"]["row"], st["most_contended"]["col"], st["most_contended"]["dir"]) == (0, 0, 0)
    # row 1's head reaches the shared link one hop after row 0's took it: it waits w - 1 cycles
    assert st["max_queue_delay"] == pytest.approx(w - 1)
    assert sim.total_cycles > free.total_cycles
    assert free.link_stats["max_queue_delay"] == 0
    # without the detour nothing is shared: the same time as the contention-free replay
    direct = _mini(tmp_path, detour=False)
    assert simulate_timing(direct, act_bytes=2).link_stats["max_queue_delay"] == 0
    assert simulate_timing(direct, act_bytes=2).total_cycles < sim.total_cycles


def test_analytic_program_keeps_bytes_per_token_at_batch(tmp_path):
    """schedule/2's inter_wafer bytes are per token: the rebuilt Program must not divide them by the
    batch again, or a batched boundary is charged a fraction of its bytes."""
    from wafercc.perf.eventsim import analytic_program

    tiny = tiny_target(tmp_path, 40, 40)
    out = _compile(tmp_path / "b4", "tiny-llama.onnx", "--target", str(tiny.path), "--wafers", "2",
                   "--batch", "4")
    doc = json.loads((Path(out) / "schedule.json").read_text())
    written = [e["bytes_per_token"] for w in doc["wafers"][:-1] for e in w["inter_wafer"]
               if e["src_wafer"] == w["index"]]
    prog = analytic_program(out)
    assert written and [b.bytes_per_token for b in prog.boundaries] == written
