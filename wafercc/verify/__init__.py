"""The independent schedule verifier (docs/schedule-format.md, "What the verifier checks").

    verify_dir(outdir, limit=50) -> VerifyResult     read OUTDIR, run every check, compute the QoR
    VerifyResult.ok / .violations / .counts / .wafers (QoR dicts) / .violation_count
    result_dict(res) -> dict; render_text(res, console, limit)

It reads only the emitted files (schedule.json, defects.npz, wafer{k}.npz) and the target they
name; it never imports the planner, the passes or the frontends.  Unreadable or structurally
malformed files raise ScheduleFileError (a WaferccError, exit 2); violations are data (exit 1).
"""
from __future__ import annotations

import time

import numpy as np
from dataclasses import dataclass, field

from .allreduce import check_allreduce
from .checks import (
    Sink,
    Violation,
    check_config,
    check_partition,
    check_sram,
    check_tiles,
    target_fabric,
)
from .dataflow import check_dataflow
from .endpoints import check_endpoints
from .files import ScheduleFileError, read_schedule
from .plan import check_pipelines, check_plan
from .path_records import check_path_records
from .qor import wafer_qor
from .report import render_text, result_dict
from .routes import check_routes
from .shared import check_shared
from .trees import check_route_tiles, check_trees

__all__ = ["ScheduleFileError", "VerifyResult", "Violation", "render_text", "result_dict", "verify_dir"]


@dataclass
class VerifyResult:
    outdir: str
    model: str | None
    target: str
    violations: list[Violation]              # formatted, at most ``limit`` per code
    counts: dict[str, int]                   # code -> exact total
    wafers: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def violation_count(self) -> int:
        return sum(self.counts.values())

    @property
    def ok(self) -> bool:
        return self.violation_count == 0


def verify_dir(outdir: str, limit: int = 50) -> VerifyResult:
    t0 = time.perf_counter()
    sched = read_schedule(outdir)
    doc, target = sched.doc, sched.target
    sink = Sink(limit)
    check_config(doc, target, sink)
    check_plan(doc, sink)
    budget = doc["budget_bytes_per_core"]
    colors, cap = target_fabric(doc, target)       # the hardware's figures, not the schedule's claims
    qor, ends = [], []
    for k in range(sched.nwafers):
        w = sched.wafer(k)
        ops = w.meta["ops"]
        before = sink.by_wafer.get(w.index, 0)
        tiles = check_tiles(w, ops, sink)
        check_sram(w, tiles, budget, sink)
        rstats = check_routes(w, ops, colors, cap, target.fabric.colors, sink)
        check_endpoints(w, ops, rstats, sched.nwafers, sink)
        good_src, good_dst = check_route_tiles(w, ops, tiles, sink)
        tmpl, partner, shared_tile = check_shared(w, ops, tiles, sink)
        trees_before = sink.counts.get("broadcast-tree", 0) + sink.counts.get("reduction-tree", 0)
        roots = check_trees(w, ops, tiles, good_src, good_dst, sink, shared_tile)
        if sink.counts.get("broadcast-tree", 0) + sink.counts.get("reduction-tree", 0) == trees_before:
            check_path_records(w, ops, tiles, good_src, good_dst, tmpl, sink)
        if shared_tile.any():          # a shared tile is a root where its template's tile is one
            roots = roots.copy()
            roots[shared_tile] = (partner[shared_tile] >= 0) & roots[np.maximum(partner[shared_tile], 0)]
        check_allreduce(w, ops, tiles, good_src, good_dst, roots, sink)
        ends.append(check_dataflow(w, ops, tiles, good_src, good_dst, roots, sink, tmpl))
        check_partition(w, sink)
        qor.append(wafer_qor(doc, w, tiles, rstats, budget, sink.by_wafer.get(w.index, 0) - before))
        del w, tiles, rstats, good_src, good_dst, roots      # one wafer in memory at a time
    check_pipelines(ends, [str(w.get("role") or "pipeline") for w in doc["wafers"]], sink)
    return VerifyResult(outdir, doc.get("model"), doc["target"], sink.violations, sink.counts, qor,
                        time.perf_counter() - t0)
