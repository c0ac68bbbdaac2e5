"""Router benchmark at wafer scale (docs/routing.md, "Measured"):

    python benchmarks/bench_route.py [--rows 1172 --cols 762 --dead 0.01 --short 100000 --long 2000]

Synthetic but shaped like a real wafer: the mesh is tiled into op regions of about 17 x 17 cores;
every region row carries one broadcast segment (first to last alive core of the row) and every
region column one reduction segment, until ``--short`` transfers; ``--long`` activation transfers
join random alive cores at most ``--reach`` rows and columns apart.  Prints time and hops / bound.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from wafercc.passes.route import Transfers, route


def synthetic(rows, cols, dead, n_short, n_long, reach, seed=0, region=17):
    rng = np.random.default_rng(seed)
    alive = rng.random((rows, cols)) >= dead
    sr, sc, dr, dc, kind = [], [], [], [], []
    for r0 in range(0, rows - region + 1, region):
        for c0 in range(0, cols - region + 1, region):
            blk = alive[r0:r0 + region, c0:c0 + region]
            for k in range(region):
                row = np.flatnonzero(blk[k])
                if len(row) > 1:
                    sr.append(r0 + k); sc.append(c0 + row[0]); dr.append(r0 + k); dc.append(c0 + row[-1]); kind.append(0)
                col = np.flatnonzero(blk[:, k])
                if len(col) > 1:
                    sr.append(r0 + col[-1]); sc.append(c0 + k); dr.append(r0 + col[0]); dc.append(c0 + k); kind.append(1)
    n_s = min(n_short, len(sr))
    short = [np.asarray(a[:n_s]) for a in (sr, sc, dr, dc, kind)]
    ar, ac = np.nonzero(alive)
    m = 4 * n_long + 16
    a = rng.integers(0, len(ar), m)
    tr = ar[a] + rng.integers(-reach, reach + 1, m)
    tc = ac[a] + rng.integers(-reach, reach + 1, m)
    inside = np.flatnonzero((tr >= 0) & (tr < rows) & (tc >= 0) & (tc < cols))[:n_long]
    a, tr, tc = a[inside], tr[inside], tc[inside]
    # snap each destination to an alive core of its row
    snapped = np.array([np.flatnonzero(alive[r])[np.abs(np.flatnonzero(alive[r]) - c).argmin()]
                        for r, c in zip(tr, tc)], dtype=np.int64)
    long_ = [ar[a], ac[a], tr, snapped, np.full(len(a), 2)]
    arrs = [np.concatenate([s, l]) for s, l in zip(short, long_)]
    return alive, Transfers(*arrs)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1172)
    ap.add_argument("--cols", type=int, default=762)
    ap.add_argument("--dead", type=float, default=0.01)
    ap.add_argument("--short", type=int, default=100_000)
    ap.add_argument("--long", type=int, default=2000)
    ap.add_argument("--reach", type=int, default=150)
    ap.add_argument("--colors", type=int, default=21)
    a = ap.parse_args(argv)
    alive, t = synthetic(a.rows, a.cols, a.dead, a.short, a.long, a.reach)
    t0 = time.perf_counter()
    res = route(alive, np.zeros((0, 3), np.int32), t, colors=a.colors)
    dt = time.perf_counter() - t0
    out = {"rows": a.rows, "cols": a.cols, "transfers": len(t), "seconds": round(dt, 2),
           "total_hops": res.total_hops, "lower_bound": res.lower_bound,
           "hops_over_bound": round(res.total_hops / max(res.lower_bound, 1), 4),
           "max_link_load": res.max_link_load, "colors_used": res.colors_used,
           "iterations": res.iterations,
           "stats": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in res.stats.items()}}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
