"""A speculative draft placed and routed for real, on its own wafers after the target's.

``place_draft(c)`` compiles the draft model through its schedule (frontend, plan, tile, floorplan,
route, schedule: the same stages and options as the target, the draft's defect maps those of the
wafers it lands on) and ``merge_draft`` appends its wafers to the target's schedule directory:
wafer{n+j}.npz, ``role: "draft"`` entries in schedule.json ``wafers``, the draft's ``units``,
``source`` and ``timeline`` under schedule.json ``draft``, its defect maps in defects.npz, its IR
as draft.ir (docs/schedule-format.md).

Why its own wafers, not spare cores of the target's: the layer-pipelined floorplan spreads the
target's grids over every lane slot of its wafers (the tiler grows grids into the free cores, since
more cores make shorter tiles), so the spare cores left are a few lane slots' padding, far fewer than
even a 1B draft's tiles; the report states both counts (``performance.speculative.placement``).
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from .cache import atomic_write_text
from .target.device import Device
from .backend.npz import write_npz


class ShiftedDevice(Device):
    """The device seen from wafer ``offset`` on: wafer(i) is the base device's wafer offset + i."""

    def __init__(self, base: Device, offset: int):
        super().__init__(base.target, base.spec, base.seed)
        self.offset = int(offset)

    def wafer(self, index):
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise ValueError(f"wafer index must be an integer >= 0, got {index!r}")
        return super().wafer(int(index) + self.offset)


@dataclasses.dataclass
class PlacedDraft:
    name: str
    compilation: object            # the draft's Compilation, through its schedule stage
    first_wafer: int               # its wafers are first_wafer .. first_wafer + wafers - 1
    wafers: int
    cores_used: int
    target_spare_cores: int        # live cores the target's wafers leave unused
    outdir: str                    # the merged schedule directory (the target's, staged)

    @property
    def program(self):
        return self.compilation.program


def draft_options(options):
    """The target's options for the draft: its own wafer count, no per-node dtype overrides (they
    name the target's nodes), no speculation and no curve of its own, through the schedule."""
    from .options import FrontendOptions
    plan = dataclasses.replace(options.plan, wafers=None, max_wafers=None, dtype_overrides=())
    perf = dataclasses.replace(options.perf, speculative=None, curve=False)
    return dataclasses.replace(options, until="schedule", frontend=FrontendOptions(cache=options.frontend.cache),
                               plan=plan, perf=perf)


def place_draft(c) -> PlacedDraft:
    """Compile ``c``'s draft onto the wafers after ``c``'s and merge it into c's schedule directory
    (c.schedule_files gains the draft's files)."""
    from .driver import Compilation
    n = len(c.plan.wafers)
    d = Compilation(c.options.perf.speculative.draft, draft_options(c.options), stage_dir=c.workdir())
    d.target, d.device = c.target, ShiftedDevice(c.device, n)
    d.lowered = c.draft_lowered
    d.graph, d.facts = d.lowered.graph, d.lowered.facts
    d.ran.append("frontend")
    d.seconds["frontend"] = 0.0
    d.run(until="schedule")
    outdir = os.path.dirname(c.schedule_files["schedule"])
    files = merge_draft(outdir, os.path.dirname(d.schedule_files["schedule"]), n, d.graph)
    c.schedule_files = {**{k: v for k, v in c.schedule_files.items() if k != "schedule"}, **files,
                        "schedule": c.schedule_files["schedule"]}
    with open(c.schedule_files["schedule"], encoding="utf-8") as f:
        doc = json.load(f)
    used = [w for w in doc["qor"]["wafers"] if w.get("role") != "draft"]
    mine = [w for w in doc["qor"]["wafers"] if w.get("role") == "draft"]
    return PlacedDraft(d.graph.name, d, n, len(d.plan.wafers), sum(w["cores_used"] for w in mine),
                       sum(w["live_cores"] - w["cores_used"] for w in used), outdir)


def merge_draft(outdir: str, draft_dir: str, offset: int, draft_graph) -> dict[str, str]:
    """Append the draft schedule in ``draft_dir`` to the one in ``outdir`` as wafers offset.. with
    role "draft"; returns the files added ({key: path})."""
    from .ir import print_graph
    spath = os.path.join(outdir, "schedule.json")
    with open(spath, encoding="utf-8") as f:
        doc = json.load(f)
    with open(os.path.join(draft_dir, "schedule.json"), encoding="utf-8") as f:
        ddoc = json.load(f)
    if len(doc["wafers"]) != offset:
        raise ValueError(f"the target schedule has {len(doc['wafers'])} wafers, the draft was placed after {offset}")
    files = {}
    with np.load(os.path.join(outdir, "defects.npz")) as z:
        defects = {k: z[k] for k in z.files}
    with np.load(os.path.join(draft_dir, "defects.npz")) as z:
        for j in range(len(ddoc["wafers"])):
            defects[f"alive_{offset + j}"] = z[f"alive_{j}"]
            defects[f"dead_links_{offset + j}"] = z[f"dead_links_{j}"]
    for j, w in enumerate(ddoc["wafers"]):
        k = offset + j
        w = dict(w, index=k, role="draft",
                 inter_wafer=[dict(e, src_wafer=e["src_wafer"] + offset, dst_wafer=e["dst_wafer"] + offset)
                              for e in w.get("inter_wafer", [])])
        doc["wafers"].append(w)
        os.replace(os.path.join(draft_dir, f"wafer{j}.npz"), os.path.join(outdir, f"wafer{k}.npz"))
        files[f"wafer{k}"] = os.path.join(outdir, f"wafer{k}.npz")
    doc["qor"]["wafers"] += [dict(q, wafer=q["wafer"] + offset, role="draft") for q in ddoc["qor"]["wafers"]]
    doc["draft"] = {"model": ddoc["model"], "source": ddoc["source"], "units": ddoc["units"],
                    "wafers": list(range(offset, offset + len(ddoc["wafers"]))), "timeline": ddoc["timeline"],
                    "ir": "draft.ir"}
    write_npz(os.path.join(outdir, "defects.npz"), defects)
    atomic_write_text(os.path.join(outdir, "draft.ir"), print_graph(draft_graph))
    files["draft_ir"] = os.path.join(outdir, "draft.ir")
    atomic_write_text(spath, json.dumps(doc, indent=1, sort_keys=True) + "\n")   # last: it names the rest
    return files
