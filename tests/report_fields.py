"""The cost report's promised fields (issue 5, docs/metrics.md): shared by the report tests."""
from __future__ import annotations

REPORT_FIELDS = {
    "model": ("name", "params", "layers", "weight_bytes", "kv_bytes_per_token"),
    "target": ("name",),
    "options": ("dtype", "kv_dtype", "context", "batch", "wafers_requested", "defects"),
    "wafers": ("required", "used", "lower_bound", "per_wafer"),
    "performance": ("decode_tokens_per_s_per_user", "decode_tokens_per_s_aggregate", "time_per_output_token_s",
                    "ttft_s", "prompt_tokens", "energy_j_per_token", "breakdown_s", "speculative", "wafers_curve"),
    "placement": ("routed_hops", "hops_lower_bound", "max_link_load", "colors_used_max"),
}
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
