"""Run a placed program (an output directory of ``wafercc compile``) through the tiled simulator.

``simulate(outdir, model, prompt, steps)`` greedy-decodes with the tiled kernels: the prompt, then
one token per step from the per-tile KV caches.  A model without a KV cache (an encoder) is run on
the whole sequence each step instead, the sequence growing by one token (the prompt's tokens in
turn).  A model with pixel inputs (``graph.meta["pixel_inputs"]``, a ViT) gets one image batch per step:
the images given (a float array [batch, C, H, W]), or random images seeded by each row of the ids; the
IR reads them as patch rows (wafercc.frontend.onnx_patches.patch_rows), onnxruntime as pixels.  ``compare_with_onnxruntime`` runs the same steps and recomputes each one with onnxruntime
on the full sequence, as the reference interpreter's tests do.

An output directory of ``wafercc compile --until ir`` (model.ir, no schedule.json) runs the same steps
with the reference kernels (no tiles).  A with-past file (``past.*`` inputs, ``graph.meta["past_inputs"]``)
gets an empty cache from onnxruntime's side when its past length is dynamic; a static-shape file fixes
the cache to its traced length, so its one step is the IR's prefill of that many tokens, then the file's
new tokens fed to onnxruntime with the IR's own cache as the past (``compare_with_onnxruntime``).
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from .errors import SimulationError

ONNXRUNTIME_SECONDS = 1800.0            # the reference run of --compare, all steps
ONNXRUNTIME_MEMORY = 16 * 1024 ** 3     # what that child may add to the compiler's address space
from .placed import Placement, _read_graph
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
    past: dict | None = None  # ONNX past input -> the cache after a separate prefill (simulate(prefill=))


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
    offsets = g.meta.get("position_offsets") or {}
    for name in g.inputs:
        low = name.lower()
        if name == ids or name in pixels or "mask" in low or name == "position_ids":
            continue  # the interpreter feeds these
        if name in offsets:   # positions + c, as the frontend probed them (OPT, RoBERTa: c = 2)
            out[name] = lambda ctx, c=int(offsets[name]): ctx.positions + c
        elif "position" in low:
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


def _simulate_pixels(interp, pixels, prompt, steps, extra, out, calls) -> Simulation:
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
    return Simulation(logits, None, seqs, calls())


def _past_feeds(graph, interp) -> dict:
    """The interpreter's KV caches by the ONNX past input each stands for (graph.meta["past_inputs"])."""
    names = graph.meta.get("past_inputs") or {}
    out = {}
    for node in graph.nodes:
        for r in ("k", "v"):
            cache = node.inputs.get(f"{r}_cache") if node.op == "attention" else None
            if cache is None:
                continue
            if cache not in names:
                raise SimulationError(f"KV cache '{cache}' records no ONNX past input to feed (recompile the file)")
            if r == "v" and node.attrs.get("kv_lora_rank") and _interleaved_rope(graph, node):
                # the IR caches MLA's rotary key in its interleaved order; DeepSeek's exporter keeps it
                # de-interleaved (evens, then odds): the same vector permuted, which a past cannot take
                raise SimulationError(f"attention '{node.name}': the IR's MLA cache holds the rotary key interleaved "
                                      "and the file's past de-interleaved; compare a dynamic-past export instead")
            entry = interp.kv[node.name]
            out[names[cache]] = entry[r][:, :, :entry["len"]].copy()
    return out


def _interleaved_rope(graph, node) -> bool:
    """An interleaved rotary produces one of ``node``'s inputs (MLA's shared rotary key)."""
    producers = {o: n for n in graph.nodes for o in n.outputs}
    return any(producers.get(v) is not None and producers[v].op == "rotary" and producers[v].attrs.get("interleaved")
               for v in node.inputs.values())


def _prompt(prompt_ids, attention_mask):
    ids = np.asarray(prompt_ids)
    ids = ids[None] if ids.ndim == 1 else ids
    if ids.ndim != 2 or not ids.size or not np.issubdtype(ids.dtype, np.integer):
        raise SimulationError("prompt must be a non-empty integer array [batch, seq], got "
                              f"{ids.dtype}{list(ids.shape)}")
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask, np.int64).reshape(ids.shape)
    return ids.astype(np.int64), mask.astype(np.int64)


def is_placed(outdir) -> bool:
    """A placed output directory (schedule.json); else an IR-only one (``--until ir``), run by the reference."""
    return os.path.isfile(os.path.join(os.fspath(outdir), "schedule.json"))


