"""The long fuzz run: every family, thousands of cases, a table per family and class (docs/testing.md).

    python benchmarks/fuzz_long.py --cases 10000 --seed 0 --out benchmarks/fuzz_results.json
    python benchmarks/fuzz_long.py --cases 500 --families target,defects       # a quick look
    python benchmarks/fuzz_long.py --replay /tmp/wafercc-fuzz/seed0/target-00042-xxxx/case.json

Cases are drawn by hypothesis from ``--seed`` (the same cases every time), run by tests/fuzz/harness.py
``--jobs`` at a time (in-process families in a forked child, cli cases in a new interpreter; 60 s and
6 GB each) and classified ok / clean_error / traceback / hang / partial_output.  Each failing case's
directory is kept under ``--keep`` (its inputs and case.json); the first case of each distinct cause
is then shrunk by hypothesis to a minimal reproducer (``--shrink-seconds`` each, 0 to skip).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import sys
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from fuzz.families import FAMILIES, generate, warm  # noqa: E402
from fuzz.harness import CLASSES, Case, execute, load_case  # noqa: E402

# share of --cases per family: in-process families take ~0.1-0.5 s a case, a cli case 1-15 s
# (a new interpreter, then often a whole compile), so the cli gets a few hundred of 10,000
MIX = {"onnx": 0.30, "config": 0.25, "target": 0.20, "defects": 0.22, "cli": 0.03}


def _counts(total: int, families: list[str]) -> dict[str, int]:
    share = {f: MIX[f] for f in families}
    norm = sum(share.values())
    counts = {f: int(total * s / norm) for f, s in share.items()}
    counts[families[0]] += total - sum(counts.values())
    return counts


def _table(outcomes, families) -> str:
    head = f"{'family':<9}" + "".join(f"{c:>15}" for c in CLASSES) + f"{'cases':>8}{'s/case':>8}"
    rows = [head, "-" * len(head)]
    for f in [*families, "all"]:
        sel = [o for o in outcomes if f in ("all", o.family)]
        if not sel:
            continue
        n = collections.Counter(o.klass for o in sel)
        rows.append(f"{f:<9}" + "".join(f"{n[c]:>15}" for c in CLASSES)
                    + f"{len(sel):>8}{sum(o.seconds for o in sel) / len(sel):>8.2f}")
    return "\n".join(rows)


def _shrink(family: str, target_payload, n: int, seed: int, want: str, root: str, budget: float):
    """Replay ``family``'s draws from ``seed`` up to ``target_payload``, then let hypothesis shrink it
    while the outcome keeps signature ``want``; the smallest payload that did (or None)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    target = repr(target_payload)
    state = {"found": False, "best": None, "until": None}

    class Reproduced(Exception):
        pass

    @hseed(seed)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate, Phase.shrink],
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @given(FAMILIES[family].strategy())
    def replay(payload):
        if not state["found"]:
            if repr(payload) != target:
                return
            state["found"], state["until"] = True, time.monotonic() + budget
        if time.monotonic() > state["until"]:
            return
        (o,) = execute([Case(family, FAMILIES[family].kind, payload)], root=root)
        if o.failed and o.signature == want:
            state["best"] = (payload, o)
            raise Reproduced()

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")         # hypothesis: "overly large repr" of big payloads
            replay()
    except Reproduced:
        pass
    return state["best"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--families", default=",".join(MIX), help=f"comma-separated subset of {', '.join(MIX)}")
    ap.add_argument("--out", default=None, help="results JSON (figures, causes, reproducers)")
    ap.add_argument("--keep", default=None, help="directory for failing cases (default /tmp/wafercc-fuzz/seedN)")
    ap.add_argument("--shrink-seconds", type=float, default=120.0, help="per distinct cause; 0: no shrinking")
    ap.add_argument("--replay", default=None, metavar="CASE_JSON", help="run one saved case and print its outcome")
    args = ap.parse_args(argv)
    warm()
    root = args.keep or os.path.join("/tmp", "wafercc-fuzz", f"seed{args.seed}")
    os.makedirs(root, exist_ok=True)

    if args.replay:
        (o,) = execute([load_case(args.replay)], root=root)
        print(f"{o.klass}: {o.detail}\n{o.top}".rstrip())
        return 1 if o.failed else 0

    families = [f for f in args.families.split(",") if f]
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        ap.error(f"unknown families {unknown}")
    counts = _counts(args.cases, families)
    t0 = time.monotonic()
    cases, payload_index = [], {}
    for f in families:
        payloads = generate(f, counts[f], args.seed)
        counts[f] = len(payloads)
        payload_index[f] = payloads
        cases += [Case(f, FAMILIES[f].kind, p) for p in payloads]
    t_gen = time.monotonic() - t0
    print(f"drew {len(cases)} cases in {t_gen:.0f} s: " + ", ".join(f"{f} {n}" for f, n in counts.items()), flush=True)

    done = collections.Counter()

    def progress(i, o):
        done[o.klass] += 1
        k = sum(done.values())
        if o.failed:
            print(f"  [{k}/{len(cases)}] {o.family} {o.klass}: {o.signature} {o.detail[:160]}", flush=True)
        elif k % 500 == 0:
            print(f"  [{k}/{len(cases)}] {dict(done)} {time.monotonic() - t0:.0f} s", flush=True)

    outcomes = execute(cases, jobs=args.jobs, root=root, progress=progress)
    t_run = time.monotonic() - t0 - t_gen

    causes: dict[tuple, list] = collections.defaultdict(list)
    for case, o in zip(cases, outcomes):
        if o.failed:
            causes[(o.family, o.klass, o.signature)].append((case, o))
    found = []
    for (family, klass, sig), items in sorted(causes.items()):
        case, o = items[0]
        entry = {"family": family, "class": klass, "signature": sig, "cases": len(items), "detail": o.detail,
                 "top": o.top, "reproducer": o.case_dir}
        if args.shrink_seconds > 0:
            small = _shrink(family, case.payload, counts[family], args.seed, sig, root, args.shrink_seconds)
            if small:
                entry["minimal_reproducer"] = small[1].case_dir
        found.append(entry)

    table = _table(outcomes, families)
    total = time.monotonic() - t0
    print()
    print(table)
    print(f"\n{len(cases)} cases in {total:.0f} s ({t_gen:.0f} s drawing, {t_run:.0f} s running, "
          f"{args.jobs} jobs); {len(found)} distinct causes of failure")
    for e in found:
        print(f"  {e['family']} {e['class']} x{e['cases']}: {e['signature']}: {e['detail'][:200]}\n"
              f"    reproducer: {e.get('minimal_reproducer') or e['reproducer']}")
    if args.out:
        doc = {"command": "python benchmarks/fuzz_long.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "seed": args.seed, "cases": len(cases), "jobs": args.jobs, "seconds": round(total, 1),
               "seconds_running": round(t_run, 1), "python": platform.python_version(),
               "families": {f: {c: sum(1 for o in outcomes if o.family == f and o.klass == c) for c in CLASSES}
                            for f in families},
               "mean_seconds": {f: round(sum(o.seconds for o in outcomes if o.family == f) / max(1, counts[f]), 3)
                                for f in families},
               "failures": found, "table": table}
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
