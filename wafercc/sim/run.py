"""Run a placed program (an output directory of ``wafercc compile``) through the tiled simulator.

``simulate(outdir, model, prompt, steps)`` greedy-decodes with the tiled kernels: the prompt, then
one token per step from the per-tile KV caches.  A model without a KV cache (an encoder) is run on
the whole sequence each step instead, the sequence growing by one token (the prompt's tokens in
turn).  A model with pixel inputs (``graph.meta["pixel_inputs"]``, a ViT) gets one image batch per step:
the images given (a float array [batch, C, H, W]), or random images seeded by each row of the ids; the
IR reads them as patch rows (wafercc.frontend.onnx_patches.patch_rows), onnxruntime as pixels.  ``compare_with_onnxruntime`` runs the same steps and recomputes each one with onnxruntime
on the full sequence, as the reference interpreter's tests do.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from .errors import SimulationError
from .placed import Placement
from .reference import Interpreter
from .tiled import TiledKernels
from .weights import load_weights

TOLERANCE = 1e-4


@dataclasses.dataclass
class Simulation:
    logits: list            # the first graph output of every step ([batch, tokens of the step, ...])
    tokens: np.ndarray | None   # [batch, steps] greedy tokens (decoders); None for encoders
    sequences: list         # (ids, mask) fed to each step, full sequence so far
    calls: dict             # op kind -> tiled kernel calls (0 would mean the reference ran instead)


@dataclasses.dataclass
class Comparison:
    errors: list            # max relative error of each step: max |sim - ort| / max |ort| (unpadded tokens)
    tokens: np.ndarray | None
    ref_tokens: np.ndarray | None
    tolerance: float
    simulation: Simulation

    @property
    def tokens_match(self) -> bool:
        return self.tokens is None or np.array_equal(self.tokens, self.ref_tokens)

    @property
    def ok(self) -> bool:
        return max(self.errors, default=0.0) <= self.tolerance and self.tokens_match


def is_decoder(graph) -> bool:
    return any(n.op == "attention" and "k_cache" in n.inputs for n in graph.nodes)


def _extra_inputs(interp: Interpreter) -> dict:
    """Graph inputs besides the ids and the mask: ids the exporter computed from buffers
    (BERT's positions and token types) get positions and zeros; anything else is an error."""
    g = interp.graph
    pixels = pixel_inputs(g)
    ids = None if pixels else interp._ids_input()
    out = {}
    for name in g.inputs:
        low = name.lower()
        if name == ids or name in pixels or "mask" in low or name == "position_ids":
            continue  # the interpreter feeds these
        if "position" in low:
            out[name] = lambda ctx: ctx.positions
        elif "token_type" in low:
            out[name] = lambda ctx: np.zeros_like(ctx.positions)
        else:
            raise SimulationError(f"graph input '{name}' has no value the simulator knows how to make")
    return out


def pixel_inputs(graph) -> dict:
    """IR input name -> how it cuts an image into patch rows (docs/ir.md, "Pixel inputs")."""
    return dict(graph.meta.get("pixel_inputs") or {})


def _images(prompt, pixels: dict, steps: int) -> list[dict]:
    """Per step, {input name: images [batch, C, H, W] float32}: ``prompt`` itself when it is a float
    array of that shape (every step), else random normal images seeded by each row of the ids."""
    a = np.asarray(prompt)
    out = []
    for k in range(steps):
        step = {}
        for name, spec in pixels.items():
            image = [int(d) for d in spec["image"]]
            if np.issubdtype(a.dtype, np.floating):
                img = a[None] if a.ndim == len(image) else a
                if img.ndim != 1 + len(image) or list(img.shape[1:]) != image:
                    raise SimulationError(f"images {list(a.shape)} are not [batch, {', '.join(map(str, image))}] "
                                          f"for pixel input '{name}'")
                step[name] = img.astype(np.float32)
                continue
            ids, _ = _prompt(a, None)
            rows = [np.random.default_rng([int(v) for v in row] + [k]).standard_normal(image) for row in ids]
            step[name] = np.stack(rows).astype(np.float32)
        out.append(step)
    return out


def _simulate_pixels(interp, pixels, prompt, steps, extra, out, tk) -> Simulation:
    """A vision model: each step one image batch, the whole token sequence of each image."""
    from ..frontend.onnx_patches import patch_rows

    logits, seqs = [], []
    for images in _images(prompt, pixels, steps):
        feeds = {name: patch_rows(img, pixels[name]) for name, img in images.items()}
        b, s = next(iter(feeds.values())).shape[:2]
        interp.reset(b)
        mask = np.ones((b, s), np.int64)
        logits.append(interp.step(None, mask, {**extra, **feeds})[out])
        seqs.append((images, mask))
    return Simulation(logits, None, seqs, dict(tk.calls))


def _prompt(prompt_ids, attention_mask):
    ids = np.asarray(prompt_ids)
    ids = ids[None] if ids.ndim == 1 else ids
    if ids.ndim != 2 or not ids.size or not np.issubdtype(ids.dtype, np.integer):
        raise SimulationError("prompt must be a non-empty integer array [batch, seq], got "
                              f"{ids.dtype}{list(ids.shape)}")
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask, np.int64).reshape(ids.shape)
    return ids.astype(np.int64), mask.astype(np.int64)


