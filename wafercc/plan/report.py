"""The capacity plan as report JSON (the ``wafers`` section issue 5 completes) and a table."""
from __future__ import annotations

import dataclasses
from typing import Any

from .planner import WaferPlan, summary_rows


def plan_dict(plan: WaferPlan) -> dict[str, Any]:
    o = plan.options
    mem = plan.memory
    d: dict[str, Any] = {
        "target": {"name": plan.target},
        "options": {"dtype": mem.weight_dtype, "kv_dtype": mem.kv_dtype, "context": o.context, "batch": o.batch,
                    "wafers_requested": o.wafers, "max_wafers": o.max_wafers, "kv_placement": o.kv_placement,
                    "defects": plan.defects, "seed": plan.seed,
                    "dtype_overrides": [[p, dt.value] for p, dt in o.dtype_overrides]},
        "memory": {"weight_bytes": mem.weight_bytes, "kv_bytes": mem.kv_bytes, "act_bytes": mem.act_bytes,
                   "total_bytes": mem.total_bytes,
                   "units": [{"name": u.name, "weight_bytes": u.weight_bytes, "kv_bytes": u.kv_bytes,
                              "act_bytes": u.act_bytes} for u in mem.units]},
        "wafers": {"required": plan.required, "used": plan.used, "lower_bound": plan.lower_bound,
                   "kv_placement": o.kv_placement, "pipeline_wafers": plan.pipeline_wafers,
                   "kv_wafers": plan.kv_wafers, "explanation": list(plan.explanation),
                   "per_wafer": summary_rows(plan)},
        # solver wall times go to compile.json (solve_seconds): the report is byte-identical per input
        "partition": {"latency_model": plan.latency_model, "granularity": plan.partition,
                      "tried": [{"granularity": g, "wafers": n} for g, n in plan.tried],
                      "solves": [{k: v for k, v in dict(dataclasses.asdict(s), gap=s.gap).items() if k != "seconds"}
                                 for s in plan.solver]},
    }
    if plan.infeasible:
        inf = plan.infeasible
        d["infeasible"] = {"max_wafers": inf.max_wafers, "needed_wafers": inf.needed_wafers,
                           "short_bytes": inf.short_bytes, "reason": inf.reason,
                           "levers": [dataclasses.asdict(lv) for lv in inf.levers]}
    return d


def solve_seconds(plan: WaferPlan) -> list[dict]:
    return [{"solver": s.solver, "status": s.status, "seconds": round(s.seconds, 4)} for s in plan.solver]


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f}"


def render_plan(plan: WaferPlan, console) -> None:
    from rich.table import Table

    mem = plan.memory
    if plan.infeasible:
        inf = plan.infeasible
        console.print(f"[bold red]no plan fits --max-wafers {inf.max_wafers}[/]: {inf.reason}; "
                      f"needs {inf.needed_wafers if inf.needed_wafers else 'more than any count tried'} wafer(s)")
        t = Table(title="levers (each alone, re-planned)")
        for col in ("change", "wafers needed", "saves"):
            t.add_column(col)
        t.add_row(f"--max-wafers {inf.max_wafers} -> {inf.needed_wafers}", str(inf.needed_wafers or "-"), "-")
        for lv in inf.levers:
            fits = lv.wafers is not None and lv.wafers <= inf.max_wafers
            t.add_row(lv.change + (" [green](fits)[/]" if fits else ""), str(lv.wafers or "-"),
                      f"{_gb(lv.saves_bytes)} GB")
        console.print(t)
        return
    t = Table(title=f"{plan.model} on {plan.target}: {plan.used} wafer(s) "
                    f"(minimum {plan.required}, capacity bound {plan.lower_bound}); weights {mem.weight_dtype}, "
                    f"KV {mem.kv_dtype or '-'} x {plan.options.context} tokens x batch {plan.options.batch}, "
                    f"KV {plan.options.kv_placement}")
    for col in ("wafer", "role", "layers", "weights GB", "KV GB", "act MB", "buffers GB", "used / usable GB",
                "util", "dead cores", "stage us"):
        t.add_column(col, justify="right")
    partial = False
    for w in plan.wafers:
        parts = {u.split(" ops ")[0] for u in w.units if " ops " in u}
        partial = partial or bool(parts)
        mark = (lambda name: name + ("*" if name in parts else ""))
        layers = f"{mark(f'layer {w.layers[0]}')[6:]}-{mark(f'layer {w.layers[1]}')[6:]}" if w.layers else "-"
        extra = list(dict.fromkeys(mark(u.split(" ops ")[0]) for u in w.units if not u.startswith("layer")))
        if extra:
            layers += " +" + "+".join(extra)
        t.add_row(str(w.index), w.role, layers, _gb(w.weight_bytes), _gb(w.kv_bytes), f"{w.act_bytes / 1e6:.1f}",
                  _gb(w.buffer_bytes), f"{_gb(w.sram_used_bytes)} / {_gb(w.sram_usable_bytes)}",
                  f"{100 * w.utilisation:.1f}%", str(w.dead_cores), f"{w.stage_latency_s * 1e6:.1f}")
    console.print(t)
    if partial:
        console.print(f"  * part of it: the wafer boundary falls inside ({plan.partition} units; report.json "
                      "memory.units names each part's ops)")
    for line in plan.explanation:
        console.print(f"  why: {line}")
    solves = ", ".join(f"{s.solver} {s.status}" + (f" gap {s.gap}" if s.gap else "") for s in plan.solver)
    console.print(f"  partition: {solves}")
