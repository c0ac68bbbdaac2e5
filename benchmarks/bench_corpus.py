"""Corpus benchmark: lower every corpus ONNX file and every tiny config, classify each result.

    python benchmarks/bench_corpus.py [--corpus DIR] [--arch A,B] [--variant V,...]
                                      [--timeout 60] [--out benchmarks/corpus_results.json]

The corpus (tests/corpus/build.py) is built or reused in DIR, one subprocess per architecture.
Each file is then lowered as a user would, `wafercc compile FILE --until ir --format json -o OUT
--no-cache`, in a subprocess with a timeout, and classified:

  ok         exit 0; the IR's params and kv_bytes_per_token (summary.json) are compared with
             torch's unique parameter count and the config's KV bytes per token
  refused    exit 2 with one `wafercc: error:` line and no traceback (the line is kept)
  traceback  any other exit, or a Python traceback on stderr (the last stderr line is kept)
  timeout    no answer within the timeout
  export     the exporter itself failed (recorded by the builder; nothing to lower)

Writes the results as JSON and prints a table (architecture x variant) and totals. Not part of pytest.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from corpus import archs, variants  # noqa: E402

BUILD = os.path.join(ROOT, "tests", "corpus", "build.py")
WAFERCC = [sys.executable, "-m", "wafercc.cli"]
ERROR_PREFIX = "wafercc: error:"
CODES = {"ok": "ok", "refused": "R", "traceback": "TB", "timeout": "TO", "export": "x"}


def code(r: dict) -> str:
    """The table cell: ok* marks a lowering whose params or KV bytes differ from torch's."""
    mismatch = r["status"] == "ok" and not (r["params_match"] and r["kv_match"])
    return "ok*" if mismatch else CODES[r["status"]]


def classify(returncode: int | None, stderr: str, timed_out: bool = False) -> dict:
    """The class of one compile from its exit status and stderr, with the line that explains it."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if timed_out:
        return {"status": "timeout", "error": None}
    has_tb = any(ln.startswith("Traceback (most recent call last)") for ln in lines)
    errors = [ln for ln in lines if ln.startswith(ERROR_PREFIX)]
    if returncode == 0 and not has_tb:
        return {"status": "ok", "error": None}
    if returncode == 2 and not has_tb and len(errors) == 1:
        return {"status": "refused", "error": errors[0]}
    return {"status": "traceback", "error": lines[-1] if lines else f"exit {returncode}, no stderr"}


def compile_one(source: str, outdir: str, timeout: float) -> dict:
    cmd = [*WAFERCC, "compile", source, "--until", "ir", "--format", "json", "-o", outdir, "--no-cache"]
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        res = classify(p.returncode, p.stderr)
    except subprocess.TimeoutExpired:
        res = classify(None, "", timed_out=True)
    res["seconds"] = round(time.perf_counter() - t, 2)
    if res["status"] == "ok":
        with open(os.path.join(outdir, "summary.json")) as f:
            s = json.load(f)
        res["params_ir"], res["kv_bytes_per_token_ir"] = s["params"], s["kv_bytes_per_token"]
    return res


def compare(res: dict, params: int, kv: int) -> dict:
    """Attach the torch/config numbers and, for an ok compile, whether the IR's agree."""
    res.update(params_torch=params, kv_bytes_per_token=kv)
    if res["status"] == "ok":
        res["params_match"] = res["params_ir"] == params
        res["kv_match"] = res["kv_bytes_per_token_ir"] == kv
    return res


def build_corpus(corpus: str, arch_names, variant_names, timeout: float, jobs: int = 1) -> None:
    def one(arch):
        cmd = [sys.executable, BUILD, "--out", corpus, "--arch", arch]
        if variant_names:
            cmd += ["--variant", ",".join(variant_names)]
        with open(os.path.join(corpus, f"build-{arch}.log"), "w") as log:
            try:  # an exporter that hangs or crashes loses its arch's missing entries, nothing else
                subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
            except subprocess.TimeoutExpired:
                pass

    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, arch_names))


def load_record(corpus: str, arch: str, variant: str) -> dict:
    path = os.path.join(corpus, arch, variant, "record.json")
    if not os.path.exists(path):  # the builder died or timed out before this entry
        return {"arch": arch, "variant": variant, "path": None, "export_error": "no record (builder died)",
                "params_torch": None, "kv_bytes_per_token": archs.kv_bytes_per_token(arch)}
    with open(path) as f:
        return json.load(f)


def _lower(task: tuple, corpus: str, timeout: float, work: str) -> dict:
    arch, label, rec, params = task
    if label == "config":
        res = compile_one(os.path.join(corpus, arch, "config.json"), os.path.join(work, arch, label), timeout)
        return compare(dict(res, arch=arch, variant=label, source="config"), params, archs.kv_bytes_per_token(arch))
    if rec["export_error"]:
        res = {"status": "export", "error": rec["export_error"]}
    else:
        res = compile_one(os.path.join(corpus, rec["path"]), os.path.join(work, arch, label), timeout)
    return compare(dict(res, arch=arch, variant=label, source="onnx", opset=rec.get("opset"),
                        export_seconds=rec.get("export_seconds")), rec["params_torch"], rec["kv_bytes_per_token"])


