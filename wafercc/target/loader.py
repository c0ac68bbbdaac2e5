"""Load and validate target files: ``load_target(name_or_path) -> Target``, ``list_targets()``.

Every numeric field is a table ``{ value, unit, source, confidence }``; ``source`` names a key of
the file's ``[sources]`` table.  Anything wrong fails on load with one line naming the file, the
field, the value and what was expected.  See docs/targets.md.
"""
from __future__ import annotations

import os
import tomllib
from functools import lru_cache
from importlib import resources

from . import units
from ..jsonsafe import check_text_depth, read_text
from ..limits import MAX_TARGET_BYTES
from .errors import TargetError
from .schema import (
    CONFIDENCE,
    FREE_SECTIONS,
    SECTIONS,
    Quantity,
    Target,
    freeze,
    is_finite_number,
    section_fields,
)

SCHEMA_VERSION = 1
QUANTITY_KEYS = ("value", "unit", "source", "confidence")


def _presets_dir():
    return resources.files("wafercc.target") / "presets"


def list_targets() -> list[str]:
    """Names of the shipped presets (``wse2``, ``wse3``...)."""
    return sorted(p.name[:-5] for p in _presets_dir().iterdir() if p.name.endswith(".toml"))


def resolve(name_or_path: str) -> str:
    """Path of a preset name or a target file; TargetError if neither."""
    s = str(name_or_path)
    if s in list_targets():
        return str(_presets_dir() / f"{s}.toml")
    if os.path.isfile(s):
        return s
    if os.path.isdir(s):
        raise TargetError("is a directory, expected a target .toml file", where=s)
    if s.endswith(".toml") or os.sep in s:
        raise TargetError("no such target file", where=s)
    raise TargetError(f"unknown target '{s}' (expected one of {', '.join(list_targets())} or a .toml file)")


def load_target(name_or_path: str) -> Target:
    """Load a preset by name or a target file by path, validated; raises TargetError."""
    path = resolve(name_or_path)
    return _load_cached(os.path.abspath(path), os.stat(path).st_mtime_ns, path)


@lru_cache(maxsize=32)
def _load_cached(abspath: str, mtime_ns: int, shown: str) -> Target:
    text = read_text(abspath, TargetError, max_bytes=MAX_TARGET_BYTES, what="target .toml file", where=shown)
    check_text_depth(text, shown, TargetError, toml=True)   # tomllib recurses, and int() has a digit limit
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise TargetError(f"not valid TOML: {e}", where=shown) from None
    except (ValueError, RecursionError) as e:              # guarded above; kept as a last resort
        raise TargetError(f"not valid TOML ({type(e).__name__})", where=shown) from None
    return _Builder(shown, data).build()


