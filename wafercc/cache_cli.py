"""``wafercc cache list|clear``: the build cache's entries (wafercc/build_cache.py) and the IR cache."""
from __future__ import annotations

import datetime
import json


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("cache", help="the build cache: list its entries or clear it (and the IR cache)")
    sub = p.add_subparsers(dest="cache_cmd", metavar="CACHE_COMMAND")
    ls = sub.add_parser("list", help="the build cache's entries, most recently used first")
    ls.add_argument("--format", choices=("text", "json"), default="text")
    sub.add_parser("clear", help="remove every build-cache entry and every cached IR graph")


def cmd_cache(args, parser) -> int:
    from . import build_cache, cache
    if args.cache_cmd == "clear":
        builds, graphs = build_cache.clear(), cache.clear()
        print(f"removed {builds} build(s) and {graphs} IR graph(s) from {cache.cache_dir()}")
        return 0
    if args.cache_cmd != "list":
        parser.error("cache: expected a subcommand (list, clear)")
    rows = [{"key": e.key, "model": e.doc.get("model"), "target": e.doc.get("inputs", {}).get("options", {}).get("target"),
             "files": len(e.files), "bytes": e.size,
             "created": _when(e.doc.get("created")), "last_used": _when((e.path / "entry.json").stat().st_mtime)}
            for e in build_cache.entries()]
    total = sum(r["bytes"] for r in rows)
    if args.format == "json":
        print(json.dumps({"dir": str(build_cache.builds_dir()), "limit_bytes": build_cache.limit_bytes(),
                          "bytes": total, "entries": rows}, indent=1))
        return 0
    from rich.table import Table
    from .console import make_console
    t = Table(title=f"build cache {build_cache.builds_dir()}: {len(rows)} entries, {total / 2 ** 20:,.1f} MB "
                    f"of {build_cache.limit_bytes() / 2 ** 20:,.0f} MB", title_justify="left")
    for col in ("key", "model", "target", "files", "MB", "created", "last used"):
        t.add_column(col, justify="right" if col in ("files", "MB") else "left")
    for r in rows:
        t.add_row(r["key"][:12], str(r["model"]), str(r["target"]), str(r["files"]), f"{r['bytes'] / 2 ** 20:,.1f}",
                  r["created"], r["last_used"])
    make_console().print(t)
    return 0


def _when(ts) -> str:
    if not isinstance(ts, (int, float)):
        return "?"
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
