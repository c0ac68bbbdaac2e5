"""The ``wafercc`` command line.

    wafercc compile MODEL [-o OUTDIR] [--no-cache] [--format text|json] [--layers N]
    wafercc models [--format text|json]
    wafercc ir verify FILE.ir
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

    m = sub.add_parser("models", help="list the reference models")
    m.add_argument("--format", choices=("text", "json"), default="text")

    ir_p = sub.add_parser("ir", help="IR file tools")
    ir_sub = ir_p.add_subparsers(dest="ir_cmd", metavar="IR_COMMAND", parser_class=_Parser)
    v = ir_sub.add_parser("verify", help="parse and verify a .ir (or .ir.json) file")
    v.add_argument("file", metavar="FILE")
    return p


def _write_outputs(outdir: str, graph, summary: dict) -> dict[str, str]:
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
    except OSError as e:
        raise InputFileError(f"cannot write outputs: {e.strerror}", where=outdir) from None
    return files


def _safe_dirname(name: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).strip(".")
    return keep or "model"


def cmd_compile(args) -> int:
    from .api import compile as wcompile
    from .summary import render_text, summary_dict

    res = wcompile(args.model, name=args.name, cache=not args.no_cache, layers=args.layers)
    summary = summary_dict(res.graph, res.facts, source=res.source, cached=res.cached, seconds=res.seconds)
    outdir = args.outdir or os.path.join("wafercc-out", _safe_dirname(res.graph.name))
    files = _write_outputs(outdir, res.graph, summary)
    if args.format == "json":
        print(json.dumps({**summary, "outputs": files}, indent=1, sort_keys=True))
    else:
        render_text(summary)
        print(f"wrote {files['ir']}, {files['ir_json']}, {files['summary']}")
    return 0


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