def recorded_model(outdir) -> str:
    """The ONNX file ``outdir`` was compiled from, as its schedule.json records it (path and SHA-256);
    SimulationError if none is recorded, the file is gone or its content changed since."""
    import json

    from ..cache import file_digest

    path = os.path.join(os.fspath(outdir), "schedule.json")
    try:
        with open(path) as f:
            src = json.load(f).get("source")
    except (OSError, ValueError) as e:
        raise SimulationError(f"cannot read the schedule: {e}", where=path) from None
    if not src:
        raise SimulationError("the schedule records no ONNX source (compiled from a config or a reference "
                              "model): pass the .onnx file (--model)", where=path)
    onnx = src.get("onnx")
    if not onnx or not os.path.isfile(onnx):
        raise SimulationError(f"the recorded model file {onnx!r} no longer exists: pass it (--model)", where=path)
    if file_digest(onnx) != src.get("sha256"):
        raise SimulationError(f"the recorded model file {onnx} changed since it was compiled "
                              "(SHA-256 differs): recompile, or pass the right file (--model)", where=path)
    return onnx


def load(outdir, model_path) -> tuple[Placement, dict]:
    placement = Placement.load(os.fspath(outdir))
    return placement, load_weights(placement.graph, model_path)


def simulate(outdir, model_path, prompt_ids, steps: int, *, attention_mask=None, dtype=np.float32,
             placement: Placement | None = None, weights: dict | None = None, tiled: bool = True) -> Simulation:
    """``steps`` forward passes through the tiles of ``outdir`` (``tiled=False``: the reference
    kernels on the same IR, for comparison).  ``model_path`` None: the file the schedule records."""
    if steps < 1:
        raise SimulationError(f"steps must be >= 1, got {steps}")
    if placement is None:
        placement = Placement.load(os.fspath(outdir))
    if weights is None:
        weights = load_weights(placement.graph, model_path if model_path is not None else recorded_model(outdir))
    ids, mask = (None, None) if pixel_inputs(placement.graph) else _prompt(prompt_ids, attention_mask)
    tk = TiledKernels(placement, dtype)
    interp = Interpreter(placement.graph, weights, tk.kernels() if tiled else None,
                         context=placement.context or 1 << 20)
    extra = _extra_inputs(interp)
    out = placement.graph.outputs[0]
    pixels = pixel_inputs(placement.graph)
    if pixels:
        return _simulate_pixels(interp, pixels, prompt_ids, steps, extra, out, tk)
    logits, seqs = [], []
    if is_decoder(placement.graph):
        if ids.shape[1] + steps - 1 > interp.context:
            raise SimulationError(f"{ids.shape[1]} prompt tokens + {steps - 1} more exceed the compiled "
                                  f"context of {interp.context}")
        interp.reset(ids.shape[0])
        step_ids, step_mask, tokens = ids, mask, []
        for _ in range(steps):
            seqs.append((ids, mask))
            y = interp.step(step_ids, step_mask, extra)[out]
            logits.append(y)
            tokens.append(np.argmax(y[:, -1], axis=-1))
            step_ids = tokens[-1][:, None].astype(np.int64)
            step_mask = np.ones_like(step_ids)
            ids, mask = np.concatenate([ids, step_ids], 1), np.concatenate([mask, step_mask], 1)
        return Simulation(logits, np.stack(tokens, axis=1), seqs, dict(tk.calls))
    first = ids
    for i in range(steps):  # encoder: the whole sequence each time
        seqs.append((ids, mask))
        interp.reset(ids.shape[0])
        logits.append(interp.step(ids, mask, extra)[out])
        ids = np.concatenate([ids, first[:, i % first.shape[1]][:, None]], 1)
        mask = np.concatenate([mask, mask[:, -1:]], 1)   # right-padded rows stay padded
    return Simulation(logits, None, seqs, dict(tk.calls))


