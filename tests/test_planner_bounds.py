"""The planner's bounds: arithmetic before any defect map, refusals in one line, and plans whose
tiles fit (a plan the tiler disproves is re-planned with one more wafer, and the report says why)."""
from __future__ import annotations

import json
import resource
import time

import pytest

from wafercc.cli import main
from wafercc.driver import Compilation
from wafercc.errors import Infeasible
from wafercc.options import build_options
from wafercc.plan.options import MAX_PLAN_WAFERS, PlanError
from wafercc.plan.planner import plan_wafers
from wafercc.target.device import Device

from target_util import tiny_target

TINY = "models/onnx/tiny-llama.onnx"
NEAR = 290_000        # tiny-llama on the 60 x 60 target: the bytes fill 96 % of one wafer, the tiles 100.5 %


@pytest.fixture(scope="module")
def graph():
    return Compilation(TINY, build_options(until="ir")).run().graph


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return tiny_target(tmp_path_factory.mktemp("t"), width=67, height=62)


class _CountingDevice(Device):
    built = 0

    def wafer(self, index):
        if index not in self._wafers:
            type(self).built += 1
        return super().wafer(index)


@pytest.mark.parametrize("kw", [{"context": 4 * 10**9}, {"context": 4 * 10**9, "max_wafers": 4},
                                {"context": 10**9}, {"context": 10**9, "max_wafers": 4}])
def test_runaway_sizes_are_refused_by_arithmetic(graph, kw):
    dev = _CountingDevice("wse3", "random:0.01", 0)
    _CountingDevice.built = 0
    t0 = time.perf_counter()
    p = plan_wafers(graph, dev.target, build_options(**kw).plan, dev, with_levers=False)
    assert p.infeasible is not None and p.used == 0 and p.infeasible.needed_wafers is None
    assert _CountingDevice.built == 0                      # no defect map for a plan that cannot fit
    assert "more than" in p.infeasible.reason
    p = plan_wafers(graph, dev.target, build_options(**kw).plan, dev)     # levers re-plan: each bounded
    assert _CountingDevice.built <= 4 * MAX_PLAN_WAFERS // 32 and time.perf_counter() - t0 < 20


def test_runaway_sizes_exit_3_in_one_line(capsys, tmp_path, monkeypatch):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for ctx in (4 * 10**9, 10**9):                   # a layer larger than a wafer, at any --max-wafers
        assert main(["compile", TINY, "--no-place", "-o", str(tmp_path / "o"), "--context", str(ctx),
                     "--max-wafers", "4"]) == 3
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "no plan fits 4 wafer(s)" in err[0] and "more than one wse3 wafer holds" in err[0]
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 1 << 20   # KB: under 1 GB more
    assert json.loads((tmp_path / "o" / "report.json").read_text())["infeasible"]["max_wafers"] == 4
    # every layer fits a wafer, the model not the limit: the bound is named
    assert main(["compile", TINY, "--no-place", "-o", str(tmp_path / "p"), "--context", str(10**8),
                 "--max-wafers", "1"]) == 3
    assert "needs at least 2 wafer(s)" in capsys.readouterr().err
    monkeypatch.setattr("wafercc.plan.planner.MAX_PLAN_WAFERS", 1)
    assert main(["compile", TINY, "--no-place", "-o", str(tmp_path / "p"), "--context", str(10**8)]) == 3
    err = capsys.readouterr().err
    assert "no plan fits any wafer count" in err and "the planner's limit of 1 wafers" in err


def test_huge_wafer_counts_are_bad_options(graph):
    dev = Device("wse3", "none", 0)
    from wafercc.options import OptionError
    for kw in ({"wafers": 2**31}, {"max_wafers": 2**31}):   # refused as options, before any planning
        with pytest.raises(OptionError, match=f"1..{MAX_PLAN_WAFERS} wafers"):
            build_options(**kw)


def test_all_dead_defect_map_is_refused(graph, tmp_path, capsys):
    dev = Device("wse3", "none", 0)
    rows, cols = (len(e) - 1 for e in dev.wafer(0).die_edges())
    path = tmp_path / "dead.json"
    path.write_text(json.dumps({"version": 1, "all": {"dead_dies": [[r, c] for r in range(rows) for c in range(cols)]}}))
    dead = Device("wse3", f"file:{path}", 0)
    with pytest.raises(PlanError, match="wafer 0 of wse3 has no usable core"):
        plan_wafers(graph, dead.target, build_options().plan, dead)
    assert main(["compile", TINY, "--no-place", "-o", str(tmp_path / "o"), "--defects", f"file:{path}"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def _plan(small, **kw):
    return Compilation(TINY, build_options(target=small.path, defects="none", until="tile", curve=False,
                                           context=NEAR, **kw)).run()


def test_near_capacity_plan_gets_the_wafer_its_tiles_need(graph, small):
    dev = Device(small, "none", 0)
    by_bytes = plan_wafers(graph, small, build_options(target=small.path, context=NEAR).plan, dev)
    assert by_bytes.used == 1 and by_bytes.wafers[0].utilisation > 0.95        # the mechanism: fits by bytes
    c = _plan(small)
    assert c.wafers == 2 and c.plan.required == 2 and c.tiles is not None     # ... and now as tiles too
    why = c.plan.explanation[0]
    assert why.startswith("1 wafer(s) hold the bytes") and "short by" in why and why.endswith("planned 2")
    assert not any("units are whole" in e for e in c.plan.explanation)


def test_near_capacity_asked_wafers_report_the_tile_minimum(small):
    c = _plan(small, wafers=2)
    assert c.wafers == 2 and c.plan.required == 2
    assert not any("because --wafers asked" in e for e in c.plan.explanation)
    with pytest.raises(Infeasible, match="hold the bytes but not the tiles") as e:
        _plan(small, max_wafers=1)
    assert e.value.compilation.report["infeasible"]["max_wafers"] == 1
    with pytest.raises(Infeasible, match="hold the bytes but not the tiles: wafer 0: .* short by .*; needs 2$"):
        _plan(small, wafers=1)