class _Builder:
    def __init__(self, path: str, data: dict):
        self.path, self.data = path, data
        self.quantities: dict[str, Quantity] = {}
        self.sources: dict[str, str] = {}

    def fail(self, fieldname: str, value, expected: str):
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise TargetError(f"field '{fieldname}': got {shown}, expected {expected}", where=self.path)

    def table(self, name: str, required: bool = True) -> dict:
        t = self.data.get(name)
        if t is None:
            if required:
                raise TargetError(f"section [{name}] is missing, expected it (see docs/targets.md)", where=self.path)
            return {}
        if not isinstance(t, dict):
            self.fail(name, t, "a table")
        return t

    def build(self) -> Target:
        allowed = {"target", "sources", *SECTIONS, *FREE_SECTIONS}
        for k in self.data:
            if k not in allowed:
                self.fail(k, "...", f"no unknown section (allowed: {', '.join(sorted(allowed))})")
        head = self.table("target")
        self._keys("target", head, {"name", "description", "schema_version"}, {"name", "schema_version"})
        if head["schema_version"] != SCHEMA_VERSION or isinstance(head["schema_version"], bool):
            self.fail("target.schema_version", head["schema_version"], f"{SCHEMA_VERSION}")
        for k in ("name", "description"):
            if not isinstance(head.get(k, ""), str) or (k == "name" and not head[k].strip()):
                self.fail(f"target.{k}", head.get(k), "a non-empty string")
        for k, v in self.table("sources").items():
            if not isinstance(v, str) or not v.strip():
                self.fail(f"sources.{k}", v, "a non-empty citation string")
            self.sources[k] = v
        notes, built = {}, {}
        for sec, cls in SECTIONS.items():
            t = self.table(sec)
            names = [f.name for f in section_fields(cls)]
            self._keys(sec, t, set(names) | {"note"}, set(names))
            if "note" in t:
                if not isinstance(t["note"], str):
                    self.fail(f"{sec}.note", t["note"], "a string")
                notes[sec] = t["note"]
            built[sec] = cls(**{f.name: self._quantity(f"{sec}.{f.name}", t[f.name], f.metadata)
                                for f in section_fields(cls)})
        cost = {}
        for k, v in self.table("cost_model", required=False).items():
            if k == "note":
                notes["cost_model"] = str(v)
                continue
            cost[k] = self._free_quantity(f"cost_model.{k}", v)
        target = Target(name=head["name"], description=head.get("description", ""), path=self.path,
                        cost_model=freeze(cost), quantities=freeze(self.quantities),
                        sources=freeze(self.sources), notes=freeze(notes), **built)
        self._cross_checks(target)
        return target

    def _keys(self, where: str, t: dict, allowed: set, required: set):
        for k, v in t.items():
            if k not in allowed:
                self.fail(f"{where}.{k}", v, f"a known field (one of {', '.join(sorted(allowed))})")
        for k in sorted(required):
            if k not in t:
                self.fail(f"{where}.{k}", None, "this field (it is missing)")

    def _provenance(self, name: str, q) -> tuple[str, str]:
        if not isinstance(q, dict):
            self.fail(name, q, "a table { value, unit, source, confidence }")
        for k in q:
            if k not in QUANTITY_KEYS and k != "note":
                self.fail(f"{name}.{k}", q[k], f"one of {', '.join(QUANTITY_KEYS)}, note")
        for k in QUANTITY_KEYS:
            if k not in q:
                what = "a source (a key of [sources]); every number needs one" if k == "source" else "this key"
                self.fail(f"{name}.{k}", None, what)
        src, conf = q["source"], q["confidence"]
        if not isinstance(src, str) or src not in self.sources:
            self.fail(f"{name}.source", src, f"a key of [sources] ({', '.join(sorted(self.sources)) or 'none'})")
        if conf not in CONFIDENCE:
            self.fail(f"{name}.confidence", conf, "one of " + "|".join(CONFIDENCE))
        return src, conf

    def _quantity(self, name: str, q, meta):
        src, conf = self._provenance(name, q)
        dim, kind, check = meta["dimension"], meta["kind"], meta["check"]
        unit, raw = q["unit"], q["value"]
        ok_units = units.accepted(dim)
        if not isinstance(unit, str) or unit not in ok_units:     # a list or table is unhashable
            self.fail(f"{name}.unit", unit, "one of " + ", ".join(ok_units))
        if check == "colors":
            if not isinstance(raw, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in raw):
                self.fail(name, raw, "a list of integer color ids")
            if len(raw) > meta["hi"] + 1 or any(not 0 <= c <= meta["hi"] for c in raw):
                self.fail(name, raw, f"at most {meta['hi'] + 1} color ids in 0..{meta['hi']}")
            value = tuple(raw)
        else:
            if not is_finite_number(raw):
                self.fail(name, raw, "a finite number")
            value = raw * ok_units[unit]
            if not is_finite_number(value):          # e.g. 1e308 GB overflows
                self.fail(name, raw, f"a number that is finite in {units.canonical(dim)}")
            if kind is int:
                if float(value) != int(value):
                    self.fail(name, raw, f"a whole number of {units.canonical(dim)}")
                value = int(value)
            else:
                value = float(value)
            if check == "positive" and not value > 0:
                self.fail(name, raw, "a positive number")
            if check == "nonneg" and not value >= 0:
                self.fail(name, raw, "a number >= 0")
            if check == "fraction" and not 0 <= value < 1:
                self.fail(name, raw, "a fraction in [0, 1)")
            hi = meta["hi"]
            if value > hi:
                self.fail(name, raw, f"at most {hi if isinstance(hi, int) else f'{hi:g}'} {units.canonical(dim)} "
                                     f"(the bound in wafercc.target.schema)")
        self.quantities[name] = Quantity(name, value, units.canonical(dim), f"{raw} {unit}", src,
                                         self.sources[src], conf)
        return value

    def _free_quantity(self, name: str, q) -> Quantity:
        src, conf = self._provenance(name, q)
        if not is_finite_number(q["value"]):
            self.fail(name, q["value"], "a finite number")
        if not isinstance(q["unit"], str) or not q["unit"].strip():
            self.fail(f"{name}.unit", q["unit"], "a non-empty unit string")
        qt = Quantity(name, q["value"], q["unit"], f"{q['value']} {q['unit']}", src, self.sources[src], conf)
        self.quantities[name] = qt
        return qt

    def _cross_checks(self, t: Target):
        m, c, f = t.mesh, t.core, t.fabric
        given = lambda k: self.quantities[k].given
        if c.sram_reserved >= c.sram:
            self.fail("core.sram_reserved", given("core.sram_reserved"), f"less than core.sram ({given('core.sram')})")
        if c.sram_reserved + c.receive_buffer >= c.sram:
            self.fail("core.receive_buffer", given("core.receive_buffer"),
                      f"less than core.sram minus core.sram_reserved ({c.sram - c.sram_reserved} B)")
        for col in f.reserved_colors:
            if not 0 <= col < f.colors:
                self.fail("fabric.reserved_colors", col, f"a color id in 0..{f.colors - 1}")
        if len(set(f.reserved_colors)) != len(f.reserved_colors):
            self.fail("fabric.reserved_colors", list(f.reserved_colors), "distinct color ids")
        if len(f.reserved_colors) >= f.colors:
            self.fail("fabric.reserved_colors", list(f.reserved_colors), "at least one free color")
        if m.offset_x != m.reserved_west_columns + m.halo:
            self.fail("mesh.offset_x", m.offset_x, f"reserved_west_columns + halo = {m.reserved_west_columns + m.halo}")
        if m.offset_y != m.halo:
            self.fail("mesh.offset_y", m.offset_y, f"halo = {m.halo}")
        if t.usable_cols <= 0 or t.usable_rows <= 0:
            self.fail("mesh.fabric_width", m.fabric_width, "a fabric larger than its reserved columns and halo")
        if t.dies.columns > m.fabric_width or t.dies.rows > m.fabric_height:
            self.fail("dies.columns", t.dies.columns, "no more die columns/rows than fabric columns/rows")
        if t.power.chip > t.power.system:
            self.fail("power.chip", given("power.chip"), f"at most power.system ({given('power.system')})")
