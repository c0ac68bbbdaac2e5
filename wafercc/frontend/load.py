"""The frontend stage: any model source to verified IR (``lower_model``), cached on disk.

A model is one of:

* a ``torch.nn.Module`` (real or meta weights; needs ``example_inputs``),
* a path to an ``.onnx`` file (weights inline, external or absent),
* a Hugging Face ``config.json`` path, or a directory that holds one,
* a config ``dict``,
* a reference-model key (``wafercc models`` lists them), e.g. ``"llama-3.1-70b"``.

Every source is cached on disk (see :mod:`wafercc.cache`): files by content, configs by their
canonical JSON, modules by their structure (``module_identity``: class, config, repr, parameter and
buffer shapes and dtypes, example-input shapes), never by their weights, because the IR holds no
weight values: a training script that checks its model every N steps pays for one export.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Mapping

from .. import cache as _cache
from .. import models_registry as _reg
from ..errors import InputFileError, ModelConfigError
from ..jsonsafe import check_object_depth
from ..ir import Graph, ModelFacts, model_facts

SOURCES = ("module", "onnx", "config", "reference")


@dataclasses.dataclass
class Lowered:
    """What the frontend produced: the verified graph, its facts, and where it came from."""
    graph: Graph
    facts: ModelFacts
    source: str          # module | onnx | config | reference
    cached: bool
    seconds: float
    cache_key: str | None = None

    @property
    def name(self) -> str:
        return self.graph.name


def _is_module(model: Any) -> bool:
    if isinstance(model, (str, os.PathLike, Mapping)):     # a path, a name or a config: no torch import
        return False
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, torch.nn.Module)


def classify(model: Any) -> str:
    """Which kind of source ``model`` is: module | onnx | config | reference."""
    if _is_module(model):
        return "module"
    if isinstance(model, Mapping):
        return "config"
    if isinstance(model, (str, os.PathLike)):
        s = os.fspath(model)
        if s.lower().endswith(".onnx"):
            return "onnx"
        if os.path.isdir(s) or s.lower().endswith(".json") or os.path.exists(s):
            if os.path.isfile(s) and not s.lower().endswith(".json") and _looks_like_onnx(s):
                return "onnx"
            return "config"
        if _reg.is_reference(s):
            return "reference"
        if os.sep in s or (os.altsep and os.altsep in s):
            raise InputFileError("no such file or directory", where=s)
        raise ModelConfigError(f"unknown model '{s}': not a file, and not a reference model "
                               f"(known: {', '.join(_reg.names())})")
    raise InputFileError(f"cannot compile a {type(model).__name__}: expected an nn.Module, an .onnx path, "
                         f"a config.json path or dict, or a reference model name")


def _looks_like_onnx(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return False
    return bool(head) and head[:1] == b"\x08"  # ModelProto starts with field 1 (ir_version, varint)


def _identity(source: str, model: Any) -> tuple[str, str]:
    """(cache identity string, default graph name) of a non-module source."""
    if source == "reference":
        return "reference:" + _cache.canonical_json(_reg.config(model)), model
    if source == "config" and isinstance(model, Mapping):
        name = str(model.get("model_type") or "model")
        check_object_depth(model, "config", ModelConfigError)   # json.dumps would recurse past the stack
        try:
            return "config:" + _cache.canonical_json(dict(model)), name
        except (TypeError, ValueError) as e:                     # keys of mixed types, cycles
            raise ModelConfigError(f"not a JSON-like config ({e}), expected string keys and JSON values",
                                   where="config") from None
    path = os.fspath(model)
    if source == "config" and os.path.isdir(path):
        path = os.path.join(path, "config.json")
    if not os.path.exists(path):
        if os.path.isdir(os.fspath(model)):
            raise InputFileError("directory has no config.json (expected a Hugging Face model directory, "
                                 "an .onnx file or a config.json)", where=os.fspath(model))
        raise InputFileError("no such file", where=os.fspath(model))
    if os.path.isdir(path):
        raise InputFileError("is a directory", where=path)
    try:
        digest = _cache.file_digest(path)
    except OSError as e:
        raise InputFileError(f"cannot read: {e.strerror}", where=path) from None
    return f"{source}-file:{digest}", _default_name(source, os.fspath(model))


def _default_name(source: str, path: str) -> str:
    if source == "config":
        p = path[:-1] if path.endswith(os.sep) else path
        if os.path.isdir(p):
            return os.path.basename(os.path.abspath(p)) or "model"
        stem = os.path.splitext(os.path.basename(p))[0]
        if stem == "config":
            return os.path.basename(os.path.dirname(os.path.abspath(p))) or "model"
        return stem
    return os.path.splitext(os.path.basename(path))[0] or "model"


def _lower(source: str, model: Any, name: str, layers: int | None, example_inputs) -> Graph:
    if source == "module":
        from .torch_frontend import compile_module
        if example_inputs is None:
            raise InputFileError("compiling an nn.Module needs example_inputs", where=type(model).__name__)
        return compile_module(model, example_inputs, name=name)
    if source == "onnx":
        from .onnx_frontend import lower_onnx
        if layers is not None:
            raise ModelConfigError("layers= applies to configs and reference models, not ONNX files")
        return lower_onnx(model, name=name)
    from .hf_config import from_config
    return from_config(model, layers=layers, name=name)


def lower_model(model: Any, example_inputs: Any = None, *, name: str | None = None, cache: bool = True,
                layers: int | None = None) -> Lowered:
    """Lower ``model`` to verified IR and compute its facts.  See the module doc for accepted
    sources.  ``layers`` truncates configs/reference models to N layers."""
    t0 = time.perf_counter()
    source = classify(model)
    if source == "module":
        if example_inputs is None:
            raise InputFileError("compiling an nn.Module needs example_inputs", where=type(model).__name__)
        identity, default = module_identity(model, example_inputs), type(model).__name__
    else:
        identity, default = _identity(source, model)
    gname = name or default
    key = None
    if _cache.enabled(cache):
        key = _cache.make_key(source, identity, {"name": gname, "layers": layers})
        graph = _cache.load(key)
        if graph is not None:
            _record_source(graph, source, model, identity)
            return Lowered(graph, model_facts(graph), source, True, time.perf_counter() - t0, key)
    graph = _lower(source, model, gname, layers, example_inputs)
    if source == "onnx":
        graph.meta.setdefault("onnx_file", os.path.basename(os.fspath(model)))
    if key is not None:
        _cache.store(key, graph)
    _record_source(graph, source, model, identity)
    return Lowered(graph, model_facts(graph), source, False, time.perf_counter() - t0, key)


def module_identity(module: Any, example_inputs: Any) -> str:
    """The cache identity of an ``nn.Module``: what decides its exported graph (class, config,
    module tree with its hyperparameters, parameter and buffer names, shapes and dtypes, the
    example inputs' shapes and dtypes), not its weight values nor its train/eval mode (the
    exporter always traces in eval mode).  Every form of ``example_inputs`` is first split into
    positional and keyword arguments, so the same call written two ways has one identity."""
    import torch

    from .torch_inputs import split_inputs

    cfg = getattr(module, "config", None)
    cfg_json = cfg.to_json_string(use_diff=False) if hasattr(cfg, "to_json_string") else repr(cfg)
    tensors = [(n, list(t.shape), str(t.dtype)) for n, t in
               [*module.named_parameters(), *module.named_buffers()]]

    def spec(x):
        if isinstance(x, torch.Tensor):
            return ["tensor", list(x.shape), str(x.dtype)]
        if isinstance(x, (list, tuple)):
            return [spec(v) for v in x]
        if isinstance(x, Mapping):
            return {str(k): spec(v) for k, v in x.items()}
        return repr(x)
    cls = type(module)
    doc = {"class": f"{cls.__module__}.{cls.__qualname__}", "config": cfg_json, "repr": repr(module),
           "tensors": tensors, "inputs": spec(split_inputs(example_inputs, where=cls.__name__))}
    return "module:" + _cache.canonical_json(doc)


def _record_source(graph: Graph, source: str, model: Any, identity: str) -> None:
    """An ONNX source's absolute path and SHA-256 (after caching: the cache is keyed by content, so a
    cached graph may come from a copy elsewhere); the schedule records them for ``wafercc simulate``."""
    if source == "onnx":
        graph.meta["onnx_path"] = os.path.abspath(os.fspath(model))
        graph.meta["onnx_sha256"] = identity.split(":", 1)[1]
