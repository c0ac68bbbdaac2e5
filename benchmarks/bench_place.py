"""Placement-and-routing benchmark at wafer scale (issue 4's targets, figures in the closing note).

    python benchmarks/bench_place.py [--model llama-3.1-70b] [--defects random:0.01]
                                     [--layout lanes|spares|row-major] [--wafers N] [--time-limit S]
                                     [--out benchmarks/place_results.json]

Plans the model on WSE-3 (bf16, context 8192, batch 1), then times tile + floorplan/assign +
route over every wafer, keeping one wafer at a time (each is summarised and dropped).  Prints a
QoR table per wafer (tiles, routes, hops against the Manhattan bound, max link load, colors,
PathFinder iterations) and the totals; exits 1 if a target is missed:

    llama-3.1-70b: <= 30 s;  llama-3.1-405b: <= 120 s and <= 4 GB peak RSS;  hops <= 1.2 x bound.

``--layout spares`` runs the OR-Tools assignment layout and ``--layout row-major`` the plain
baseline on the same inputs, for the comparison; ``--time-limit`` stops a run that takes too long
and records how far it got (``finished: false``).
Not part of pytest.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import time

TARGETS = {"llama-3.1-70b": (30.0, None), "llama-3.1-405b": (120.0, 4.0)}


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="llama-3.1-70b")
    ap.add_argument("--target", default="wse3")
    ap.add_argument("--defects", default="random:0.01")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layout", choices=("lanes", "spares", "row-major"), default="lanes")
    ap.add_argument("--time-limit", type=float, default=None, help="stop (and report) after this many seconds")
    ap.add_argument("--wafers", type=int, default=None, help="place only the first N wafers")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    os.environ["WAFERCC_NO_CACHE"] = "1"
    import dataclasses

    from wafercc.driver import Compilation
    from wafercc.options import build_options

    # the driver through the schedule stage (wafercc compile's path); timed: tile + floorplan + route
    c = Compilation(args.model, build_options(target=args.target, defects=args.defects, seed=args.seed,
                                              layout=args.layout, until="schedule"))
    c.run(until="plan")
    if args.wafers:
        c.plan = dataclasses.replace(c.plan, wafers=c.plan.wafers[:args.wafers])
    rss_before = _rss_gb()
    rows = []

    def keep(stage, k, pw):
        if stage != "route" or pw is None:
            return
        r = pw.routes
        rows.append({"wafer": pw.index, "tiles": int(len(pw.tile_op)), "routes": int(len(pw.transfers)),
                     "hops": int(r.total_hops), "bound": int(r.lower_bound), "max_link_load": int(r.max_link_load),
                     "colors": int(r.colors_used), "iterations": int(r.iterations),
                     "searched": int(r.stats["searched"]), "route_s": round(r.stats["seconds"], 2),
                     "displaced": int(pw.floorplan.assign.displaced) if pw.floorplan.assign else 0,
                     "assign_s": round(pw.floorplan.assign.seconds, 3) if pw.floorplan.assign else 0.0})
        print(f"wafer {pw.index:3d}: {rows[-1]['tiles']:>9,} tiles {rows[-1]['routes']:>9,} routes "
              f"hops {r.total_hops:>9,} ({r.total_hops / max(1, len(pw.transfers)):.3f}/route, "
              f"{r.total_hops / max(1, r.lower_bound):.4f} x bound) max load {r.max_link_load:2d} "
              f"colors {r.colors_used:2d} it {r.iterations:2d} searched {rows[-1]['searched']:>6,} "
              f"route {r.stats['seconds']:.1f}s", flush=True)

    class _Timeout(Exception):
        pass

    def _alarm(*_):
        raise _Timeout()

    if args.time_limit:
        signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, args.time_limit)
    t0 = time.perf_counter()
    finished = True
    try:
        c.run(progress=keep)
    except _Timeout:
        finished = False
        print(f"stopped after {args.time_limit:.0f} s with {len(rows)} wafer(s) done", flush=True)
    signal.setitimer(signal.ITIMER_REAL, 0)
    secs = {k: v for k, v in c.seconds.items() if k in ("tile", "floorplan", "route")}
    wall = sum(secs.values()) if finished else time.perf_counter() - t0
    hops, bound = sum(r["hops"] for r in rows), sum(r["bound"] for r in rows)
    summary = {"model": args.model, "target": args.target, "defects": args.defects, "seed": args.seed,
               "layout": args.layout, "finished": finished, "wafers": len(rows),
               "tiles": sum(r["tiles"] for r in rows), "routes": sum(r["routes"] for r in rows),
               "hops": hops, "hops_lower_bound": bound, "hops_ratio": round(hops / max(1, bound), 4),
               "hops_per_route": round(hops / max(1, sum(r["routes"] for r in rows)), 4),
               "max_link_load": max((r["max_link_load"] for r in rows), default=0),
               "colors_max": max((r["colors"] for r in rows), default=0),
               "seconds": round(wall, 2), "seconds_by_pass": {k: round(v, 2) for k, v in secs.items()},
               "peak_rss_gb": round(_rss_gb(), 2), "rss_before_gb": round(rss_before, 2), "per_wafer": rows}
    print(json.dumps({k: v for k, v in summary.items() if k != "per_wafer"}, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1)
    t_max, gb_max = TARGETS.get(args.model, (None, None))
    bad = not finished or summary["hops_ratio"] > 1.2
    if t_max and args.layout == "lanes" and not args.wafers:
        bad |= wall > t_max or (gb_max is not None and summary["peak_rss_gb"] > gb_max)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
