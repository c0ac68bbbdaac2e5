"""Check the reference reports against published speeds that are NOT in calibration.md (out of sample).

    python benchmarks/published_checks.py          # reads benchmarks/reports/*.json (bench_reports.py)
    python benchmarks/published_checks.py --out benchmarks/published_checks.json

Nothing here is fitted.  Each figure is a single-user decode speed the vendor or a measurer
published for a model of the reference set, with its date and source.  The prediction is the
report's plain decode figure (the routed schedule at the preset's parameters).  Every figure here
postdates the Oct 2024 software release ("rewritten kernels, asynchronous I/O and speculative
decoding"), so each row also gives the speculative *ceiling* of the same schedule: a draft as fast
as Llama 3.2 1B on its own wafer, every proposed token accepted, the best of 1..8 proposed tokens,
the target verifying k + 1 columns in one pass (both timed on the tile-plan estimate, as the
reports keep no schedule).
A published figure above the ceiling needs more than speculative decoding over this schedule.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# (model, published tok/s/user, published TTFT s or None, date, source)
FIGURES = [
    ("llama-3.1-405b", 969, 0.24, "Nov 2024",
     "Cerebras, 18 Nov 2024 (Tom's Hardware, 20 Nov 2024): bf16, time to first token 0.24 s"),
    ("qwen3-32b", 2100, None, "2025", "Cerebras inference docs, model page qwen-3-32b (~2,100; a later revision ~2,600)"),
    ("qwen3-235b-a22b", 1500, None, "2025", "Cerebras inference docs, model page qwen-3-235b (~1,500)"),
    ("gpt-oss-120b", 3000, None, "Aug 2025", "Cerebras announcement (~3,000); Artificial Analysis measured ~2,059"),
]
CEILING_DRAFT = "llama-3.2-1b"


def ceiling(report: dict, target, options, device) -> dict:
    """The draft's time per token and the target's k+1-column verify pass, both on the tile-plan
    estimate (the reports keep no schedule): the target at the report's wafer count."""
    import dataclasses

    from wafercc.perf.estimate import draft_time_per_token, estimate_program
    from wafercc.perf.evaluate import speculative_ceiling
    from wafercc.perf.model import CostParams, Machine

    perf = report["performance"]
    dt, dw = draft_time_per_token(CEILING_DRAFT, target, options, device, perf["prompt_tokens"])
    from wafercc.frontend.load import lower_model
    _, prog = estimate_program(lower_model(report["model"]["name"]).graph, target,
                               dataclasses.replace(options, wafers=report["wafers"]["used"]), device)
    best = speculative_ceiling(CEILING_DRAFT, dt, prog, Machine.of(target), CostParams.of(target),
                               perf["prompt_tokens"])
    return {"draft": CEILING_DRAFT, "draft_wafers": dw, "acceptance": 1.0, "proposed_tokens": best["proposed_tokens"],
            "decode_tokens_per_s_per_user": best["decode_tokens_per_s_per_user"]}


def main(argv=None) -> int:
    from wafercc.ir import DType
    from wafercc.plan.options import PlanOptions
    from wafercc.target import Device, load_target

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reports", default=os.path.join(HERE, "reports"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    rows = []
    for model, pub, ttft, date, source in FIGURES:
        path = os.path.join(args.reports, f"{model}.json")
        if not os.path.exists(path):
            print(f"error: {path}: no report (run benchmarks/bench_reports.py --models {model})", file=sys.stderr)
            return 2
        with open(path) as f:
            r = json.load(f)
        target = load_target(r["target"]["name"])
        opts = PlanOptions(dtype=DType(r["options"]["dtype"]), context=r["options"]["context"])
        perf = r["performance"]
        pred = perf["decode_tokens_per_s_per_user"]
        c = ceiling(r, target, opts, Device(target, None, 0))
        rows.append({"model": model, "date": date, "source": source, "wafers": r["wafers"]["used"],
                     "published": pub, "predicted": pred, "error": round(pred / pub - 1, 4),
                     "published_ttft_s": ttft, "predicted_ttft_s": perf["ttft_s"], "ceiling": c,
                     "ceiling_error": round(c["decode_tokens_per_s_per_user"] / pub - 1, 4)})
    print("| model | date | wafers | published tok/s | predicted (plain) | error | speculative ceiling | error |")
    print("|---|---|---|---|---|---|---|---|")
    for t in rows:
        c = t["ceiling"]
        print(f"| {t['model']} | {t['date']} | {t['wafers']} | {t['published']:,} | {t['predicted']:,.0f} | "
              f"{100 * t['error']:+.1f} % | {c['decode_tokens_per_s_per_user']:,.0f} (k={c['proposed_tokens']}) | "
              f"{100 * t['ceiling_error']:+.1f} % |")
    if args.out:
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"rows": rows}, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
