"""Hypothesis strategies for hostile target files: mutations of the shipped presets.

``target_files()`` draws the bytes of a target .toml: a preset (wafercc/target/presets/) parsed,
given up to two plausible edits (a quantity scaled, a small fabric) and up to four hostile field
mutations (wrong types, zero / negative / huge / non-finite numbers, other units, unknown sources
and confidences, missing and unknown keys, deep nesting, relations broken by scaling one
quantity), written back as TOML; one draw in six then gets a text-level corruption
(binary garbage, invalid UTF-8, truncation, a 100,000-deep array, an over-long file).

    from fuzz.target_strategies import target_files, PRESETS
"""
from __future__ import annotations

import json
import math
import os
import tomllib

from hypothesis import strategies as st

_PRESET_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "wafercc", "target", "presets")
PRESETS = {name[:-5]: tomllib.load(open(os.path.join(_PRESET_DIR, name), "rb"))
           for name in sorted(os.listdir(_PRESET_DIR)) if name.endswith(".toml")}

HOSTILE_NUMBERS = [0, -1, 1, 2, 7, 2 ** 31, 2 ** 40, 2 ** 63 - 1, -2 ** 63, 10 ** 30, 0.5, 1e-300, 1e300, -0.0,
                   math.nan, math.inf, -math.inf]
HOSTILE_VALUES = ["", "48", "KiB", True, False, [], [1, 2], {}, {"value": 1}, "\x00", "é" * 40]
UNITS = ["cores", "KiB", "MiB", "B", "GHz", "Hz", "bit/cycle", "B/cycle", "colors", "Tb/s", "furlongs", "", "kW"]


# ---- a minimal TOML writer (nothing in the dependencies writes TOML) ----
def _scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)            # a JSON string is a TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_scalar(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def _key(k: str) -> str:
    return k if k and all(c.isalnum() or c in "_-" for c in k) and k.isascii() else json.dumps(k)