def recorded_model(outdir, draft: bool = False) -> str:
    """The ONNX file ``outdir`` was compiled from, as its schedule.json (or, for an IR-only output
    directory, model.ir's meta) records it, path and SHA-256; SimulationError if none is recorded,
    the file is gone or its content changed since."""
    import json

    from ..cache import file_digest

    path = os.path.join(os.fspath(outdir), "schedule.json")
    if not is_placed(outdir):
        meta = _read_graph(os.fspath(outdir)).meta
        path = os.path.join(os.fspath(outdir), "model.ir")
        src = {"onnx": meta["onnx_path"], "sha256": meta.get("onnx_sha256")} if meta.get("onnx_path") else None
    else:
        try:
            with open(path) as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            raise SimulationError(f"cannot read the schedule: {e}", where=path) from None
        if draft and not isinstance(doc.get("draft"), dict):
            raise SimulationError("the schedule holds no speculative draft (compile with --speculative)", where=path)
        src = (doc["draft"] if draft else doc).get("source")
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
             placement: Placement | None = None, weights: dict | None = None, tiled: bool = True,
             prefill: int = 0) -> Simulation:
    """``steps`` forward passes through the tiles of ``outdir`` (``tiled=False``, or an IR-only output
    directory: the reference kernels on the same IR).  ``model_path`` None: the file the outdir records.
    ``prefill`` > 0 (decoders): the first ``prefill`` prompt tokens are one step of their own, the rest
    of the prompt the next (a filled cache before the first compared step, Simulation.past)."""
    if steps < 1:
        raise SimulationError(f"steps must be >= 1, got {steps}")
    if placement is None and not is_placed(outdir):
        graph, tk, tiled = _read_graph(os.fspath(outdir)), None, False
    else:
        placement = placement if placement is not None else Placement.load(os.fspath(outdir))
        graph, tk = placement.graph, TiledKernels(placement, dtype)
    if weights is None:
        weights = load_weights(graph, model_path if model_path is not None else recorded_model(outdir))
    ids, mask = (None, None) if pixel_inputs(graph) else _prompt(prompt_ids, attention_mask)
    context = (placement.context if placement is not None else None) or 1 << 20
    interp = Interpreter(graph, weights, tk.kernels() if tiled else None, context=context)
    calls = (lambda: dict(tk.calls)) if tk is not None else dict
    extra = _extra_inputs(interp)
    out = graph.outputs[0]
    pixels = pixel_inputs(graph)
    if pixels:
        return _simulate_pixels(interp, pixels, prompt_ids, steps, extra, out, calls)
    logits, seqs = [], []
    if is_decoder(graph):
        if ids.shape[1] + steps - 1 > interp.context:
            raise SimulationError(f"{ids.shape[1]} prompt tokens + {steps - 1} more exceed the compiled "
                                  f"context of {interp.context}")
        if not 0 <= prefill < ids.shape[1]:
            raise SimulationError(f"a prefill of {prefill} tokens needs a longer prompt than {ids.shape[1]}")
        interp.reset(ids.shape[0])
        past = None
        if prefill:   # the cache before the compared steps: the IR's own, from the first tokens
            interp.step(ids[:, :prefill], mask[:, :prefill], extra)
            past = _past_feeds(graph, interp)
        step_ids, step_mask, tokens = ids[:, prefill:], mask[:, prefill:], []
        for _ in range(steps):
            seqs.append((ids, mask))
            y = interp.step(step_ids, step_mask, extra)[out]
            logits.append(y)
            tokens.append(np.argmax(y[:, -1], axis=-1))
            step_ids = tokens[-1][:, None].astype(np.int64)
            step_mask = np.ones_like(step_ids)
            ids, mask = np.concatenate([ids, step_ids], 1), np.concatenate([mask, step_mask], 1)
        return Simulation(logits, np.stack(tokens, axis=1), seqs, calls(), past)
    first = ids
    for i in range(steps):  # encoder: the whole sequence each time
        seqs.append((ids, mask))
        interp.reset(ids.shape[0])
        logits.append(interp.step(ids, mask, extra)[out])
        ids = np.concatenate([ids, first[:, i % first.shape[1]][:, None]], 1)
        mask = np.concatenate([mask, mask[:, -1:]], 1)   # right-padded rows stay padded
    return Simulation(logits, None, seqs, calls())


def is_past_input(name: str) -> bool:
    return name.lower().startswith(("past", "cache"))


def _declared_past(onnx_path: str) -> int:
    """The cache length a with-past file fixes (a static-shape export traced with a filled cache), else 0,
    from the file's declared inputs (what onnxruntime reports), read without weights or onnxruntime."""
    import onnx

    try:
        graph = onnx.load(onnx_path, load_external_data=False).graph
    except Exception as e:  # noqa: BLE001 - a file onnx cannot parse, in one line
        raise SimulationError(f"cannot read the model: {str(e).splitlines()[0][:200]}", where=onnx_path) from None
    lengths = {d[2].dim_value for i in graph.input if is_past_input(i.name)
               for d in [i.type.tensor_type.shape.dim] if len(d) > 2 and d[2].HasField("dim_value")}
    return max(lengths, default=0)


