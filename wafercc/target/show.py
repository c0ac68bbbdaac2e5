"""``wafercc targets`` and ``wafercc targets show TARGET``: list presets, print one with provenance."""
from __future__ import annotations

import json

from .loader import list_targets, load_target
from .schema import Target


def _fmt(v) -> str:
    if isinstance(v, tuple):
        return ", ".join(map(str, v))
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.0f}" if v.is_integer() and abs(v) < 1e16 else f"{v:.6g}"
    return str(v)


def target_dict(t: Target) -> dict:
    return {
        "name": t.name, "description": t.description, "path": t.path,
        "fields": {k: {"value": list(q.value) if isinstance(q.value, tuple) else q.value, "unit": q.unit,
                       "given": q.given, "source": q.source, "confidence": q.confidence}
                   for k, q in t.quantities.items()},
        "derived": {k: {"value": v, "unit": u} for k, (v, u) in t.derived().items()},
        "sources": dict(t.sources),
        "notes": dict(t.notes),
    }


def _summary_row(t: Target) -> dict:
    return {"name": t.name, "description": t.description, "usable_cols": t.usable_cols,
            "usable_rows": t.usable_rows, "usable_cores": t.usable_cores, "sram_total_bytes": t.sram_total,
            "usable_sram_bytes": t.usable_sram_total}


def cmd_targets(args) -> int:
    from rich.table import Table

    from ..console import make_console

    fmt = getattr(args, "format", "text")
    if getattr(args, "targets_cmd", None) == "show":
        t = load_target(args.target)
        if fmt == "json":
            print(json.dumps(target_dict(t), indent=1))
            return 0
        con = make_console()
        tab = Table(title=f"target {t.name}: {t.description}", title_justify="left")
        tab.add_column("field", no_wrap=True)
        for col in ("value", "unit", "as written", "confidence", "source"):
            tab.add_column(col, overflow="fold")
        for k, q in t.quantities.items():
            tab.add_row(k, _fmt(q.value), q.unit, q.given, q.confidence, q.source)
        con.print(tab)
        src = Table(title="sources", title_justify="left")
        src.add_column("source")
        src.add_column("citation", overflow="fold")
        for k, text in t.sources.items():
            src.add_row(k, text)
        con.print(src)
        der = Table(title="derived (computed by wafercc from the fields above)", title_justify="left")
        for col in ("quantity", "value", "unit"):
            der.add_column(col)
        for k, (v, u) in t.derived().items():
            der.add_row(k, _fmt(v), u)
        con.print(der)
        for sec, note in t.notes.items():
            con.print(f"[bold]{sec}[/bold]: {note}")
        return 0
    rows = [_summary_row(load_target(n)) for n in list_targets()]
    if fmt == "json":
        print(json.dumps(rows, indent=1))
        return 0
    tab = Table(title="wafercc target presets", title_justify="left")
    for col in ("name", "description", "program rectangle", "usable cores", "SRAM total", "usable SRAM"):
        tab.add_column(col)
    for r in rows:
        tab.add_row(r["name"], r["description"], f"{r['usable_cols']} x {r['usable_rows']}",
                    f"{r['usable_cores']:,}", f"{r['sram_total_bytes'] / 1e9:.2f} GB",
                    f"{r['usable_sram_bytes'] / 1e9:.2f} GB")
    make_console().print(tab)
    return 0
