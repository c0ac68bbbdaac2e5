"""Target presets: load, derived quantities, provenance of every number, user files by path."""
from __future__ import annotations

import dataclasses
import shutil

import pytest
from target_util import preset_text, write_variant

from wafercc.target import Target, TargetError, list_targets, load_target
from wafercc.target.schema import CONFIDENCE, SECTIONS


def test_list_targets():
    assert list_targets() == ["wse2", "wse3"]


@pytest.mark.parametrize("name,w,h,uw,uh", [("wse2", 757, 996, 750, 994), ("wse3", 762, 1172, 755, 1170)])
def test_fabric_and_usable_rectangle(name, w, h, uw, uh):
    t = load_target(name)
    assert isinstance(t, Target) and t.name == name
    assert (t.mesh.fabric_width, t.mesh.fabric_height) == (w, h)
    assert (t.usable_cols, t.usable_rows) == (uw, uh)          # derived: 3 west + 2 east + 1-core halo
    assert (t.usable_x0, t.usable_y0) == (4, 1)
    assert t.usable_cores == uw * uh


@pytest.mark.parametrize("name,lanes", [("wse2", 4), ("wse3", 8)])
def test_core_fields(name, lanes):
    t = load_target(name)
    assert t.core.sram == 49152 and t.core.sram_reserved == 4096
    assert t.usable_bytes_per_core == 45056
    assert t.core.simd_lanes_fp16 == lanes and t.core.flop_per_lane_cycle == 2
    assert t.core.clock == pytest.approx(1.1e9)
    assert t.flop_per_core_cycle == 2 * lanes
    assert t.fabric.colors == 24 and t.fabric.reserved_colors == (21, 22, 23)
    assert t.fabric.router_ports == 5 and t.fabric.hop_latency == 1 and t.fabric.link_width == 32
    assert len(t.free_colors) == 21
    assert t.io.off_wafer_bandwidth == pytest.approx(150e9)    # 150 GB/s and 1.2 Tb/s are the same
    assert t.quantities["io.off_wafer_latency"].confidence == "assumed"
    assert t.defects.default_dead_core_rate == pytest.approx(0.01)
    assert t.die_count == 84
    assert t.power.chip <= t.power.system


def test_confidence_levels_follow_the_brief():
    t3, t2 = load_target("wse3"), load_target("wse2")
    assert t3.quantities["core.clock"].confidence == "low"
    assert t2.quantities["core.clock"].confidence == "high"
    assert t3.quantities["core.sram_reserved"].confidence == "low"
    assert t2.quantities["dies.columns"].confidence == "assumed"   # WSE-2 die count not published
    assert t3.quantities["dies.columns"].confidence == "medium"


@pytest.mark.parametrize("name", ["wse2", "wse3"])
def test_every_number_has_a_source_and_confidence(name):
    t = load_target(name)
    n_fields = sum(len(dataclasses.fields(cls)) for cls in SECTIONS.values())
    assert len(t.cost_model) == 3          # the calibrated timing-model parameters (docs/cost-model.md)
    assert len(t.quantities) == n_fields + len(t.cost_model)
    for key, q in t.quantities.items():
        assert q.source in t.sources and q.citation == t.sources[q.source], key
        assert q.confidence in CONFIDENCE, key
        sec, fld = key.split(".")
        value = t.cost_model[fld].value if sec == "cost_model" else getattr(getattr(t, sec), fld)
        assert value == q.value, key


@pytest.mark.parametrize("name", ["wse2", "wse3"])
def test_model_agrees_with_published_figures(name):
    t = load_target(name)
    # the program rectangle holds a little less SRAM than the marketing total (spares, reserved columns)
    assert 0.85 < t.sram_total / t.published.total_sram <= 1.0
    assert 0.85 < t.usable_cores / t.published.cores <= 1.0


def test_peak_flops_matches_public_dense_figure():
    assert load_target("wse3").peak_flops == pytest.approx(15.6e15, rel=0.02)   # SemiAnalysis: 15.625 PF
    assert load_target("wse2").peak_flops == pytest.approx(7.5e15, rel=0.15)


def test_user_file_by_path_equals_preset(tmp_path):
    p = tmp_path / "mine.toml"
    shutil.copy(str(load_target("wse3").path), p)
    t = load_target(str(p))
    assert t.path == str(p)
    assert t.usable_cores == load_target("wse3").usable_cores
    assert dict(t.quantities) == dict(load_target("wse3").quantities)


def test_units_are_converted(tmp_path):
    t = load_target(write_variant(tmp_path, 'sram = { value = 48, unit = "KiB"', 'sram = { value = 49152, unit = "B"'))
    assert t.core.sram == 49152
    t = load_target(write_variant(tmp_path, 'value = 150, unit = "GB/s"', 'value = 1.2, unit = "Tb/s"'))
    assert t.io.off_wafer_bandwidth == pytest.approx(150e9)
    t = load_target(write_variant(tmp_path, 'clock = { value = 1.1, unit = "GHz"', 'clock = { value = 875, unit = "MHz"'))
    assert t.core.clock == pytest.approx(875e6)


def test_cost_model_section_takes_calibrated_parameters(tmp_path):
    p = tmp_path / "cal.toml"
    p.write_text(preset_text() + 'sync_overhead = { value = 120, unit = "cycles", source = "sdk", confidence = "low" }\n')
    t = load_target(str(p))
    assert t.cost_model["sync_overhead"].value == 120
    assert t.quantities["cost_model.sync_overhead"].unit == "cycles"
    assert set(load_target("wse3").cost_model) == {"compute_efficiency", "op_sync", "reduce_step"}


def test_target_is_frozen():
    t = load_target("wse3")
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.core.sram = 1
    with pytest.raises(TypeError):
        t.quantities["core.sram"] = None


def test_unknown_name_and_missing_file(tmp_path):
    with pytest.raises(TargetError, match="unknown target 'wse9'.*wse2, wse3"):
        load_target("wse9")
    with pytest.raises(TargetError, match="no such target file"):
        load_target(str(tmp_path / "nope.toml"))
    with pytest.raises(TargetError, match="is a directory"):
        load_target(str(tmp_path))


def test_docs_list_every_field():
    import os

    with open(os.path.join(os.path.dirname(__file__), "..", "docs", "targets.md"), encoding="utf-8") as f:
        doc = f.read()
    for key in load_target("wse3").quantities:
        assert f"`{key}`" in doc, key
