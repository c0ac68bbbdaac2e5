"""Whole-schedule checks across wafers: the partition of layers and the pipeline between wafers.

A layer may be split across a wafer boundary (units ``layer i ops a-b``): its parts then continue
one another in wafer order, and the layer is the last of one wafer and the first of the next.

    check_plan(doc, sink)              plan-empty, layer-duplicate, layer-missing, layer-order, plan-wafers
    check_pipeline(ends, sink)         pipeline: consecutive wafers joined by inter-wafer routes

Per-wafer checks (an op on the wafer its layer was given: ``layer-wrong-wafer``) live in checks.py;
these need every wafer's ``layers`` / ``units`` at once, which schedule.json holds (no npz read).
"""
from __future__ import annotations

from .checks import _LAYER_UNIT, Sink

DRAFT = "draft"          # the role of a speculative draft's wafers (a model of its own)


def _held(w: dict) -> tuple[set[int], list[str], dict[int, list[tuple[int, int]]]]:
    """(layers, non-layer units, parts) a wafer entry claims: its [first, last] range and its units;
    ``parts``: per layer it holds only part of, the op ranges (``layer i ops a-b``) of its parts."""
    lay = w.get("layers")
    layers = set(range(lay[0], lay[1] + 1)) if lay and lay[0] <= lay[1] else set()
    other, parts = [], {}
    for u in w.get("units", []):
        m = _LAYER_UNIT.match(str(u))
        if m:
            layers.add(int(m.group(1)))
            if m.group(2) is not None:
                parts.setdefault(int(m.group(1)), []).append((int(m.group(2)), int(m.group(3))))
        else:
            other.append(str(u))
    return layers, other, parts


def check_plan(doc: dict, sink: Sink) -> None:
    """Per wafer role (``role``: "pipeline", the default, or "kv" for a dedicated KV wafer, which
    holds the KV cache of layers a pipeline wafer runs): each layer and unit on one wafer of the
    role, in order; the pipeline's layers without a gap, and a KV wafer's among them."""
    wafers = doc["wafers"]
    if not wafers:
        sink.one("plan-empty", None, "the schedule lists no wafers: nothing of the model is placed")
        return
    held = [_held(w) for w in wafers]
    roles = [str(w.get("role") or "pipeline") for w in wafers]
    layers_of: dict[str, set[int]] = {}
    for role in dict.fromkeys(roles):
        owner: dict[object, int] = {}
        last, last_k = None, None
        split: dict[int, tuple[int, int]] = {}     # layer held in parts -> (last wafer, last op so far)
        for k in (k for k in range(len(wafers)) if roles[k] == role):
            layers, other, parts = held[k]
            for unit in [*sorted(layers), *other]:
                if isinstance(unit, int) and unit in parts and role in ("pipeline", DRAFT):
                    _check_parts(unit, parts[unit], k, owner, split, role, sink)
                    continue
                if isinstance(unit, int) and unit in parts:     # a KV wafer: the caches of these parts
                    for a, b in parts[unit]:
                        key = (unit, a, b)
                        if key in owner:
                            sink.one("layer-duplicate", k, f"layer {unit} ops {a}-{b} is on wafer {owner[key]} "
                                     f"and on wafer {k} (each part on exactly one {role} wafer)")
                        owner.setdefault(key, k)
                    owner.setdefault(("kv-layer", unit), k)
                    continue
                if unit in owner or (isinstance(unit, int) and unit in split):
                    name = f"layer {unit}" if isinstance(unit, int) else f"unit '{unit}'"
                    where = owner.get(unit, split.get(unit, (None,))[0])
                    sink.one("layer-duplicate", k, f"{name} is on wafer {where} and on wafer {k} "
                             f"(each layer and unit on exactly one {role} wafer)")
                owner.setdefault(unit, k)
            mine = sorted(layers)
            # a layer split across the boundary is the previous wafer's last and this one's first
            shared = bool(mine) and last is not None and mine[0] == last and last in parts and last in held[last_k][2]
            if mine and last is not None and mine[0] <= last and not shared:
                sink.one("layer-order", k, f"wafer {k} starts at layer {mine[0]}, not after wafer {last_k}'s "
                         f"last layer {last} (the {role} wafers run the layers in order)")
            if mine:
                last, last_k = mine[-1], k
        layers_of[role] = {u for u in owner if isinstance(u, int)} | set(split) | \
            {u[1] for u in owner if isinstance(u, tuple) and u[0] == "kv-layer"}
    main = sorted(layers_of.get("pipeline", set()))
    if main:
        gaps = sorted(set(range(0, main[-1] + 1)) - set(main))
        if gaps:
            sink.one("layer-missing", None, f"layers {_ranges(gaps)} are on no wafer (the wafers hold "
                     f"{_ranges(main)})")
    for role, lay in layers_of.items():
        extra = sorted(lay - set(main)) if role not in ("pipeline", DRAFT) else []
        if extra:
            sink.one("layer-missing", None, f"{role} wafers hold layers {_ranges(extra)}, which no pipeline "
                     "wafer runs")
    _check_units(doc.get("units"), layers_of.get("pipeline", set()),
                 {u for k, (_, other, _p) in enumerate(held) if roles[k] == "pipeline" for u in other},
                 {(lay, r) for k, (_, _o, parts) in enumerate(held) if roles[k] == "pipeline"
                  for lay, rs in parts.items() for r in rs}, sink)
    _check_timeline(doc.get("timeline"), sum(r != DRAFT for r in roles), "timeline", sink)
    _check_draft(doc, held, roles, layers_of.get(DRAFT, set()), sink)


