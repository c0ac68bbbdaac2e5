"""``wafercc regress [MODELS...] [--fast] [--update] [--jobs N] [--format text|json|junit] [--junit FILE]``:
run the QoR regression (wafercc.regress) and report it as a table, JSON or JUnit XML."""
from __future__ import annotations

import json
import os
import sys
import xml.etree.ElementTree as ET

from . import regress as rg

EXIT_REGRESSION = 1


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("regress", help="compile reference models and compare their QoR with the goldens "
                                              "(exit 1 on a regression)")
    p.add_argument("models", nargs="*", metavar="MODEL",
                   help="regress model names (default: every golden; with --fast the fast set)")
    p.add_argument("--fast", action="store_true", help=f"only the fast set ({', '.join(rg.FAST)} by default)")
    p.add_argument("--update", action="store_true", help="rewrite the goldens with this run's figures")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="models compiled in parallel (default 1)")
    p.add_argument("--format", choices=("text", "json", "junit"), default="text", help="what to print")
    p.add_argument("--junit", metavar="FILE", help="also write JUnit XML to FILE")
    p.add_argument("--golden-dir", default=None, metavar="DIR", help="golden files (default tests/golden/qor)")
    p.add_argument("--reports", default=None, metavar="DIR", help="also write each model's report.json as DIR/MODEL.json")


def _selection(args, gdir: str) -> list[str]:
    have = sorted(f[:-5] for f in os.listdir(gdir) if f.endswith(".json")) if os.path.isdir(gdir) else []
    names = list(args.models) or have
    if not names and args.update:
        names = list(rg.FAST) if args.fast else [*rg.SHIPPED_ONNX, *_references()]
    if args.fast and not args.models:
        names = [n for n in names if rg.load_golden(os.path.join(gdir, f"{n}.json")).get("fast")] \
            if have else list(rg.FAST)
    if not names:
        raise rg.RegressError(f"no golden files in {gdir} (create them with --update)")
    for n in names:
        rg.model_source(n)                      # unknown names fail before any compile
    return names


def _references() -> list[str]:
    from . import models_registry
    return list(models_registry.names())


def cmd_regress(args) -> int:
    if args.jobs < 1:
        raise rg.RegressError(f"--jobs {args.jobs}: expected at least 1")
    gdir = args.golden_dir or rg.golden_dir()
    names = _selection(args, gdir)
    goldens = {}
    for n in names:
        path = os.path.join(gdir, f"{n}.json")
        goldens[n] = None if args.update and not os.path.exists(path) else rg.load_golden(path)
    options = {n: (g["options"] if g else rg.default_options(n)) for n, g in goldens.items()}
    measured = _run(names, options, args.jobs)
    results = []
    for n in names:
        now = measured[n]
        res = {"model": n, "options": options[n], "error": now.get("error"),
               "rows": [] if "error" in now else rg.compare(goldens[n] or {}, now)}
        results.append(res)
        if args.reports and "report" in now:
            from .cache import atomic_write_text
            from .report import dumps
            os.makedirs(args.reports, exist_ok=True)
            atomic_write_text(os.path.join(args.reports, f"{n}.json"), dumps(now["report"]))
        if args.update and res["error"] is None:
            from .cache import atomic_write_text
            os.makedirs(gdir, exist_ok=True)
            doc = rg.new_golden(n, options[n], now, goldens[n])
            atomic_write_text(os.path.join(gdir, f"{n}.json"), json.dumps(doc, indent=1, sort_keys=True) + "\n")
    bad = [r for r in results if rg.failed(r)]
    doc = {"schema": rg.RESULT_SCHEMA, "models": results, "failed": [r["model"] for r in bad],
           "updated": bool(args.update)}
    xml = _junit(results)
    if args.junit:
        from .cache import atomic_write_text
        atomic_write_text(args.junit, xml)
    if args.format == "json":
        print(json.dumps(doc, indent=1, sort_keys=True))
    elif args.format == "junit":
        sys.stdout.write(xml)
    else:
        _render(results, bad, args.update)
    if args.update:
        return EXIT_REGRESSION if any(r["error"] for r in results) else 0
    return EXIT_REGRESSION if bad else 0


def _run(names: list[str], options: dict, jobs: int) -> dict[str, dict]:
    if jobs == 1 or len(names) == 1:
        return {n: rg.measure(n, options[n]) for n in names}
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    # spawn: a fresh interpreter per worker (torch and OR-Tools threads do not survive fork); the
    # models are the parallel work, so each compile routes its wafers in its own process
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as ex:
        futs = {n: ex.submit(rg.measure, n, {**options[n], "jobs": 1}) for n in names}
        return {n: futs[n].result() for n in names}


def _render(results: list[dict], bad: list[dict], updated: bool) -> None:
    from rich.table import Table

    from .summary import make_console
    t = Table(title="wafercc regress: quality of result against the goldens", title_justify="left")
    for col, just in (("model", "left"), ("metric", "left"), ("golden", "right"), ("now", "right"),
                      ("delta", "right"), ("verdict", "left")):
        t.add_column(col, justify=just)
    for r in results:
        if r["error"]:
            t.add_row(r["model"], "compile", "-", "-", "-", f"error: {r['error']}")
            continue
        for row in r["rows"]:
            d = row["delta"]
            rel = (f" ({100 * d / row['golden']:+.1f}%)" if d and isinstance(row["golden"], (int, float))
                   and row["golden"] else "")
            t.add_row(r["model"], row["metric"], rg.fmt(row["golden"]), rg.fmt(row["now"]),
                      (rg.fmt(d) + rel) if d is not None else "-", row["verdict"])
    make_console().print(t)
    n = len(results)
    if updated:
        print(f"goldens updated for {n - sum(1 for r in results if r['error'])} of {n} model(s)")
    else:
        print(f"{n - len(bad)} of {n} model(s) within the goldens' tolerances"
              + (f"; failing: {', '.join(r['model'] for r in bad)}" if bad else ""))


def _junit(results: list[dict]) -> str:
    """One test case per model; a failure lists the metrics outside their tolerance."""
    fails = sum(1 for r in results if rg.failed(r))
    suite = ET.Element("testsuite", name="wafercc.regress", tests=str(len(results)), failures=str(fails),
                       errors="0")
    for r in results:
        secs = sum(row["now"] or 0 for row in r["rows"] if row["metric"].startswith("seconds."))
        case = ET.SubElement(suite, "testcase", classname="wafercc.regress.qor", name=r["model"],
                             time=f"{secs:.3f}")
        props = ET.SubElement(case, "properties")
        for row in r["rows"]:
            ET.SubElement(props, "property", name=row["metric"], value=json.dumps(row["now"]))
        if r["error"]:
            ET.SubElement(case, "failure", message="compile failed", type="error").text = r["error"]
        elif rg.failed(r):
            worst = [row for row in r["rows"] if row["verdict"] in rg.FAILING]
            ET.SubElement(case, "failure", message=", ".join(f"{w['metric']} {w['verdict']}" for w in worst),
                          type="regression").text = "\n".join(
                f"{w['metric']}: golden {rg.fmt(w['golden'])}, now {rg.fmt(w['now'])}, tolerance {w['tolerance']}"
                for w in worst)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"
