"""Print the speed-of-light table of docs/cost-model.md from compiled output directories or
report.json files (benchmarks/reports/NAME.json, from benchmarks/bench_reports.py).

    wafercc compile llama-3.1-8b -o /tmp/sol-llama-3.1-8b        # once per model, or
    python benchmarks/bench_reports.py
    python benchmarks/speed_of_light_table.py benchmarks/reports/llama-3.2-1b.json /tmp/sol-llama-3.1-8b ...
"""
from __future__ import annotations

import json
import os
import sys


def row(outdir: str) -> str:
    path = outdir if os.path.isfile(outdir) else os.path.join(outdir, "report.json")
    with open(path, encoding="utf-8") as f:
        r = json.load(f)
    s, p, t = r["speed_of_light"], r["performance"], r["speed_of_light"]["terms_s"]
    us = {k: f"{v * 1e6:,.2f}" for k, v in t.items()}
    return (f"| {r['model']['name']} | {r['wafers']['used']} | {p['decode_tokens_per_s_per_user']:,.0f} | "
            f"{s['tokens_per_s_per_user']:,.0f} | {s['prediction_fraction'] * 100:.1f} % | "
            f"{us['compute']} / {us['sram']} / {us['fabric_chain']} / {us['inter_wafer']} | "
            f"{s['at_fitted_reduce_step']['tokens_per_s_per_user']:,.0f} |")


def main(argv: list[str]) -> int:
    if not argv:
        sys.stderr.write(__doc__)
        return 2
    print("| model | wafers | predicted tok/s/user | speed of light tok/s/user | prediction / bound | "
          "compute / sram / fabric chain / inter-wafer (us, summed over wafers) | bound at fitted reduce_step |")
    print("|---|---|---|---|---|---|---|")
    for d in argv:
        print(row(d))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
