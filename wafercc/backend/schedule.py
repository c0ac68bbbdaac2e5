"""Write a placed and routed program as a schedule directory (docs/schedule-format.md)."""
from __future__ import annotations

import json
import os

from ..target import list_targets

import numpy as np

from ..cache import atomic_write_text
from .npz import write_npz

SCHEMA = "wafercc.schedule/1"


def write_schedule(outdir: str, program, model: str, target, device) -> dict[str, str]:
    os.makedirs(outdir, exist_ok=True)
    plan = program.plan
    colors = [c for c in range(target.fabric.colors) if c not in set(target.fabric.reserved_colors)]
    files = {"schedule": os.path.join(outdir, "schedule.json"), "defects": os.path.join(outdir, "defects.npz")}
    defects, wafers_json, qor = {}, [], []
    for pw in program.wafers:
        k = pw.index
        w = device.wafer(k)
        defects[f"alive_{k}"] = w.alive
        defects[f"dead_links_{k}"] = np.asarray(w.dead_links, np.int32).reshape(-1, 3)
        load = plan.wafers[k]
        ops_json = [{"id": i, "name": o.node, "layer": o.layer,
                     "grids": [{"grid": gi, "experts": g.experts, "rows": g.rows, "cols": g.cols}
                               for gi, g in enumerate(o.grids)],
                     "region": pw.floorplan.regions(i)} for i, o in enumerate(pw.ops)]
        n = len(program.wafers)
        inter = []
        for ri in np.flatnonzero(pw.transfers.kind == 3):   # edge I/O routes to the neighbouring wafers
            incoming = pw.transfers.src[ri] < 0
            boundary = program.wafers[k - 1].ops[-1] if incoming else pw.ops[-1]
            inter.append({"src_wafer": k - 1 if incoming else k, "dst_wafer": k if incoming else k + 1,
                          "bytes_per_token": int(boundary.act_bytes), "route": int(ri)})
        assert all(0 <= e["src_wafer"] < n and 0 <= e["dst_wafer"] < n for e in inter)
        wafers_json.append({"index": k, "layers": list(load.layers) if load.layers else None,
                            "units": list(load.units), "role": load.role, "ops": ops_json,
                            "inter_wafer": inter})
        r = pw.routes
        arrays = {"tile_op": pw.tile_op, "tile_grid": pw.tile_grid, "tile_expert": pw.tile_expert,
                  "tile_row": pw.tile_row, "tile_col": pw.tile_col,
                  "tile_core_row": pw.floorplan.core_row, "tile_core_col": pw.floorplan.core_col,
                  "tile_bytes": pw.tile_bytes,
                  "route_src_row": pw.route_src[:, 0], "route_src_col": pw.route_src[:, 1],
                  "route_dst_row": pw.route_dst[:, 0], "route_dst_col": pw.route_dst[:, 1],
                  "route_kind": pw.transfers.kind, "route_op_src": pw.transfers.op_src,
                  "route_op_dst": pw.transfers.op_dst,
                  "route_color": np.asarray(colors, np.int16)[np.asarray(r.color, np.int64)],
                  "route_offsets": np.asarray(r.offsets, np.int64), "route_links": np.asarray(r.links, np.int32)}
        files[f"wafer{k}"] = os.path.join(outdir, f"wafer{k}.npz")
        write_npz(files[f"wafer{k}"], arrays)
        qor.append({"wafer": k, "cores_used": int(len(pw.tile_op)), "live_cores": int(w.usable_cores),
                    "routes": int(len(pw.transfers)), "routed_hops": int(r.total_hops),
                    "hops_lower_bound": int(r.lower_bound), "max_link_load": int(r.max_link_load),
                    "colors_used": int(r.colors_used), "router_iterations": int(r.iterations),
                    "floorplan": {"method": "row-major" if program.options.baseline else "lanes",
                                  "lane": pw.floorplan.lane, "slots": pw.floorplan.slots,
                                  "slots_used": pw.floorplan.slots_used,
                                  "status": "CONSTRUCTIVE", "gap": None}})
    write_npz(files["defects"], defects)
    from ..target.loader import resolve
    preset = target.name in list_targets() and os.path.samefile(resolve(target.name), target.path)
    doc = {"schema": SCHEMA, "model": model, "target": target.name if preset else os.path.abspath(target.path),
           "defects": device.spec.text, "seed": device.seed,
           "budget_bytes_per_core": int(target.core.sram - target.core.sram_reserved),
           "colors": colors, "link_capacity": 1, "wafers": wafers_json,
           "qor": {"wafers": qor}}  # wall times go to report.json: this file is byte-identical per input
    atomic_write_text(files["schedule"], json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return files
