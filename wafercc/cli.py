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
on stderr and exits with status 2 (argparse usage errors too); 3 means the
model does not fit, 130 interrupted, 70 an internal error (one line naming
the file the traceback was saved to).  A compile's files are moved into
OUTDIR together, only when it finished (wafercc.outdir).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from . import __version__
from .crash import EXIT_INTERNAL
from .errors import Infeasible, InputFileError, PlacementError, StageError, WaferccError

EXIT_USER_ERROR = 2
EXIT_DOES_NOT_FIT = 3
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line + usage on stderr, status 2
        self.print_usage(sys.stderr)
        sys.stderr.write(f"wafercc: error: {message}\n")
        sys.exit(EXIT_USER_ERROR)


class _CompileParser(_Parser):
    """``compile``'s flags come from wafercc.options.KNOBS, which imports the planner and passes; they
    are added only when ``compile`` is parsed or its help shown, so ``wafercc verify`` loads none."""
    _ready = False

    def _flags(self):
        if not self._ready:
            self._ready = True
            from .options import add_cli_flags
            add_cli_flags(self)

    def parse_known_args(self, *a, **k):
        self._flags()
        return super().parse_known_args(*a, **k)

    def format_help(self):
        self._flags()
        return super().format_help()

    def format_usage(self):
        self._flags()
        return super().format_usage()


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="wafercc", description="Compile transformer models onto wafer-scale meshes.")
    p.add_argument("--version", action="version", version=f"wafercc {__version__}")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)

    sub._parser_class = _CompileParser
    c = sub.add_parser("compile", help="compile a model: IR, plan, placement, schedule, performance report")
    sub._parser_class = _Parser
    c.add_argument("model", metavar="MODEL", help="an .onnx file, a config.json (or its directory) or a reference model")
    c.add_argument("-o", "--outdir", help="output directory (default wafercc-out/<name>)")
    c.add_argument("--format", choices=("text", "json"), default="text", help="summary format on stdout")
    c.add_argument("--no-place", action="store_true", help="alias of --until plan")
    c.add_argument("--dump", default=None, metavar="STAGES",
                   help="write each named stage's product (comma-separated, or 'all') to OUTDIR/dump/")
    c.add_argument("--verify-stages", action="store_true",
                   help="run the checks after each stage (IR verifier, independent schedule verifier)")
    c.add_argument("--rebuild", action="store_true",
                   help="compile even when the build cache holds this compile (and replace its entry)")
    c.add_argument("-q", "--quiet", action="store_true",
                   help="no progress on stderr (default: a live display on a terminal, else a line per slow step)")

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
    from .regress_cli import add_parser as add_regress
    add_regress(sub)
    from .cache_cli import add_parser as add_cache
    add_cache(sub)
    return p


def _safe_dirname(name: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).strip(".")
    return keep or "model"


def cmd_compile(args) -> int:
    from .driver import Compilation
    from .options import STAGES, OptionError, build_options, cli_keywords
    from .outdir import check_outdir

    kw = cli_keywords(args)
    if args.no_place:                                   # old flags, kept as aliases of --until
        kw.setdefault("until", "plan")
    if kw.get("target") in ("none", ""):
        kw["target"] = None
        kw.setdefault("until", "ir")
    opts = build_options(**kw)                          # bad options fail before the (slow) frontend
    dump = tuple(s for s in (args.dump or "").split(",") if s)
    bad = sorted(set(dump) - {*STAGES, "all"})
    if bad or (dump and not args.outdir):
        raise OptionError(f"--dump {args.dump}: expected -o OUTDIR and stage names from "
                          f"{', '.join(STAGES)} (or 'all')")
    if args.outdir:
        check_outdir(args.outdir)                       # a foreign directory is refused before compiling
    c = Compilation(args.model, opts, stage_dir=_stage_dir(args.outdir or "wafercc-out"))
    try:
        c.prepare()                                     # target, defect spec and draft, before the frontend
        keyed = _build_key(args, opts, dump)
        if keyed is not None and not args.rebuild:
            hit = _from_build_cache(args, *keyed)
            if hit is not None:
                return hit
        status, failure = 0, None
        try:
            # every file is staged beside OUTDIR and moved in by save, when the whole compile succeeded
            with _progress(args.quiet) as progress:
                c.run(dump_dir=c.stage_path("dump") if dump else None, dump=dump, verify=args.verify_stages,
                      progress=progress)
        except Infeasible as e:
            status, failure = 3, _line(e)               # the plan table below lists the levers
        except PlacementError as e:
            status, failure = 3, "placement failed: " + " ".join(str(e).split("\n")[0].split())
        if keyed is not None:
            c.build_key = keyed[0]
        outdir = args.outdir or _default_outdir(c)
        files = c.save(outdir)
    finally:
        c.close()
    printed = _printed(c, files)
    sys.stdout.write(printed["json"] if args.format == "json" else "")
    if args.format == "text":
        _render(c)                                      # on the terminal itself (its width, colours)
        print("wrote " + ", ".join(files.values()))
    if failure:
        sys.stderr.write(f"wafercc: error: {failure}\n")
    elif keyed is not None:
        from . import build_cache
        build_cache.store(keyed[0], keyed[1], outdir, sorted(os.path.basename(p) for p in files.values()),
                          c.graph.name, {"text": printed["text"], "json": printed["json_doc"],
                                         "outputs": [[k, os.path.basename(p)] for k, p in files.items()]})
    return status


