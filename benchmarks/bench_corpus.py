"""Corpus benchmark: lower every corpus ONNX file and every tiny config, classify each result.

    python benchmarks/bench_corpus.py [--corpus DIR] [--arch A,B] [--variant V,...] [--no-build]
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
  wrong      lowered, but the IR computes other numbers than onnxruntime (the worst class)

Every lowered file that has its weights (not `dynamo-nodata`, not a config) is then checked as a user
would, `wafercc simulate OUT --model FILE --inputs IDS.npy --compare --format json` (the reference
kernels on the IR, against onnxruntime on the same inputs; the file's own shapes when they are static,
a static with-past file's traced cache filled by the IR's prefill), in a subprocess with the same
timeout: exit 0 keeps `ok` (max relative error within wafercc.sim.run.TOLERANCE, greedy tokens equal),
exit 1 is `wrong`, anything else `not compared` with its line (`ok?` in the table).

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

from wafercc.sim.run import TOLERANCE  # noqa: E402  simulate --compare's default, the one checked here

BUILD = os.path.join(ROOT, "tests", "corpus", "build.py")
WAFERCC = [sys.executable, "-m", "wafercc.cli"]
ERROR_PREFIX = "wafercc: error:"
CODES = {"ok": "ok", "wrong": "W", "refused": "R", "traceback": "TB", "timeout": "TO", "export": "x"}
NOT_COMPARED = "not compared"
NO_WEIGHTS = ("dynamo-nodata",)     # the file without its data: nothing to compute with
STEPS = 3                           # dynamic shapes: the prompt, then two decode (or grown) steps


def code(r: dict) -> str:
    """The table cell: ok* marks a lowering whose params or KV bytes differ from torch's, ok? one
    whose numbers could not be compared with onnxruntime's (a ? after ok*)."""
    if r["status"] != "ok":
        return CODES[r["status"]]
    cell = "ok*" if not (r["params_match"] and r["kv_match"]) else "ok"
    return cell + "?" if r.get("numerics") == NOT_COMPARED else cell


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


def numerics(returncode: int | None, stdout: str, stderr: str, timed_out: bool = False) -> dict:
    """The numerics of one `simulate --compare`: ok (exit 0), wrong (exit 1: above the tolerance, or
    greedy tokens that differ), else not compared with the line that says why."""
    if timed_out:
        return {"numerics": NOT_COMPARED, "numerics_error": "timeout"}
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if returncode in (0, 1) and not any(ln.startswith("Traceback") for ln in lines):
        try:
            doc = json.loads(stdout)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and "max_error" in doc:
            return {"numerics": "ok" if returncode == 0 else "wrong", "max_rel_error": doc["max_error"],
                    "tokens_match": doc["tokens_match"], "numerics_error": None if returncode == 0 else
                    f"max relative error {doc['max_error']:.2e} (tolerance {doc['tolerance']:g})"
                    + ("" if doc["tokens_match"] else ", greedy tokens differ")}
    return {"numerics": NOT_COMPARED, "numerics_error": lines[-1] if lines else f"exit {returncode}, no stderr"}


def compare_inputs(path: str):
    """Token ids (or image seeds) for `simulate --inputs` and the steps: the file's own shape where it is
    static (one step; a traced cache's positions first), else 2 x 8 ids and STEPS steps."""
    import numpy as np
    import onnx

    g = onnx.load(path, load_external_data=False).graph
    inits = {i.name for i in g.initializer}
    ins = [i for i in g.input if i.name not in inits]
    dims = {i.name: [d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
            for i in ins}
    first = next((n for n in dims if n in ("input_ids", "pixel_values")), ins[0].name)
    shape = dims[first]
    static = all(d is not None for d in shape)
    past = max((d[2] for n, d in dims.items() if n.lower().startswith(("past", "cache")) and len(d) > 2
                and d[2] is not None), default=0)
    batch = shape[0] if shape and shape[0] else 2
    seq = 1 if first == "pixel_values" else (shape[1] if static and len(shape) > 1 else 8) + past
    ids = (np.arange(batch * seq, dtype=np.int64).reshape(batch, seq) * 7 + 3) % 128
    return ids, 1 if static else STEPS


def compare_one(path: str, outdir: str, timeout: float) -> dict:
    """`wafercc simulate OUTDIR --compare` on an `--until ir` output directory, as a user runs it."""
    ids, steps = compare_inputs(path)
    import numpy as np
    np.save(os.path.join(outdir, "compare_ids.npy"), ids)
    cmd = [*WAFERCC, "simulate", outdir, "--model", path, "--inputs", os.path.join(outdir, "compare_ids.npy"),
           "--steps", str(steps), "--compare", "--format", "json"]
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        res = numerics(p.returncode, p.stdout, p.stderr)
    except subprocess.TimeoutExpired:
        res = numerics(None, "", "", timed_out=True)
    res["compare_seconds"] = round(time.perf_counter() - t, 2)
    return res


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
    if res["status"] in ("ok", "wrong"):
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
        path, outdir = os.path.join(corpus, rec["path"]), os.path.join(work, arch, label)
        res = compile_one(path, outdir, timeout)
        if res["status"] == "ok" and label not in NO_WEIGHTS:
            res.update(compare_one(path, outdir, timeout))
            if res["numerics"] == "wrong":
                res.update(status="wrong", error=res["numerics_error"])
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
        out[source]["ok_numbers_differ"] = sum(code(r).startswith("ok*") for r in results if r["source"] == source)
        out[source]["ok_not_compared"] = sum(code(r).endswith("?") for r in results if r["source"] == source)
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
            continue
        if r.get("numerics") == NOT_COMPARED:
            groups[failure_class(dict(r, status="ok, " + NOT_COMPARED, error=r["numerics_error"]))].append(
                dict(r, error=r["numerics_error"]))
        if code(r).startswith("ok*"):
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
          + ", ok*=ok with params or KV bytes differing from torch's, ok?=ok but numerics not compared"
          + f" (ok: simulate --compare within {TOLERANCE:g} max relative error)")
    wrong = [r for r in doc["results"] if r["status"] == "wrong"]
    print(f"\nwrong (lowered, numbers differ from onnxruntime's): {len(wrong)}")
    for r in wrong:
        print(f"  {r['arch']} {r['variant']}: {r['error']}")
    nc = [r for r in doc["results"] if r.get("numerics") == NOT_COMPARED]
    print(f"not compared: {len(nc)}")
    for r in nc:
        print(f"  {r['arch']} {r['variant']}: {r['numerics_error']}")
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
    ap.add_argument("--no-build", action="store_true", help="use the corpus as it is (do not run the builder)")
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
    if not a.no_build:
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
