"""Fused variants of corpus files: onnxruntime's transformer optimizer and onnxscript's ort_fusions,
as users run them before shipping an ONNX file. The result holds com.microsoft contrib ops."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings

from corpus import archs

# onnxruntime.transformers.optimizer model types; the rest take its default, 'bert'
ORT_MODEL_TYPE = {"gpt2": "gpt2", "gpt_neox": "gpt_neox", "bart_encoder": "bart", "t5_encoder": "t5", "vit": "vit"}


def _quiet():
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    logging.disable(logging.WARNING)
    stack.callback(logging.disable, logging.NOTSET)
    return stack


def ort_optimizer(arch: str, source: str, path: str) -> None:
    """optimize_model(model_type=..., num_heads, hidden_size) with its default opt_level."""
    from onnxruntime.transformers.optimizer import optimize_model
    c = archs.make_config(arch)
    heads = getattr(c, "num_attention_heads", None) or getattr(c, "n_head")
    hidden = getattr(c, "hidden_size", None) or getattr(c, "d_model")
    with _quiet():
        m = optimize_model(source, model_type=ORT_MODEL_TYPE.get(arch, "bert"), num_heads=heads, hidden_size=hidden)
        m.save_model_to_file(path)


def ort_fusions(source: str, path: str) -> None:
    """onnxscript.rewriter.ort_fusions.optimize_for_ort on the dynamo export, weights kept inline."""
    import onnx_ir as ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort
    with _quiet():
        model = ir.load(source)
        model, _ = optimize_for_ort(model)
        for v in model.graph.initializers.values():   # read the side file now: the copy is self-contained
            if v.const_value is not None:
                v.const_value = ir.tensor(v.const_value.numpy(), name=v.name)
        ir.save(model, path)
    if not os.path.exists(path):
        raise RuntimeError("optimize_for_ort wrote no file")
