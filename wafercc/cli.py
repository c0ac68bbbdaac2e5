"""The ``wafercc`` command line.

    wafercc compile MODEL [-o OUTDIR] [--no-cache] [--format text|json] [--layers N]
    wafercc models [--format text|json]
    wafercc ir verify FILE.ir
    wafercc targets [--format text|json]
    wafercc targets show TARGET [--format text|json]
    wafercc verify OUTDIR [--format text|json] [--max-violations N]
    wafercc --version

MODEL is an .onnx file, a config.json (or a directory holding one) or a
reference model name.  Every user error prints ``wafercc: error: <message>``
on stderr and exits with status 2 (argparse usage errors too).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from . import __version__
from .errors import InputFileError, WaferccError

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line + usage on stderr, status 2
        self.print_usage(sys.stderr)
        sys.stderr.write(f"wafercc: error: {message}\n")
        sys.exit(EXIT_USER_ERROR)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="wafercc", description="Compile transformer models onto wafer-scale meshes.")
    p.add_argument("--version", action="version", version=f"wafercc {__version__}")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)

    c = sub.add_parser("compile", help="lower a model to IR and summarise it")
    c.add_argument("model", metavar="MODEL", help="an .onnx file, a config.json (or its directory) or a reference model")
    c.add_argument("-o", "--outdir", help="output directory (default wafercc-out/<name>)")
    c.add_argument("--no-cache", action="store_true", help="do not read or write the IR cache")
    c.add_argument("--format", choices=("text", "json"), default="text", help="summary format on stdout")
    c.add_argument("--layers", type=int, default=None, help="keep only the first N layers (configs only)")
    c.add_argument("--name", default=None, help="graph name (default: from the model)")
    c.add_argument("--target", default="wse3", help="target preset or .toml file to plan for ('none': IR only)")
    c.add_argument("--dtype", default=None, help="weight dtype (bf16, fp16, fp8, fp4, int8; default: the model's)")
    c.add_argument("--dtype-override", action="append", default=[], metavar="PATTERN=DTYPE",
                   help="weight dtype for ops whose name matches PATTERN (or op kind), e.g. moe=fp4")
    c.add_argument("--kv-dtype", default=None, help="KV-cache dtype (default: the weight dtype)")
    c.add_argument("--context", type=int, default=8192, help="tokens of KV cache per sequence (default 8192)")
    c.add_argument("--batch", type=int, default=1, help="sequences decoded together (default 1)")
    c.add_argument("--defects", default=None, help="defect spec (default: the target's rate), e.g. random:0.01, none")
    c.add_argument("--seed", type=int, default=0, help="seed for generated defects and the solvers")
    c.add_argument("--max-wafers", type=int, default=None, help="fail with levers if more wafers are needed")
    c.add_argument("--wafers", type=int, default=None, help="spread over this many wafers (>= the minimum)")
    c.add_argument("--kv-placement", choices=("beside", "dedicated"), default="beside",
                   help="KV cache beside each layer's weights, or on dedicated KV wafers")
    c.add_argument("--no-place", action="store_true",
                   help="stop after capacity planning (no tiles, placement, routes or schedule)")
    c.add_argument("--layout", choices=("lanes", "spares", "row-major"), default="lanes",
                   help="floorplan: lanes (default; the curve skips dead cores), spares (spare columns, "
                        "displaced tiles placed by an OR-Tools min-cost assignment) or the row-major baseline")
    c.add_argument("--prompt-tokens", type=int, default=1024,
                   help="prompt length for time to first token and the decode position (default 1024)")
    c.add_argument("--speculative", default=None, metavar="DRAFT",
                   help="also report speculative decoding with this draft model (reference name, config or .onnx)")
    c.add_argument("--spec-tokens", type=int, default=4, help="draft tokens proposed per step (default 4)")
    c.add_argument("--spec-acceptance", type=float, default=0.7,
                   help="probability each draft token is accepted (default 0.7)")
    c.add_argument("--no-curve", action="store_true", help="skip the speed-versus-wafers curve")

    m = sub.add_parser("models", help="list the reference models")
    m.add_argument("--format", choices=("text", "json"), default="text")

    ir_p = sub.add_parser("ir", help="IR file tools")
    ir_sub = ir_p.add_subparsers(dest="ir_cmd", metavar="IR_COMMAND", parser_class=_Parser)
    v = ir_sub.add_parser("verify", help="parse and verify a .ir (or .ir.json) file")
    v.add_argument("file", metavar="FILE")

    tg = sub.add_parser("targets", help="list the hardware target presets (or: targets show TARGET)")
    tg.add_argument("--format", choices=("text", "json"), default="text")
    tg_sub = tg.add_subparsers(dest="targets_cmd", metavar="TARGETS_COMMAND", parser_class=_Parser)
    ts = tg_sub.add_parser("show", help="print every field of a target with unit, source and confidence")
    ts.add_argument("target", metavar="TARGET", help="a preset name (wse2, wse3) or a target .toml file")
    ts.add_argument("--format", choices=("text", "json"), default=argparse.SUPPRESS)
    vf = sub.add_parser("verify", help="check a placed and routed output directory (exit 1 on violations)")
    vf.add_argument("outdir", metavar="OUTDIR", help="a directory holding schedule.json, defects.npz, wafer{k}.npz")
    vf.add_argument("--format", choices=("text", "json"), default="text")
    vf.add_argument("--max-violations", type=int, default=50, metavar="N", help="violations printed (default 50)")
    from .sim.cli_simulate import add_parser as add_simulate
    add_simulate(sub)
    return p


def _write_outputs(outdir: str, graph, summary: dict, report: dict | None = None) -> dict[str, str]:
    from .cache import atomic_write_text
    from .ir import print_graph, to_json

    try:
        os.makedirs(outdir, exist_ok=True)
    except OSError as e:
        raise InputFileError(f"cannot create output directory: {e.strerror}", where=outdir) from None
    files = {
        "ir": os.path.join(outdir, "model.ir"),
        "ir_json": os.path.join(outdir, "model.ir.json"),
        "summary": os.path.join(outdir, "summary.json"),
    }
    try:
        atomic_write_text(files["ir"], print_graph(graph))
        atomic_write_text(files["ir_json"], to_json(graph))
        atomic_write_text(files["summary"], json.dumps(summary, indent=1, sort_keys=True) + "\n")
        if report is not None:
            files["report"] = os.path.join(outdir, "report.json")
            atomic_write_text(files["report"], json.dumps(report, indent=1, sort_keys=True) + "\n")
    except OSError as e:
        raise InputFileError(f"cannot write outputs: {e.strerror}", where=outdir) from None
    return files


def _make_outdir(outdir: str) -> None:
    try:
        os.makedirs(outdir, exist_ok=True)
    except OSError as e:
        raise InputFileError(f"cannot create output directory: {e.strerror}", where=outdir) from None


def _render_qor(placed: dict, console) -> None:
    """The placement quality-of-result table, one row per wafer (docs/metrics.md)."""
    from rich.table import Table
    t = Table(title=f"placement and routing ({placed['layout']})", title_justify="left")
    for col in ("wafer", "tiles", "cores used", "routes", "hops", "hops / bound", "max link load", "colors",
                "router it.", "floorplan"):
        t.add_column(col, justify="right")
    for w in placed["per_wafer"]:
        ratio = w["routed_hops"] / w["hops_lower_bound"] if w["hops_lower_bound"] else 1.0
        t.add_row(str(w["wafer"]), f"{w['tiles']:,}", f"{w['slots_used']:,} / {w['slots']:,}", f"{w['routes']:,}",
                  f"{w['routed_hops']:,}", f"{ratio:.3f}", str(w["max_link_load"]), str(w["colors_used"]),
                  str(w["router_iterations"]), w.get("floorplan_status", ""))
    console.print(t)


def _safe_dirname(name: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).strip(".")
    return keep or "model"


def cmd_compile(args) -> int:
    from .api import compile as wcompile
    from .summary import make_console, render_text, summary_dict

    plan_inputs = _plan_inputs(args)  # validate planning options before the (slow) frontend
    perf_opts = _perf_options(args)
    res = wcompile(args.model, name=args.name, cache=not args.no_cache, layers=args.layers)
    summary = summary_dict(res.graph, res.facts, source=res.source, cached=res.cached, seconds=res.seconds)
    plan = report = None
    if plan_inputs is not None:
        from .plan.planner import plan_wafers
        from .plan.report import plan_dict
        target, options, device = plan_inputs
        plan = plan_wafers(res.graph, target, options, device)
        report = {"schema": "wafercc.report/1", "model": {"name": res.graph.name, "params": res.facts.params,
                  "layers": res.facts.layers, "weight_bytes": res.facts.weight_bytes,
                  "kv_bytes_per_token": res.facts.kv_bytes_per_token}, **plan_dict(plan)}
    outdir = args.outdir or os.path.join("wafercc-out", _safe_dirname(res.graph.name))
    placed = None
    if plan is not None and not plan.infeasible and not args.no_place:
        import time
        from .backend.place_stage import PLACEMENT_ERRORS, place_to_dir
        from .passes.place_route import PlaceOptions
        t0 = time.perf_counter()
        _make_outdir(outdir)
        try:
            placed, secs, sched_files, program = place_to_dir(outdir, res.graph, plan, target, device,
                                                              PlaceOptions(layout=args.layout, seed=args.seed),
                                                              prompt_tokens=perf_opts.prompt_tokens)
        except PLACEMENT_ERRORS as e:      # the plan fits by bytes but not as tiles / routes: infeasible
            _write_outputs(outdir, res.graph, summary, report)
            line = " ".join(str(e).split("\n")[0].split())
            sys.stderr.write(f"wafercc: error: placement failed: {line}\n")
            return 3
        report["placement"] = {k: v for k, v in placed.items() if k != "per_wafer"}
        for w, pw in zip(report["wafers"]["per_wafer"], placed["per_wafer"]):
            w["cores_used"] = pw["slots_used"]
        from .perf.report import performance_section
        t1 = time.perf_counter()
        report["performance"] = performance_section(program, res.graph, plan, target, device, perf_opts)
        secs["timing"] = time.perf_counter() - t1
        report["compile"] = {"seconds": round(res.seconds + (time.perf_counter() - t0), 3),
                             "passes": [{"name": "frontend", "seconds": round(res.seconds, 3)}]
                             + [{"name": k, "seconds": round(v, 3)} for k, v in secs.items()]}
    files = _write_outputs(outdir, res.graph, summary, report)
    if placed is not None:
        files.update(sched_files)
    if args.format == "json":
        print(json.dumps({**summary, "outputs": files, **({"plan": report} if report else {})},
                         indent=1, sort_keys=True))
    else:
        render_text(summary)
        if plan is not None:
            from .plan.report import render_plan
            render_plan(plan, make_console())
        if placed is not None:
            from .perf.report import render_performance
            _render_qor(placed, make_console())
            render_performance(report["performance"], make_console())
        print("wrote " + ", ".join(files.values()))
    return 3 if plan is not None and plan.infeasible else 0


def _perf_options(args):
    from .perf.evaluate import Speculative
    from .perf.report import PerfOptions
    spec = (Speculative(args.speculative, args.spec_tokens, args.spec_acceptance) if args.speculative else None)
    return PerfOptions(prompt_tokens=args.prompt_tokens, speculative=spec, curve=not args.no_curve)


def _plan_inputs(args):
    if args.target in ("none", ""):
        return None
    from .plan.options import PlanOptions, parse_dtype, parse_overrides
    from .target import load_target
    from .target.device import Device
    target = load_target(args.target)
    options = PlanOptions(dtype=parse_dtype(args.dtype, "--dtype") if args.dtype else None,
                          kv_dtype=parse_dtype(args.kv_dtype, "--kv-dtype") if args.kv_dtype else None,
                          dtype_overrides=parse_overrides(args.dtype_override), context=args.context,
                          batch=args.batch, kv_placement=args.kv_placement, max_wafers=args.max_wafers,
                          wafers=args.wafers, solver=_solver(args.seed))
    return target, options, Device(target, args.defects, args.seed)


def _solver(seed: int):
    from .plan.options import SolverOptions
    return SolverOptions(seed=seed)


def cmd_models(args) -> int:
    from . import models_registry as reg
    from .summary import human_count, make_console

    models = reg.all_models()
    if args.format == "json":
        print(json.dumps([m.as_dict() for m in models], indent=1))
        return 0
    from rich.table import Table

    t = Table(title="wafercc reference models", title_justify="left")
    for col in ("name", "kind", "model type", "layers", "public params", "hugging face id"):
        t.add_column(col)
    for m in models:
        t.add_row(m.key, m.kind, m.model_type, str(m.layers or "?"), human_count(m.public_params), m.hf_id)
    make_console().print(t)
    return 0


def cmd_ir_verify(args) -> int:
    from .errors import IRParseError
    from .ir import from_json, parse_graph, verify

    path = args.file
    if not os.path.exists(path):
        raise InputFileError("no such file", where=path)
    if os.path.isdir(path):
        raise InputFileError("is a directory, expected an IR file", where=path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise IRParseError("not a text file", where=path) from None
    except OSError as e:
        raise InputFileError(f"cannot read: {e.strerror}", where=path) from None
    try:
        graph = from_json(text) if path.endswith(".json") else parse_graph(text)
        verify(graph)
    except WaferccError as e:
        raise _rewhere(e, path) from None
    print(f"{path}: ok ({graph.name}: {len(graph.nodes)} nodes, {len(graph.weights())} weights, "
          f"{len(graph.layers())} layers)")
    return 0


def _rewhere(e: WaferccError, path: str) -> WaferccError:
    """Prefix the file name to an error raised while reading ``path``."""
    msg = str(e)
    if path not in msg:
        e.args = (f"{path}: {msg}",)
    return e


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.cmd is None:
        parser.print_help(sys.stderr)
        return EXIT_USER_ERROR
    try:
        if args.cmd == "compile":
            return cmd_compile(args)
        if args.cmd == "models":
            return cmd_models(args)
        if args.cmd == "ir":
            if args.ir_cmd != "verify":
                parser.error("ir: expected a subcommand (verify)")
            return cmd_ir_verify(args)
        if args.cmd == "targets":
            from .target.show import cmd_targets
            return cmd_targets(args)
        if args.cmd == "verify":
            from .verify.report import cmd_verify
            return cmd_verify(args)
        if args.cmd == "simulate":
            from .sim.cli_simulate import cmd_simulate
            return cmd_simulate(args)
        parser.error(f"unknown command {args.cmd}")
    except WaferccError as e:
        line = " ".join(str(e).split("\n")[0].split()) or type(e).__name__
        sys.stderr.write(f"wafercc: error: {line}\n")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("wafercc: interrupted\n")
        return 130
    return 0


def _entry() -> None:  # pragma: no cover
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