def _ort_feeds(sess, ids, mask):
    """onnxruntime's inputs for one step: ``ids`` [batch, seq] token ids, or a dict of the pixel
    inputs' images by name (then ``mask`` covers the image's tokens: only a mask input uses it)."""
    feeds = {}
    for i in sess.get_inputs():
        low = i.name.lower()
        if isinstance(ids, dict):
            if i.name not in ids:
                raise SimulationError(f"onnxruntime input '{i.name}' has no value the simulator knows how to make")
            feeds[i.name] = ids[i.name]
        elif low == "input_ids":
            feeds[i.name] = ids
        elif "mask" in low:
            feeds[i.name] = mask
        elif "position" in low:
            feeds[i.name] = np.broadcast_to(np.arange(ids.shape[1]), ids.shape).astype(np.int64)
        elif "token_type" in low:
            feeds[i.name] = np.zeros_like(ids)
        else:
            raise SimulationError(f"onnxruntime input '{i.name}' has no value the simulator knows how to make")
        got = feeds[i.name].shape
        if len(i.shape) != len(got) or any(isinstance(d, int) and d != g for d, g in zip(i.shape, got)):
            raise SimulationError(f"onnxruntime input '{i.name}' is fixed to {list(i.shape)} (a static-shape export) "
                                  f"but this step feeds {list(got)}: compare with a dynamic-shape export of the model")
    return feeds


def rel_err(got, ref, valid=None) -> float:
    d = np.abs(np.asarray(got, np.float64) - np.asarray(ref, np.float64))
    ref = np.abs(np.asarray(ref, np.float64))
    if valid is not None:
        d, ref = d[valid], ref[valid]
    den = ref.max() if ref.size else 0.0
    return float(d.max() / den) if den > 0 else float(d.max(initial=0.0))


def compare_with_onnxruntime(outdir, onnx_path, prompt, steps: int, *, attention_mask=None,
                             tolerance: float = TOLERANCE, dtype=np.float32,
                             placement: Placement | None = None) -> Comparison:
    """Simulate ``steps`` steps and recompute each with onnxruntime on the full sequence so far;
    the errors are over the tokens each step fed (unpadded ones only)."""
    import onnxruntime as ort

    if onnx_path is None:
        onnx_path = recorded_model(outdir)
    sim = simulate(outdir, onnx_path, prompt, steps, attention_mask=attention_mask, dtype=dtype,
                   placement=placement)
    try:
        sess = ort.InferenceSession(os.fspath(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - an onnxruntime load failure, in one line
        raise SimulationError(f"onnxruntime cannot load the model: {str(e).splitlines()[0][:200]}",
                              where=os.fspath(onnx_path)) from None
    errors, ref_tokens = [], []
    for got, (ids, mask) in zip(sim.logits, sim.sequences):
        try:
            ref = sess.run(None, _ort_feeds(sess, ids, mask))[0]
        except SimulationError:
            raise
        except Exception as e:  # noqa: BLE001 - an onnxruntime run failure, in one line
            raise SimulationError(f"onnxruntime cannot run the model: {str(e).splitlines()[0][:200]}",
                                  where=os.fspath(onnx_path)) from None
        ref = ref[:, -got.shape[1]:]                 # the positions this step fed
        if ref.shape != got.shape:
            raise SimulationError(f"onnxruntime output {list(ref.shape)} vs simulated {list(got.shape)}")
        valid = np.broadcast_to(mask[:, -got.shape[1]:].astype(bool).reshape(
            mask.shape[0], -1, *([1] * (got.ndim - 2))), got.shape)
        errors.append(rel_err(got, ref, valid))
        ref_tokens.append(np.argmax(ref[:, -1], axis=-1))
    rt = np.stack(ref_tokens, axis=1) if sim.tokens is not None else None
    return Comparison(errors, sim.tokens, rt, tolerance, sim)
