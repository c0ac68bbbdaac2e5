"""Load a schedule directory into memory and save it back (docs/schedule-format.md).

``save_schedule(load_schedule(d), e)`` writes files byte-identical to ``d``'s: JSON with sorted
keys and the writer's indentation, npz members in sorted order with fixed timestamps.  Loading
checks the schema version and that every wafer named in schedule.json has its arrays.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from ..cache import atomic_write_text
from ..errors import InputFileError
from .npz import write_npz
from .schedule import READABLE


@dataclasses.dataclass(eq=False)
class Schedule:
    doc: dict                                # schedule.json
    wafers: list[dict[str, np.ndarray]]      # wafer{k}.npz arrays
    defects: dict[str, np.ndarray]           # defects.npz arrays

    def wafer_ops(self, k: int) -> list[dict]:
        return self.doc["wafers"][k]["ops"]

    @property
    def timeline(self) -> dict:
        return self.doc["timeline"]


def _npz(path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise InputFileError(f"cannot read arrays: {e}", where=path) from None


def load_schedule(outdir: str) -> Schedule:
    path = os.path.join(outdir, "schedule.json")
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        raise InputFileError(f"cannot read schedule: {e.strerror}", where=path) from None
    except json.JSONDecodeError as e:
        raise InputFileError(f"not JSON: {e.msg} at line {e.lineno}", where=path) from None
    if not isinstance(doc, dict) or doc.get("schema") not in READABLE:
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise InputFileError(f"schema {got!r}: expected one of {', '.join(map(repr, READABLE))}", where=path)
    wafers = [_npz(os.path.join(outdir, f"wafer{w['index']}.npz")) for w in doc.get("wafers", [])]
    return Schedule(doc, wafers, _npz(os.path.join(outdir, "defects.npz")))


def save_schedule(s: Schedule, outdir: str) -> None:
    """Writes schedule.json last, as the compiler does (it names the other files)."""
    os.makedirs(outdir, exist_ok=True)
    for w, arrays in zip(s.doc["wafers"], s.wafers):
        write_npz(os.path.join(outdir, f"wafer{w['index']}.npz"), arrays)
    write_npz(os.path.join(outdir, "defects.npz"), s.defects)
    atomic_write_text(os.path.join(outdir, "schedule.json"), json.dumps(s.doc, indent=1, sort_keys=True) + "\n")
