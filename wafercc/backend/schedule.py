"""Write a placed and routed program as a schedule directory (docs/schedule-format.md)."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil

from ..target import list_targets
from ..target.geometry import DEFAULT_REDUCTION

import numpy as np

from ..cache import atomic_write_text
from ..ir import DType
from ..perf.evaluate import DEFAULT_PROMPT_TOKENS, Boundary, Program, timeline
from ..perf.model import CostParams, Machine
from ..perf.paths import ALLREDUCE_FIELDS, grid_paths, op_edges
from ..perf.records import op_records
from ..plan.planner import cut_bytes
from .npz import npz_bytes, write_bytes, write_npz
from .route_codec import encode

SCHEMA = "wafercc.schedule/3"
READABLE = ("wafercc.schedule/2", SCHEMA)   # 2: CSR link ids instead of hops and directions


class ScheduleWriter:
    """Writes a schedule directory one placed wafer at a time (``add``), then ``schedule.json`` and
    ``defects.npz`` (``finish``).  Files are staged in a hidden directory and moved into ``outdir``
    only by ``finish``, so a failed compile leaves no half-written schedule; ``abort`` drops them."""

    def __init__(self, outdir: str, graph, target, device, plan, options, prompt_tokens: int = DEFAULT_PROMPT_TOKENS):
        self.outdir, self.model, self.target, self.device, self.plan = outdir, graph.name, target, device, plan
        self.source = ({"onnx": graph.meta["onnx_path"], "sha256": graph.meta["onnx_sha256"]}
                       if "onnx_path" in graph.meta else None)
        self.graph, self.prompt_tokens = graph, prompt_tokens
        self.cost = CostParams.of(target)         # fail before placing anything if it is not calibrated
        self.flops = {o.node: float(o.flops) for o in plan.memory.ops}
        self.records, self.boundaries = [], []     # per wafer: op records (timing model input)
        self.layout = getattr(options, "layout", "lanes")
        self.reduction = getattr(options, "reduction", DEFAULT_REDUCTION)
        self.stage = os.path.join(outdir, ".wafercc-staging")
        os.makedirs(self.stage, exist_ok=True)
        self.colors = list(device.free_colors)
        self.defects, self.wafers_json, self.qor, self.names = {}, [], [], []
        self.prev_out = 0          # bytes per token the previous wafer with ops sends on

    def part_context(self) -> "PartContext":
        """What ``wafer_part`` needs, small enough to send to a worker process once."""
        return PartContext(self.graph, self.flops, self.reduction, self.layout, tuple(self.colors), self.device,
                           self.stage)

    def add(self, pw) -> None:
        self.add_part(wafer_part(self.part_context(), pw))

    def add_part(self, part: "WaferPart") -> None:
        """Join one wafer's part, in wafer order: the boundaries and inter-wafer routes need the
        wafer before it."""
        k, recs, edges = part.index, part.recs, part.edges
        load = self.plan.wafers[k]
        self.defects[f"alive_{k}"] = part.alive
        self.defects[f"dead_links_{k}"] = part.dead_links
        self.records.append(recs)
        if k > 0:
            prev = self.boundaries[-1]
            self.boundaries[-1] = (prev[0], prev[1], prev[2] + max((v for o, v in edges.items() if o >= 0),
                                                                   default=0))
        out_per_token = cut_bytes(load, part.last_act_bytes) // self.plan.options.batch
        if k < len(self.plan.wafers) - 1:
            self.boundaries.append((k, out_per_token, edges.get(-1, 0)))
        n = len(self.plan.wafers)
        inter = []
        for ri, incoming in part.edge_routes:       # edge I/O routes to the neighbouring wafers
            # every activation live across the cut travels on the one route (a cut inside a layer
            # may carry several: the residual stream and, e.g., a normed input two ops share)
            inter.append({"src_wafer": k - 1 if incoming else k, "dst_wafer": k if incoming else k + 1,
                          "bytes_per_token": self.prev_out if incoming else out_per_token,
                          "route": ri})
        assert all(0 <= e["src_wafer"] < n and 0 <= e["dst_wafer"] < n for e in inter)
        self.prev_out = out_per_token if part.has_ops else self.prev_out
        self.wafers_json.append({"index": k, "layers": list(load.layers) if load.layers else None,
                                 "units": list(load.units), "role": load.role, "ops": part.ops_json,
                                 "inter_wafer": inter})
        if part.npz is not None:
            write_bytes(os.path.join(self.stage, f"wafer{k}.npz"), part.npz)
        self.names.append(f"wafer{k}.npz")
        self.qor.append(part.qor)

    def finish(self) -> dict[str, str]:
        write_npz(os.path.join(self.stage, "defects.npz"), self.defects)
        from ..target.loader import resolve
        t = self.target
        preset = t.name in list_targets() and os.path.samefile(resolve(t.name), t.path)
        prog, mc = self.program(), Machine.of(t)
        doc = {"schema": SCHEMA, "model": self.model, "source": self.source, "target": t.name if preset else os.path.abspath(t.path),
               "defects": self.device.spec.text, "seed": self.device.seed,
               "budget_bytes_per_core": int(self.device.bytes_per_core()),
               "colors": self.colors, "link_capacity": self.device.link_capacity,
               "units": [u.name for u in self.plan.memory.units],   # what the wafers must hold between them
               "wafers": self.wafers_json,
               "timeline": {"prompt_tokens": self.prompt_tokens, "clock_hz": mc.clock_hz,
                            "act_bytes": prog.act_bytes, "context": prog.context, "batch": prog.batch,
                            **timeline(prog, mc, self.cost, self.prompt_tokens)},
               "qor": {"wafers": self.qor}}  # wall times go to report.json: this file is byte-identical per input
        atomic_write_text(os.path.join(self.stage, "schedule.json"), json.dumps(doc, indent=1, sort_keys=True) + "\n")
        files = {}
        for name in [*self.names, "defects.npz", "schedule.json"]:   # schedule.json last: it names the rest
            key = name.rsplit(".", 1)[0] if name.startswith("wafer") else name.split(".")[0]
            files[key] = os.path.join(self.outdir, name)
            os.replace(os.path.join(self.stage, name), files[key])
        os.rmdir(self.stage)
        return files

    def program(self) -> Program:
        """The timing model's view of the wafers added so far."""
        mem = self.plan.memory
        act = DType(mem.options.act_dtype or mem.weight_dtype)
        return Program(tuple(self.records), tuple(Boundary(*b) for b in self.boundaries), act.bits / 8,
                       self.plan.options.context, self.plan.options.batch)

    def abort(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)


