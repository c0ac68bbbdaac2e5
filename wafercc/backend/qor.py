"""The report's ``placement`` section: one quality-of-result row per placed wafer, and their totals
(docs/metrics.md)."""
from __future__ import annotations

from .schedule import floorplan_qor


def wafer_row(pw, layout: str) -> dict:
    """The QoR row of one placed and routed wafer (``passes.place_route.PlacedWafer``)."""
    r, fp = pw.routes, pw.floorplan
    return {"wafer": pw.index, "tiles": int(len(pw.tile_op)), "routes": int(len(pw.transfers)),
            "routed_hops": int(r.total_hops), "hops_lower_bound": int(r.lower_bound),
            "max_link_load": int(r.max_link_load), "colors_used": int(r.colors_used),
            "router_iterations": int(r.iterations), "floorplan_status": floorplan_qor(fp, layout)["status"],
            "displaced": int(fp.assign.displaced) if fp.assign else 0,
            "lane": int(fp.lane), "width": int(fp.width), "slots_used": int(fp.slots_used), "slots": int(fp.slots)}


def placement_section(rows: list[dict], layout: str) -> dict:
    hops = sum(w["routed_hops"] for w in rows)
    bound = sum(w["hops_lower_bound"] for w in rows)
    return {"layout": layout,
            "tiles": sum(w["tiles"] for w in rows), "routes": sum(w["routes"] for w in rows),
            "routed_hops": hops, "hops_lower_bound": bound,
            "hops_ratio": round(hops / bound, 4) if bound else None,
            "max_link_load": max((w["max_link_load"] for w in rows), default=0),
            "colors_used_max": max((w["colors_used"] for w in rows), default=0),
            "per_wafer": rows}


def render_placement(placement: dict, console) -> None:
    """The placement quality-of-result table, one row per wafer (docs/metrics.md)."""
    from rich.table import Table
    t = Table(title=f"placement and routing ({placement['layout']})", title_justify="left")
    for col in ("wafer", "tiles", "cores used", "routes", "hops", "hops / bound", "max link load", "colors",
                "router it.", "floorplan"):
        t.add_column(col, justify="right")
    for w in placement["per_wafer"]:
        ratio = w["routed_hops"] / w["hops_lower_bound"] if w["hops_lower_bound"] else 1.0
        t.add_row(str(w["wafer"]), f"{w['tiles']:,}", f"{w['slots_used']:,} / {w['slots']:,}", f"{w['routes']:,}",
                  f"{w['routed_hops']:,}", f"{ratio:.3f}", str(w["max_link_load"]), str(w["colors_used"]),
                  str(w["router_iterations"]), w.get("floorplan_status", ""))
    console.print(t)
