"""Reference models shipped with wafercc (``wafercc.models``: configs/*.json + REFERENCE.json).

Each reference model is a Hugging Face ``config.json`` (hub copy, see
``configs/VERIFY.txt``) plus an entry in ``REFERENCE.json`` giving its hub id,
its publicly stated parameter count and its kind (decoder / encoder).
"""
from __future__ import annotations

import dataclasses
import functools
import json
from importlib import resources
from typing import Any

from .errors import ModelConfigError


@dataclasses.dataclass(frozen=True)
class ReferenceModel:
    key: str
    hf_id: str
    public_params: int
    kind: str
    model_type: str
    layers: int | None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def configs_dir():
    """The packaged configs directory (a Traversable; a real directory for editable installs)."""
    return resources.files("wafercc.models") / "configs"


@functools.lru_cache(maxsize=None)
def _reference_table() -> dict[str, dict[str, Any]]:
    return json.loads((configs_dir() / "REFERENCE.json").read_text())


def names() -> list[str]:
    """Reference model keys, in REFERENCE.json order."""
    return list(_reference_table())


def is_reference(key: str) -> bool:
    return isinstance(key, str) and key in _reference_table()


def config_text(key: str) -> str:
    """The exact bytes (as text) of a reference model's config.json."""
    if not is_reference(key):
        raise ModelConfigError(f"unknown reference model '{key}' (known: {', '.join(names())})")
    return (configs_dir() / f"{key}.json").read_text()


def config(key: str) -> dict[str, Any]:
    """A fresh copy of a reference model's Hugging Face config dict."""
    return json.loads(config_text(key))


def reference(key: str) -> ReferenceModel:
    entry = _reference_table().get(key)
    if entry is None:
        raise ModelConfigError(f"unknown reference model '{key}' (known: {', '.join(names())})")
    cfg = config(key)
    layers = cfg.get("num_hidden_layers", cfg.get("n_layer"))
    return ReferenceModel(key=key, hf_id=entry["hf_id"], public_params=int(entry["public_params"]),
                          kind=entry.get("kind", "decoder"), model_type=cfg.get("model_type", "?"),
                          layers=int(layers) if layers is not None else None)


def all_models() -> list[ReferenceModel]:
    return [reference(k) for k in names()]
