"""The schema a Hugging Face config is checked against before any model is built.

Only the keys every transformers config shares are checked (sizes, layer and head counts, positions,
dtype, quantization, experts...), under each model's own names: a config class's ``attribute_map``
says that GPT-2 writes ``hidden_size`` as ``n_embd`` and T5 ``head_dim`` as ``d_kv``, and its
``sub_configs`` which keys hold nested configs (``text_config``...), so there is no per-architecture
code.  Unknown keys are left to transformers.  The check runs twice: on the raw dict, before
transformers sees it (a billion layers would hang its constructor), and on the built config, where
its defaults are filled in (a default head count must still divide the given hidden size).
Bounds come from wafercc.limits; docs/frontends.md lists the schema.
"""
from __future__ import annotations

from typing import Annotated, Any, Mapping, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError
from pydantic import model_validator

from .. import limits as L
from ..errors import ModelConfigError
from ..jsonsafe import check_object_depth

# torch_dtype / dtype: the torch dtypes (torch's names: transformers resolves torch.<name>) a model
# can be built in; float64 is not a wafer format, and FP8 / MXFP4 checkpoints declare bfloat16 plus a
# quantization_config (torch cannot build a module in float8: it has no such default dtype)
TORCH_DTYPES = ("float32", "float16", "bfloat16")


def _int_in(lo: int, hi: int, limit: str = ""):
    why = f" (wafercc.limits.{limit})" if limit else ""
    return Annotated[StrictInt, Field(ge=lo, le=hi, description=f"an integer in {lo}..{hi}{why}")]


def _number(lo: float, hi: float, *, open_lo: bool = False):
    kw = {"gt": lo} if open_lo else {"ge": lo}
    return Annotated[Union[StrictInt, StrictFloat], Field(**kw, le=hi, allow_inf_nan=False)]


Size = _int_in(1, L.MAX_MODEL_DIM, "MAX_MODEL_DIM")
Heads = _int_in(1, L.MAX_HEADS, "MAX_HEADS")
Experts = _int_in(0, L.MAX_EXPERTS, "MAX_EXPERTS")
Side = _int_in(1, L.MAX_IMAGE_SIZE, "MAX_IMAGE_SIZE")

# field -> what a value must be, for the one-line refusal (pydantic's own text names no bounds)
EXPECTED = {
    "model_type": "a model type name (1 to 100 characters, no spaces)",
    "hidden_size": f"an integer in 1..{L.MAX_MODEL_DIM} (wafercc.limits.MAX_MODEL_DIM)",
    "intermediate_size": f"an integer in 1..{L.MAX_MODEL_DIM} (or a list of them, one per layer)",
    "moe_intermediate_size": f"an integer in 1..{L.MAX_MODEL_DIM} (wafercc.limits.MAX_MODEL_DIM)",
    "head_dim": f"an integer in 1..{L.MAX_MODEL_DIM} (wafercc.limits.MAX_MODEL_DIM)",
    "num_hidden_layers": f"an integer in 1..{L.MAX_LAYERS} (wafercc.limits.MAX_LAYERS)",
    "num_attention_heads": f"an integer in 1..{L.MAX_HEADS} (or a list of them, one per layer)",
    "num_key_value_heads": f"an integer in 1..{L.MAX_HEADS} (wafercc.limits.MAX_HEADS)",
    "vocab_size": f"an integer in 1..{L.MAX_VOCAB} (wafercc.limits.MAX_VOCAB)",
    "max_position_embeddings": f"an integer in {L.MIN_POSITIONS}..{L.MAX_POSITIONS} (a decoder needs two "
                               f"positions for its causal mask to show; wafercc.limits.MAX_POSITIONS)",
    "num_local_experts": f"an integer in 0..{L.MAX_EXPERTS} (wafercc.limits.MAX_EXPERTS)",
    "num_experts": f"an integer in 0..{L.MAX_EXPERTS} (wafercc.limits.MAX_EXPERTS)",
    "n_routed_experts": f"an integer in 0..{L.MAX_EXPERTS} (wafercc.limits.MAX_EXPERTS)",
    "num_experts_per_tok": f"an integer in 1..{L.MAX_EXPERTS} (wafercc.limits.MAX_EXPERTS)",
    "sliding_window": f"null or an integer in 1..{L.MAX_POSITIONS}",
    "layer_types": "a list of layer-type strings",
    "torch_dtype": f"one of {', '.join(TORCH_DTYPES)} (or null)",
    "dtype": f"one of {', '.join(TORCH_DTYPES)} (or null)",
    "quantization_config": "an object (or null)",
    "architectures": "a list of class-name strings",
    "hidden_act": "an activation name (a string)",
    "rms_norm_eps": "a finite number in [0, 1]",
    "layer_norm_eps": "a finite number in [0, 1]",
    "layer_norm_epsilon": "a finite number in [0, 1]",
    "rope_theta": "a finite positive number",
    "tie_word_embeddings": "true or false",
    "is_encoder_decoder": "true or false",
    "image_size": f"an integer in 1..{L.MAX_IMAGE_SIZE} or a [height, width] pair of them",
    "patch_size": f"an integer in 1..{L.MAX_IMAGE_SIZE} or a [height, width] pair of them",
    "num_channels": f"an integer in 1..{L.MAX_CHANNELS} (wafercc.limits.MAX_CHANNELS)",
}
# the fields re-checked on the built config (transformers fills their defaults; the rest it keeps as given)
SIZE_FIELDS = ("hidden_size", "intermediate_size", "head_dim", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "vocab_size", "max_position_embeddings", "num_local_experts",
               "num_experts", "n_routed_experts", "num_experts_per_tok")


