"""Fit the timing model's free parameters to the published wafer-scale decode speeds.

    python benchmarks/calibrate.py                       # place every row, fit, leave-one-out, print the tables
    python benchmarks/calibrate.py --check               # no fit: the presets' parameters against every row
    python benchmarks/calibrate.py --out benchmarks/calibration.json
    python benchmarks/calibrate.py --multistart          # every fit from 37 starts: a global minimum?

Rows come from ../shared/brief/calibration.md (copied below with their sources).  Each served wafer
row is compiled, planned, placed and routed exactly as ``wafercc compile`` does (bf16, context 8192,
batch 1, 1 % random dead cores, seed 0, prompt 1,024 tokens) on the row's target, and its routed
schedule is timed.  The research rows (WaferLLM) were measured on one layer with every operator on
one P x P grid (P <= 720) and multiplied by the layer count; they are timed by that protocol
(wafercc.perf.protocol), with the same cost model.  One parameter set is fitted for all rows of
both targets at once (least squares on log speed, bounded): no per-model or per-target factor.
The speculative row is predicted with a stated draft and acceptance, not fitted (its draft and
acceptance were not published); the other systems' rows are not wafer targets and get the
weight-streaming roofline the report uses for GPUs, where the brief gives a bandwidth.
Every fit is followed by its leave-one-out: one more fit per fitted row on the other rows (same
prior, bounds and start, wafercc.perf.fit) predicting the held-out row.  The rows are placed once;
a fit takes about half a second, so the leave-one-out adds about 2 s to the ~80 s of placement.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

# the fit itself (bounded least squares, prior, leave-one-out) is wafercc.perf.fit
from wafercc.perf.fit import PROMPT, fit, fit_multistart, leave_one_out, predict, row_params

HERE = os.path.dirname(os.path.abspath(__file__))

# (label, target, model, published tok/s/user, wafers published, fit?, protocol, note)
ROWS = [
    ("CS-3, Llama 3.1 8B, Aug 2024", "wse3", "llama-3.1-8b", 1800, 1, True, "placed", "launch software"),
    ("CS-3, Llama 3.1 70B, Aug 2024", "wse3", "llama-3.1-70b", 450, 4, True, "placed", "launch software"),
    ("WSE-2 WaferLLM, Llama 3 8B", "wse2", "llama-3.1-8b", 2700, 1, True, "one-layer",
     "one layer on a 720 x 720 grid x 32 layers; Llama 3.1 8B has Llama 3 8B's shapes"),
    ("WSE-2 WaferLLM, Qwen2 72B", "wse2", os.path.join(HERE, "configs", "qwen2-72b.json"), 840, None, True,
     "one-layer", "one layer on a 720 x 720 grid x 80 layers; the model does not fit one wafer"),
]
PROTOCOL_SIDE = 720     # WaferLLM's largest grid side (calibration.md: "P <= 720")
SPECULATIVE_ROW = ("CS-3, Llama 3.1 70B, Oct 2024 (speculative)", "wse3", "llama-3.1-70b", 2100, 4,
                   "llama-3.1-8b", 4, 0.8)
# (label, published, aggregate weight-read bandwidth B/s or None, note); roofline = bandwidth / 70B bf16 bytes
OTHER_ROWS = [
    ("Groq LPU (576 chips), Llama 3.1 70B 8-bit", 250, None, "SRAM-bound per chip, not a wafer target"),
    ("SambaNova SN40L (16 chips), Llama 3.1 70B", 457, None, "HBM bandwidth not in the brief"),
    ("SambaNova SN40L (16 chips), Llama 3.1 8B", 1042, None, "HBM bandwidth not in the brief"),
    ("SambaNova SN40L (16 chips), Llama 3.1 405B", 129, None, "HBM bandwidth not in the brief"),
    ("8 x H100, Llama 3.1 70B", 95, 8 * 3.35e12, "published ~60-130 (midpoint); HBM roofline"),
]


def place_row(target_name: str, model: str, seed: int = 0):
    """The timing model's Program of ``model`` placed on ``target_name`` as wafercc compile does
    (the driver through the schedule stage: bf16, context 8192, the target's defects), with the
    launch-style mapping the Aug 2024 rows were measured on selected explicitly: partial sums in
    chains (``reduction="chain"``), not the trees wafercc now builds by default, so the fit sees the
    hardware and that mapping, not wafercc's faster one."""
    import wafercc

    c = wafercc.compile(model, target=target_name, until="schedule", dtype="bf16", context=8192, seed=seed,
                        prompt_tokens=PROMPT, reduction="chain")
    return c.graph, c.plan, c.target, c.device, c.program


def layer_row(target_name: str, model: str, seed: int = 0):
    """(layers, one-layer Program, plan, target, device) for a row timed by the one-layer protocol."""
    import wafercc
    from wafercc.ir import DType
    from wafercc.perf.estimate import estimate_program
    from wafercc.plan.options import PlanOptions
    from wafercc.target import Device, load_target

    target = load_target(target_name)
    layers = wafercc.compile(model, until="ir").facts.layers
    graph = wafercc.compile(model, until="ir", layers=1).graph
    device = Device(target, None, seed)
    plan, prog = estimate_program(graph, target, PlanOptions(dtype=DType.BF16, context=8192), device)
    return layers, graph, plan, target, device, prog


CEILING_DRAFT = "llama-3.2-1b"     # the smallest Llama 3 family model of the reference set


def ceiling(base, perf, p) -> dict:
    """The most speculative decoding could give the placed 70B schedule (wafercc.perf.evaluate.
    speculative_ceiling) with the smallest reference draft."""
    from wafercc.perf.estimate import draft_time_per_token
    from wafercc.perf.evaluate import speculative_ceiling
    from wafercc.perf.model import Machine

    dt, dw = draft_time_per_token(CEILING_DRAFT, base["target"], base["plan"].options, base["device"], PROMPT)
    best = speculative_ceiling(CEILING_DRAFT, dt, base["prog"], Machine.of(base["target"]), p, PROMPT)
    return {"draft": CEILING_DRAFT, "draft_wafers": dw, "acceptance": 1.0, "proposed_tokens": best["proposed_tokens"],
            "decode_tokens_per_s_per_user": best["decode_tokens_per_s_per_user"]}


def print_loo(loo) -> None:
    """The leave-one-out table (each row in sample, the full fit, and held out, a fit on the others)
    and each row's sensitivity to the parameters at the full fit."""
    print()
    print("| held-out row | published | in-sample | error | held-out | error | held-out fit: efficiency, op_sync, reduce_step |")
    print("|---|---|---|---|---|---|---|")
    for e in loo:
        hp = e["held_out_params"]
        print(f"| {e['row']} | {e['published']:,} | {e['in_sample']:,.0f} | {100 * e['in_sample_error']:+.1f} % | "
              f"{e['held_out']:,.0f} | {100 * e['held_out_error']:+.1f} % | {hp['compute_efficiency']:.3f}, "
              f"{hp['op_sync_cycles']:.1f}, {hp['reduce_step_cycles']:.2f} |")
    print()
    print("| row | d log speed / d log efficiency | d log speed / d log reduce_step | op_sync + 100 cycles |")
    print("|---|---|---|---|")
    for e in loo:
        sv = e["sensitivity"]
        print(f"| {e['row']} | {sv['compute_efficiency']:+.3f} | {sv['reduce_step_cycles']:+.3f} | "
              f"{100 * sv['op_sync_plus_100_cycles']:+.1f} % |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="evaluate the presets' parameters; no fit")
    ap.add_argument("--multistart", action="store_true",
                    help="run every fit (full and leave-one-out) from 37 starts and keep the best (~1 min more)")
    ap.add_argument("--out", default=None, help="write rows and parameters as JSON")
    args = ap.parse_args(argv)
    from wafercc.perf.evaluate import Speculative, performance, speculative_figures
    from wafercc.perf.estimate import draft_time_per_token
    from wafercc.perf.model import CostParams, Machine

    rows = []
    for label, tname, model, pub, wafers, use, protocol, note in ROWS:
        t0 = time.perf_counter()
        row = {"label": label, "published": pub, "fit": use, "note": note, "wafers_published": wafers,
               "protocol": protocol}
        if protocol == "one-layer":
            layers, graph, plan, target, device, prog = layer_row(tname, model)
            alive = device.wafer(0).alive.shape
            row.update(layers=layers, side=min(PROTOCOL_SIDE, *alive), wafers=None,
                       model=graph.name)
        else:
            graph, plan, target, device, prog = place_row(tname, model)
            row.update(wafers=plan.used, model=graph.name)
        row.update(target=target, prog=prog, plan=plan, device=device, graph=graph)
        rows.append(row)
        print(f"placed {label}: {plan.used} wafer(s) in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    loo = None
    if args.check:
        params = {id(r): CostParams.of(r["target"]) for r in rows}
        fitted = None
    else:
        t0 = time.perf_counter()
        fitter = fit_multistart if args.multistart else fit
        res = fitter([r for r in rows if r["fit"]])
        x = res["x"]
        params = {id(r): row_params(x, r) for r in rows}
        fitted = {"compute_efficiency": round(x[0], 4), "op_sync_cycles": round(x[1], 1),
                  "reduce_step_cycles": round(x[2], 2), "targets": sorted({r["target"].name for r in rows}),
                  "inter_wafer_latency": "each target's io.off_wafer_latency, not fitted",
                  "status": res["status"], "evaluations": res["evaluations"], "cost": res["cost"],
                  "starts": res.get("starts", 1), "improved_by_multistart": res.get("improved")}
        print(f"fitted in {time.perf_counter() - t0:.1f} s: " + json.dumps(fitted), file=sys.stderr)
        t0 = time.perf_counter()
        loo = [dict(e, **{k: round(v, 4) for k, v in e.items() if k.endswith("error")},
                    in_sample=round(e["in_sample"], 1), held_out=round(e["held_out"], 1),
                    held_out_params={k: round(v, 4) for k, v in e["held_out_params"].items()},
                    sensitivity={k: round(v, 4) for k, v in e["sensitivity"].items()})
               for e in leave_one_out([r for r in rows if r["fit"]], full=res, fitter=fitter)]
        print(f"leave-one-out: {len(loo)} fits in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    table = []
    for r in rows:
        pr = predict(r, params[id(r)])
        table.append({"row": r["label"], "model": r["model"], "target": r["target"].name, "protocol": r["protocol"],
                      "wafers": r["wafers"],
                      "wafers_published": r["wafers_published"], "published": r["published"],
                      "predicted": round(pr, 1), "error": round(pr / r["published"] - 1, 4), "fit": r["fit"],
                      "note": r["note"]})
    # the speculative row: same 70B schedule, a stated draft and acceptance
    label, tname, model, pub, wafers, draft, k, acc = SPECULATIVE_ROW
    base = next(r for r in rows if r["model"] == "llama-3.1-70b")
    p = params[id(base)]
    mc = Machine.of(base["target"])
    dt, dw = draft_time_per_token(draft, base["target"], base["plan"].options, base["device"], PROMPT)
    perf = performance(base["prog"], mc, p, PROMPT)
    sp = speculative_figures(Speculative(draft, k, acc), base["prog"], dt, mc, p, PROMPT)["decode_tokens_per_s_per_user"]
    table.append({"row": label, "model": "llama-3.1-70b", "target": "wse3", "wafers": base["wafers"],
                  "wafers_published": wafers, "published": pub, "predicted": round(sp, 1),
                  "error": round(sp / pub - 1, 4), "fit": False,
                  "note": f"draft {draft} on {dw} wafer(s), {k} tokens per step, acceptance {acc} (assumed)",
                  "ceiling": ceiling(base, perf, p)})
    for label, pub, bw, note in OTHER_ROWS:
        pr = None
        if bw:
            pr = bw / (70.6e9 * 2)
        table.append({"row": label, "model": None, "target": None, "wafers": None, "wafers_published": None,
                      "published": pub, "predicted": None if pr is None else round(pr, 1),
                      "error": None if pr is None else round(pr / pub - 1, 4), "fit": False, "note": note})
    print("| row | wafers (ours / published) | published tok/s | predicted tok/s | error | fitted on |")
    print("|---|---|---|---|---|---|")
    for t in table:
        pred = "-" if t["predicted"] is None else f"{t['predicted']:,.0f}"
        err = "-" if t["error"] is None else f"{100 * t['error']:+.1f} %"
        w = "-" if t["wafers"] is None else f"{t['wafers']} / {t['wafers_published'] or '-'}"
        print(f"| {t['row']} | {w} | {t['published']:,} | {pred} | {err} | {'yes' if t['fit'] else 'no'} |")
        if t.get("ceiling"):
            c = t["ceiling"]
            print(f"|   ceiling: draft {c['draft']}, acceptance 1, {c['proposed_tokens']} proposed | | | "
                  f"{c['decode_tokens_per_s_per_user']:,.0f} | {100 * (c['decode_tokens_per_s_per_user'] / t['published'] - 1):+.1f} % | no |")
    if loo:
        print_loo(loo)
    if args.out:
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"prompt_tokens": PROMPT, "fitted": fitted, "rows": table, "leave_one_out": loo}, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
