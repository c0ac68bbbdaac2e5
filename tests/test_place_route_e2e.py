"""End to end on a small mesh: plan -> tile -> floorplan -> route -> schedule files -> independent verifier."""
import json
import pathlib

import numpy as np
import pytest

from target_util import tiny_target
from wafercc.backend.schedule import write_schedule
from wafercc.frontend.onnx_frontend import lower_onnx
from wafercc.passes.place_route import PlaceOptions, place_and_route
from wafercc.plan.options import PlanOptions
from wafercc.plan.planner import plan_wafers
from wafercc.target.device import Device
from wafercc.verify import verify_dir

TINY = pathlib.Path(__file__).resolve().parents[1] / "models" / "onnx" / "tiny-llama.onnx"


def _run(tmp_path, name, layout="lanes", defects="random:0.02", wafers=2):
    target = tiny_target(tmp_path, width=27, height=22)
    device = Device(target, defects, 3)
    graph = lower_onnx(TINY)
    plan = plan_wafers(graph, target, PlanOptions(wafers=wafers), device)
    prog = place_and_route(graph, plan, target, device, PlaceOptions(lane=8, layout=layout))
    out = tmp_path / name
    write_schedule(str(out), prog, graph, target, device)
    return out, prog


@pytest.mark.parametrize("layout", ["lanes", "spares", "row-major"])
def test_placed_and_routed_program_verifies(tmp_path, layout):
    out, prog = _run(tmp_path, "s", layout)
    res = verify_dir(str(out))
    assert res.ok, [v.message for v in res.violations][:5]
    assert len(prog.wafers) == 2
    kinds = np.concatenate([w.transfers.kind for w in prog.wafers])
    assert {0, 1, 2, 3} <= set(kinds.tolist())  # broadcast, reduction, activation, inter-wafer
    for w in prog.wafers:
        r = w.routes
        assert r.total_hops >= r.lower_bound
    sched = json.loads((out / "schedule.json").read_text())
    assert sched["wafers"][0]["inter_wafer"] and sched["wafers"][1]["inter_wafer"]


def test_same_inputs_byte_identical_files(tmp_path):
    a, _ = _run(tmp_path, "a")
    b, _ = _run(tmp_path, "b")
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir()) and "wafer1.npz" in names
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes(), n


def test_edited_schedule_is_rejected(tmp_path):
    out, _ = _run(tmp_path, "s")
    defects = np.load(out / "defects.npz")
    alive = defects["alive_0"]
    dead = np.argwhere(~alive)
    assert len(dead), "the 2 % defect map should kill some cores"
    arrays = dict(np.load(out / "wafer0.npz"))
    arrays["tile_core_row"][0], arrays["tile_core_col"][0] = dead[0]
    from wafercc.backend.npz import write_npz
    write_npz(out / "wafer0.npz", arrays)
    res = verify_dir(str(out))
    assert not res.ok and any("dead" in v.message for v in res.violations)
