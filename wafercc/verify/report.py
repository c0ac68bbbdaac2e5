"""Render a VerifyResult: a rich QoR table and the violations (text), or one JSON document."""
from __future__ import annotations

from typing import Any


def shown(res, limit: int | None = None) -> list:
    """The violations to print: the first of every code first, then the second of every code..."""
    rank: dict[str, int] = {}
    keyed = []
    for i, v in enumerate(res.violations):
        rank[v.code] = rank.get(v.code, -1) + 1
        keyed.append((rank[v.code], i, v))
    out = [v for _r, _i, v in sorted(keyed, key=lambda x: x[:2])]
    return out if limit is None else out[:limit]


def result_dict(res, limit: int | None = None) -> dict[str, Any]:
    shown_ = shown(res, limit)
    return {"schema": "wafercc.verify/1", "outdir": res.outdir, "model": res.model, "target": res.target,
            "ok": res.ok, "violation_count": res.violation_count, "counts": dict(sorted(res.counts.items())),
            "violations": [{"code": v.code, "wafer": v.wafer, "message": v.message} for v in shown_],
            "wafers": res.wafers, "seconds": round(res.seconds, 3)}


def _num(n: int) -> str:
    """Exact below 100k, else 3 significant digits (k, M, G); the JSON form is exact."""
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= 100_000 and n >= div:
            return f"{n / div:.3g}{suf}"
    return f"{n:,}"


def render_text(res, console, limit: int = 50) -> None:
    import os

    from rich import box
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=f"verify {res.outdir}: {res.model} on {os.path.basename(str(res.target))}",
              title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("wafer", "layers", "tiles", "cores used", "SRAM", "hops", "LB", "hops/LB", "max load", "colors",
                "solver", "gap", "viol"):
        t.add_column(col, justify="left" if col in ("layers", "solver") else "right", no_wrap=True)
    for q in res.wafers:
        lay = q["layers"]
        ratio = "-" if q["hops_ratio"] is None else f"{q['hops_ratio']:.3f}"
        t.add_row(str(q["wafer"]), f"{lay[0]}-{lay[1]}" if lay else "-", _num(q["tiles"]),
                  _num(q["cores_used"]), f"{100 * q['sram_utilisation']:.1f}%",
                  _num(q["hops"]), _num(q["hops_lower_bound"]), ratio,
                  str(q["max_link_load"]), str(q["colors_used"]), escape(str(q["solver_status"] or "-")),
                  "-" if q["gap"] is None else f"{q['gap']:.3g}",
                  str(q["violations"]) if not q["violations"] else f"[red]{q['violations']}[/]")
    console.print(t)
    if res.ok:
        console.print(f"[green]ok[/]: no violations ({res.seconds:.2f} s)")
        return
    for v in shown(res, limit):
        console.print(escape(str(v)), soft_wrap=True)
    more = res.violation_count - min(limit, len(res.violations))
    if more > 0:
        console.print(f"... and {_num(more)} more")
    counts = ", ".join(f"{k} {_num(n)}" for k, n in sorted(res.counts.items()))
    console.print(f"[bold red]{_num(res.violation_count)} violation(s)[/]: {counts}", soft_wrap=True)


def cmd_verify(args) -> int:
    """``wafercc verify OUTDIR``: 0 clean, 1 violations; unreadable files raise (exit 2)."""
    import json

    from . import verify_dir

    limit = max(0, args.max_violations)
    res = verify_dir(args.outdir, limit=limit)
    if args.format == "json":
        print(json.dumps(result_dict(res, limit), indent=1, sort_keys=True))
    else:
        from ..console import make_console
        render_text(res, make_console(), limit)
    return 0 if res.ok else 1
