"""Full compile benchmark, cold cache (not part of pytest):

    python benchmarks/bench_compile.py [--models llama-3.2-1b,llama-3.1-8b,llama-3.1-70b] [--outdir DIR]

Runs ``wafercc compile MODEL -o DIR/MODEL --no-curve --no-cache`` in a child process per model, one
at a time, and prints wall seconds, the child's peak RSS (os.wait4's resource usage of that child) and the stage times
of its compile.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

STAGES = ("frontend", "plan", "tile", "floorplan", "route", "schedule", "timing", "report")


def run(model: str, outdir: str) -> dict:
    out = os.path.join(outdir, model.replace("/", "_"))
    cmd = [sys.executable, "-m", "wafercc.cli", "compile", model, "-o", out, "--no-curve", "--no-cache"]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)   # one child at a time
        _, status, usage = os.wait4(proc.pid, 0)                              # its own rusage
        err.seek(0)
        tail = err.read().decode(errors="replace")[-500:]
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{model}: compile failed: {tail}")
    stages = {s["name"]: s["seconds"] for s in json.load(open(os.path.join(out, "compile.json")))["stages"]}
    return {"model": model, "wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024),
            "stages": stages}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="llama-3.2-1b,llama-3.1-8b,llama-3.1-70b")
    ap.add_argument("--outdir", default=None, help="where the outputs go (default: a temporary directory)")
    a = ap.parse_args(argv)
    outdir = a.outdir or tempfile.mkdtemp(prefix="bench-compile-")
    rows = [run(m, outdir) for m in a.models.split(",") if m]
    print(f"{'model':<16} {'wall s':>7} {'RSS MB':>7} " + " ".join(f"{s:>9}" for s in STAGES))
    for r in rows:
        print(f"{r['model']:<16} {r['wall_s']:>7.1f} {r['peak_rss_mb']:>7} "
              + " ".join(f"{r['stages'].get(s, 0.0):>9.2f}" for s in STAGES))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
