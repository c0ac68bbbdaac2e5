"""The placement stage of ``wafercc compile``: tile, floorplan, route every wafer of a plan and
stream the schedule into the output directory (one wafer in memory at a time).

Returns the report's ``placement`` section and the per-pass seconds; a wafer whose tiles do not
fit or whose transfers cannot be routed raises (TileError, FloorplanError, RoutingError: all
``PlacementError`` for the CLI, exit 3) and leaves no schedule files behind.
"""
from __future__ import annotations

import time

from ..passes.assign import AssignError
from ..passes.floorplan import FloorplanError
from ..passes.place_route import PlaceOptions, place_and_route
from ..passes.route import RoutingError
from ..passes.tile_shapes import TileError
from ..perf.evaluate import DEFAULT_PROMPT_TOKENS, Program
from .schedule import ScheduleWriter, floorplan_qor

PLACEMENT_ERRORS = (TileError, FloorplanError, AssignError, RoutingError)


def place_to_dir(outdir: str, graph, plan, target, device, options: PlaceOptions = PlaceOptions(),
                 progress=None, prompt_tokens: int = DEFAULT_PROMPT_TOKENS) -> tuple[dict, dict, dict[str, str], Program]:
    """(placement section, seconds per pass, files written, the timing model's view of the schedule)."""
    writer = ScheduleWriter(outdir, graph, target, device, plan, options, prompt_tokens)
    per_wafer = []
    secs = {"write": 0.0}

    def keep(pw):
        r = pw.routes
        per_wafer.append({"wafer": pw.index, "tiles": int(len(pw.tile_op)), "routes": int(len(pw.transfers)),
                          "routed_hops": int(r.total_hops), "hops_lower_bound": int(r.lower_bound),
                          "max_link_load": int(r.max_link_load), "colors_used": int(r.colors_used),
                          "router_iterations": int(r.iterations),
                          "floorplan_status": floorplan_qor(pw.floorplan, options.layout)["status"],
                          "displaced": int(pw.floorplan.assign.displaced) if pw.floorplan.assign else 0,
                          "lane": int(pw.floorplan.lane), "width": int(pw.floorplan.width),
                          "slots_used": int(pw.floorplan.slots_used), "slots": int(pw.floorplan.slots)})
        t = time.perf_counter()
        writer.add(pw)
        secs["write"] += time.perf_counter() - t
        if progress:
            progress(per_wafer[-1])

    try:
        prog = place_and_route(graph, plan, target, device, options, on_wafer=keep)
        t = time.perf_counter()
        files = writer.finish()
        secs["write"] += time.perf_counter() - t
    except BaseException:
        writer.abort()
        raise
    hops = sum(w["routed_hops"] for w in per_wafer)
    bound = sum(w["hops_lower_bound"] for w in per_wafer)
    section = {"layout": options.layout,
               "tiles": sum(w["tiles"] for w in per_wafer), "routes": sum(w["routes"] for w in per_wafer),
               "routed_hops": hops, "hops_lower_bound": bound,
               "hops_ratio": round(hops / bound, 4) if bound else None,
               "max_link_load": max((w["max_link_load"] for w in per_wafer), default=0),
               "colors_used_max": max((w["colors_used"] for w in per_wafer), default=0),
               "per_wafer": per_wafer}
    return section, {**prog.seconds, **secs}, files, writer.program()
