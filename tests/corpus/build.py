"""Build the corpus: every architecture exported with every variant that applies, cached on disk.

    python tests/corpus/build.py --out DIR [--arch A,B] [--variant V,...]

Layout: DIR/<arch>/config.json (the tiny config, input of the config frontend) and
DIR/<arch>/<variant>/model.onnx (+ side files) with DIR/<arch>/<variant>/record.json.
An entry is rebuilt only when its key changes: the config, the variant, the torch and
transformers versions and the text of the corpus modules.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import re
import sys
import time

if __package__ in (None, ""):  # run as a script: make `corpus` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import transformers  # noqa: E402

from corpus import archs, variants  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def _sources_digest() -> str:
    h = hashlib.sha256()
    for name in ("archs.py", "variants.py", "build.py", "fuse.py", "merge.py"):
        with open(os.path.join(HERE, name), "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def entry_key(arch: str, variant: variants.Variant) -> str:
    ident = {"config": archs.ARCHS[arch], "variant": dataclasses.asdict(variant), "torch": torch.__version__,
             "transformers": transformers.__version__, "sources": _sources_digest()}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_path(out: str, arch: str) -> str:
    return os.path.join(out, arch, "config.json")


def write_config(out: str, arch: str) -> str:
    path = config_path(out, arch)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(archs.config_dict(arch), f, indent=1, sort_keys=True)
    return path


def file_opset(path: str) -> int | None:
    import onnx

    model = onnx.load(path, load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _one_line(e: BaseException) -> str:
    """The error's type and the first line of its root cause (the dynamo exporter wraps every
    failure in a generic "Failed to convert ... step 3/3" error)."""
    root = e
    while root.__cause__ is not None:
        root = root.__cause__
    first = next((ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(root)).splitlines() if ln.strip()), "")
    outer = f"{type(e).__name__}: " if root is not e else ""
    return f"{outer}{type(root).__name__}: {first}"[:400]


def build_entry(out: str, arch: str, variant: variants.Variant) -> dict:
    """Export one entry unless its record has the same key; return the record."""
    entry_dir = os.path.join(out, arch, variant.name)
    rec_path = os.path.join(entry_dir, "record.json")
    key = entry_key(arch, variant)
    if os.path.exists(rec_path):
        with open(rec_path) as f:
            old = json.load(f)
        if old.get("key") == key and (old["export_error"] or os.path.exists(os.path.join(out, old["path"]))):
            return old
    path = os.path.join(entry_dir, "model.onnx")
    os.makedirs(entry_dir, exist_ok=True)
    for name in os.listdir(entry_dir):
        os.remove(os.path.join(entry_dir, name))  # a stale side file must not survive a rebuild
    error, t = None, time.perf_counter()
    try:
        if variant.from_variant:
            src = build_entry(out, arch, variants.VARIANTS[variant.from_variant])
            if src["export_error"]:
                raise RuntimeError(f"source variant {variant.from_variant} failed to export")
            variants.derive(arch, variant, os.path.join(out, src["path"]), path)
        else:
            variants.export(arch, variant, path)
    except Exception as e:  # an exporter failure is a corpus entry, not a corpus bug
        error = _one_line(e)
    seconds = time.perf_counter() - t
    rec = {"arch": arch, "kind": archs.ARCHS[arch][1], "variant": variant.name, "key": key,
           "path": os.path.relpath(path, out), "files": sorted(os.listdir(entry_dir)),
           "params_torch": archs.unique_param_count(archs.build_model(arch)),
           "kv_bytes_per_token": archs.kv_bytes_per_token(arch),
           "opset": None if error else file_opset(path),
           "export_seconds": round(seconds, 3), "export_error": error}
    with open(rec_path, "w") as f:
        json.dump(rec, f, indent=1, sort_keys=True)
    return rec


def build(out: str, arch_names=None, variant_names=None) -> list[dict]:
    records = []
    for arch in arch_names or archs.ARCHS:
        write_config(out, arch)
        for name in variant_names or variants.VARIANTS:
            v = variants.VARIANTS[name]
            if v.applies(arch):
                records.append(build_entry(out, arch, v))
    return records


def _names(text: str | None, known) -> list[str] | None:
    if not text:
        return None
    names = text.split(",")
    bad = [n for n in names if n not in known]
    if bad:
        raise SystemExit(f"unknown: {', '.join(bad)} (known: {', '.join(known)})")
    return names


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--arch", help="comma-separated architectures (default all)")
    ap.add_argument("--variant", help="comma-separated variants (default all)")
    a = ap.parse_args(argv)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" per export
    for r in build(a.out, _names(a.arch, archs.ARCHS), _names(a.variant, variants.VARIANTS)):
        status = r["export_error"] or "exported"
        print(f"{r['arch']:<14} {r['variant']:<16} {r['export_seconds']:7.2f}s  {status}", flush=True)


if __name__ == "__main__":
    main()
