"""Placement and routing on tiny meshes with hand-drawn defect patterns; the independent verifier
accepts every output, and what cannot be placed fails loudly."""
import json
import pathlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from target_util import tiny_target
from wafercc.backend.schedule import write_schedule
from wafercc.frontend.onnx_frontend import lower_onnx
from wafercc.passes.floorplan import curve, floorplan_wafer
from wafercc.passes.place_route import PlaceOptions, place_and_route
from wafercc.passes.route import RouteOptions, RoutingError, Transfers, route
from wafercc.passes.transfers import wafer_transfers
from wafercc.plan.options import PlanOptions
from wafercc.plan.planner import plan_wafers
from wafercc.target.device import Device
from wafercc.verify import verify_dir

ONNX = pathlib.Path(__file__).resolve().parents[1] / "models" / "onnx"
W, H = 27, 22            # usable 20 x 20


@pytest.fixture(scope="module")
def tiny_llama():
    return lower_onnx(ONNX / "tiny-llama.onnx")


def _defects(tmp_path, name, cores=(), dies=()):
    p = tmp_path / f"{name}.json"
    p.write_text(json.dumps({"version": 1, "frame": "usable",
                             "all": {"dead_cores": [list(map(int, c)) for c in cores],
                                     "dead_dies": [list(d) for d in dies]}}))
    return f"file:{p}"


def _place_and_verify(tmp_path, graph, spec, wafers=2, lane=8):
    target = tiny_target(tmp_path, width=W, height=H)
    device = Device(target, spec, 0)
    plan = plan_wafers(graph, target, PlanOptions(wafers=wafers), device)
    prog = place_and_route(graph, plan, target, device, PlaceOptions(lane=lane))
    out = tmp_path / "out"
    write_schedule(str(out), prog, graph, target, device)
    res = verify_dir(str(out))
    assert res.ok, [v.message for v in res.violations][:5]
    return prog, device


def _cores_used(prog):
    return [set(zip(w.floorplan.core_row.tolist(), w.floorplan.core_col.tolist())) for w in prog.wafers]


def test_row_dead_but_one_core(tmp_path, tiny_llama):
    dead = [(9, c) for c in range(20) if c != 13]          # routes squeeze through one live core
    prog, dev = _place_and_verify(tmp_path, tiny_llama, _defects(tmp_path, "row", dead))
    for used in _cores_used(prog):
        assert not used & set(dead)
    assert any(w.routes.total_hops > w.routes.lower_bound for w in prog.wafers)   # someone detoured


def test_whole_dead_row_splits_the_wafer_and_only_the_larger_part_is_used(tmp_path, tiny_llama):
    dead = [(9, c) for c in range(20)]       # rows 0-8 and 10-19 cannot reach each other
    prog, _ = _place_and_verify(tmp_path, tiny_llama, _defects(tmp_path, "cut", dead))
    for w, used in zip(prog.wafers, _cores_used(prog)):
        assert min(r for r, _ in used) >= 10
        assert (w.route_src[:, 0] >= 10).all() and (w.route_dst[:, 0] >= 10).all()   # edge I/O too


def test_too_small_a_part_fails_loudly_naming_the_wafer(tmp_path, tiny_llama):
    dead = [(r, c) for r in range(20) for c in range(20) if r == 6 or c == 6]   # the largest part: 13 x 13
    with pytest.raises(Exception, match="wafer 0"):
        _place_and_verify(tmp_path, tiny_llama, _defects(tmp_path, "small", dead), wafers=1)


def test_dead_die(tmp_path, tiny_llama):
    prog, dev = _place_and_verify(tmp_path, tiny_llama, _defects(tmp_path, "die", dies=[(0, 1)]))
    alive = dev.wafer(0).alive
    assert (~alive).sum() >= 20                              # a die's worth of cores is gone
    for w, used in zip(prog.wafers, _cores_used(prog)):
        assert all(dev.wafer(w.index).alive[r, c] for r, c in used)


def test_checkerboard_island_is_not_used(tmp_path, tiny_llama):
    # a checkerboard of dead cores: the live cores inside it have no live neighbour, so no tile may sit there
    dead = [(r, c) for r in range(4, 10) for c in range(4, 12) if (r + c) % 2 == 0]
    islands = {(r, c) for r in range(5, 9) for c in range(5, 11) if (r + c) % 2 == 1}
    prog, _ = _place_and_verify(tmp_path, tiny_llama, _defects(tmp_path, "checker", dead))
    for used in _cores_used(prog):
        assert not used & islands and not used & set(dead)


def test_grids_that_fill_every_live_core_exactly():
    alive = np.ones((12, 16), bool)
    alive[3, 5] = alive[7, 0] = alive[10, 9] = False
    n = int(alive.sum())                                 # 189 = 9 x 21: one wide grid, nothing spare
    fp = floorplan_wafer(0, alive, [[(1, 9, 21)]], 16, layout="row-major")
    assert fp.slots == fp.slots_used == n
    assert len(set(zip(fp.core_row.tolist(), fp.core_col.tolist()))) == n
    tr = wafer_transfers([[(1, 9, 21)]], True, True)
    r, c = fp.core_row, fp.core_col
    res = route(alive, np.zeros((0, 3), np.int64), Transfers(r[tr.src], c[tr.src], r[tr.dst], c[tr.dst], tr.kind),
                21, 1, RouteOptions())
    assert res.max_link_load <= 21
    assert len(curve(alive, 16)[0]) == n


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rate=st.sampled_from([0.0, 0.01, 0.03, 0.06]), seed=st.integers(0, 10_000), lane=st.sampled_from([5, 8, 20]),
       layout=st.sampled_from(["lanes", "spares"]))
def test_verifier_accepts_random_defect_maps(tmp_path_factory, tiny_llama, rate, seed, lane, layout):
    tmp = tmp_path_factory.mktemp("r")
    target = tiny_target(tmp, width=W, height=H)
    device = Device(target, f"random:{rate}", seed)
    plan = plan_wafers(tiny_llama, target, PlanOptions(wafers=2), device)
    try:
        prog = place_and_route(tiny_llama, plan, target, device, PlaceOptions(lane=lane, seed=seed, layout=layout))
    except RoutingError as e:                 # allowed only as a loud, named failure
        assert "transfer" in str(e)
        return
    write_schedule(str(tmp / "o"), prog, tiny_llama, target, device)
    res = verify_dir(str(tmp / "o"))
    assert res.ok, [v.message for v in res.violations][:5]
