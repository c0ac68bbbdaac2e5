"""Human and machine summaries of a compiled model (``wafercc compile`` output)."""
from __future__ import annotations

from typing import Any

from .console import make_console  # also imported from here by the commands
from .ir import DEFAULT_CONTEXT, Graph, ModelFacts


def human_count(n: float) -> str:
    """1234 -> '1.23 K', 70_553_706_496 -> '70.55 B'."""
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{int(n)}"


def human_bytes(n: float) -> str:
    """Decimal units: 141_107_412_992 -> '141.11 GB'."""
    for div, unit in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "KB")):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{int(n)} B"


def human_flops(n: float) -> str:
    for div, unit in ((1e15, "PFLOP"), (1e12, "TFLOP"), (1e9, "GFLOP"), (1e6, "MFLOP"), (1e3, "KFLOP")):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{int(n)} FLOP"


def summary_dict(graph: Graph, facts: ModelFacts, *, source: str, cached: bool | None = None,
                 seconds: float | None = None, context: int = DEFAULT_CONTEXT) -> dict[str, Any]:
    d: dict[str, Any] = {
        "model": graph.name,
        "source": source,
        "model_type": graph.meta.get("model_type"),
        "layers": facts.layers,
        "params": facts.params,
        "weight_bytes": facts.weight_bytes,
        "kv_bytes_per_token": facts.kv_bytes_per_token,
        "decode_context": context,
        "decode_flops_per_token": facts.decode_flops_per_token,
        "nodes": facts.nodes,
        "op_counts": dict(facts.op_counts),
    }
    if cached is not None:
        d["cached"] = bool(cached)
    if seconds is not None:
        d["seconds"] = round(float(seconds), 3)
    return d


def rows(d: dict[str, Any]) -> list[tuple[str, str]]:
    out = [
        ("model", str(d["model"])),
        ("source", str(d["source"]) + (" (cached)" if d.get("cached") else "")),
    ]
    if d.get("model_type"):
        out.append(("model type", str(d["model_type"])))
    out += [
        ("layers", str(d["layers"])),
        ("parameters", f"{human_count(d['params'])} ({d['params']:,})"),
        ("weight bytes", f"{d['weight_bytes'] / 1e9:.2f} GB"),
        ("KV bytes / token", human_bytes(d["kv_bytes_per_token"])),
        (f"decode FLOPs / token @ {d['decode_context']}", human_flops(d["decode_flops_per_token"])),
        ("IR nodes", str(d["nodes"])),
        ("ops", ", ".join(f"{op} {n}" for op, n in sorted(d["op_counts"].items(), key=lambda kv: (-kv[1], kv[0])))),
    ]
    if d.get("seconds") is not None:
        out.append(("time", f"{d['seconds']:.2f} s"))
    return out


def render_text(d: dict[str, Any], *, console=None) -> None:
    """Print the summary as a rich table (plain text when not a terminal)."""
    from rich.table import Table

    console = console or make_console()
    table = Table(title=f"wafercc IR summary: {d['model']}", show_header=False, title_justify="left")
    table.add_column("fact", style="bold")
    table.add_column("value", overflow="fold")
    for k, v in rows(d):
        table.add_row(k, v)
    console.print(table)
