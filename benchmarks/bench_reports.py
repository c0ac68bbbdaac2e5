"""Compile every reference model end to end and keep its report.json (the reference reports that
docs/cost-model.md and published_checks.py quote).  The CI regression over the same models is
``wafercc regress`` (docs/regress.md); this script only refreshes the full reports.

    python benchmarks/bench_reports.py                    # all reference models -> benchmarks/reports/
    python benchmarks/bench_reports.py --models llama-3.1-8b,gpt2 --out DIR

Each model goes through the driver (``wafercc.compile(NAME, dtype="bf16")``: WSE-3, context 8192,
batch 1, the target's 1 % dead cores, seed 0), exactly what ``wafercc compile NAME --dtype bf16``
does; report.json is written to OUT/NAME.json and a one-line summary (wafers, tokens/s, seconds,
peak RSS of this process so far) printed.  Schedules are not kept (hundreds of MB for the largest).
"""
from __future__ import annotations

import argparse
import os
import resource
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None) -> int:
    import wafercc
    from wafercc import models_registry
    from wafercc.cache import atomic_write_text
    from wafercc.report import dumps

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None, help="comma-separated reference names (default: all)")
    ap.add_argument("--out", default=os.path.join(HERE, "reports"))
    args = ap.parse_args(argv)
    names = args.models.split(",") if args.models else list(models_registry.names())
    os.makedirs(args.out, exist_ok=True)
    failed = 0
    for name in names:
        try:
            c = wafercc.compile(name, dtype="bf16")
        except wafercc.WaferccError as e:
            failed += 1
            print(f"{name}: {type(e).__name__}: {e}", flush=True)
            continue
        atomic_write_text(os.path.join(args.out, f"{name}.json"), dumps(c.report))
        p = c.performance
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(f"{name}: {c.wafers} wafer(s), {p.tokens_per_s_per_user:,.0f} tok/s/user, "
              f"TTFT {p.ttft_s * 1e3:.1f} ms, {p.energy_j_per_token:.1f} J/token, "
              f"{c.total_seconds:.0f} s, peak RSS so far {rss:.2f} GB", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
