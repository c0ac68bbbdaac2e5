"""Frontend benchmark on Llama-3.1-70B (80 layers, 70.55 B parameters, no weights anywhere).

    python benchmarks/bench_frontend.py [--model llama-3.1-70b] [--out benchmarks/results.json]

Cases, each run in a fresh subprocess (peak RSS = that process's ru_maxrss):

  config   reference config -> verified IR with wafercc.frontend.hf_config.from_config, cache disabled
           target: <= 30 s and <= 2 GB peak RSS
  onnx     a shapes-only ONNX file of the same model (meta-device export, weights are external-data
           placeholders with no data file) -> lower_onnx; the export itself is set-up, timed apart
           target: lower_onnx <= 10 s
  cache    wafercc.compile(model, until="ir") twice with an empty cache directory: a cold compile fills the cache,
           the second (new process) must hit it; target: hit, <= 5 s

Prints a table, writes the results as JSON, exits 1 if a target is missed (or a case failed).
Not part of pytest.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
GB = 1024 ** 3

TARGETS = {
    "config": {"seconds": 30.0, "peak_rss_bytes": 2 * GB},
    "onnx": {"seconds": 10.0},
    "cache": {"seconds": 5.0},
}


# --------------------------------------------------------------------------------------------
# child side: one measurement per process, result as JSON on the last stdout line
# --------------------------------------------------------------------------------------------

def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _facts(graph) -> dict:
    from wafercc.ir import model_facts

    f = model_facts(graph)
    return {"layers": f.layers, "params": f.params, "nodes": f.nodes}


def child_config(model: str, _tmp: str) -> dict:
    os.environ["WAFERCC_NO_CACHE"] = "1"
    try:
        from wafercc.frontend.hf_config import from_config
    except ImportError as e:
        return {"error": f"wafercc.frontend.hf_config.from_config is not available ({e}); "
                         f"the HF-config frontend is needed for this case"}
    t = time.perf_counter()
    graph = from_config(model)
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "peak_rss_bytes": _peak_rss(), **_facts(graph)}


def child_export(model: str, tmp: str) -> dict:
    """Set-up for the onnx case: write <tmp>/<model>.onnx without weight data."""
    import onnx
    import torch

    try:
        from wafercc.frontend import hf_config
        from wafercc.frontend.torch_frontend import to_onnx
    except ImportError as e:
        return {"error": f"wafercc's torch/HF-config frontends are not available ({e})"}
    t = time.perf_counter()
    cfg, _, where = hf_config.load_config_source(model)
    config = hf_config.build_config(cfg, where=where)
    wrapper, _ = hf_config.build_meta_model(config)
    ids = torch.zeros(1, 8, dtype=torch.long, device="meta")
    mask = torch.ones(1, 8, dtype=torch.long, device="meta")
    proto = to_onnx(wrapper, (ids, mask), input_names=["input_ids", "attention_mask"])
    path = os.path.join(tmp, f"{model}.onnx")
    onnx.save(proto, path)
    seconds = time.perf_counter() - t
    missing = sum(1 for i in proto.graph.initializer if i.data_location == onnx.TensorProto.EXTERNAL)
    return {"seconds": seconds, "path": path, "bytes": os.path.getsize(path), "placeholders": missing,
            "peak_rss_bytes": _peak_rss()}


def child_onnx(model: str, tmp: str) -> dict:
    from wafercc.frontend.onnx_frontend import lower_onnx

    path = os.path.join(tmp, f"{model}.onnx")
    t = time.perf_counter()
    graph = lower_onnx(path)
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "peak_rss_bytes": _peak_rss(), **_facts(graph)}


def child_compile(model: str, tmp: str) -> dict:
    os.environ["WAFERCC_CACHE_DIR"] = os.path.join(tmp, "cache")
    os.environ.pop("WAFERCC_NO_CACHE", None)
    import wafercc

    t = time.perf_counter()
    res = wafercc.compile(model, until="ir")
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "cached": bool(res.cached), "peak_rss_bytes": _peak_rss(), **_facts(res.graph)}


CHILDREN = {"config": child_config, "export": child_export, "onnx": child_onnx, "compile": child_compile}


def _child_main(kind: str, model: str, tmp: str) -> int:
    try:
        out = CHILDREN[kind](model, tmp)
    except Exception as e:  # report, don't crash: the parent prints the reason
        out = {"error": f"{type(e).__name__}: {' '.join(str(e).split())[:500]}"}
    print(json.dumps(out))
    return 0


# --------------------------------------------------------------------------------------------
# parent side
# --------------------------------------------------------------------------------------------

def run_child(kind: str, model: str, tmp: str, timeout: float = 1800) -> dict:
    t = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", kind, "--model", model,
                               "--tmp", tmp], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "process_seconds": time.perf_counter() - t}
    wall = time.perf_counter() - t
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        return {"error": f"child exited {proc.returncode} without a result: {tail[:500]}", "process_seconds": wall}
    out = json.loads(lines[-1])
    out["process_seconds"] = wall
    return out


def _check(case: str, res: dict) -> list[str]:
    if "error" in res:
        return [f"{case}: {res['error']}"]
    missed = []
    tgt = TARGETS.get(case, {})
    if "seconds" in tgt and res["seconds"] > tgt["seconds"]:
        missed.append(f"{case}: {res['seconds']:.1f} s > {tgt['seconds']:.0f} s")
    if "peak_rss_bytes" in tgt and res["peak_rss_bytes"] > tgt["peak_rss_bytes"]:
        missed.append(f"{case}: peak RSS {res['peak_rss_bytes'] / GB:.2f} GB > {tgt['peak_rss_bytes'] / GB:.0f} GB")
    if case == "cache" and not res.get("cached"):
        missed.append("cache: the second compile did not hit the cache")
    return missed


def _fmt_target(case: str) -> str:
    t = TARGETS.get(case, {})
    parts = []
    if "seconds" in t:
        parts.append(f"<= {t['seconds']:.0f} s")
    if "peak_rss_bytes" in t:
        parts.append(f"<= {t['peak_rss_bytes'] / GB:.0f} GB")
    if case == "cache":
        parts.append("hit")
    return ", ".join(parts) or "-"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama-3.1-70b", help="reference model name (default llama-3.1-70b)")
    ap.add_argument("--out", default=os.path.join(HERE, "results.json"), help="results JSON path")
    ap.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child_main(args.child, args.model, args.tmp)

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="wafercc-bench-") as tmp:
        print(f"[1/3] config -> IR ({args.model}, cache disabled) ...", flush=True)
        results["config"] = run_child("config", args.model, tmp)
        print("[2/3] shapes-only ONNX -> IR: exporting ...", flush=True)
        results["onnx_export"] = run_child("export", args.model, tmp)
        if "error" in results["onnx_export"]:
            results["onnx"] = {"error": f"export failed: {results['onnx_export']['error']}"}
        else:
            print("[2/3] shapes-only ONNX -> IR: lowering ...", flush=True)
            results["onnx"] = run_child("onnx", args.model, tmp)
        print("[3/3] repeated compile: cold, then cached ...", flush=True)
        results["cache_cold"] = run_child("compile", args.model, tmp)
        results["cache"] = run_child("compile", args.model, tmp)

    missed: list[str] = []
    rows = []
    for case, label in [("config", "(a) config -> IR"), ("onnx_export", "    ONNX export (set-up)"),
                        ("onnx", "(b) ONNX -> IR"), ("cache_cold", "    compile, cold"),
                        ("cache", "(c) compile, cached")]:
        res = results[case]
        miss = _check(case, res) if case in TARGETS else []
        missed += miss
        if "error" in res:
            status = "FAIL" if case in TARGETS else "error"
            rows.append((label, "-", "-", "-", "-", _fmt_target(case), status))
            continue
        rows.append((label, f"{res['seconds']:.2f}", f"{res.get('process_seconds', 0):.1f}",
                     f"{res['peak_rss_bytes'] / GB:.2f}",
                     f"{res['params']:,}" if "params" in res else "-",
                     _fmt_target(case), ("FAIL" if miss else "ok") if case in TARGETS else ""))
    head = ("case", "seconds", "process s", "peak RSS GB", "params", "target", "")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    print()
    print(f"wafercc frontend benchmark: {args.model}")
    for r in [head] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    for case, res in results.items():
        if "error" in res:
            print(f"{case}: error: {res['error']}")

    import platform
    doc = {"model": args.model, "python": platform.python_version(), "machine": platform.machine(),
           "cpus": os.cpu_count(), "targets": TARGETS, "results": results, "missed": missed,
           "ok": not missed, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        import torch
        import transformers
        doc["torch"], doc["transformers"] = torch.__version__, transformers.__version__
    except ImportError:
        pass
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {args.out}")
    if missed:
        print("targets missed:\n  " + "\n  ".join(missed), file=sys.stderr)
        return 1
    print("all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
