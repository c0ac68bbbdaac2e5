"""How ONNX tensors relate to IR values during lifting."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class View:
    """How an ONNX tensor lays out IR value ``value`` ([..., F] in the IR)."""
    value: str
    layout: str = "flat"       # flat | bshd | bhsd | bhds (keys transposed) | gqa (expanding)
    head_dim: int = 0
    scale: float = 1.0
    expanded: bool = False


@dataclasses.dataclass(frozen=True)
class Scores:
    """Attention scores or probabilities between q and k (not yet an IR value)."""
    q: View
    k: View
    scale: float
    mask: str | None
    probs: bool = False
    softcap: float = 0.0
    sinks: str | None = None
    pre_cap_scale: float | None = None   # set between tanh(scores * scale / cap) and "* cap"
    bias: dict | None = None             # position_bias attr of the IR attention (onnx_bias)
    bias_table: str | None = None        # its table initializer (relative kind)