@dataclasses.dataclass(frozen=True, eq=False)
class PartContext:
    graph: object
    flops: dict
    reduction: str
    layout: str
    colors: tuple[int, ...]
    device: object
    stage: str | None               # the writer's staging directory (wafer{k}.npz goes there); None:
                                    # the part carries the npz bytes (a worker on another machine)


@dataclasses.dataclass(frozen=True, eq=False)
class WaferPart:
    """One placed wafer's share of the schedule: its op records and arrays (already written to
    ``wafer{k}.npz`` in the staging directory) and what the writer joins in wafer order."""
    index: int
    recs: tuple
    edges: dict                     # op_edges of its inter-wafer routes
    edge_routes: tuple              # (route index, incoming) of each inter-wafer route
    ops_json: list
    last_act_bytes: int
    has_ops: bool
    alive: np.ndarray
    dead_links: np.ndarray
    qor: dict                       # schedule.json qor.wafers[k]
    row: dict                       # the report's placement row (backend/qor.py wafer_row)
    npz: bytes | None = None        # wafer{k}.npz when the part was made away from the staging directory


def wafer_part(ctx: PartContext, pw) -> WaferPart:
    """Wafer ``pw``'s part of the schedule, written to ``ctx.stage``: a pure function of the
    placed wafer, so it runs in whichever process routed it (wafercc/executor.py)."""
    from .qor import wafer_row
    k = pw.index
    w = ctx.device.wafer(k)
    tr, r = pw.transfers, pw.routes
    hops = np.diff(np.asarray(r.offsets, np.int64))
    paths = grid_paths(pw.tile_op, pw.tile_grid, tr.src, tr.dst, tr.kind, hops, r.offsets, r.links)
    recs = op_records(pw.ops, ctx.graph, ctx.flops, paths, op_edges(tr.kind, tr.op_src, tr.op_dst, hops, 2),
                      reduction=ctx.reduction)
    share_records(recs, pw.ops, tr, hops)
    edges = op_edges(tr.kind, tr.op_src, tr.op_dst, hops, 3)
    ops_json = [dict(rec, region=pw.floorplan.regions(i)) for i, rec in enumerate(recs)]
    edge_routes = tuple((int(ri), bool(tr.src[ri] < 0)) for ri in np.flatnonzero(tr.kind == 3))
    arrays = {"tile_op": pw.tile_op, "tile_grid": pw.tile_grid, "tile_expert": pw.tile_expert,
              "tile_row": pw.tile_row, "tile_col": pw.tile_col,
              "tile_core_row": pw.floorplan.core_row, "tile_core_col": pw.floorplan.core_col,
              "tile_bytes": pw.tile_bytes.astype(np.int32),
              "route_src_row": pw.route_src[:, 0], "route_src_col": pw.route_src[:, 1],
              "route_dst_row": pw.route_dst[:, 0], "route_dst_col": pw.route_dst[:, 1],
              "route_kind": tr.kind, "route_src_tile": tr.src.astype(np.int32),
              "route_dst_tile": tr.dst.astype(np.int32), "route_op_src": tr.op_src,
              "route_op_dst": tr.op_dst,
              "route_color": np.asarray(ctx.colors, np.int16)[np.asarray(r.color, np.int64)],
              **encode(r.offsets, r.links, pw.route_src[:, 0], pw.route_src[:, 1], ctx.device.target.usable_cols)}
    data = None
    if ctx.stage is None:
        data = npz_bytes(arrays)
    else:
        write_npz(os.path.join(ctx.stage, f"wafer{k}.npz"), arrays)
    qor = {"wafer": k, "cores_used": int(len(pw.tile_op)), "live_cores": int(w.usable_cores),
           "routes": int(len(tr)), "routed_hops": int(r.total_hops),
           "hops_lower_bound": int(r.lower_bound), "max_link_load": int(r.max_link_load),
           "colors_used": int(r.colors_used), "router_iterations": int(r.iterations),
           "floorplan": floorplan_qor(pw.floorplan, ctx.layout)}
    return WaferPart(k, tuple(recs), edges, edge_routes, ops_json, int(pw.ops[-1].act_bytes) if pw.ops else 0,
                     bool(pw.ops), w.alive, np.asarray(w.dead_links, np.int32).reshape(-1, 3), qor,
                     wafer_row(pw, ctx.layout), data)


