"""Explicit defect maps from a JSON file (schema in docs/targets.md).

    {"version": 1, "frame": "usable",
     "all":    {"dead_cores": [[row, col], ...], "dead_dies": [[die_row, die_col], ...],
                "dead_links": [[row, col, "E"], ...]},
     "wafers": {"0": {...same keys...}, "3": {...}}}

``frame`` is ``usable`` (coordinates in the program rectangle, the default) or ``fabric`` (whole
fabric; entries outside the program rectangle are dropped).  Structure is checked on load, ranges
when a wafer is generated (they depend on the target).
"""
from __future__ import annotations

import os

import numpy as np

from .. import jsonsafe
from ..limits import MAX_DEFECT_FILE_BYTES, MAX_FABRIC_SIDE
from .errors import DefectSpecError

ENTRY_KEYS = ("dead_cores", "dead_dies", "dead_links")
DIRECTIONS = {"N": 0, "E": 1, "S": 2, "W": 3}


def _arr(path, where, key, rows) -> np.ndarray:
    width = 3 if key == "dead_links" else 2
    if not isinstance(rows, list):
        raise DefectSpecError(f"'{where}.{key}': expected a list of [{'row, col, dir' if width == 3 else 'row, col'}]",
                              where=path)
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, item in enumerate(rows):
        ok = isinstance(item, list) and len(item) == width
        ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and abs(v) <= MAX_FABRIC_SIDE
                        for v in item[:2])
        if ok and width == 3:
            ok = item[2] in DIRECTIONS
        if not ok:
            exp = "[row, col, \"N|E|S|W\"]" if width == 3 else "[row, col]"
            shown = repr(item) if len(repr(item)) <= 60 else repr(item)[:57] + "..."
            raise DefectSpecError(f"'{where}.{key}[{i}]': got {shown}, expected {exp} "
                                  f"(integers of at most {MAX_FABRIC_SIDE})", where=path)
        out[i, :2] = item[:2]
        if width == 3:
            out[i, 2] = DIRECTIONS[item[2]]
    return out


def _entry(path, where, d) -> dict[str, np.ndarray]:
    if not isinstance(d, dict):
        raise DefectSpecError(f"'{where}': got {type(d).__name__}, expected an object", where=path)
    for k in d:
        if k not in ENTRY_KEYS:
            raise DefectSpecError(f"'{where}.{k}': unknown key, expected one of {', '.join(ENTRY_KEYS)}", where=path)
    return {k: _arr(path, where, k, d.get(k, [])) for k in ENTRY_KEYS}


def load_defect_file(path: str) -> dict:
    """Parse and structurally validate a defect JSON file -> {"frame", "all", "wafers": {i: entry}}."""
    if not os.path.isfile(path):
        raise DefectSpecError("no such defect map file", where=path)
    data = jsonsafe.load_file(path, DefectSpecError, max_bytes=MAX_DEFECT_FILE_BYTES, what="defect-map JSON file")
    if not isinstance(data, dict):
        raise DefectSpecError("expected a JSON object at the top level", where=path)
    for k in data:
        if k not in ("version", "frame", "all", "wafers"):
            raise DefectSpecError(f"unknown key '{k}', expected version, frame, all, wafers", where=path)
    version = data.get("version")
    if version != 1 or isinstance(version, bool):
        raise DefectSpecError(f"'version': got {repr(version)[:40]}, expected 1", where=path)
    frame = data.get("frame", "usable")
    if frame not in ("usable", "fabric"):
        raise DefectSpecError(f"'frame': got {frame!r}, expected 'usable' or 'fabric'", where=path)
    wafers = data.get("wafers", {})
    if not isinstance(wafers, dict):
        raise DefectSpecError("'wafers': expected an object keyed by wafer index", where=path)
    out = {"path": path, "frame": frame, "all": _entry(path, "all", data.get("all", {})), "wafers": {}}
    for k, v in wafers.items():
        if not (k.isascii() and k.isdigit() and len(k) <= 9):
            raise DefectSpecError(f"'wafers.{k}': expected a wafer index (0, 1, ...)", where=path)
        out["wafers"][int(k)] = _entry(path, f"wafers.{k}", v)
    return out


def apply_defect_file(data: dict, index: int, target, alive: np.ndarray, die_box, n_dies: tuple[int, int]):
    """Mark the file's dead cores/dies of wafer ``index`` in ``alive``; return (dead_dies, links[K,3] as N/E/S/W)."""
    path = data["path"]
    rows, cols = alive.shape
    entries = [data["all"]] + ([data["wafers"][index]] if index in data["wafers"] else [])
    dies, links = [], []
    for e in entries:
        cores = e["dead_cores"]
        lk = e["dead_links"].copy()
        if data["frame"] == "fabric":
            fh, fw = target.mesh.fabric_height, target.mesh.fabric_width
            for arr, name in ((cores, "dead_cores"), (lk[:, :2], "dead_links")):
                bad = (arr < 0).any(axis=1) | (arr[:, 0] >= fh) | (arr[:, 1] >= fw)
                if bad.any():
                    raise DefectSpecError(f"'{name}': {arr[bad][0].tolist()} is outside the {fh} x {fw} fabric",
                                          where=path)
            off = np.array([target.usable_y0, target.usable_x0])
            cores, lk[:, :2] = cores - off, lk[:, :2] - off
            inside = lambda a: (a >= 0).all(axis=1) & (a[:, 0] < rows) & (a[:, 1] < cols)
            cores, lk = cores[inside(cores)], lk[inside(lk[:, :2])]
        for arr, name in ((cores, "dead_cores"), (lk[:, :2], "dead_links")):
            bad = (arr < 0).any(axis=1) | (arr[:, 0] >= rows) | (arr[:, 1] >= cols)
            if bad.any():
                raise DefectSpecError(f"'{name}': {arr[bad][0].tolist()} is outside the {rows} x {cols} "
                                      f"program rectangle of {target.name}", where=path)
        alive[cores[:, 0], cores[:, 1]] = False
        for dr, dc in e["dead_dies"].tolist():
            if not (0 <= dr < n_dies[0] and 0 <= dc < n_dies[1]):
                raise DefectSpecError(f"'dead_dies': {[dr, dc]} is outside the {n_dies[0]} x {n_dies[1]} die grid",
                                      where=path)
            r0, r1, c0, c1 = die_box(dr, dc)
            alive[r0:r1, c0:c1] = False
            dies.append((dr, dc))
        links.append(lk)
    return dies, np.concatenate(links) if links else np.zeros((0, 3), np.int64)
