"""IR values: a name, a shape of int or symbolic dims, a dtype and a kind."""
from __future__ import annotations

import dataclasses
import enum
import math
import re
from typing import Mapping, Union

from .dtypes import DType

Dim = Union[int, str]
Shape = tuple[Dim, ...]

# Symbolic dims every frontend uses: the token dims of the graph inputs and
# the KV-cache length.  Costs are evaluated with these bound to numbers.
BATCH = "batch"
SEQ = "seq"
CONTEXT = "context"
SYMBOL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Element counts above this overflow int64 arithmetic in later passes.
MAX_ELEMENTS = 2**53
# A dim must fit int32: kernels, the tiler and the planner index with it (frontends refuse larger).
MAX_DIM = 2**31 - 1


class ValueKind(str, enum.Enum):
    INPUT = "input"          # graph input supplied per request (token ids, masks)
    WEIGHT = "weight"        # parameter resident in SRAM
    ACTIVATION = "activation"  # produced by a node
    KV_CACHE = "kv"          # attention K/V cache state, grows with context


@dataclasses.dataclass(slots=True)
class Value:
    name: str
    shape: Shape
    dtype: DType
    kind: ValueKind

    def numel(self, bindings: Mapping[str, int] | None = None) -> int:
        return numel(self.shape, bindings)

    def nbytes(self, bindings: Mapping[str, int] | None = None, dtype: DType | None = None) -> int:
        return (dtype or self.dtype).nbytes(self.numel(bindings))

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)


def resolve(dim: Dim, bindings: Mapping[str, int] | None) -> int:
    if isinstance(dim, int):
        return dim
    if bindings is None or dim not in bindings:
        raise KeyError(f"symbolic dim '{dim}' has no binding")
    return int(bindings[dim])


def numel(shape: Shape, bindings: Mapping[str, int] | None = None) -> int:
    return math.prod(resolve(d, bindings) for d in shape)


def static_numel(shape: Shape) -> int:
    """Product of the int dims only (symbolic dims count as 1)."""
    return math.prod(d for d in shape if isinstance(d, int))


def same_numel(a: Shape, b: Shape) -> bool:
    """True if two shapes hold the same number of elements for every binding."""
    syms_a = sorted(d for d in a if isinstance(d, str))
    syms_b = sorted(d for d in b if isinstance(d, str))
    return syms_a == syms_b and static_numel(a) == static_numel(b)


def format_shape(shape: Shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"
