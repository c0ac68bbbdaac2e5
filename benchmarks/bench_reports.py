"""Compile every reference model end to end and keep its report.json (the CI regression set).

    python benchmarks/bench_reports.py                    # all reference models -> benchmarks/reports/
    python benchmarks/bench_reports.py --models llama-3.1-8b,gpt2 --out DIR

Each model: ``wafercc compile NAME --target wse3 --dtype bf16`` (context 8192, batch 1, the target's
1 % dead cores, seed 0) into a scratch directory; report.json is copied to OUT/NAME.json and a
one-line summary (wafers, tokens/s, seconds, peak RSS of the compile) printed.  Schedules are not
kept (hundreds of MB for the largest models).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None) -> int:
    from wafercc import models_registry

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None, help="comma-separated reference names (default: all)")
    ap.add_argument("--out", default=os.path.join(HERE, "reports"))
    args = ap.parse_args(argv)
    names = args.models.split(",") if args.models else list(models_registry.names())
    os.makedirs(args.out, exist_ok=True)
    failed = 0
    for name in names:
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            p = subprocess.run([sys.executable, "-m", "wafercc.cli", "compile", name, "--target", "wse3",
                                "--dtype", "bf16", "-o", d, "--format", "json"], capture_output=True, text=True)
            secs = time.perf_counter() - t0
            rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6
            if p.returncode != 0 or not os.path.exists(os.path.join(d, "report.json")):
                failed += 1
                print(f"{name}: exit {p.returncode}: {p.stderr.strip().splitlines()[-1:]}", flush=True)
                continue
            shutil.copy(os.path.join(d, "report.json"), os.path.join(args.out, f"{name}.json"))
            r = json.load(open(os.path.join(d, "report.json")))
            perf = r["performance"]
            print(f"{name}: {r['wafers']['used']} wafer(s), {perf['decode_tokens_per_s_per_user']:,.0f} tok/s/user, "
                  f"TTFT {perf['ttft_s'] * 1e3:.1f} ms, {perf['energy_j_per_token']:.1f} J/token, "
                  f"{secs:.0f} s, peak RSS so far {rss:.2f} GB", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
