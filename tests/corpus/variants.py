"""The exporter settings of the corpus: each variant is one standard way users call torch.onnx.export."""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import warnings
from dataclasses import dataclass, field

import torch

from corpus import archs, fuse


@dataclass(frozen=True)
class Variant:
    name: str
    dynamo: bool
    opset: int | None = None  # None: the exporter's default (the record keeps the file's opset)
    past: bool = False  # decoders only: flat past key/value inputs, present outputs
    options: dict = field(default_factory=dict)  # further torch.onnx.export keywords
    dynamic: bool = False  # dynamic_shapes (dynamo) or dynamic_axes (TorchScript, always on)
    from_variant: str | None = None  # derived from another variant's file instead of exported

    def applies(self, arch: str) -> bool:
        return not self.past or archs.ARCHS[arch][1] == "decoder"


VARIANTS = {v.name: v for v in [
    Variant("ts14", dynamo=False, opset=14),
    Variant("ts17", dynamo=False, opset=17),
    Variant("ts17-past", dynamo=False, opset=17, past=True),
    Variant("dynamo", dynamo=True),  # defaults: optimize, static shapes, external data (opset 20 in torch 2.13)
    Variant("dynamo-noopt", dynamo=True, options={"optimize": False}),
    Variant("dynamo-dynamic", dynamo=True, dynamic=True),
    Variant("dynamo-op18", dynamo=True, opset=18),
    Variant("dynamo-op23", dynamo=True, opset=23),
    Variant("dynamo-past", dynamo=True, past=True),
    Variant("dynamo-inline", dynamo=True, options={"external_data": False}),
    # the default dynamo file with its weight side file removed (shapes-only, as after a bad copy)
    Variant("dynamo-nodata", dynamo=True, from_variant="dynamo"),
    # fused for onnxruntime (com.microsoft contrib ops): its transformer optimizer on the TorchScript
    # export, onnxscript's ort_fusions on the dynamo one
    Variant("ort-fused", dynamo=False, opset=17, from_variant="ts17"),
    Variant("ort-fusions", dynamo=True, from_variant="dynamo"),
    # optimum's merged decoder: the no-past and with-past decoders behind an If on use_cache_branch
    Variant("ts17-merged", dynamo=False, opset=17, past=True, from_variant="ts17-past"),
]}


def _axes(names: list[str], past: bool) -> dict[str, dict[int, str]]:
    """Batch and sequence axes of every input/output; with past, the mask spans past + new."""
    axes = {}
    for n in names:
        if n == "pixel_values":
            axes[n] = {0: "batch"}
        elif n.startswith(("past.", "present.")):
            axes[n] = {0: "batch", 2: "past_seq" if n.startswith("past.") else "total_seq"}
        elif n == "attention_mask" and past:
            axes[n] = {0: "batch", 1: "total_seq"}
        else:
            axes[n] = {0: "batch", 1: "seq"}
    return axes


def output_names(arch: str, inputs: dict, past: bool) -> list[str]:
    first = "logits" if archs.ARCHS[arch][1] == "decoder" else "last_hidden_state"
    presents = [n.replace("past.", "present.") for n in inputs if n.startswith("past.")] if past else []
    return [first, *presents]


def export(arch: str, variant: Variant, path: str) -> None:
    """Write `path` (and any side file the exporter writes next to it). Raises what the exporter raises."""
    model = archs.build_model(arch)
    inputs = archs.example_inputs(arch, model, past=variant.past)
    module = archs.wrap(arch, model, past=variant.past)
    outs = output_names(arch, inputs, variant.past)
    kw = dict(variant.options, input_names=list(inputs), output_names=outs, dynamo=variant.dynamo)
    if variant.opset is not None:
        kw["opset_version"] = variant.opset
    if not variant.dynamo:  # TorchScript users always give dynamic axes
        kw["dynamic_axes"] = _axes(list(inputs) + outs, variant.past)
    elif variant.dynamic:
        kw["dynamic_shapes"] = tuple(_axes(list(inputs), variant.past).values())
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(inputs.values()), path, **kw)


def derive(arch: str, variant: Variant, source: str, path: str) -> None:
    """dynamo-nodata: copy the .onnx alone, so its external-data references point at nothing;
    ort-fused / ort-fusions: the source fused for onnxruntime (corpus/fuse.py); ts17-merged: the source
    merged with its no-past decoder in optimum's layout (corpus/merge.py)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if variant.name == "ort-fused":
        fuse.ort_optimizer(arch, source, path)
    elif variant.name == "ort-fusions":
        fuse.ort_fusions(source, path)
    elif variant.name == "ts17-merged":
        from corpus import merge
        prefill = path + ".prefill.onnx"
        with_past = archs.example_inputs(arch, archs.build_model(arch), past=True)
        merge.export_prefill(arch, prefill, with_past)
        merge.merge(prefill, source, path)
        os.remove(prefill)
    else:
        shutil.copyfile(source, path)
