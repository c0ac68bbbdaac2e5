"""report.json from a compilation, and the files a compilation saves (the CLI's and ``.save``'s).

``build_report`` assembles the sections of every stage that ran (docs/metrics.md defines each field):
``model``, the plan's ``target`` / ``options`` / ``memory`` / ``wafers`` / ``partition`` (and
``infeasible``), ``placement``, ``performance`` and its ``speed_of_light`` bound
(wafercc.perf.bound).  The report holds no wall times, so two
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
    if getattr(c, "mapping_search", None) is not None:
        report["mapping"] = c.mapping_search
    if c.placement is not None:
        report["placement"] = {k: v for k, v in c.placement.items() if k != "per_wafer"}
        for w, pw in zip(report["wafers"]["per_wafer"], c.placement["per_wafer"]):
            w["cores_used"] = pw["slots_used"]
    if c.performance_section is not None:
        report["performance"] = c.performance_section
        if c.program is not None:
            from .perf.bound import speed_of_light
            report["speed_of_light"] = speed_of_light(c.program, c.graph, c.plan, c.target, c.device,
                                                      c.performance_section)
    if c.placement_failure is not None:   # the plan fits by bytes and tiles, but this stage disproved it
        stage, reason = c.placement_failure
        report["placement_failed"] = {"stage": stage, "reason": reason}
    return report


def dumps(doc: dict) -> str:
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def summary(c) -> dict:
    from .summary import summary_dict
    return summary_dict(c.graph, c.facts, source=c.lowered.source, cached=c.lowered.cached,
                        seconds=c.lowered.seconds)


def save_outputs(c, outdir: str) -> dict[str, str]:
    """Write the compilation into ``outdir``: model.ir, model.ir.json, summary.json, compile.json,
    report.json (once planned), the schedule files (once scheduled) and the staged stage dumps.
    All of them are written into a hidden directory beside ``outdir`` and moved in together
    (wafercc.outdir): a failure or Ctrl-C before that leaves ``outdir`` as it was, and a previous
    compile's files there are replaced, not kept beside the new ones."""
    from .cache import atomic_write_text
    from .ir import print_graph, to_json
    from .outdir import check_outdir, commit, discard, staging_dir

    check_outdir(outdir)
    stage = staging_dir(outdir)
    try:
        keys: dict[str, str] = {}
        try:
            for k, p in (c.schedule_files or {}).items():
                keys[k] = _stage_file(p, stage)
            dumps = c.staged_dumps()
            if dumps:
                shutil.copytree(dumps, os.path.join(stage, "dump"))
            texts = {"ir": ("model.ir", print_graph(c.graph)), "ir_json": ("model.ir.json", to_json(c.graph)),
                     "summary": ("summary.json", dumps_json(summary(c))),
                     "compile": ("compile.json", dumps_json(c.compile_record()))}
            if c.report is not None:
                texts["report"] = ("report.json", dumps_json(c.report))
            for key, (name, text) in texts.items():
                atomic_write_text(os.path.join(stage, name), text)
                keys[key] = name
        except OSError as e:
            raise InputFileError(f"cannot write outputs: {e.strerror}", where=outdir) from None
        commit(stage, outdir)
    except BaseException:
        discard(stage)
        raise
    files = {k: os.path.join(outdir, name) for k, name in keys.items()}
    if c.schedule_files:
        c.schedule_files = {k: files[k] for k in c.schedule_files}
    return files


dumps_json = dumps


def _stage_file(path: str, stage: str) -> str:
    """Link (or copy) a schedule file into ``stage``; the source stays, so a failed save loses
    nothing and a compilation can be saved twice."""
    name = os.path.basename(path)
    dst = os.path.join(stage, name)
    try:
        os.link(path, dst)
    except OSError:
        shutil.copyfile(path, dst)
    return name
