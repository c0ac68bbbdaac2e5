"""The device model: capacity per core / region / wafer after defects, and the row-shift
logical -> physical mapping (never onto a dead core)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from target_util import tiny_target

from wafercc.target import Device, TargetError, WaferDevice, load_target

WSE3 = load_target("wse3")
PER_CORE = WSE3.core.sram - WSE3.core.sram_reserved


def test_device_basics():
    dev = Device("wse3", "none", seed=0)
    w = dev.wafer(0)
    assert isinstance(w, WaferDevice) and w.index == 0
    assert w.shape == (1170, 755) and w.dead_cores == 0 and w.usable_cores == 883_350
    assert w.usable_bytes() == WSE3.usable_sram_total
    assert w.dead_dies.shape == (0, 2) and w.dead_links.shape == (0, 3)
    assert Device(WSE3).spec.terms[0].kind == "default"
    with pytest.raises(ValueError):
        dev.wafer(-1)


def test_one_percent_defects_cost_exactly_the_dead_cores():
    clean = Device(WSE3, "none").wafer(0)
    w = Device(WSE3, "random:0.01", seed=11).wafer(0)
    assert 0.009 < w.dead_cores / clean.usable_cores < 0.011
    assert clean.usable_bytes() - w.usable_bytes() == w.dead_cores * PER_CORE
    for overhead in (0, 1024, 8000):
        assert clean.usable_bytes(overhead) - w.usable_bytes(overhead) == w.dead_cores * (PER_CORE - overhead)
        assert w.usable_bytes(overhead) == w.usable_cores * (WSE3.core.sram - WSE3.core.sram_reserved - overhead)
    cap = w.capacity_bytes()
    assert cap.dtype == np.int64 and cap.sum() == w.usable_bytes()
    assert (cap[~w.alive] == 0).all() and (cap[w.alive] == PER_CORE).all()


def test_overhead_out_of_range():
    w = Device(WSE3, "none").wafer(0)
    with pytest.raises(TargetError, match="expected 0..45056 B"):
        w.usable_bytes(PER_CORE + 1)
    with pytest.raises(TargetError):
        w.bytes_per_core(-1)
    assert w.usable_bytes(PER_CORE) == 0


def test_region_sums_match_brute_force(tmp_path):
    t = tiny_target(tmp_path, width=47, height=33)
    w = Device(t, "random:0.1+clustered:0.05", seed=3).wafer(0)
    rng = np.random.default_rng(0)
    r = np.sort(rng.integers(0, w.rows + 1, (200, 2)), axis=1)
    c = np.sort(rng.integers(0, w.cols + 1, (200, 2)), axis=1)
    got = w.region_bytes(r[:, 0], c[:, 0], r[:, 1], c[:, 1], per_core_overhead_bytes=100)
    want = [w.capacity_bytes(100)[a:b, x:y].sum() for (a, b), (x, y) in zip(r, c)]
    assert got.tolist() == want
    assert w.region_cores(0, 0, w.rows, w.cols) == w.usable_cores
    assert w.region_bytes(2, 3, 9, 11) == int(w.alive[2:9, 3:11].sum()) * PER_CORE
    with pytest.raises(IndexError):
        w.region_cores(0, 0, w.rows + 1, 1)


@pytest.mark.parametrize("spec", ["random:0.01", "random:0.05+dies:2", "clustered:rate=0.02,size=16+links:0.01"])
def test_logical_to_physical_never_lands_on_a_dead_core(spec):
    w = Device(WSE3, spec, seed=1).wafer(2)
    cmap = w.column_map()
    valid = cmap >= 0
    assert (valid.sum(axis=1) == w.alive_per_row).all()
    rows = np.broadcast_to(np.arange(w.rows)[:, None], cmap.shape)
    assert w.alive[rows[valid], cmap[valid]].all()
    d = np.diff(np.where(valid, cmap, 10**9), axis=1)              # strictly increasing along each row
    assert (d[valid[:, 1:]] > 0).all()
    # the full logical rectangle: rows x logical_cols
    lr, lc = np.meshgrid(np.arange(w.rows), np.arange(w.logical_cols), indexing="ij")
    pc = w.to_physical(lr, lc)
    assert pc.shape == lr.shape and w.alive[lr, pc].all()
    assert (w.to_logical(lr, pc) == lc).all()                       # round trip
    dead = w.dead_core_coords()
    assert (w.to_logical(dead[:, 0], dead[:, 1]) == -1).all()
    assert w.logical_cols == w.alive_per_row.min()


def test_row_shift_past_one_dead_core(tmp_path):
    t = tiny_target(tmp_path)                                         # 20 x 20
    p = tmp_path / "one.json"
    p.write_text(json.dumps({"version": 1, "all": {"dead_cores": [[4, 6]]}}))
    w = Device(t, f"file:{p}").wafer(0)
    assert w.to_physical(4, 5) == 5 and w.to_physical(4, 6) == 7 and w.to_physical(4, 18) == 19
    assert w.to_physical(3, 6) == 6 and w.logical_cols == 19
    assert w.to_logical(4, 7) == 6 and w.to_logical(4, 6) == -1
    with pytest.raises(IndexError):
        w.to_physical(4, 19)
    sub = w.column_map(r0=4, r1=5, c0=5, c1=9)
    assert sub.tolist() == [[5, 7, 8, -1]]


def test_link_masks(tmp_path):
    t = tiny_target(tmp_path)
    p = tmp_path / "l.json"
    p.write_text(json.dumps({"version": 1, "all": {"dead_cores": [[2, 2]], "dead_links": [[10, 10, "E"]]}}))
    w = Device(t, f"file:{p}").wafer(0)
    east, south = w.link_masks()
    assert east.shape == (20, 19) and south.shape == (19, 20)
    assert not east[10, 10] and not east[2, 1] and not east[2, 2] and not south[1, 2] and not south[2, 2]
    assert east.sum() == 20 * 19 - 3 and south.sum() == 19 * 20 - 2


def test_dead_die_capacity(tmp_path):
    w = Device(WSE3, "dies:1", seed=0).wafer(0)
    assert w.dead_dies.shape == (1, 2)
    assert w.usable_bytes() == (WSE3.usable_cores - w.dead_cores) * PER_CORE
    s = w.summary()
    assert s["dead_dies"] == 1 and s["usable_cores"] == w.usable_cores and s["wafer"] == 0


def test_whole_wafer_region_bytes_do_not_overflow():
    w = Device(WSE3, "random:0.01", seed=1).wafer(0)
    full = w.region_bytes([0, 0], [0, 0], [w.rows, 1], [w.cols, 1])
    assert full.dtype == np.int64 and full[0] == w.usable_bytes() > 2**32


def test_tiler_slots_are_the_floorplans_usable_cores():
    """The device model counts the cores the floorplan lays tiles on: the lanes curve, the spares
    geometry, every reachable core for row-major; the planner packs bytes into exactly these."""
    from wafercc.passes.floorplan import curve

    dev = Device(WSE3, "random:0.01", 0)
    w = dev.wafer(0)
    lane = dev.lane_width()
    assert lane == 58 and dev.lane_width("row-major") == WSE3.usable_cols and dev.lane_width(lane=40) == 40
    assert w.tiler_slots() == w.lane_slots(lane) == len(curve(w.alive, lane)[0]) < w.usable_cores
    assert w.tiler_slots("row-major") == int(w.reachable.sum()) <= w.usable_cores
    spare = w.lane_spare(lane)
    assert spare == dev.spare("spares", lane, 1) == 1 and dev.spare("lanes", lane, 3) == 0
    assert w.tiler_slots("spares") == w.lane_slots(lane, spare, "spares") < w.tiler_slots()
    assert w.tiler_bytes(2048) == w.tiler_slots() * w.bytes_per_core(2048) == w.tiler_slots() * (PER_CORE - 2048)


def test_cut_off_cores_hold_no_tile(tmp_path):
    t = tiny_target(tmp_path)
    p = tmp_path / "ring.json"      # a live core boxed in by four dead ones
    p.write_text(json.dumps({"version": 1, "all": {"dead_cores": [[4, 5], [6, 5], [5, 4], [5, 6]]}}))
    w = Device(t, f"file:{p}").wafer(0)
    assert w.alive[5, 5] and not w.reachable[5, 5]
    assert int(w.reachable.sum()) == w.usable_cores - 1 == w.tiler_slots("row-major")


def test_target_level_figures_agree_with_the_target():
    dev = Device(WSE3, "random:0.01", 0)
    w = dev.wafer(1)
    assert dev.free_colors == w.free_colors == WSE3.free_colors and len(dev.free_colors) == 21
    assert dev.link_capacity == w.link_capacity == 1
    assert dev.bytes_per_core() == w.bytes_per_core() == PER_CORE
    ok = w.usable_links
    east, south = w.link_masks()
    assert ok.shape == (*w.shape, 4) and (ok[:, :-1, 0] == east).all() and (ok[:, 1:, 2] == east).all()
    assert (ok[:-1, :, 1] == south).all() and (ok[1:, :, 3] == south).all()
