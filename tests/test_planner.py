"""Capacity planning on the reference models and its reports."""
import pytest

from wafercc.ir import DType
from wafercc.plan.options import PlanError, PlanOptions
from wafercc.plan.planner import plan_wafers, receive_buffer_bytes
from wafercc.target import load_target
from wafercc.target.device import Device

WSE3 = load_target("wse3")
KEYS = ["gpt2", "minilm-l6", "llama-3.2-1b", "llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b", "qwen3-32b",
        "mixtral-8x7b", "gpt-oss-120b", "qwen3-235b-a22b"]


def _plan(graph, defects=None, **kw):
    return plan_wafers(graph, WSE3, PlanOptions(**kw), Device(WSE3, defects, 0))


def test_llama_8b_fits_one_wafer(reference_graph):
    p = _plan(reference_graph("llama-3.1-8b"), dtype=DType.BF16, context=8192, batch=1)
    assert p.required == p.used == 1


def test_llama_70b_needs_four_wafers(reference_graph):
    p = _plan(reference_graph("llama-3.1-70b"), dtype=DType.BF16, context=8192)
    assert p.required == p.used == p.lower_bound == 4
    layers = [w.layers for w in p.wafers]
    assert layers[0][0] == 0 and layers[-1][1] == 79
    assert all(a[1] + 1 == b[0] for a, b in zip(layers, layers[1:]))  # contiguous, in order
    assert all(w.sram_used_bytes <= w.sram_usable_bytes for w in p.wafers)
    assert "embed" in p.wafers[0].units and "head" in p.wafers[-1].units


@pytest.mark.parametrize("key", KEYS)
def test_required_is_the_bound_or_explained(reference_graph, key):
    p = _plan(reference_graph(key))
    assert p.required >= p.lower_bound
    assert (p.required == p.lower_bound) == (not p.explanation)
    if p.explanation:
        assert "contiguous" in p.explanation[0] and "GB unused" in p.explanation[0]
    placed = sum(w.sram_used_bytes for w in p.wafers)
    assert placed == p.memory.total_bytes  # no unit dropped or counted twice
    assert all(w.sram_used_bytes <= w.sram_usable_bytes for w in p.wafers)


def test_fp8_needs_about_half_the_wafers(reference_graph):
    g = reference_graph("llama-3.1-405b")
    bf16, fp8 = _plan(g, dtype=DType.BF16).required, _plan(g, dtype=DType.F8E4M3).required
    assert bf16 >= 20 and abs(fp8 - bf16 / 2) <= 1.5


def test_defects_cost_exactly_the_cores_the_tiler_loses(reference_graph):
    clean = _plan(reference_graph("llama-3.1-8b"), defects="none").wafers[0]
    dirty = _plan(reference_graph("llama-3.1-8b"), defects="random:0.01").wafers[0]
    w = Device(WSE3, "random:0.01", 0).wafer(0)
    per_core = w.bytes_per_core(receive_buffer_bytes(WSE3))
    in_lanes = WSE3.usable_cols // w.lane_width() * w.lane_width()     # columns of whole lanes
    assert clean.dead_cores == 0 and clean.usable_cores == WSE3.usable_rows * in_lanes
    assert 0.008 < dirty.dead_cores / clean.usable_cores < 0.012
    # capacity = tiler slots: dead or cut-off cores inside the whole lanes cost their bytes, no more
    lost = int((~w.reachable[:, :in_lanes]).sum())
    assert 0 < lost <= dirty.dead_cores
    assert clean.sram_usable_bytes - dirty.sram_usable_bytes == lost * per_core


def test_max_wafers_infeasible_reports_levers(reference_graph):
    p = _plan(reference_graph("llama-3.1-70b"), max_wafers=3)
    inf = p.infeasible
    assert inf is not None and inf.needed_wafers == 4 and inf.short_bytes > 0
    levers = {lv.change: lv for lv in inf.levers}
    assert levers["f8e4m3 weights"].wafers == 2
    assert levers["context 8192 -> 4096"].saves_bytes == 80 * 2 * 8 * 128 * 2 * 4096  # K and V, bf16
    assert not p.wafers


