"""Random schedules and random tamperings.

- random defect maps: schedules the hand writer builds around them verify; killing a used core is caught;
- random tampering (issue 14's families, tests/verify_tamper.py) of a compiled two-wafer tiny-llama
  (2 % dead cores) and of the random hand-built schedules: every tampering is rejected, naming a
  violation of its family.
"""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
from target_util import tiny_target
from test_verify_writer import Sched, bfs_path
from verify_tamper import FAMILIES, load, save

from wafercc.verify import verify_dir

TINY = pathlib.Path(__file__).resolve().parents[1] / "models" / "onnx" / "tiny-llama.onnx"


def _component(alive: np.ndarray) -> np.ndarray:
    """The largest 4-connected group of live cores."""
    best = np.zeros_like(alive)
    seen = ~alive.copy()
    for start in map(tuple, np.argwhere(alive)):
        if seen[start]:
            continue
        comp, todo = np.zeros_like(alive), [start]
        seen[start] = True
        for r, c in todo:
            comp[r, c] = True
            for n in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                if 0 <= n[0] < alive.shape[0] and 0 <= n[1] < alive.shape[1] and not seen[n]:
                    seen[n] = True
                    todo.append(n)
        if comp.sum() > best.sum():
            best = comp
    return best


def random_sched(t, seed: int):
    """One wafer: rectangles of GEMV tiles on the largest live group, chained by activation routes."""
    rng = np.random.default_rng(seed)
    alive = rng.random((8, 8)) >= 0.1
    s = Sched(t, 1, [alive])
    s.layers(0, 0, 0)
    free = _component(alive)
    prev = None
    for _ in range(30):                                   # fully alive rectangles, never overlapping
        nr, nc = (int(x) for x in rng.integers(1, 4, size=2))
        r0, c0 = int(rng.integers(0, 9 - nr)), int(rng.integers(0, 9 - nc))
        n = len(s.doc["wafers"][0]["ops"])
        if n < 19 and free[r0:r0 + nr, c0:c0 + nc].all():
            free[r0:r0 + nr, c0:c0 + nc] = False
            o = s.op(0, f"op{n}", 0, (r0, c0, nr, nc), tile_bytes=int(rng.integers(1, 9999)),
                     deps=[n - 1] if n else [])
            s.gemv_routes(0, o)
            if prev is not None:                          # previous op's last tile -> this op's first
                s.route(0, 2, o - 1, o, 2 + o, bfs_path(alive, prev, (r0, c0)))
            prev = (r0 + nr - 1, c0 + nc - 1)
    return s, alive, free


@pytest.mark.parametrize("seed", range(6))
def test_random_defects(tmp_path, seed):
    t = tiny_target(tmp_path, width=15, height=10)        # usable 8 x 8
    s, alive, free = random_sched(t, seed)
    rng = np.random.default_rng(seed + 100)
    res = verify_dir(s.write(tmp_path / "ok"))
    assert res.ok, [str(v) for v in res.violations]
    used = np.argwhere(~free & alive & _component(alive))
    if used.size:
        r, c = used[int(rng.integers(len(used)))].tolist()

        def edit(doc, arrs, defects):
            defects["alive_0"][r, c] = False
        bad = verify_dir(s.write(tmp_path / "bad", edit))
        assert "tile-dead-core" in bad.counts and f"dead core ({r}, {c})" in str(bad.violations[0])


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """tiny-llama placed and routed on two wafers of a small mesh with 2 % dead cores."""
    from wafercc.backend.schedule import write_schedule
    from wafercc.frontend.onnx_frontend import lower_onnx
    from wafercc.passes.place_route import PlaceOptions, place_and_route
    from wafercc.plan.options import PlanOptions
    from wafercc.plan.planner import plan_wafers
    from wafercc.target.device import Device

    tmp = tmp_path_factory.mktemp("compiled")
    target = tiny_target(tmp, width=27, height=22)
    device = Device(target, "random:0.02", 3)
    graph = lower_onnx(TINY)
    plan = plan_wafers(graph, target, PlanOptions(wafers=2), device)
    prog = place_and_route(graph, plan, target, device, PlaceOptions(lane=8))
    out = tmp / "s"
    write_schedule(str(out), prog, graph, target, device)
    assert (~np.load(out / "defects.npz")["alive_0"]).any()
    res = verify_dir(str(out))
    assert res.ok, [str(v) for v in res.violations][:5]    # no false positive on a real compile
    return str(out)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("seed", range(4))
def test_random_tampering_of_a_compiled_schedule(compiled, tmp_path, family, seed):
    tamper, codes = FAMILIES[family]
    doc, arrs, defects = load(compiled)
    assert tamper(doc, arrs, defects, np.random.default_rng(seed)), family
    res = verify_dir(save(tmp_path / "t", doc, arrs, defects))
    assert not res.ok and codes & set(res.counts), (family, res.counts)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("seed", range(2))
def test_random_tampering_of_a_hand_schedule(tmp_path, family, seed):
    t = tiny_target(tmp_path, width=15, height=10)
    out = random_sched(t, seed)[0].write(tmp_path / "ok")
    tamper, codes = FAMILIES[family]
    doc, arrs, defects = load(out)
    if not tamper(doc, arrs, defects, np.random.default_rng(seed)):
        pytest.skip(f"{family}: nothing to tamper with in a one-wafer schedule")
    res = verify_dir(save(tmp_path / "t", doc, arrs, defects))
    assert not res.ok and codes & set(res.counts), (family, res.counts)