def _check_timeline(tl, n: int, where: str, sink: Sink) -> None:
    per = tl.get("wafers") if isinstance(tl, dict) else None
    if isinstance(per, list):
        got = [e.get("wafer") if isinstance(e, dict) else None for e in per]
        if got != list(range(n)):
            sink.one("plan-wafers", None, f"{where}.wafers lists wafers {got}, the schedule has "
                     f"{n} (0..{n - 1})")


def _check_draft(doc: dict, held: list, roles: list[str], layers: set[int], sink: Sink) -> None:
    """A speculative draft (``role: "draft"`` wafers, schedule.json ``draft``) is a model of its own:
    its wafers come after the target's, the ``draft`` section lists exactly them, and they hold
    every one of its units once (the duplicate and order checks above run per role)."""
    mine = [k for k, r in enumerate(roles) if r == DRAFT]
    d = doc.get("draft")
    if not mine and d is None:
        return
    if not isinstance(d, dict):
        sink.one("draft", None, f"wafers {mine} have role 'draft', but schedule.json has no 'draft' section")
        return
    if d.get("wafers") != mine:
        sink.one("draft", None, f"draft.wafers lists {d.get('wafers')}, the draft-role wafers are {mine}")
    if mine and mine != list(range(len(roles) - len(mine), len(roles))):
        sink.one("draft", None, f"the draft's wafers {mine} are not the last of the schedule's "
                 f"{len(roles)} (they come after the target's)")
    if mine:
        top = max(layers, default=-1)
        gaps = sorted(set(range(0, top + 1)) - layers)
        if gaps:
            sink.one("layer-missing", None, f"draft layers {_ranges(gaps)} are on no draft wafer")
        units = d.get("units")
        if not (isinstance(units, list) and all(isinstance(u, str) for u in units)):
            sink.one("draft", None, f"draft.units: got {units!r}, expected the draft model's unit names")
        else:
            _check_units(units, layers, {u for k in mine for u in held[k][1]},
                         {(lay, r) for k in mine for lay, rs in held[k][2].items() for r in rs}, sink,
                         "the draft's ")
    _check_timeline(d.get("timeline"), len(mine), "draft.timeline", sink)


def _check_parts(lay: int, ranges: list[tuple[int, int]], k: int, owner: dict, split: dict, role: str,
                 sink: Sink) -> None:
    """Parts of a layer split across wafers: each range non-empty, continuing where the previous
    part (on this or an earlier wafer) stopped, and never beside the whole layer elsewhere."""
    if lay in owner:
        sink.one("layer-duplicate", k, f"layer {lay} is whole on wafer {owner[lay]} and in parts on wafer {k}")
        return
    for a, b in sorted(ranges):
        prev = split.get(lay, (None, -1))[1]
        if b < a or a != prev + 1:
            sink.one("layer-order", k, f"layer {lay} ops {a}-{b} on wafer {k} do not continue its ops 0-{prev} "
                     f"on the {role} wafers before (a split layer's parts run in order, without gap or overlap)")
        split[lay] = (k, max(b, prev))


