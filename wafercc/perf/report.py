"""The report's ``performance`` section and its terminal table (docs/metrics.md)."""
from __future__ import annotations

import dataclasses

from .estimate import wafers_curve
from .evaluate import DEFAULT_PROMPT_TOKENS, Program, Speculative, performance, speculative_figures, tpot_seconds
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
                        draft=None) -> dict:
    """Decode figures of the routed schedule ``prog``, the wafers curve and, with ``draft`` (the
    draft placed on its own wafers, wafercc/draft.PlacedDraft), speculative decoding beside the
    plain figure."""
    mc, p = Machine.of(target), CostParams.of(target)
    perf = performance(prog, mc, p, opts.prompt_tokens)
    if opts.speculative is not None:
        if draft is None:
            raise CostModelError("speculative figures need the draft placed on its wafers (the schedule stage)")
        perf["speculative"] = speculative_section(opts.speculative, prog, draft, perf, mc, p, opts.prompt_tokens)
    perf["wafers_curve"] = (wafers_curve(graph, target, plan.options, device, opts.prompt_tokens,
                                         (plan.used, perf["decode_tokens_per_s_per_user"]), opts.curve_points)
                            if opts.curve else [])
    perf["cost_model"] = {"model": "analytic (docs/cost-model.md)",
                          "parameters": {k: target.cost_model[k].value for k in PARAMS},
                          "source": target.cost_model["compute_efficiency"].citation}
    return perf


def speculative_section(spec: Speculative, prog: Program, draft, perf: dict, mc: Machine, p: CostParams,
                        prompt_tokens: int) -> dict:
    """The speculative figures beside the plain ones: the draft timed from its routed schedule by
    the analytic model (its event replay, ``eventsim.compare_with_analytic(outdir, role="draft")``,
    takes minutes on a full wafer, so a compile does not run it), the k sweep, the placement."""
    draft_s = tpot_seconds(draft.program, mc, p, prompt_tokens)
    out = speculative_figures(spec, prog, draft_s, mc, p, prompt_tokens,
                              (perf["time_per_output_token_s"], perf["stream_interval_s"]))
    plain = perf["decode_tokens_per_s_per_user"]
    out.update(plain_decode_tokens_per_s_per_user=plain,
               speedup=round(out["decode_tokens_per_s_per_user"] / plain, 4),
               faster_than_plain=out["decode_tokens_per_s_per_user"] > plain,
               draft_model=draft.name, draft_wafers=draft.wafers,
               draft_time_source="analytic model on the draft's routed schedule",
               placement={"where": "own wafers", "first_wafer": draft.first_wafer, "wafers": draft.wafers,
                          "draft_cores_used": draft.cores_used, "target_spare_cores": draft.target_spare_cores,
                          "why": "own wafers: " + ("the target's wafers leave fewer spare cores than the draft uses"
                                                   if draft.target_spare_cores < draft.cores_used else
                                                   "sharing the target's wafers needs one floorplan of both "
                                                   "models (not built)")})
    return out


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
        rows.append(("tokens/s per user, plain | speculative",
                     f"{s['plain_decode_tokens_per_s_per_user']:,.1f} | {s['decode_tokens_per_s_per_user']:,.1f}"))
        rows.append((f"  speculative: draft {s['draft']} on {s['draft_wafers']} own wafer(s), k={s['proposed_tokens']} "
                     f"({s['proposed_tokens_from']}), acceptance {s['acceptance']}",
                     f"x{s['speedup']:.2f}"))
        rows.append(("  draft time per token (its routed schedule) | verify pass of k+1 columns",
                     f"{s['draft_time_per_token_s'] * 1e6:,.1f} | {s['verify_pass_s'] * 1e6:,.1f} us"))
        streamed = [r for r in s["sweep"] if "streamed_bound_tokens_per_s_per_user" in r]
        if streamed:
            b = max(streamed, key=lambda r: r["streamed_bound_tokens_per_s_per_user"])
            rows.append((f"  bound if the k+1 columns streamed through the ops (k={b['proposed_tokens']})",
                         f"{b['streamed_bound_tokens_per_s_per_user']:,.1f} tok/s"))
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
