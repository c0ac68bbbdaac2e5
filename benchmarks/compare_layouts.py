"""Layouts compared on the same inputs: lanes (+ CP-SAT refinement, the default), spares (OR-Tools
min-cost assignment of displaced tiles) and the plain row-major baseline.

    python benchmarks/compare_layouts.py [--sizes 60x60,120x120,240x240] [--defects random:0.01]
                                         [--out benchmarks/layout_comparison.json]

Meshes are the WSE-3 preset shrunk to the given fabric (tests' tiny target), small enough that
the row-major baseline routes too; the model is the checked-in tiny Llama (its tiler fills every
usable core).  Prints hops, hops per route, the Manhattan bound, max link load, colors and time
per layout.  Not part of pytest; figures in the closing note of issue 4 and docs/placement.md.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="60x60,120x120,240x240")
    ap.add_argument("--defects", default="random:0.01")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    os.environ["WAFERCC_NO_CACHE"] = "1"
    sys.path.insert(0, str(ROOT / "tests"))
    from target_util import tiny_target

    from wafercc.driver import Compilation
    from wafercc.options import build_options

    model = str(ROOT / "models" / "onnx" / "tiny-llama.onnx")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            w, h = (int(x) for x in size.split("x"))
            target = tiny_target(pathlib.Path(tmp), width=w + 7, height=h + 2)
            for layout in ("lanes", "spares", "row-major"):
                # the driver through the route stage, which keeps every routed wafer
                c = Compilation(model, build_options(target=str(target.path), defects=args.defects, seed=args.seed,
                                                     layout=layout, until="route")).run()
                secs = sum(c.seconds[s] for s in ("tile", "floorplan", "route"))
                ws = c.routed
                routes = sum(len(p.transfers) for p in ws)
                hops = sum(int(p.routes.total_hops) for p in ws)
                row = {"mesh": size, "layout": layout, "wafers": len(ws), "tiles": sum(len(p.tile_op) for p in ws),
                       "routes": routes, "hops": hops, "hops_per_route": round(hops / max(1, routes), 3),
                       "hops_lower_bound": sum(int(p.routes.lower_bound) for p in ws),
                       "max_link_load": max(int(p.routes.max_link_load) for p in ws),
                       "colors": max(int(p.routes.colors_used) for p in ws),
                       "router_iterations": max(int(p.routes.iterations) for p in ws), "seconds": round(secs, 2)}
                rows.append(row)
                print(f"{size:>9} {layout:>9}: {row['tiles']:>7,} tiles {routes:>8,} routes hops {hops:>10,} "
                      f"({row['hops_per_route']:.3f}/route) max load {row['max_link_load']:2d} colors "
                      f"{row['colors']:2d} it {row['router_iterations']:2d} {secs:6.2f} s", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"defects": args.defects, "seed": args.seed, "model": "tiny-llama", "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
