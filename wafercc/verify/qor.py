"""Per-wafer quality-of-result figures, computed from the emitted arrays (not trusted from the compiler).

Solver status and gap are the only figures taken from ``schedule.json`` ``qor``: per wafer from
``qor.wafers[k]`` (a list aligned with ``wafers``, keys ``solver_status``/``status`` and ``gap``,
or the same keys inside its ``floorplan`` or ``solver`` object), else from top-level
``qor.solver_status``/``qor.status`` and ``qor.gap``; ``None`` when absent.
"""
from __future__ import annotations

import numpy as np


def _solver(doc: dict, k: int) -> tuple[object, object]:
    q = doc.get("qor")
    if not isinstance(q, dict):
        return None, None
    per = q.get("wafers")
    src = per[k] if isinstance(per, list) and k < len(per) and isinstance(per[k], dict) else q
    if "solver_status" not in src and "status" not in src:
        nested = src.get("floorplan", src.get("solver"))      # e.g. {"floorplan": {"status", "gap"}}
        src = nested if isinstance(nested, dict) else src
    status = src.get("solver_status", src.get("status"))
    gap = src.get("gap")
    return (status if isinstance(status, (str, int, float)) else None,
            gap if isinstance(gap, (int, float)) and not isinstance(gap, bool) else None)


def wafer_qor(doc: dict, w, tiles: dict, rstats: dict, budget: int, violations: int) -> dict:
    per_core = tiles["per_core"]
    live = int(w.alive.sum())
    used = int(np.count_nonzero(np.bincount(tiles["core"][tiles["on"]], minlength=1)))
    total = int(per_core.sum())
    status, gap = _solver(doc, w.index)
    lb = rstats["lower_bound"]
    return {
        "wafer": w.index,
        "layers": w.meta.get("layers"),
        "ops": len(w.meta["ops"]),
        "tiles": int(tiles["op"].size),
        "live_cores": live,
        "dead_cores": int(w.alive.size - live),
        "cores_used": used,
        "bytes": total,
        "sram_utilisation": total / (live * budget) if live and budget else 0.0,
        "max_core_bytes": int(per_core.max()) if per_core.size else 0,
        "routes": rstats["routes"],
        "hops": rstats["hops"],
        "hops_lower_bound": lb,
        "hops_ratio": rstats["hops"] / lb if lb else None,
        "max_link_load": rstats["max_link_load"],
        "colors_used": rstats["colors_used"],
        "solver_status": status,
        "gap": gap,
        "violations": violations,
    }
