"""Example inputs of an ``nn.Module``: the forms ``wafercc.compile`` accepts, and their dynamic dims.

``example_inputs`` is one of: a tensor (the only positional argument); a tuple or list of positional
arguments (a trailing dict holds keyword arguments, as ``torch.onnx.export`` reads its ``args``); a
dict of keyword arguments; or an ``(args_tuple, kwargs_dict)`` pair.  Each is split into
``(args, kwargs)`` for ``torch.onnx.export(module, args, kwargs=kwargs)``, so a module whose forward
is ``forward(self, *args, **kwargs)`` (a thin wrapper around a Hugging Face model) exports as well
(see :func:`keywords_named`).
"""
from __future__ import annotations

import contextlib
import inspect
from typing import Any, Mapping

import torch

from ..errors import FrontendError

FORMS = "a tensor, a tuple of positional args, a dict of keyword args or an (args, kwargs) pair"


def split_inputs(example_inputs: Any, where: str = "example_inputs") -> tuple[tuple, dict[str, Any]]:
    """``(args, kwargs)`` of any accepted form of ``example_inputs``."""
    x = example_inputs
    if isinstance(x, torch.Tensor):
        return (x,), {}
    if isinstance(x, Mapping):
        return (), _keywords(x, where)
    if isinstance(x, (tuple, list)):
        x = tuple(x)
        if len(x) == 2 and isinstance(x[0], (tuple, list)) and isinstance(x[1], Mapping):
            return tuple(x[0]), _keywords(x[1], where)
        if x and isinstance(x[-1], Mapping):
            return x[:-1], _keywords(x[-1], where)
        return x, {}
    raise FrontendError(f"example_inputs is a {type(x).__name__}, expected {FORMS}", where=where)


def _keywords(d: Mapping, where: str) -> dict[str, Any]:
    bad = [k for k in d if not isinstance(k, str)]
    if bad:
        raise FrontendError(f"keyword example_inputs need str keys, got {bad[0]!r}", where=where)
    return dict(d)


def bind(module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The forward's parameters bound to the example inputs (``*args`` / ``**kwargs`` collected)."""
    sig = inspect.signature(module.forward)
    try:
        return dict(sig.bind(*args, **kwargs).arguments)
    except TypeError as e:
        raise FrontendError(f"example_inputs do not fit forward{sig}: {e}", where=type(module).__name__) from None


@contextlib.contextmanager
def keywords_named(module: torch.nn.Module, kwargs: Mapping[str, Any]):
    """While exporting, give a ``forward(..., **kwargs)`` a signature that names each keyword input.
    torch.export (2.13) orders the inputs that reach ``**kwargs`` differently from the dynamic
    shapes it was given and fails ("Must provide a tree_name ..."); named keyword-only parameters
    export, and name the ONNX inputs after the keywords.  The module is restored afterwards."""
    sig = inspect.signature(module.forward)
    params = list(sig.parameters.values())
    extra = [k for k in kwargs if k not in sig.parameters]
    if not extra or not params or params[-1].kind is not inspect.Parameter.VAR_KEYWORD:
        yield
        return
    inner, saved = module.forward, module.__dict__.get("forward")

    def forward(*a, **k):
        return inner(*a, **k)
    forward.__signature__ = sig.replace(parameters=params[:-1] + [
        inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY) for k in extra])
    module.forward = forward
    try:
        yield
    finally:
        if saved is None:
            del module.forward
        else:
            module.forward = saved


def dynamic_shapes(bound: Mapping[str, Any]) -> dict[str, Any]:
    """``torch.export`` dynamic shapes for bound inputs: dims 0 and 1 of every 2-D integer tensor
    are ``batch`` and ``seq``, everything else static (nested tuples and dicts followed)."""
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")

    def spec(x):
        if isinstance(x, torch.Tensor):
            ids = x.dim() == 2 and not x.is_floating_point() and x.dtype != torch.bool
            return {0: batch, 1: seq} if ids else None
        if isinstance(x, (tuple, list)):
            return type(x)(spec(v) for v in x)
        if isinstance(x, Mapping):
            return {k: spec(v) for k, v in x.items()}
        return None
    return {k: spec(v) for k, v in bound.items()}