def test_dedicated_kv_wafers(reference_graph):
    g = reference_graph("llama-3.1-8b")
    p = _plan(g, kv_placement="dedicated", context=131072, batch=4)
    assert p.kv_wafers >= 1 and p.pipeline_wafers >= 1
    assert all(w.kv_bytes == 0 for w in p.wafers if w.role == "pipeline")
    assert sum(w.kv_bytes for w in p.wafers if w.role == "kv") == p.memory.kv_bytes
    beside = _plan(g, context=131072, batch=4)
    assert all(w.role == "pipeline" for w in beside.wafers)


def test_more_wafers_than_needed(reference_graph):
    p = _plan(reference_graph("llama-3.1-70b"), wafers=8)
    assert p.used == 8 and p.required == 4
    assert any("--wafers" in e for e in p.explanation)
    assert max(w.stage_latency_s for w in p.wafers) < max(
        w.stage_latency_s for w in _plan(reference_graph("llama-3.1-70b")).wafers)


def test_fewer_wafers_than_needed_is_infeasible(reference_graph):
    p = _plan(reference_graph("llama-3.1-70b"), wafers=2)
    assert p.infeasible is not None and p.infeasible.max_wafers == 2 and p.infeasible.needed_wafers == 4


def test_dtype_override_by_op(reference_graph):
    g = reference_graph("mixtral-8x7b")
    base = _plan(g)
    fp4_experts = _plan(g, dtype_overrides=(("moe", DType.F4E2M1),))
    assert fp4_experts.memory.weight_bytes < base.memory.weight_bytes / 2
    assert fp4_experts.required < base.required


def test_bad_options():
    with pytest.raises(PlanError, match="context 0"):
        PlanOptions(context=0)
    with pytest.raises(PlanError, match="KV placement"):
        PlanOptions(kv_placement="elsewhere")


def test_plans_are_deterministic(reference_graph):
    from wafercc.plan.report import plan_dict
    g = reference_graph("qwen3-32b")
    a, b = plan_dict(_plan(g)), plan_dict(_plan(g))
    assert a == b and all("seconds" not in s for s in a["partition"]["solves"])   # wall times: compile.json


@pytest.mark.parametrize("layout", ["lanes", "spares", "row-major"])
def test_capacity_is_what_the_tiler_can_fill(reference_graph, layout):
    """cores_usable / sram_usable_bytes are the tiler's slots in the plan's layout, the same figure
    place_and_route hands the tiler (so fitting by bytes means fitting as tiles)."""
    dev = Device(WSE3, None, 0)
    p = plan_wafers(reference_graph("gpt2"), WSE3, PlanOptions(layout=layout), dev)
    lane = dev.lane_width(layout)
    w = p.wafers[0]
    assert w.usable_cores == dev.wafer(0).lane_slots(lane, dev.spare(layout, lane, p.used), layout)
    assert w.sram_usable_bytes == w.usable_cores * dev.bytes_per_core(receive_buffer_bytes(WSE3))
    assert (w.usable_cores <= dev.wafer(0).usable_cores) if layout == "row-major" else \
        (w.usable_cores < dev.wafer(0).usable_cores)     # a lane layout leaves WSE-3's last column empty


def test_layout_must_be_known():
    with pytest.raises(PlanError, match="layout"):
        PlanOptions(layout="diagonal")
    with pytest.raises(PlanError, match="lane width"):
        PlanOptions(lane=0)


def test_405b_cuts_inside_layers_to_save_wafers(reference_graph):
    # 6.41 GB layers leave 5.5 GB idle per 37.57 GB wafer: whole layers need 26 wafers, blocks
    # (attention 1.2 GB, MLP 5.2 GB) 23 by bytes; the capacity bound is 22 (docs/planning.md)
    g = reference_graph("llama-3.1-405b")
    p = _plan(g)
    assert (p.lower_bound, p.required, p.partition) == (22, 23, "block")
    assert dict(p.tried)["layer"] == 26
    assert _plan(g, partition="layer").required == 26
    split = [w for w in p.wafers if any(" ops " in u for u in w.units)]
    assert split and all(a.layers[1] == b.layers[0] for a, b in zip(p.wafers, p.wafers[1:])
                         if any(u.startswith(f"layer {a.layers[1]} ops") for u in b.units))
    assert any("whole layers need 26" in e for e in p.explanation)
