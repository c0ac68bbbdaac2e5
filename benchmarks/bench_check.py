"""How long ``wafercc.check`` takes on a cached graph, and how close its tile-plan estimate is to the
routed schedule's figure (docs/api.md).

    python benchmarks/bench_check.py                     # tiny-llama, llama-3.2-1b
    python benchmarks/bench_check.py --models llama-3.1-8b

For each model: one check to fill the IR cache, then ``--repeat`` timed checks (the median is
printed), then ``check(place=True)`` for the routed schedule's tokens/s.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    import wafercc

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="models/onnx/tiny-llama.onnx,llama-3.2-1b")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    for m in args.models.split(","):
        src = os.path.join(ROOT, m) if m.endswith(".onnx") else m
        wafercc.check(src)                                    # fills the cache
        secs = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            est = wafercc.check(src, max_wafers=64)
            secs.append(time.perf_counter() - t)
        placed = wafercc.check(src, place=True)
        err = est.tokens_per_s_per_user / placed.tokens_per_s_per_user - 1
        print(f"{os.path.basename(m)}: check {statistics.median(secs):.3f} s (median of {args.repeat}), "
              f"{est.wafers} wafer(s), estimate {est.tokens_per_s_per_user:,.0f} tok/s vs routed "
              f"{placed.tokens_per_s_per_user:,.0f} ({100 * err:+.1f} %)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