def _onnxruntime_outputs(onnx_path: str, steps_in, past) -> list[np.ndarray]:
    """The first output of onnxruntime for each step's (ids, mask), computed in a forked child."""
    from ..frontend import isolated

    def run():
        import onnxruntime as ort
        try:
            sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - an onnxruntime load failure, in one line
            return "error", f"onnxruntime cannot load the model: {str(e).splitlines()[0][:200]}"
        outs = []
        for ids, mask in steps_in:
            try:
                feeds = _ort_feeds(sess, ids, mask, past)
            except SimulationError as e:
                return "error", str(e)
            try:
                outs.append(np.asarray(sess.run(None, feeds)[0]))
            except Exception as e:  # noqa: BLE001 - an onnxruntime run failure, in one line
                return "error", f"onnxruntime cannot run the model: {str(e).splitlines()[0][:200]}"
        return "ok", outs

    try:
        kind, value = isolated.call(run, timeout=ONNXRUNTIME_SECONDS, memory=ONNXRUNTIME_MEMORY)
    except isolated.NativeFailure as e:
        raise SimulationError(f"onnxruntime failed on the model: {e}", where=onnx_path) from None
    if kind == "error":
        raise SimulationError(value, where=onnx_path)
    return value


def _empty_past(i, batch: int) -> np.ndarray:
    """An empty cache for past input ``i``: batch rows, no positions (axis 2), its fixed dims."""
    shape = []
    for k, d in enumerate(i.shape):
        if isinstance(d, int) and k != 2:
            shape.append(d)
        elif k in (0, 2):
            shape.append(batch if k == 0 else 0)
        else:
            raise SimulationError(f"onnxruntime input '{i.name}' {list(i.shape)}: no empty cache for a symbolic "
                                  f"dim {d!r} that is neither the batch nor the positions")
    return np.zeros(shape, np.float32)


def _ort_feeds(sess, ids, mask, past=None):
    """onnxruntime's inputs for one step: ``ids`` [batch, seq] token ids, or a dict of the pixel
    inputs' images by name (then ``mask`` covers the image's tokens: only a mask input uses it).
    Past inputs get ``past`` (by name; ``ids`` are then the tokens after it and ``mask`` covers both),
    or an empty cache."""
    feeds = {}
    offset = 0 if not past else next(iter(past.values())).shape[2]
    for i in sess.get_inputs():
        low = i.name.lower()
        if isinstance(ids, dict):
            if i.name not in ids:
                raise SimulationError(f"onnxruntime input '{i.name}' has no value the simulator knows how to make")
            feeds[i.name] = ids[i.name]
        elif low == "input_ids":
            feeds[i.name] = ids
        elif is_past_input(i.name):
            if past and i.name not in past:
                raise SimulationError(f"onnxruntime input '{i.name}' is no past input the IR's caches stand for")
            feeds[i.name] = past[i.name] if past else _empty_past(i, ids.shape[0])
        elif low == "use_cache_branch":   # optimum's merged decoder: the with-past branch the IR lowers
            feeds[i.name] = np.array([True])
        elif "mask" in low:
            feeds[i.name] = mask
        elif "position" in low:
            feeds[i.name] = np.broadcast_to(offset + np.arange(ids.shape[1]), ids.shape).astype(np.int64)
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
    the errors are over the tokens each step fed (unpadded ones only).  onnxruntime runs in a
    forked child (wafercc.frontend.isolated): an abort inside it on a hostile file is one line."""
    if onnx_path is None:
        onnx_path = recorded_model(outdir)
    onnx_path = os.fspath(onnx_path)
    sim = simulate(outdir, onnx_path, prompt, steps, attention_mask=attention_mask, dtype=dtype,
                   placement=placement, prefill=_declared_past(onnx_path))
    steps_in = []
    for ids, mask in sim.sequences:
        if sim.past:   # the IR's cache of the first tokens is onnxruntime's past
            ids = ids[:, next(iter(sim.past.values())).shape[2]:]
        steps_in.append((ids, mask))
    refs = _onnxruntime_outputs(onnx_path, steps_in, sim.past)
    errors, ref_tokens = [], []
    for got, ref, (_, mask) in zip(sim.logits, refs, sim.sequences):
        ref = ref[:, -got.shape[1]:]                 # the positions this step fed
        if ref.shape != got.shape:
            raise SimulationError(f"onnxruntime output {list(ref.shape)} vs simulated {list(got.shape)}")
        valid = np.broadcast_to(mask[:, -got.shape[1]:].astype(bool).reshape(
            mask.shape[0], -1, *([1] * (got.ndim - 2))), got.shape)
        errors.append(rel_err(got, ref, valid))
        ref_tokens.append(np.argmax(ref[:, -1], axis=-1))
    rt = np.stack(ref_tokens, axis=1) if sim.tokens is not None else None
    return Comparison(errors, sim.tokens, rt, tolerance, sim)