def share_records(recs: list[dict], ops, tr, hops) -> None:
    """Layer groups (docs/mapping.md): a shared op's record names its template (``routes_of``) and
    takes the template's routed paths (its all-reduce tree's too: a shared norm host's rider reduces
    on the template's kind-4 routes), and its incoming activation the hops of the route that serves
    its pair of templates (passes/transfers.py builds one per pair)."""
    from ..passes.place_route import shared_templates
    tmpl = shared_templates(ops)
    if all(t == i for i, t in enumerate(tmpl)):
        return
    pair_hops = {}
    for i in np.flatnonzero(tr.kind == 2):
        pair_hops.setdefault((tmpl[int(tr.op_src[i])], tmpl[int(tr.op_dst[i])]), int(hops[i]))
    prev = None
    for i, r in enumerate(recs):
        t = tmpl[i]
        r["routes_of"] = t if t != i else None
        if t != i:
            for g, tg in zip(r["grids"], recs[t]["grids"]):
                for key in ("broadcast_hops", "broadcast_links", "reduction_hops", "reduction_links",
                            "broadcast_load", "reduction_load", *ALLREDUCE_FIELDS):
                    if key in tg:
                        g[key] = tg[key]
        if r["grids"]:
            if prev is not None:
                r["act_in_hops"] = pair_hops.get((tmpl[prev], t), r["act_in_hops"])
            prev = i


def floorplan_qor(fp, layout: str) -> dict:
    """The floorplan/assign entry of a wafer's QoR: the CP-SAT refinement's status and gap (lanes),
    the OR-Tools assignment's (spares: a min-cost flow solves to optimality, gap 0), or
    CONSTRUCTIVE (row-major, or lanes with the refinement off)."""
    out = {"method": layout, "lane": int(fp.lane), "width": int(fp.width), "slots": int(fp.slots),
           "slots_used": int(fp.slots_used), "status": "CONSTRUCTIVE", "gap": None}
    r = getattr(fp, "refine", None)
    if r is not None:
        out.update(status=r.status, gap=r.gap, straddling_before=r.straddling_before,
                   straddling_after=r.straddling_after, slack=r.slack, padding_used=r.padding_used)
    a = fp.assign
    if a is not None:
        out.update(status=a.status if a.displaced else "OPTIMAL", gap=0.0, displaced=a.displaced,
                   assign_cost=a.cost, max_move=a.max_move, assign_rounds=a.rounds)
    return out


def write_schedule(outdir: str, program, graph, target, device) -> dict[str, str]:
    """Writes an in-memory placed program (every wafer kept) as a schedule directory."""
    w = ScheduleWriter(outdir, graph, target, device, program.plan, program.options)
    try:
        for pw in program.wafers:
            w.add(pw)
        return w.finish()
    except BaseException:
        w.abort()
        raise