def _build_key(args, opts, dump):
    """(key, inputs) of this compile in the build cache (wafercc/build_cache.py), or None when the
    cache is off (--no-cache, WAFERCC_NO_CACHE) or the compile writes more than its outputs."""
    from . import build_cache
    from .cache import enabled
    if not enabled(opts.frontend.cache) or dump or args.verify_stages or opts.target is None:
        return None
    return build_cache.build_key(args.model, opts)


def _from_build_cache(args, key: str, inputs: dict) -> int | None:
    """Serve a compile from its build-cache entry: the files into OUTDIR, the summary it printed."""
    import time
    from . import build_cache
    t0 = time.perf_counter()
    entry = build_cache.lookup(key)
    if entry is None:
        return None
    outdir = args.outdir or os.path.join("wafercc-out", _safe_dirname(entry.doc["model"]))
    record = json.loads((entry.path / "compile.json").read_text(encoding="utf-8"))
    record["build_cache"] = {"hit": True, "key": key, "seconds": round(time.perf_counter() - t0, 3)}
    from .report import dumps
    build_cache.restore(entry, outdir, {"compile.json": dumps(record)})
    out = entry.doc["stdout"]
    files = {k: os.path.join(outdir, name) for k, name in out["outputs"]}
    if args.format == "json":
        print(json.dumps({**out["json"], "outputs": files}, indent=1, sort_keys=True))
    else:
        sys.stdout.write(out["text"])
        print(f"build cache: the same compile as before (key {key[:12]}); files copied in "
              f"{time.perf_counter() - t0:.2f} s (--rebuild to compile again)")
        print("wrote " + ", ".join(files.values()))
    return 0


def _printed(c, files: dict[str, str]) -> dict:
    """What the compile prints: the text summary (tables at 120 columns, without the ``wrote``
    line) and the JSON summary, each as stored in the build cache."""
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        _render(c)
    rep = c.report
    doc = {**_summary(c), **({"plan": rep} if rep else {})}
    return {"text": buf.getvalue(), "json_doc": doc,
            "json": json.dumps({**doc, "outputs": files}, indent=1, sort_keys=True) + "\n"}


def _render(c) -> None:
    from .summary import make_console, render_text
    rep = c.report
    render_text(_summary(c))
    if c.plan is not None:
        from .plan.report import render_plan
        render_plan(c.plan, make_console())
    if c.placement is not None:
        from .backend.qor import render_placement
        render_placement(c.placement, make_console())
    if c.performance_section is not None:
        from .perf.report import render_performance
        render_performance(c.performance_section, make_console())
        if rep is not None and rep.get("speed_of_light"):
            from .perf.report import speed_of_light_line
            print(speed_of_light_line(rep["speed_of_light"]))
        if rep is not None and rep.get("mapping"):
            from .perf.mapping_search import mapping_line
            print(mapping_line(rep["mapping"]))


def _progress(quiet: bool):
    """The progress display of a compile (wafercc/progress.py): none, rich on a terminal, plain lines."""
    import contextlib
    from .progress import PlainProgress, RichProgress
    if quiet:
        return contextlib.nullcontext(None)
    if sys.stderr.isatty():
        return RichProgress()
    return contextlib.nullcontext(PlainProgress())


def _stage_dir(outdir: str) -> str | None:
    """Where the schedule is written while compiling: beside OUTDIR when its parent exists (moving it
    in is then a rename), else the system temp (nothing is created before the compile succeeds)."""
    parent = os.path.dirname(os.path.abspath(outdir))
    return parent if os.path.isdir(parent) and os.access(parent, os.W_OK) else None


def _default_outdir(c) -> str:
    return os.path.join("wafercc-out", _safe_dirname(c.graph.name))


def _summary(c) -> dict:
    from .report import summary
    return summary(c)


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
    """Run one command; every exception ends here as one line on stderr and an exit status:
    2 bad input (a WaferccError), 3 does not fit, 130 interrupted, 70 an internal error (a bug:
    the traceback is saved to a file the line names).  Never a raw traceback."""
    try:
        return _run(argv)
    except (Infeasible, PlacementError) as e:           # a command other than compile (it prints the plan)
        sys.stderr.write(f"wafercc: error: {_line(e)}\n")
        return EXIT_DOES_NOT_FIT
    except StageError as e:                             # a stage broke its contract: the compiler's fault
        return _internal(e, argv)
    except WaferccError as e:
        sys.stderr.write(f"wafercc: error: {_line(e)}\n")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("wafercc: interrupted (no output written)\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:                             # `wafercc ... | head`: the reader left, not a bug
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # noqa: BLE001 - the one place an unexpected error becomes a bug report
        return _internal(e, argv)


def _line(e: WaferccError) -> str:
    return " ".join(str(e).split("\n")[0].split()) or type(e).__name__


def _internal(e: BaseException, argv) -> int:
    from .crash import internal_error_line, save_traceback
    path = save_traceback(e, list(argv) if argv is not None else None)
    sys.stderr.write(internal_error_line(e, path) + "\n")
    return EXIT_INTERNAL


def _run(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.cmd is None:
        parser.print_help(sys.stderr)
        return EXIT_USER_ERROR
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
    if args.cmd == "regress":
        from .regress_cli import cmd_regress
        return cmd_regress(args)
    if args.cmd == "cache":
        from .cache_cli import cmd_cache
        return cmd_cache(args, parser)
    if args.cmd == "simulate":
        from .sim.cli_simulate import cmd_simulate
        return cmd_simulate(args)
    parser.error(f"unknown command {args.cmd}")
    return 0


def _entry() -> None:  # pragma: no cover
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