def to_toml(doc: dict) -> str:
    """``doc`` as TOML: top-level scalars first, then one ``[table]`` per dict (values inline)."""
    lines = [f"{_key(k)} = {_scalar(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for k, v in doc.items():
        if isinstance(v, dict):
            lines.append(f"\n[{_key(k)}]")
            lines += [f"{_key(f)} = {_scalar(x)}" for f, x in v.items()]
    return "\n".join(lines) + "\n"


# ---- field mutations: (doc, draw) -> None, in place ----
def _quantity_fields(doc) -> list[tuple[str, str]]:
    return [(s, f) for s, t in doc.items() if isinstance(t, dict) and s not in ("target", "sources")
            for f, q in t.items() if isinstance(q, dict) and "value" in q]


def _pick(draw, seq, label):
    return seq[draw(st.integers(0, len(seq) - 1), label=label)] if seq else None


def set_value(doc, draw):
    """One quantity's value made hostile: a number at an edge, or a value of the wrong type."""
    sf = _pick(draw, _quantity_fields(doc), "field")
    if sf:
        doc[sf[0]][sf[1]]["value"] = draw(st.one_of(st.sampled_from(HOSTILE_NUMBERS), st.sampled_from(HOSTILE_VALUES),
                                                    st.integers(), st.floats()), label="value")


def scale_value(doc, draw):
    """One quantity scaled: still a number of the right type, but relations (reserved < total,
    offsets inside the fabric, colors in range) may break, and sizes may become absurd."""
    sf = _pick(draw, _quantity_fields(doc), "field")
    if not sf:
        return
    q = doc[sf[0]][sf[1]]
    factor = draw(st.sampled_from([0, -1, 2, 10, 1000, 10 ** 6, 10 ** 12]), label="factor")
    if isinstance(q["value"], list):
        q["value"] = [c * factor for c in q["value"]] + draw(st.lists(st.integers(-5, 2 ** 40), max_size=3))
    elif isinstance(q["value"], (int, float)) and not isinstance(q["value"], bool):
        q["value"] = q["value"] * factor


def set_unit(doc, draw):
    sf = _pick(draw, _quantity_fields(doc), "field")
    if sf:
        doc[sf[0]][sf[1]]["unit"] = draw(st.one_of(st.sampled_from(UNITS), st.sampled_from(HOSTILE_VALUES)), label="unit")


def set_provenance(doc, draw):
    sf = _pick(draw, _quantity_fields(doc), "field")
    if sf:
        key = draw(st.sampled_from(["source", "confidence"]), label="key")
        doc[sf[0]][sf[1]][key] = draw(st.sampled_from(["nowhere", "", "high", "certain", 3, "none"]))


def delete_key(doc, draw):
    """A section, a field, or one key of a quantity removed."""
    sec = _pick(draw, sorted(doc), "section")
    how = draw(st.sampled_from(["section", "field", "quantity key"]), label="delete")
    if how == "section" or not isinstance(doc[sec], dict) or not doc[sec]:
        del doc[sec]
        return
    f = _pick(draw, sorted(doc[sec]), "field")
    if how == "quantity key" and isinstance(doc[sec][f], dict) and doc[sec][f]:
        del doc[sec][f][_pick(draw, sorted(doc[sec][f]), "key")]
    else:
        del doc[sec][f]


def add_key(doc, draw):
    """An unknown section, field or quantity key, or a known one given a table of the wrong shape."""
    where = draw(st.sampled_from(["top", "section", "quantity"]), label="add")
    name = draw(st.sampled_from(["zz", "mesh", "note", "value", "cost_model", "é", "a.b"]), label="name")
    value = draw(st.one_of(st.sampled_from(HOSTILE_NUMBERS[:10]), st.sampled_from(HOSTILE_VALUES)), label="value")
    sf = _pick(draw, _quantity_fields(doc), "field")
    if where == "top" or not sf:
        doc[name] = value if draw(st.booleans()) else {"x": value}
    elif where == "section":
        doc[sf[0]][name] = value
    else:
        doc[sf[0]][sf[1]][name] = value


def retype_table(doc, draw):
    """A section or a quantity replaced by a scalar, a list or a nested structure."""
    sec = _pick(draw, sorted(doc), "section")
    replacement = draw(st.sampled_from([1, "mesh", [1, 2], [[[[1]]]], {"a": {"b": {"c": 1}}}]), label="replacement")
    sf = _pick(draw, _quantity_fields(doc), "field")
    if draw(st.booleans(), label="whole section") or not sf:
        doc[sec] = replacement
    else:
        doc[sf[0]][sf[1]] = replacement


def header(doc, draw):
    head = doc.setdefault("target", {})
    if not isinstance(head, dict):
        return
    key = draw(st.sampled_from(["schema_version", "name", "description"]), label="header")
    head[key] = draw(st.sampled_from([0, 2, -1, True, 1.0, "1", "", " ", "x" * 1000, "none"]))


def perturb(doc, draw):
    """A plausible edit that keeps the file valid more often than not: one quantity halved, doubled
    or quadrupled (integers stay integers), or the fabric shrunk to a few cores."""
    sf = _pick(draw, _quantity_fields(doc), "field")
    if not sf:
        return
    q = doc[sf[0]][sf[1]]
    if sf[0] == "mesh" and sf[1].startswith("fabric") and draw(st.booleans(), label="small fabric"):
        q["value"] = draw(st.sampled_from([1, 2, 8, 16, 33, 100]), label="side")
    elif isinstance(q["value"], (int, float)) and not isinstance(q["value"], bool):
        f = draw(st.sampled_from([2, 4, 0.5]), label="factor")
        v = q["value"] * f
        q["value"] = int(v) if isinstance(q["value"], int) and float(v).is_integer() else float(v)


MUTATIONS = [set_value, set_value, scale_value, scale_value, set_unit, set_provenance, delete_key, add_key,
             retype_table, header]


def _copy(doc):
    return json.loads(json.dumps(doc))


@st.composite
def target_docs(draw, max_mutations: int = 4) -> dict:
    """A preset's parsed document with up to two plausible edits and up to ``max_mutations``
    hostile field mutations."""
    doc = _copy(PRESETS[draw(st.sampled_from(sorted(PRESETS)), label="preset")])
    plausible = draw(st.lists(st.just(perturb), max_size=2), label="plausible edits")
    hostile = draw(st.lists(st.sampled_from(MUTATIONS), max_size=max_mutations), label="mutations")
    for mutate in plausible + hostile:
        if doc:
            mutate(doc, draw)
    return doc


def _corrupt(draw, data: bytes) -> bytes:
    how = draw(st.sampled_from(["garbage", "bad utf-8", "truncate", "deep", "huge", "empty", "bom", "flip"]),
               label="corruption")
    if how == "garbage":
        return draw(st.binary(min_size=1, max_size=256), label="garbage")
    if how == "bad utf-8":
        k = draw(st.integers(0, len(data)))
        return data[:k] + b"\xff\xfe\xc3(" + data[k:]
    if how == "truncate":
        return data[:draw(st.integers(0, max(0, len(data) - 1)))]
    if how == "deep":
        return data + b"\n[zz]\ndeep = " + b"[" * 100000 + b"]" * 100000 + b"\n"
    if how == "huge":
        return data + b"\n# " + b"x" * (8 * 2 ** 20) + b"\n"
    if how == "empty":
        return b""
    if how == "bom":
        return b"\xef\xbb\xbf" + data
    k = draw(st.integers(0, max(0, len(data) - 1)))
    return data[:k] + bytes([data[k] ^ 0x80]) + data[k + 1:] if data else data


@st.composite
def target_files(draw, max_mutations: int = 4) -> bytes:
    """The bytes of a mutated target file; one draw in six corrupted as text."""
    data = to_toml(draw(target_docs(max_mutations))).encode("utf-8")
    if draw(st.integers(0, 5), label="text corruption") == 0:
        data = _corrupt(draw, data)
    return data
