"""The cost report's promised fields (issue 5, docs/metrics.md): shared by the report tests."""
from __future__ import annotations

import math

import pytest

REPORT_FIELDS = {
    "model": ("name", "params", "layers", "weight_bytes", "kv_bytes_per_token"),
    "target": ("name",),
    "options": ("dtype", "kv_dtype", "context", "batch", "wafers_requested", "defects"),
    "wafers": ("required", "used", "lower_bound", "per_wafer"),
    "performance": ("decode_tokens_per_s_per_user", "decode_tokens_per_s_aggregate", "time_per_output_token_s",
                    "ttft_s", "prompt_tokens", "energy_j_per_token", "breakdown_s", "speculative", "wafers_curve"),
    "placement": ("routed_hops", "hops_lower_bound", "max_link_load", "colors_used_max"),
    "speed_of_light": ("time_per_output_token_s", "tokens_per_s_per_user", "prediction_fraction", "terms_s",
                       "per_wafer", "at_batch"),
}
SPEED_OF_LIGHT_FIELDS = ("time_per_output_token_s", "tokens_per_s_per_user", "prediction_fraction", "terms_s",
                         "binding", "throughput_excess_s", "decode_context_tokens", "reduction_step_cycles",
                         "at_fitted_reduce_step", "per_wafer", "boundaries_s", "at_batch", "sources")
SOL_WAFER_FIELDS = ("wafer", "cores", "flops", "weight_bytes_read", "kv_bytes_read", "compute_s", "sram_s",
                    "sram_weight_s", "sram_kv_s", "fabric_chain_s", "fabric_chain_cycles", "chain_ops", "bound_s",
                    "binding")
PER_WAFER_FIELDS = ("index", "layers", "sram_used_bytes", "sram_usable_bytes", "cores_used", "dead_cores")


def check_report_fields(r: dict, what: str = "report") -> None:
    """Every promised field is present; per-wafer fields are filled."""
    assert r["schema"] == "wafercc.report/1"
    for sec, keys in REPORT_FIELDS.items():
        for k in keys:
            assert k in r[sec], f"{what}: {sec}.{k} missing"
    for w in r["wafers"]["per_wafer"]:
        for k in PER_WAFER_FIELDS:
            assert w.get(k) is not None, f"{what}: wafers.per_wafer[{w.get('index')}].{k} missing"


def check_report_invariants(r: dict, name: str) -> None:
    """Every promised field is filled and the figures agree with each other: tokens/s = 1/TPOT, the
    breakdown sums to TPOT, inter-wafer time exactly when there is more than one wafer, the curve
    from the compiled count to at least twice it with the routed point marked ``schedule``."""
    check_report_fields(r, name)
    assert r["model"]["name"] == name and r["model"]["params"] > 0 and r["model"]["layers"] > 0
    w = r["wafers"]
    assert w["used"] >= w["required"] >= w["lower_bound"] >= 1
    assert [p["index"] for p in w["per_wafer"]] == list(range(w["used"]))
    for p in w["per_wafer"]:
        assert 0 < p["sram_used_bytes"] <= p["sram_usable_bytes"] and p["cores_used"] > 0 and p["dead_cores"] >= 0
    perf = r["performance"]
    tpot = perf["time_per_output_token_s"]
    assert tpot > 0 and perf["decode_tokens_per_s_per_user"] == pytest.approx(1 / tpot, rel=1e-6)
    assert perf["ttft_s"] >= tpot and perf["energy_j_per_token"] > 0 and perf["prompt_tokens"] >= 1
    b = perf["breakdown_s"]
    assert set(b) == {"compute", "fabric", "inter_wafer"} and all(v >= 0 for v in b.values())
    assert sum(b.values()) == pytest.approx(tpot, rel=1e-6)
    assert (b["inter_wafer"] > 0) == (w["used"] > 1)
    curve = perf["wafers_curve"]
    counts = [c["wafers"] for c in curve]
    assert counts == sorted(counts) and counts[0] == w["used"] and counts[-1] >= 2 * counts[0]
    assert all(c["decode_tokens_per_s_per_user"] > 0 and math.isfinite(c["decode_tokens_per_s_per_user"])
               for c in curve)
    assert [c for c in curve if c["source"] == "schedule"] == [
        {"wafers": w["used"], "decode_tokens_per_s_per_user": perf["decode_tokens_per_s_per_user"],
         "source": "schedule"}]
    check_speed_of_light(r)
    assert r["speed_of_light"]["prediction_fraction"] <= 1
    pl = r["placement"]
    assert pl["routed_hops"] >= pl["hops_lower_bound"] > 0 and pl["max_link_load"] >= 1


def check_speed_of_light(r: dict) -> None:
    """The ``speed_of_light`` section's fields are present and agree with each other and with the
    ``performance`` section (docs/metrics.md)."""
    s = r["speed_of_light"]
    for k in SPEED_OF_LIGHT_FIELDS:
        assert k in s, f"speed_of_light.{k} missing"
    tpot = s["time_per_output_token_s"]
    assert tpot > 0 and s["tokens_per_s_per_user"] == pytest.approx(1 / tpot, rel=1e-6)
    assert s["prediction_fraction"] == pytest.approx(tpot / r["performance"]["time_per_output_token_s"], abs=1e-4)
    assert set(s["terms_s"]) == {"compute", "sram", "fabric_chain", "inter_wafer"}
    assert s["binding"] in s["terms_s"]
    assert s["terms_s"]["inter_wafer"] == pytest.approx(sum(s["boundaries_s"]))
    assert len(s["boundaries_s"]) == len(s["per_wafer"]) - 1
    for w in s["per_wafer"]:
        for k in SOL_WAFER_FIELDS:
            assert k in w, f"speed_of_light.per_wafer[{w.get('wafer')}].{k} missing"
        assert w["cores"] > 0 and w["chain_ops"] >= 1
        assert w["sram_s"] == pytest.approx(w["sram_weight_s"] + w["sram_kv_s"])
        assert w["bound_s"] == max(w["compute_s"], w["sram_s"], w["fabric_chain_s"])
    chains = s["terms_s"]["fabric_chain"] + s["terms_s"]["inter_wafer"]
    assert tpot == pytest.approx(chains + s["throughput_excess_s"], rel=1e-9)
    assert tpot >= max(w["bound_s"] for w in s["per_wafer"]) * (1 - 1e-9)
    b = s["at_batch"]
    assert b["batch"] == r["performance"]["batch"] and b["round_s"] >= tpot * (1 - 1e-9)
