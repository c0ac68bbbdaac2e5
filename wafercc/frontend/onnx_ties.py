"""Which initializers of an ONNX graph hold one weight (tied, or stored twice by an exporter).

Parameters are counted once per distinct weight, so a weight the file stores twice must be
recognised.  Proofs, cheapest first (none needs the external data except the last):

* the same external bytes: equal ``location``, ``offset`` and ``length`` (deduplicating savers);
* an exporter's copy name: ``X__1``, ``X_tied``, ``X_transposed`` ... beside ``X``, same or
  reversed shape;
* equal values (or equal transposed) with an embedding table, when both tensors' data is readable
  (only tables: the one weight a matmul weight is commonly tied to, and few reads).

A matmul weight that looks like an exporter's folded copy of an embedding table (its shape
reversed, as the TorchScript exporter stores a tied LM head, or an exporter-generated name such as
``onnx::MatMul_655``) but cannot be proved equal is counted separately, with a warning that names
both tensors.
"""
from __future__ import annotations

import re
import warnings

import numpy as np
import onnx

_COPY_SUFFIX = re.compile(r"(?:__\d+|[._](?:tied|copy|transposed))$", re.IGNORECASE)
_ANONYMOUS = re.compile(r".*::.*|(?:val|_?v|const(?:ant)?|initializer)?_?\d+")


class TiedWeightWarning(UserWarning):
    """Two initializers may hold one weight, and the file cannot tell (its data is absent)."""


def _storage(init) -> tuple | None:
    """Where an external initializer's bytes are: (location, offset, length), or None."""
    if init.data_location != onnx.TensorProto.EXTERNAL:
        return None
    ext = {e.key: e.value for e in init.external_data}
    if not ext.get("location") or int(ext.get("length") or 0) <= 0:
        return None
    return ext["location"], int(ext.get("offset") or 0), int(ext["length"])


def is_anonymous(name: str) -> bool:
    """An exporter-made name (``onnx::MatMul_12``, ``val_7``), not a module's parameter path."""
    return bool(_ANONYMOUS.fullmatch(name))


class Ties:
    """Finds the earlier weight an initializer duplicates: any role (:meth:`same`), matmul weights
    also transposed or by value (:meth:`find`)."""

    def __init__(self, src, tables: set[str]):
        self.src = src
        self.tables = tables  # embedding tables (2-D Gather seeds)
        self.storage: dict[tuple, list[str]] = {}
        for name, init in src.inits.items():
            key = _storage(init)
            if key is not None:
                self.storage.setdefault(key, []).append(name)

    def _same_type(self, a: str, b: str) -> bool:
        return self.src.inits[a].data_type == self.src.inits[b].data_type

    def same(self, init: str, known) -> str | None:
        """A weight in ``known`` that ``init`` provably duplicates with the same shape and type
        (same external bytes, or an exporter's copy name), else None."""
        src = self.src
        shape = tuple(src.inits[init].dims)
        key = _storage(src.inits[init])
        stem = _COPY_SUFFIX.sub("", init)
        for other in [*(self.storage.get(key, ()) if key else ()), *([stem] if stem != init else [])]:
            if other in known and other in src.inits and tuple(src.inits[other].dims) == shape \
                    and self._same_type(init, other):
                return other
        return None

    def find(self, init: str, transposed: bool, known) -> tuple[str, bool]:
        """(weight, transposed) to use for the matmul weight ``init``: a weight in ``known`` it
        duplicates, maybe transposed, else itself."""
        src = self.src
        if init in known or init not in src.inits:
            return init, transposed
        same = self.same(init, known)
        if same is not None:
            return same, transposed
        shape = tuple(src.inits[init].dims)
        if len(shape) != 2:
            return init, transposed
        stem = _COPY_SUFFIX.sub("", init)
        if stem != init and stem in known and tuple(src.inits[stem].dims) == shape[::-1]:
            return stem, not transposed
        suspects = []
        for other in known:
            oshape = tuple(src.inits[other].dims) if other in self.tables else ()
            if oshape not in (shape, shape[::-1]) or not self._same_type(init, other):
                continue  # values are compared only with embedding tables (few reads)
            flip = oshape != shape
            equal = self._equal(init, other, flip)
            if equal:
                return other, transposed ^ flip
            if equal is None and is_anonymous(init):
                suspects.append(other)
        if suspects:
            self._warn(init, shape, suspects)
        return init, transposed

    def _equal(self, a: str, b: str, flip: bool) -> bool | None:
        """Whether two same-type initializers hold equal values (``flip``: ``a`` is ``b`` transposed);
        None when a value cannot be read."""
        src = self.src
        if not (src.has_data(a) and src.has_data(b)):
            return None
        x, y = src.array(a), src.array(b)
        return bool(np.array_equal(x, y.T if flip else y))

    def _warn(self, init: str, shape: tuple, others: list[str]) -> None:
        names = " or ".join(f"'{o}' {list(self.src.inits[o].dims)}" for o in others)
        warnings.warn(
            f"{self.src.where}: initializer '{init}' {list(shape)} may be a copy of the embedding {names} "
            f"(a tied weight the exporter stored again); without their data wafercc cannot tell, so it counts "
            f"both ({int(np.prod(shape)):,} parameters that may be counted twice); keep the external data "
            f"beside the .onnx file, or export with dynamo=True, to decide", TiedWeightWarning, stacklevel=2)
