"""The mapping search (docs/mapping.md): which layers share cores, and how partial sums reduce.

Candidates: the layer-group size G over the divisors of the most layers any wafer of the default
plan holds (G = 1 is ``regions``, every op on its own cores; the largest is ``wafer``, every layer of
a wafer on all of its cores; the others ``groups:G``), times the reduction shape (``tree``, ``chain``);
grid shapes are the tiler's choice for each.  Each candidate is planned and tiled and priced by the
tile-plan estimate (wafercc.perf.estimate: the lane floorplan's path geometry, no router), the
fastest that fits is chosen (ties: the earlier candidate, regions before groups, tree before chain).
The space is at most 2 x (divisors of the layers per wafer), a few dozen, so enumeration is exact and
cheaper than building a solver model (each point needs a tile plan, which no solver can express).
"""
from __future__ import annotations

import dataclasses

from ..errors import PlacementError, WaferccError
from ..target.geometry import REDUCTIONS
from .evaluate import tpot_seconds
from .estimate import estimate_program
from .model import CostParams, Machine


def layers_per_wafer(plan) -> int:
    """The most layers one wafer of ``plan`` holds."""
    return max((w.layers[1] - w.layers[0] + 1 for w in plan.wafers if w.layers), default=1)


def mapping_candidates(layers: int) -> list[str]:
    """regions, groups:G for the divisors 1 < G < layers, wafer (when a wafer holds > 1 layer)."""
    out = ["regions"] + [f"groups:{g}" for g in range(2, layers) if layers % g == 0]
    return out + (["wafer"] if layers > 1 else [])


def search_mapping(graph, target, options, device, prompt_tokens: int,
                   reductions: tuple[str, ...] = REDUCTIONS) -> dict:
    """The report's ``mapping`` section: every candidate priced, the chosen one and why.  ``options``:
    the PlanOptions to vary (its mapping and reduction are the search's)."""
    mc, p = Machine.of(target), CostParams.of(target)
    base = dataclasses.replace(options, mapping="regions", reduction=reductions[0])
    plan0, prog0 = estimate_program(graph, target, base, device)
    if prog0 is None:
        raise PlacementError(f"mapping search: {graph.name} fits no plan (regions)")
    layers = layers_per_wafer(plan0)
    rows = []
    for m in mapping_candidates(layers):
        for red in reductions:
            row = {"mapping": m, "reduction": red}
            try:
                plan, prog = (plan0, prog0) if (m, red) == ("regions", reductions[0]) else estimate_program(
                    graph, target, dataclasses.replace(options, mapping=m, reduction=red), device)
            except WaferccError as e:          # e.g. layers of one group that differ: not a candidate
                row.update(fits=False, reason=" ".join(str(e).split("\n")[0].split()))
                rows.append(row)
                continue
            if prog is None:
                row.update(fits=False, reason="no plan fits")
            else:
                row.update(fits=True, wafers=plan.used,
                           tokens_per_s_per_user=round(1.0 / tpot_seconds(prog, mc, p, prompt_tokens), 3))
            rows.append(row)
    fit = [r for r in rows if r["fits"]]
    best = max(fit, key=lambda r: r["tokens_per_s_per_user"])       # max keeps the first of equals
    ref = next((r for r in fit if (r["mapping"], r["reduction"]) == ("regions", reductions[0])), None)
    why = (f"fastest of {len(fit)} fitting candidates by the tile-plan estimate"
           + (f", {best['tokens_per_s_per_user'] / ref['tokens_per_s_per_user']:.2f}x regions/{reductions[0]}"
              if ref and best is not ref else ""))
    return {"method": "enumeration", "layers_per_wafer": layers,
            "chosen": {"mapping": best["mapping"], "reduction": best["reduction"],
                       "estimate_tokens_per_s_per_user": best["tokens_per_s_per_user"]},
            "alternatives": rows, "why": why}


# the estimate's best few are placed and routed before the compile commits: on a full wafer the
# routed paths of the candidates differ from the estimate's by more than the candidates differ
# (Llama-3.1-8B: groups:2/4/16 estimated 2,839 / 2,782 / 2,575 tok/s, routed 2,268 / 1,653 / 3,072)
CONFIRM_TOP = 3


def confirm_candidates(section: dict, top: int = CONFIRM_TOP) -> list[tuple[str, str]]:
    """What the compile places and routes before it commits: the ``top`` fastest by the estimate and
    the reference (regions, tree), fastest first (one entry when the reference is the best)."""
    fit = sorted((r for r in section["alternatives"] if r["fits"]), key=lambda r: -r["tokens_per_s_per_user"])
    out = [(r["mapping"], r["reduction"]) for r in fit[:top]]
    ref = ("regions", REDUCTIONS[0])
    if out and out[0] == ref:
        return [ref]
    if ref not in out and any((r["mapping"], r["reduction"]) == ref for r in fit):
        out.append(ref)
    return out


def mapping_line(section: dict) -> str:
    """One line of the terminal summary."""
    ch = section["chosen"]
    if section.get("alternatives") is None:
        return f"mapping: {ch['mapping']}, reduction {ch['reduction']} ({section['why']})"
    alts = ", ".join(f"{r['mapping']}/{r['reduction']} {r['tokens_per_s_per_user']:,.0f}"
                     for r in section["alternatives"] if r["fits"])
    routed = "".join(f"; routed {r['mapping']}/{r['reduction']} " + (f"{r['tokens_per_s_per_user']:,.0f}" if r["fits"]
                     else "does not place") for r in section.get("confirmed") or [])
    return (f"mapping: {ch['mapping']}, reduction {ch['reduction']} ({section['why']}; estimated tok/s/user: {alts}"
            f"{routed})")