def run(corpus: str, arch_names, variant_names, timeout: float, work: str, jobs: int = 1) -> list[dict]:
    results = []
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        for arch in arch_names:
            recs = [load_record(corpus, arch, v) for v in variant_names or variants.VARIANTS
                    if variants.VARIANTS[v].applies(arch)]
            params = next((r["params_torch"] for r in recs if r["params_torch"] is not None), None)
            tasks = [(arch, r["variant"], r, None) for r in recs] + [(arch, "config", None, params)]
            done = list(pool.map(lambda t: _lower(t, corpus, timeout, work), tasks))
            results += done
            print(f"{arch:<14} " + " ".join(code(r) for r in done), flush=True)
    return results


def totals(results: list[dict]) -> dict:
    out = {}
    for source in ("onnx", "config"):
        c = collections.Counter(r["status"] for r in results if r["source"] == source)
        out[source] = {k: c.get(k, 0) for k in CODES}
        out[source]["ok_numbers_differ"] = sum(code(r) == "ok*" for r in results if r["source"] == source)
    return out


def failure_class(r: dict) -> str:
    """An error line without its file path, colours, quoted names and numbers, so one cause is one class."""
    line = re.sub(r"\x1b\[[0-9;]*m", "", (r["error"] or "").removeprefix(ERROR_PREFIX).strip())
    line = re.sub(r"^\S+\.(onnx|json): ", "", line)
    return f"{r['status']}: " + re.sub(r"\d+", "N", re.sub(r"'[^']*'", "'…'", line))


def failure_classes(results: list[dict]) -> list[dict]:
    """Every failure class, most frequent first, with its count and one example."""
    groups = collections.defaultdict(list)
    for r in results:
        if r["status"] != "ok":
            groups[failure_class(r)].append(r)
        elif code(r) == "ok*":
            differ = [k for k, m in (("params", r["params_match"]), ("KV bytes", r["kv_match"])) if not m]
            r = dict(r, error=f"IR params {r['params_ir']} vs torch {r['params_torch']}, IR KV bytes/token "
                              f"{r['kv_bytes_per_token_ir']} vs config {r['kv_bytes_per_token']}")
            groups[f"ok*: {' and '.join(differ)} differ ({r['source']})"].append(r)
    return [{"class": k, "count": len(v), "example": f"{v[0]['arch']} {v[0]['variant']}: {v[0]['error']}"}
            for k, v in sorted(groups.items(), key=lambda kv: -len(kv[1]))]


def table(results: list[dict]) -> str:
    cols = [*dict.fromkeys(r["variant"] for r in results)]
    cell = {(r["arch"], r["variant"]): code(r) for r in results}
    rows = [["arch", *cols]] + [[a, *(cell.get((a, c), "") for c in cols)]
                                for a in dict.fromkeys(r["arch"] for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols) + 1)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in rows)


def report(doc: dict) -> None:
    print("\n" + table(doc["results"]) + "\n\ncodes: " + ", ".join(f"{v}={k}" for k, v in CODES.items())
          + ", ok*=ok with params or KV bytes differing from torch's")
    for source, c in doc["totals"].items():
        print(f"{source:<7} " + "  ".join(f"{k} {n}" for k, n in c.items()))
    print("\nfailure classes:")
    for c in failure_classes(doc["results"]):
        print(f"{c['count']:4d}  {c['class']}\n      e.g. {c['example']}")
    print(f"\nbuild {doc['build_seconds']} s, total {doc['total_seconds']} s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=os.path.join(tempfile.gettempdir(), "wafercc-corpus"))
    ap.add_argument("--arch", help="comma-separated architectures (default all)")
    ap.add_argument("--variant", help="comma-separated variants (default all)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per compile")
    ap.add_argument("--build-timeout", type=float, default=900.0, help="seconds per architecture's build")
    ap.add_argument("--jobs", type=int, default=1, help="builds and compiles run at once")
    ap.add_argument("--out", default=os.path.join(HERE, "corpus_results.json"))
    ap.add_argument("--report", metavar="JSON", help="only print the tables of an earlier run's results")
    a = ap.parse_args(argv)
    if a.report:
        with open(a.report) as f:
            report(json.load(f))
        return 0
    arch_names = a.arch.split(",") if a.arch else list(archs.ARCHS)
    variant_names = a.variant.split(",") if a.variant else None
    os.makedirs(a.corpus, exist_ok=True)
    t = time.perf_counter()
    build_corpus(a.corpus, arch_names, variant_names, a.build_timeout, a.jobs)
    build_seconds = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as work:
        results = run(a.corpus, arch_names, variant_names, a.timeout, work, a.jobs)
    doc = {"corpus": a.corpus, "variants": variant_names or list(variants.VARIANTS), "jobs": a.jobs,
           "build_seconds": round(build_seconds, 1), "total_seconds": round(time.perf_counter() - t, 1),
           "totals": totals(results), "results": results}
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=1)
    report(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
