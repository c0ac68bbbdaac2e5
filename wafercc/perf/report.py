"""The report's ``performance`` section and its terminal table (docs/metrics.md)."""
from __future__ import annotations

import dataclasses

from .estimate import draft_time_per_token, wafers_curve
from .evaluate import DEFAULT_PROMPT_TOKENS, Program, Speculative, performance
from .model import PARAMS, CostModelError, CostParams, Machine


@dataclasses.dataclass(frozen=True)
class PerfOptions:
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS
    speculative: Speculative | None = None
    curve: bool = True
    curve_points: int = 6

    def __post_init__(self):
        if self.prompt_tokens < 1:
            raise CostModelError(f"prompt tokens {self.prompt_tokens}: expected at least 1")


def performance_section(prog: Program, graph, plan, target, device, opts: PerfOptions = PerfOptions(),
                        draft_graph=None) -> dict:
    """Decode figures of the routed schedule ``prog``, the wafers curve and, if asked, speculative
    decoding beside the plain figure (``draft_graph``: the draft's IR, when lowered already)."""
    mc, p = Machine.of(target), CostParams.of(target)
    spec, draft_wafers = opts.speculative, None
    if spec is not None:
        t, draft_wafers = draft_time_per_token(spec.draft, target, plan.options, device, opts.prompt_tokens,
                                               draft_graph)
        spec = dataclasses.replace(spec, draft_time_per_token_s=t)
    perf = performance(prog, mc, p, opts.prompt_tokens, spec)
    if spec is not None:
        perf["speculative"]["draft_wafers"] = draft_wafers
    perf["wafers_curve"] = (wafers_curve(graph, target, plan.options, device, opts.prompt_tokens,
                                         (plan.used, perf["decode_tokens_per_s_per_user"]), opts.curve_points)
                            if opts.curve else [])
    perf["cost_model"] = {"model": "analytic (docs/cost-model.md)",
                          "parameters": {k: target.cost_model[k].value for k in PARAMS},
                          "source": target.cost_model["compute_efficiency"].citation}
    return perf


def render_performance(perf: dict, console) -> None:
    from rich.table import Table

    t = Table(title="predicted decode performance (analytic timing model on the routed schedule)",
              title_justify="left")
    t.add_column("metric")
    t.add_column("value", justify="right")
    b = perf["breakdown_s"]
    rows = [
        ("tokens/s per user (batch 1)", f"{perf['decode_tokens_per_s_per_user']:,.1f}"),
        ("time per output token", f"{perf['time_per_output_token_s'] * 1e6:,.1f} us"),
        ("  compute / fabric / inter-wafer", f"{b['compute'] * 1e6:,.1f} / {b['fabric'] * 1e6:,.1f} / "
                                             f"{b['inter_wafer'] * 1e6:,.1f} us"),
        (f"aggregate tokens/s (batch {perf['batch']})", f"{perf['decode_tokens_per_s_aggregate']:,.1f}"),
        (f"time to first token ({perf['prompt_tokens']} prompt tokens)", f"{perf['ttft_s'] * 1e3:,.3f} ms"),
        ("energy per token", f"{perf['energy_j_per_token']:,.2f} J"),
    ]
    s = perf.get("speculative")
    if s:
        rows.append((f"speculative ({s['draft']}, k={s['proposed_tokens']}, accept {s['acceptance']})",
                     f"{s['decode_tokens_per_s_per_user']:,.1f} tok/s"))
    for name, value in rows:
        t.add_row(name, value)
    console.print(t)
    if perf.get("wafers_curve"):
        console.print("  wafers -> tokens/s per user: " + ", ".join(
            f"{c['wafers']}: {c['decode_tokens_per_s_per_user']:,.0f}" + ("*" if c["source"] == "schedule" else "")
            for c in perf["wafers_curve"]) + "   (* routed schedule; others estimated from the tile plan)")


def speed_of_light_line(sol: dict) -> str:
    """One line of the terminal summary: the bound and the prediction as a fraction of it."""
    return (f"speed of light: {sol['tokens_per_s_per_user']:,.0f} tok/s/user "
            f"({sol['binding'].replace('_', ' ')}-bound); prediction {sol['prediction_fraction'] * 100:.1f} % of it")
