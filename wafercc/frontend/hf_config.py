"""Hugging Face config -> meta-device model -> ONNX -> verified IR graph.

No weights are downloaded or materialised: the model is instantiated under
``torch.device("meta")`` from its ``config.json`` alone and exported with the
torch frontend, which keeps weight names and shapes but no data.  There is no
per-architecture code: transformers' Auto classes pick the model class.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Mapping

import torch

from .. import jsonsafe
from ..errors import InputFileError, ModelConfigError, one_line, shorten
from ..ir import Graph
from ..ir import verify
from ..limits import MAX_CONFIG_BYTES, MAX_LAYERS
from .config_schema import check_built, check_config
from .layer_dedup import ReplicationError, plan_layers, reduce_model, replicate
from .torch_frontend import compile_module

EXAMPLE_BATCH = 1
# Configs export with static shapes (2-3x faster than symbolic ones on large models).
# The IR is shape-generic either way; the length only bounds the sliding windows the
# mask probe can see (a window >= this length behaves as full attention up to it).
EXAMPLE_SEQ = 4096  # capped by the model's max_position_embeddings
# max_position_embeddings is at least wafercc.limits.MIN_POSITIONS (the schema): at one position the
# exported mask has nothing to show, and a decoder would lower as bidirectional and KV-less.
# Keys removed before building: weight-format details that cannot be honoured on meta.
_DROP_KEYS = ("quantization_config",)


class _LogitsWrapper(torch.nn.Module):
    """forward(input_ids, attention_mask) -> logits (decoders) or last_hidden_state; a model whose
    main input is not token ids (``model.main_input_name``: a ViT's pixel_values) takes that input
    alone: forward(pixel_values) -> last_hidden_state."""

    def __init__(self, model: torch.nn.Module, causal: bool):
        super().__init__()
        self.model = model
        self.causal = causal
        self.main_input = getattr(model, "main_input_name", None) or "input_ids"

    @property
    def input_names(self) -> list[str]:
        return ["input_ids", "attention_mask"] if self.main_input == "input_ids" else [self.main_input]

    def forward(self, *inputs):
        kw = dict(zip(self.input_names, inputs))
        if self.causal:
            return self.model(**kw, use_cache=False).logits
        return self.model(**kw).last_hidden_state


def example_inputs(wrapper: _LogitsWrapper, config) -> tuple:
    """Meta-device example inputs for the wrapper's inputs, from the config: token ids and a mask
    [1, seq] (seq capped by max_position_embeddings), or images [1, num_channels, *image_size]."""
    name = wrapper.main_input
    if name == "input_ids":
        seq = min(EXAMPLE_SEQ, getattr(config, "max_position_embeddings", None) or EXAMPLE_SEQ)
        ids = torch.zeros(EXAMPLE_BATCH, seq, dtype=torch.long, device="meta")
        return ids, torch.ones(EXAMPLE_BATCH, seq, dtype=torch.long, device="meta")
    if name == "pixel_values":
        size = getattr(config, "image_size", None)
        channels = getattr(config, "num_channels", None) or 3
        size = [size, size] if isinstance(size, int) else list(size) if isinstance(size, (list, tuple)) else None
        if not size or not all(isinstance(d, int) and d > 0 for d in size):
            raise ModelConfigError(f"{config.model_type}: main input pixel_values, but the config has no "
                                   f"image_size to build an example image from")
        return (torch.zeros(EXAMPLE_BATCH, int(channels), *size, device="meta"),)
    raise ModelConfigError(f"{config.model_type}: main input '{name}' (neither token ids nor pixel_values) has "
                           f"no example the config frontend can build; export the model to ONNX and pass the file")


def load_config_source(spec: Any) -> tuple[dict[str, Any], str, str]:
    """Resolve a dict, a config.json path, a directory holding one, or a reference key.
    Returns ``(config dict, default graph name, where)`` (``where`` names the source in errors)."""
    from .. import models_registry as reg

    if isinstance(spec, Mapping):
        jsonsafe.check_object_depth(spec, "config", ModelConfigError)  # deepcopy would recurse past the stack
        cfg = copy.deepcopy(dict(spec))
        return cfg, str(cfg.get("model_type") or "model"), "config"
    if not isinstance(spec, (str, os.PathLike)):
        raise ModelConfigError(f"expected a config dict, a config.json path or a reference model name, "
                               f"got {type(spec).__name__}")
    s = os.fspath(spec)
    if reg.is_reference(s) and not os.path.exists(s):
        return reg.config(s), s, s
    path = os.path.join(s, "config.json") if os.path.isdir(s) else s
    if not os.path.exists(path):
        if os.path.isdir(s):
            raise InputFileError("directory has no config.json (expected a Hugging Face model directory, "
                                 "an .onnx file or a config.json)", where=s)
        if os.sep in s or s.endswith(".json"):
            raise InputFileError("no such file", where=s)
        raise ModelConfigError(f"unknown reference model '{s}' (known: {', '.join(reg.names())})")
    text = jsonsafe.read_text(path, InputFileError, max_bytes=MAX_CONFIG_BYTES, what="config.json")
    cfg = jsonsafe.loads(text, path, ModelConfigError)
    if not isinstance(cfg, dict):
        raise ModelConfigError("expected a JSON object", where=path)
    parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
    stem = os.path.splitext(os.path.basename(path))[0]
    name = parent if stem == "config" and parent else stem
    return cfg, name, path


def checkpoint_dtypes(cfg: Mapping[str, Any]) -> dict[str, Any] | None:
    """How the checkpoint stores its weights, as planning defaults: ``torch_dtype`` and, for
    quantized checkpoints, per-op overrides (MXFP4 keeps MoE experts in 4 bits, everything it
    does not convert in bf16)."""
    dtype = cfg.get("torch_dtype") or cfg.get("dtype")
    dtype = None if dtype == "auto" else dtype           # "auto": as stored, i.e. no default
    quant = cfg.get("quantization_config")
    quant = quant if isinstance(quant, Mapping) else {}
    out: dict[str, Any] = {}
    if quant.get("quant_method") == "mxfp4":
        out = {"dtype": dtype or "bfloat16", "overrides": [["moe", "f4e2m1"]],
               "source": "quantization_config: mxfp4 (4-bit experts; block scales not counted)"}
    elif dtype:
        out = {"dtype": dtype, "overrides": [], "source": "torch_dtype"}
    return out or None


def build_config(cfg: Mapping[str, Any], *, layers: int | None = None, where: str = "config"):
    """A transformers ``PretrainedConfig`` for a config dict (quantization removed), checked against
    the schema (wafercc.frontend.config_schema) before and after transformers builds it."""
    from transformers import AutoConfig

    raw = dict(cfg)
    if not raw.get("model_type") or not isinstance(raw.get("model_type"), str):
        raise ModelConfigError("config has no 'model_type', expected a non-empty string", where=where)
    check_config(raw, where)
    cfg = {k: v for k, v in raw.items() if k not in _DROP_KEYS}
    model_type = cfg.pop("model_type")
    try:
        config = AutoConfig.for_model(model_type, **cfg)
    except ValueError as e:
        if "Unrecognized model identifier" in str(e) or "not recognized" in str(e):
            if cfg.get("auto_map"):
                raise _remote_code_error(model_type, cfg["auto_map"], where) from None
            raise ModelConfigError(f"unknown model_type {model_type!r} (not supported by transformers "
                                   f"{_tf_version()})", where=where) from None
        raise ModelConfigError(f"invalid config for model_type {model_type!r}: {_reason(e)}", where=where) from None
    except Exception as e:
        raise ModelConfigError(f"invalid config for model_type {model_type!r}: {_reason(e)}", where=where) from None
    for attr in _DROP_KEYS:
        if hasattr(config, attr):
            try:
                delattr(config, attr)
            except AttributeError:
                pass
    check_built(config, raw, where)
    if layers is not None:
        _truncate_layers(config, layers, where)
    return config


def _reason(e: Exception) -> str:
    """One line for a transformers error; a validator's "...:" headline gets its last line (the cause)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        return shorten(f"{type(e).__name__}: {lines[0]} {lines[-1]}", 250)
    return one_line(e, 200)


def _truncate_layers(config, layers: int, where: str) -> None:
    if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= MAX_LAYERS:
        raise ModelConfigError(f"layers {layers!r}: expected an integer in 1..{MAX_LAYERS} "
                               f"(wafercc.limits.MAX_LAYERS)", where=where)
    attr = getattr(config, "attribute_map", {}).get("num_hidden_layers", "num_hidden_layers")
    if not hasattr(config, attr) and not hasattr(config, "num_hidden_layers"):
        raise ModelConfigError("config has no layer count to truncate", where=where)
    full = config.num_hidden_layers
    config.num_hidden_layers = min(layers, full)
    # per-layer lists (layer_types, mlp_only_layers indices...) follow the truncation
    lt = getattr(config, "layer_types", None)
    if isinstance(lt, list) and len(lt) == full:
        config.layer_types = lt[:config.num_hidden_layers]


def _remote_code_error(model_type: str, auto_map: Any, where: str) -> ModelConfigError:
    """An architecture transformers does not ship, whose ``auto_map`` points at the checkpoint's own
    modeling code (``trust_remote_code``): wafercc never runs downloaded code."""
    entries = auto_map if isinstance(auto_map, Mapping) else {}
    key = next((k for k in ("AutoModelForCausalLM", "AutoModel") if k in entries),
               next((k for k in entries if k != "AutoConfig"), None))
    ref = entries.get(key) if key else None
    ref = ref[0] if isinstance(ref, (list, tuple)) and ref else ref
    named = f"auto_map {key} -> {str(ref)[:120]!r}" if key and ref else f"auto_map {auto_map!r}"[:120]
    return ModelConfigError(
        f"model_type {model_type!r} is not in transformers {_tf_version()}: its {named} is trust_remote_code "
        f"modeling code, which wafercc does not run; export the model to ONNX yourself (load it with "
        f"trust_remote_code=True, then torch.onnx.export) and pass the .onnx file", where=where)


def _tf_version() -> str:
    import transformers
    return transformers.__version__


def _model_class(config):
    """Causal-LM class unless ``architectures`` names the base model (or there is none)."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_MAPPING_NAMES)
    from transformers import AutoModel, AutoModelForCausalLM

    mt = config.model_type
    causal_name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(mt)
    base_name = MODEL_MAPPING_NAMES.get(mt)
    archs = list(getattr(config, "architectures", None) or [])
    if causal_name and causal_name in archs:
        return AutoModelForCausalLM, True
    if base_name and (base_name in archs or not causal_name):
        return AutoModel, False
    if causal_name and not getattr(config, "is_encoder_decoder", False):
        return AutoModelForCausalLM, True
    return AutoModel, False


def _is_moe(config) -> bool:
    return any(getattr(config, k, None) for k in ("num_local_experts", "num_experts", "n_routed_experts"))


def build_meta_model(config) -> tuple[torch.nn.Module, bool]:
    """Instantiate the model on the meta device; returns ``(wrapper, causal)``."""
    cls, causal = _model_class(config)
    base: dict[str, Any] = {}
    if _is_moe(config):
        base["experts_implementation"] = "batched_mm"
    last: Exception | None = None
    for attn in ("sdpa", "eager", None):
        kw = dict(base)
        if attn:
            kw["attn_implementation"] = attn
        try:
            with torch.device("meta"):
                model = cls.from_config(config, **kw)
            break
        except ValueError as e:  # attention / experts implementation not supported here
            last = e
            if "experts_implementation" in str(e) and "experts_implementation" in base:
                base.pop("experts_implementation")
            continue
        except Exception as e:
            raise ModelConfigError(f"cannot build {config.model_type} model: {type(e).__name__}: "
                                   f"{(str(e).splitlines() or [''])[0][:200]}") from None
    else:
        raise ModelConfigError(f"cannot build {config.model_type} model: "
                               f"{(str(last).splitlines() or [''])[0][:200]}") from None
    if getattr(config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        # an encoder-decoder compiles as its encoder (T5, BART, ...): the part that reads the prompt
        model, causal = model.get_encoder(), False
    model.eval()
    return _LogitsWrapper(model, causal).eval(), causal


def _lower_meta(wrapper, example, gname: str, dedup_layers: bool) -> Graph:
    """Export and lift; with ``dedup_layers`` each distinct layer is exported once."""
    config = wrapper.model.config
    plan = plan_layers(wrapper, config.num_hidden_layers) if dedup_layers else None
    if plan is not None:
        undo = reduce_model(wrapper, config, plan)
        try:
            reduced = compile_module(wrapper, example, name=gname, input_names=wrapper.input_names,
                                     dynamic=False)
        finally:
            undo()
        try:
            graph = replicate(reduced, plan)
            verify(graph)
            graph.meta["layer_dedup"] = {"exported_layers": plan.reps, "assignment": plan.assignment}
            return graph
        except ReplicationError:
            pass  # the block structure is not a plain chain: export every layer
    return compile_module(wrapper, example, name=gname, input_names=wrapper.input_names, dynamic=False)


def prepare(config_or_path_or_name: Any, *, layers: int | None = None):
    """Everything before the export: the source read and checked against the schema, the config
    built and checked again, the meta model and its example inputs.  Returns
    ``(config dict, default graph name, PretrainedConfig, wrapper, example inputs)``."""
    cfg, default_name, where = load_config_source(config_or_path_or_name)
    config = build_config(cfg, layers=layers, where=where)
    wrapper, _ = build_meta_model(config)
    return cfg, default_name, config, wrapper, example_inputs(wrapper, config)


def from_config(config_or_path_or_name: Any, *, layers: int | None = None, name: str | None = None,
                dedup_layers: bool = True) -> Graph:
    """Lower a Hugging Face config (dict, config.json path or directory, or a reference
    model key such as ``"llama-3.1-8b"``) to verified IR, without any weights.
    ``layers`` truncates the model to its first N layers (quick looks at huge models);
    ``dedup_layers`` exports each distinct layer once and replicates it (same IR, faster)."""
    cfg, default_name, config, wrapper, example = prepare(config_or_path_or_name, layers=layers)
    gname = name or default_name
    graph = _lower_meta(wrapper, example, gname, dedup_layers)
    defaults = checkpoint_dtypes(cfg)
    if defaults:
        graph.meta["checkpoint_dtypes"] = defaults
    graph.meta.update({
        "model_type": config.model_type,
        "hf_config": gname,
        "hf_class": type(wrapper.model).__name__,
        "frontend": "hf_config",
    })
    archs = getattr(config, "architectures", None)
    if archs:
        graph.meta["hf_architectures"] = list(archs)
    if layers is not None:
        graph.meta["truncated_layers"] = int(layers)
    return graph
