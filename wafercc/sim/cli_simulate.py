"""``wafercc simulate OUTDIR --inputs IDS [--model ONNX] [--steps N] [--compare] [--format text|json]``:
run a placed program tile by tile (wafercc.sim.run), or the IR of an ``--until ir`` output directory
with the reference kernels, and optionally check it against onnxruntime.

Exit status: 0 ok; 1 with ``--compare``, a step's max relative error above ``--tolerance`` or a
greedy token that differs from onnxruntime's; 2 bad input (one line ``wafercc: error: ...``):
unreadable or inconsistent output directory, a placement the simulator rejects, bad ids.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

from ..errors import WaferccError
from .errors import SimulationError

SCHEMA = "wafercc.simulate/1"
EXIT_MISMATCH, EXIT_USER_ERROR = 1, 2


def add_parser(subparsers):
    p = subparsers.add_parser("simulate", help="run a placed output directory tile by tile on token ids "
                                               "(--compare: check against onnxruntime)")
    p.add_argument("outdir", metavar="OUTDIR", help="output directory of 'wafercc compile --target ...' (one of "
                                                    "'--until ir': the IR with the reference kernels, no tiles)")
    p.add_argument("--inputs", required=True, metavar="IDS",
                   help="prompt token ids: comma-separated (sequences separated by ';') or a .npy file "
                        "of shape [seq] or [batch, seq]; for a model with pixel inputs (a ViT) a .npy float "
                        "image batch [batch, C, H, W], or ids whose rows seed one random image each")
    p.add_argument("--model", metavar="ONNX", help="the .onnx file whose weights to use (default: the file "
                                                   "schedule.json records, checked by SHA-256)")
    p.add_argument("--steps", type=int, default=9, help="forward passes: the prompt, then one token each "
                                                        "(default 9)")
    p.add_argument("--compare", action="store_true", help="recompute every step with onnxruntime on the full "
                                                          "sequence; exit 1 on a mismatch")
    p.add_argument("--tolerance", type=float, default=None,
                   help="max relative error allowed with --compare (default 1e-4, wafercc.sim.run.TOLERANCE)")
    p.add_argument("--draft", action="store_true", help="run the speculative draft's placed wafers "
                                                        "(compile --speculative) instead of the target's")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_simulate)
    return p


def parse_ids(text: str) -> np.ndarray:
    """[batch, seq] int64 from 'a,b,c[;d,e,f]' or a .npy file (a float .npy of rank >= 3: images)."""
    if text.endswith(".npy") or os.path.isfile(text):
        try:
            ids = np.load(text, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise SimulationError(f"cannot read token ids: {str(e).splitlines()[0]}", where=text) from None
        if np.issubdtype(ids.dtype, np.floating) and ids.ndim >= 3 and ids.size:
            return ids.astype(np.float32)      # images, for a model with pixel inputs
        if not np.issubdtype(ids.dtype, np.integer) or ids.ndim not in (1, 2) or not ids.size:
            raise SimulationError(f"token ids must be a non-empty integer array [seq] or [batch, seq], got "
                                  f"{ids.dtype}{list(ids.shape)}", where=text)
        return np.atleast_2d(ids).astype(np.int64)
    try:
        rows = [[int(t) for t in row.split(",") if t.strip()] for row in text.split(";")]
    except ValueError:
        raise SimulationError(f"--inputs '{text}': expected comma-separated integers or a .npy file") from None
    if not rows or not all(rows) or len({len(r) for r in rows}) != 1:
        raise SimulationError(f"--inputs '{text}': expected one or more non-empty sequences of equal length")
    if min(min(r) for r in rows) < 0:
        raise SimulationError(f"--inputs '{text}': token ids must be >= 0")
    return np.asarray(rows, np.int64)


def cmd_simulate(args) -> int:
    # imported here: building the CLI parser must not load the IR or the simulator
    from .run import TOLERANCE

    if args.tolerance is None:
        args.tolerance = TOLERANCE
    try:
        return _run(args)
    except WaferccError as e:
        line = " ".join(str(e).split("\n")[0].split()) or type(e).__name__
        sys.stderr.write(f"wafercc: error: {line}\n")
        return EXIT_USER_ERROR


def _run(args) -> int:
    from .placed import Placement
    from .run import compare_with_onnxruntime, recorded_model, simulate

    if not os.path.isdir(args.outdir):
        raise SimulationError("no such output directory", where=args.outdir)
    draft = getattr(args, "draft", False)
    if not args.model:
        args.model = recorded_model(args.outdir, draft)
    if args.steps < 1:
        raise SimulationError(f"--steps must be >= 1, got {args.steps}")
    ids = parse_ids(args.inputs)
    placement = Placement.load(args.outdir, draft=True) if draft else None
    if args.compare:
        cmp = compare_with_onnxruntime(args.outdir, args.model, ids, args.steps, tolerance=args.tolerance,
                                       placement=placement)
        sim, errors, ok = cmp.simulation, cmp.errors, cmp.ok
    else:
        cmp, sim, errors, ok = None, simulate(args.outdir, args.model, ids, args.steps, placement=placement), None, True
    doc = {"schema": SCHEMA, "outdir": args.outdir, "model": args.model, "steps": args.steps,
           # the first step's mask is [batch, tokens]: the prompt, or an image's token rows
           "batch": int(sim.sequences[0][1].shape[0]), "prompt_tokens": int(sim.sequences[0][1].shape[1]),
           "tokens": None if sim.tokens is None else sim.tokens.tolist(),
           "tiled_calls": sim.calls, "compare": bool(args.compare), "ok": bool(ok)}
    if cmp is not None:
        doc.update(errors=[float(e) for e in errors], max_error=float(max(errors)), tolerance=args.tolerance,
                   ref_tokens=None if cmp.ref_tokens is None else cmp.ref_tokens.tolist(),
                   tokens_match=bool(cmp.tokens_match))
    if args.format == "json":
        print(json.dumps(doc, indent=1, sort_keys=True))
    else:
        _text(doc, sim)
    return 0 if ok else EXIT_MISMATCH


def _text(doc: dict, sim) -> None:
    calls = ", ".join(f"{k} {v}" for k, v in sorted(doc["tiled_calls"].items())) or "none"
    print(f"simulated {doc['outdir']} with {doc['model']}: {doc['steps']} steps, batch {doc['batch']}, "
          f"{doc['prompt_tokens']} prompt tokens (tiled kernel calls: {calls})")
    for i in range(doc["steps"]):
        cols = [f"step {i:3d}"]
        if doc["tokens"] is not None:
            cols.append("token " + " ".join(str(r[i]) for r in doc["tokens"]))
        if doc["compare"]:
            ref = doc["ref_tokens"]
            cols.append(f"max rel err {doc['errors'][i]:.2e}")
            if ref is not None and [r[i] for r in ref] != [r[i] for r in doc["tokens"]]:
                cols.append("onnxruntime token " + " ".join(str(r[i]) for r in ref))
        print("  ".join(cols))
    if doc["compare"]:
        verdict = "ok" if doc["ok"] else "MISMATCH"
        toks = "" if doc["tokens"] is None else (", tokens equal onnxruntime's" if doc["tokens_match"]
                                                 else ", tokens differ from onnxruntime's")
        print(f"{verdict}: max relative error {doc['max_error']:.2e} (tolerance {doc['tolerance']:g}){toks}")
