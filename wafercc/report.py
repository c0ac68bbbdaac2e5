"""report.json from a compilation, and the files a compilation saves (the CLI's and ``.save``'s).

``build_report`` assembles the sections of every stage that ran (docs/metrics.md defines each field):
``model``, the plan's ``target`` / ``options`` / ``memory`` / ``wafers`` / ``partition`` (and
``infeasible``), ``placement`` and ``performance``.  The report holds no wall times, so two
compilations of the same inputs and options write byte-identical report.json files, whether from
the CLI or the API; the stage seconds go to compile.json.
"""
from __future__ import annotations

import json
import os
import shutil

from .errors import InputFileError

REPORT_SCHEMA = "wafercc.report/1"


def build_report(c) -> dict:
    from .plan.report import plan_dict
    f = c.facts
    report = {"schema": REPORT_SCHEMA,
              "model": {"name": c.graph.name, "params": f.params, "layers": f.layers,
                        "weight_bytes": f.weight_bytes, "kv_bytes_per_token": f.kv_bytes_per_token},
              **plan_dict(c.plan)}
    if c.placement is not None:
        report["placement"] = {k: v for k, v in c.placement.items() if k != "per_wafer"}
        for w, pw in zip(report["wafers"]["per_wafer"], c.placement["per_wafer"]):
            w["cores_used"] = pw["slots_used"]
    if c.performance_section is not None:
        report["performance"] = c.performance_section
    return report


def dumps(doc: dict) -> str:
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def summary(c) -> dict:
    from .summary import summary_dict
    return summary_dict(c.graph, c.facts, source=c.lowered.source, cached=c.lowered.cached,
                        seconds=c.lowered.seconds)


def save_outputs(c, outdir: str) -> dict[str, str]:
    """Write the compilation into ``outdir``: model.ir, model.ir.json, summary.json, compile.json,
    report.json (once planned) and the schedule files (once scheduled).  Each file is written under
    a temporary name and moved in, so a reader never sees a partial file."""
    from .cache import atomic_write_text
    from .ir import print_graph, to_json

    try:
        os.makedirs(outdir, exist_ok=True)
    except OSError as e:
        raise InputFileError(f"cannot create output directory: {e.strerror}", where=outdir) from None
    files: dict[str, str] = {}
    try:
        if c.schedule_files:
            c.schedule_files = {k: _move_in(p, outdir) for k, p in c.schedule_files.items()}
            files.update(c.schedule_files)
        texts = {"ir": ("model.ir", print_graph(c.graph)), "ir_json": ("model.ir.json", to_json(c.graph)),
                 "summary": ("summary.json", dumps(summary(c))),
                 "compile": ("compile.json", dumps(c.compile_record()))}
        if c.report is not None:
            texts["report"] = ("report.json", dumps(c.report))
        for key, (name, text) in texts.items():
            files[key] = os.path.join(outdir, name)
            atomic_write_text(files[key], text)
    except OSError as e:
        raise InputFileError(f"cannot write outputs: {e.strerror}", where=outdir) from None
    return files


def _move_in(path: str, outdir: str) -> str:
    """Move a staged schedule file into ``outdir`` (a rename on one file system, else a copy that is
    renamed into place); a file already saved elsewhere is copied, so a compilation saves twice."""
    dst = os.path.join(outdir, os.path.basename(path))
    if os.path.abspath(path) == os.path.abspath(dst):
        return dst
    staged = os.path.basename(os.path.dirname(path)).startswith(".wafercc-")
    if staged:
        try:
            os.replace(path, dst)
            return dst
        except OSError:
            pass
    tmp = dst + ".tmp"
    shutil.copyfile(path, tmp)
    os.replace(tmp, dst)
    return dst