class QuantizationConfig(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    quant_method: Optional[StrictStr] = None


class CommonConfig(BaseModel):
    """The keys every transformers config shares, under their canonical names; other keys pass."""
    model_config = ConfigDict(extra="allow", strict=True)

    model_type: Optional[Annotated[StrictStr, Field(pattern=r"^\S{1,100}$")]] = None
    hidden_size: Optional[Size] = None
    intermediate_size: Optional[Union[Size, list[Size]]] = None
    moe_intermediate_size: Optional[Size] = None
    head_dim: Optional[Size] = None
    num_hidden_layers: Optional[_int_in(1, L.MAX_LAYERS)] = None
    num_attention_heads: Optional[Union[Heads, list[Heads]]] = None
    num_key_value_heads: Optional[Heads] = None
    vocab_size: Optional[_int_in(1, L.MAX_VOCAB)] = None
    max_position_embeddings: Optional[_int_in(L.MIN_POSITIONS, L.MAX_POSITIONS)] = None
    num_local_experts: Optional[Experts] = None
    num_experts: Optional[Experts] = None
    n_routed_experts: Optional[Experts] = None
    num_experts_per_tok: Optional[_int_in(1, L.MAX_EXPERTS)] = None
    sliding_window: Optional[_int_in(1, L.MAX_POSITIONS)] = None
    layer_types: Optional[list[StrictStr]] = None
    torch_dtype: Optional[StrictStr] = None
    dtype: Optional[StrictStr] = None
    quantization_config: Optional[QuantizationConfig] = None
    architectures: Optional[list[StrictStr]] = None
    hidden_act: Optional[StrictStr] = None
    rms_norm_eps: Optional[_number(0, 1)] = None
    layer_norm_eps: Optional[_number(0, 1)] = None
    layer_norm_epsilon: Optional[_number(0, 1)] = None
    rope_theta: Optional[_number(0, 1e300, open_lo=True)] = None
    tie_word_embeddings: Optional[StrictBool] = None
    is_encoder_decoder: Optional[StrictBool] = None
    image_size: Optional[Union[Side, Annotated[list[Side], Field(min_length=2, max_length=2)]]] = None
    patch_size: Optional[Union[Side, Annotated[list[Side], Field(min_length=2, max_length=2)]]] = None
    num_channels: Optional[_int_in(1, L.MAX_CHANNELS)] = None
    # not a config key: whether head_dim was written (then heads need not divide the hidden size)
    head_dim_given: bool = False

    @model_validator(mode="after")
    def _relations(self):
        for f in ("torch_dtype", "dtype"):
            v = getattr(self, f)
            if v is not None and not _supported_dtype(v):
                raise _Relation(f, v, EXPECTED[f])
        h, n, kv = self.hidden_size, self.num_attention_heads, self.num_key_value_heads
        if isinstance(n, int) and h is not None and not self.head_dim_given and h % n:
            raise _Relation("num_attention_heads", n, f"a divisor of hidden_size {h} (or an explicit head_dim)")
        if isinstance(n, int) and kv is not None and n % kv:
            raise _Relation("num_key_value_heads", kv, f"a divisor of num_attention_heads {n}")
        experts = max((e for e in (self.num_local_experts, self.num_experts, self.n_routed_experts) if e),
                      default=None)
        k = self.num_experts_per_tok
        if k is not None and experts and k > experts:
            raise _Relation("num_experts_per_tok", k, f"at most the {experts} experts")
        lt, layers = self.layer_types, self.num_hidden_layers
        if lt is not None and layers is not None and len(lt) != layers:
            raise _Relation("layer_types", f"{len(lt)} entries", f"one per layer ({layers})", shown=True)
        return self


class _Relation(ValueError):
    """A broken relation: ``field`` holds ``got`` (a value, or already text when ``shown``)."""

    def __init__(self, field: str, got: Any, expected: str, *, shown: bool = False):
        self.field, self.got, self.expected = field, got if shown else _show(got), expected
        super().__init__(f"{field}: {self.got}")


def _supported_dtype(name: str) -> bool:
    return name in TORCH_DTYPES


def _class_maps(model_type: Any) -> tuple[dict, dict]:
    """(attribute_map, sub_configs) of ``model_type``'s config class; empty if transformers lacks it."""
    from transformers import CONFIG_MAPPING

    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        return {}, {}
    cls = CONFIG_MAPPING[model_type]
    return dict(getattr(cls, "attribute_map", {}) or {}), dict(getattr(cls, "sub_configs", {}) or {})


def _show(v: Any) -> str:
    if isinstance(v, (dict, list)):
        return f"{type(v).__name__} of {len(v)}"
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _validate(values: dict, keys: dict, where: str, prefix: str, origin: str = "") -> None:
    try:
        CommonConfig.model_validate(values)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        rel = (err.get("ctx") or {}).get("error")
        if isinstance(rel, _Relation):
            field, shown, expected = rel.field, rel.got, rel.expected
        elif err["loc"][:2] == ("quantization_config", "quant_method"):
            field, shown, expected = "quantization_config.quant_method", _show(err.get("input")), "a string"
        else:
            field = str(err["loc"][0]) if err["loc"] else "?"
            shown, expected = _show(values.get(field, err.get("input"))), EXPECTED.get(field, err["msg"])
        raise ModelConfigError(f"field '{prefix}{keys.get(field, field)}'{origin}: got {shown}, expected {expected}",
                               where=where) from None


def check_config(cfg: Mapping[str, Any], where: str = "config", *, prefix: str = "",
                 model_type: Any = None) -> None:
    """Check a raw config dict (and its nested sub-configs) against the schema; ModelConfigError."""
    if not prefix:
        check_object_depth(cfg, where, ModelConfigError)     # sub-configs are checked recursively
    mt = cfg.get("model_type", model_type)
    amap, subs = _class_maps(mt)
    values, keys = {}, {}
    for name in EXPECTED:
        stored = amap.get(name, name)
        for key in (stored, name):
            if key in cfg:
                values[name], keys[name] = cfg[key], key
                break
    values["head_dim_given"] = values.get("head_dim") is not None
    _validate(values, keys, where, prefix)
    for key, value in cfg.items():
        nested = key in subs or (key.endswith("_config") and key != "quantization_config"
                                 and isinstance(value, Mapping))
        if not nested or value is None:
            continue
        if not isinstance(value, Mapping):
            raise ModelConfigError(f"field '{prefix}{key}': got {_show(value)}, expected a nested config object",
                                   where=where)
        sub_mt = value.get("model_type") or getattr(subs.get(key), "model_type", None) or None
        check_config(value, where, prefix=f"{prefix}{key}.", model_type=sub_mt)


def check_built(config, raw: Mapping[str, Any], where: str = "config") -> None:
    """Check the sizes of a built ``PretrainedConfig`` (transformers' defaults filled in)."""
    values = {}
    for name in SIZE_FIELDS:
        v = getattr(config, name, None)
        if v is not None:
            values[name] = v
    amap, _ = _class_maps(getattr(config, "model_type", None))
    values["head_dim_given"] = any(raw.get(k) is not None for k in ("head_dim", amap.get("head_dim", "head_dim")))
    _validate(values, {}, where, "", origin=" (as transformers built it)")