def _check_units(units, layers: set[int], other: set[str], parts: set, sink: Sink, whose: str = "") -> None:
    """The model's units (schedule.json ``units``, the partition's atoms) against what the pipeline
    wafers hold: a layer or the head dropped from the end leaves no gap, so only this sees it; a
    layer held in parts: the same parts as the model's units list."""
    if units is None:           # written since schedule/2's units field; older files skip the check
        return
    want_parts = {(int(m.group(1)), (int(m.group(2)), int(m.group(3)))) for u in units
                  if (m := _LAYER_UNIT.match(str(u))) and m.group(2) is not None}
    for lay, (a, b) in sorted(want_parts ^ parts):
        sink.one("layer-missing", None, f"{whose}unit 'layer {lay} ops {a}-{b}' is " +
                 ("on no wafer" if (lay, (a, b)) in want_parts else "on a wafer but not among the model's units"))
    want_layers = {int(m.group(1)) for u in units if (m := _LAYER_UNIT.match(str(u)))}
    want_other = {str(u) for u in units if not _LAYER_UNIT.match(str(u))}
    missing = sorted(want_layers - layers)
    if missing:
        sink.one("layer-missing", None, f"{whose}layers {_ranges(missing)} of the model are on no wafer "
                 f"(the model has {len(want_layers)} layers)")
    extra = sorted(layers - want_layers)
    if extra:
        sink.one("layer-missing", None, f"{whose}wafers hold layers {_ranges(extra)}, which the model's units do not list")
    for u in sorted(want_other ^ other):
        sink.one("layer-missing", None, f"{whose}unit '{u}' is " + ("on no wafer" if u in want_other else
                                                                    "on a wafer but not among the model's units"))


def _ranges(xs: list[int]) -> str:
    out, start = [], None
    for i, x in enumerate(xs):
        if start is None:
            start = x
        if i + 1 == len(xs) or xs[i + 1] != x + 1:
            out.append(str(start) if start == x else f"{start}-{x}")
            start = None
    return ", ".join(out)


def check_pipelines(ends: list[dict], roles: list[str], sink: Sink) -> None:
    """The target's wafers and a speculative draft's each form their own pipeline."""
    draft = [k for k, r in enumerate(roles) if r == DRAFT]
    if not draft:
        return check_pipeline(ends, sink)
    check_pipeline(ends[:draft[0]], sink)
    check_pipeline(ends[draft[0]:], sink, draft[0])


def check_pipeline(ends: list[dict], sink: Sink, base: int = 0) -> None:
    """``ends[k]`` (from dataflow.check_dataflow): wafer k's entry/exit ops (None without tiles) and
    its inter-wafer links ``out`` / ``in``: {(src_wafer, dst_wafer): (op, bytes_per_token)}.  Every
    wafer holding tiles before another one that does sends its exit op's output east to wafer k+1,
    which receives it into its entry op; both wafers list the hop with the same bytes per token.
    ``ends[0]`` is wafer ``base``."""
    holding = [k for k, e in enumerate(ends) if e["entry"] is not None]
    for i in range(len(ends) - 1):
        if ends[i]["entry"] is None or not any(j > i for j in holding):
            continue
        a, b = ends[i], ends[i + 1]
        k = base + i
        if b["entry"] is None:
            sink.one("pipeline", k + 1, f"wafer {k + 1} holds no tiles, between wafer {k} and a later wafer "
                     "that does: the pipeline cannot pass it")
            continue
        out, inc = a["out"].get((k, k + 1)), b["in"].get((k, k + 1))
        if out is None or out[0] != a["exit"]:
            sink.one("pipeline", k, f"no inter-wafer route from wafer {k}'s last op {a['exit']} to its edge, "
                     f"listed with dst_wafer {k + 1}" + (f" (the listed one leaves op {out[0]})" if out else ""))
        if inc is None or inc[0] != b["entry"]:
            sink.one("pipeline", k + 1, f"no inter-wafer route from the edge into wafer {k + 1}'s first op "
                     f"{b['entry']}, listed with src_wafer {k}" + (f" (the listed one enters op {inc[0]})" if inc else ""))
        if out is not None and inc is not None and out[1] != inc[1]:
            sink.one("pipeline", k + 1, f"wafer {k} sends {out[1]} bytes per token to wafer {k + 1}, which "
                     f"lists {inc[1]}")
