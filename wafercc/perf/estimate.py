"""Timing estimates without placement: the tile plan with the lane floorplan's path geometry.

Used where placing and routing would cost too much for what is asked: the speed-versus-wafers
curve (one plan and tile plan per wafer count) and the benchmarks' speculative ceilings
(benchmarks/published_checks.py, calibrate.py).  The compiled point itself, and a compile's
``--speculative`` draft (wafercc/draft.py), are always timed from their routed schedules;
tests/test_perf.py checks the estimate against it.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import PlacementError
from ..ir import DType
from .evaluate import Boundary, Program, tpot_seconds
from .model import CostParams, Machine
from .records import op_records


def estimate_program(graph, target, options, device, plan=None) -> tuple[object, Program]:
    """(wafer plan, timing-model Program) of ``graph`` planned with ``options`` and tiled for the lane
    floorplan, paths from its geometry."""
    from ..passes.tile import TileOptions, tile_plan
    from ..plan.planner import cut_bytes, plan_wafers, tile_shortfall

    lane = device.lane_width("lanes")
    tiled = []

    def tiles(p):
        slots = [device.wafer(k).lane_slots(lane, 0, "lanes") for k in range(len(p.wafers))]
        return tile_plan(graph, p, target, TileOptions(lane=lane, reduction=options.reduction,
                                                     mapping=options.mapping), slots)

    def check(p):                      # the planner's tile check (plan_wafers): these very tiles fit
        try:
            tiled.append((p, tiles(p)))
        except PlacementError as e:
            if getattr(e, "short_cores", None) is None:
                raise
            return tile_shortfall(e)
        return None

    plan = plan or plan_wafers(graph, target, options, device, with_levers=False, tile_check=check)
    if plan.infeasible is not None:
        return plan, None
    tp = next((t for p, t in tiled if p is plan), None) or tiles(plan)
    flops = {o.node: float(o.flops) for o in plan.memory.ops}
    wafers, bounds = [], []
    for k, wt in enumerate(tp.wafers):
        ops = [tp.ops[i] for i in wt.ops]
        wafers.append(tuple(op_records(ops, graph, flops, None, _act_hops(ops, lane, target.usable_rows), lane,
                                        options.reduction)))
        if k < len(tp.wafers) - 1:
            bounds.append(Boundary(k, cut_bytes(plan.wafers[k], ops[-1].act_bytes if ops else 0)
                                   // plan.options.batch, 0))
    mem = plan.memory
    act = DType(mem.options.act_dtype or mem.weight_dtype)
    return plan, Program(tuple(wafers), tuple(bounds), act.bits / 8, plan.options.context, plan.options.batch)


def _act_hops(ops, lane: int, rows: int = 0) -> dict[int, int]:
    """An op's input arrives from the previous op's last tile, about one grid's lane rows away.
    Under layer groups (docs/mapping.md) ops take their template's cores: the route from a group's
    layer to the next runs from the template's last op back to its first op: the Manhattan distance
    of their curve positions on a serpentine of ``rows``-row lanes."""
    def core(p: int) -> tuple[int, int]:
        if not rows:
            return p // max(lane, 1), 0
        b, r = divmod(p // max(lane, 1), rows)
        return (rows - 1 - r if b % 2 else r), b * lane + p % max(lane, 1)

    ids = {o.node: i for i, o in enumerate(ops)}
    tmpl = [ids[o.shares] if getattr(o, "shares", None) else i for i, o in enumerate(ops)]
    start, pos = {}, 0                        # curve slot of each op with cores of its own
    for i, o in enumerate(ops):
        if tmpl[i] == i and o.grids:
            start[i] = pos
            pos += o.slots
    out, prev = {}, None
    for i, o in enumerate(ops):
        if not o.grids:
            continue
        if prev is not None:
            a, b = tmpl[prev], tmpl[i]
            g = ops[a].grids[-1]
            if start[b] > start[a]:
                out[i] = int(np.ceil(g.slots / max(lane, 1))) + min(g.cols, lane)
            else:
                (r0, c0), (r1, c1) = core(start[a] + ops[a].slots - 1), core(start[b])
                out[i] = abs(r0 - r1) + abs(c0 - c1)
        prev = i
    return out


def wafers_curve(graph, target, options, device, prompt_tokens: int, compiled: tuple[int, float] | None = None,
                 points: int = 6) -> list[dict]:
    """[{wafers, decode_tokens_per_s_per_user, source}] from the fewest wafers that hold the model to
    twice that, ``points`` counts spread evenly (every count for small ranges); ``compiled`` =
    (wafers, tokens/s) is the routed schedule's figure, which replaces the estimate at that count."""
    mc, p = Machine.of(target), CostParams.of(target)
    base = dataclasses.replace(options, wafers=None, max_wafers=None)
    plan0, prog0 = estimate_program(graph, target, base, device)
    lo = plan0.used if prog0 is not None else None
    if lo is None:
        return []
    counts = {int(round(x)) for x in np.linspace(lo, 2 * lo, min(points, lo + 1))}
    counts = sorted(counts | ({compiled[0]} if compiled else set()))
    out = []
    for n in counts:
        if compiled is not None and n == compiled[0]:
            out.append({"wafers": n, "decode_tokens_per_s_per_user": compiled[1], "source": "schedule"})
            continue
        plan, prog = (plan0, prog0) if n == lo else estimate_program(
            graph, target, dataclasses.replace(base, wafers=n), device)
        if prog is None:
            continue
        out.append({"wafers": n, "decode_tokens_per_s_per_user": _tokens_per_s(prog, mc, p, prompt_tokens),
                    "source": "estimate"})
    return out


def _tokens_per_s(prog: Program, mc: Machine, p: CostParams, prompt_tokens: int) -> float:
    return round(1.0 / tpot_seconds(prog, mc, p, prompt_tokens), 3)


def estimate_tokens_per_s(graph, target, options, device, plan, prompt_tokens: int) -> float | None:
    """Tokens/s per user of ``plan`` timed on its tile plan (None when it does not fit)."""
    _, prog = estimate_program(graph, target, options, device, plan)
    return None if prog is None else _tokens_per_s(prog, Machine.of(target), CostParams.of(target), prompt_tokens)


def draft_time_per_token(draft, target, options, device, prompt_tokens: int, graph=None) -> tuple[float, int]:
    """(seconds per token, wafers) of a draft model on its own wafers, by estimate; ``draft`` is
    anything the frontend takes (a reference-model name, a config, an ONNX path); ``graph`` its
    IR when already lowered."""
    from ..frontend.load import lower_model

    g = graph if graph is not None else lower_model(draft).graph
    plan, prog = estimate_program(g, target, dataclasses.replace(options, wafers=None, max_wafers=None,
                                                                  dtype_overrides=()), device)
    if prog is None:
        from .model import CostModelError
        raise CostModelError(f"speculative draft '{draft}' does not fit the target")
    return tpot_seconds(prog, Machine.of(target), CostParams.of(target), prompt_tokens), plan.used
