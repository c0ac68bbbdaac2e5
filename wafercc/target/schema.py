"""The typed, frozen tree a target file loads into, and the schema of each field.

Each section is a frozen dataclass; each field's ``metadata`` says its dimension (see
``units.py``), its Python type and its constraint, so the loader, ``targets show`` and
docs/targets.md all read one schema.  Values are stored in canonical units (B, Hz, s, W, B/s);
``Target.quantities`` keeps every field's provenance (given value and unit, source, confidence).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType

from ..limits import MAX_FABRIC_SIDE

CONFIDENCE = ("high", "medium", "low", "derived", "assumed")


# Upper bound of a field, in its canonical unit, by dimension (a field may name its own with ``hi``):
# far above any wafer built, low enough that nothing sized from a target (defect maps, routing
# tables, color loops) can exhaust memory.  The mesh side bound is wafercc.limits.MAX_FABRIC_SIDE.
MAX_BY_DIMENSION = {
    "cores": MAX_FABRIC_SIDE, "columns": MAX_FABRIC_SIDE, "bytes": 2 ** 50, "B/cycle": 2 ** 16,
    "lanes": 2 ** 16, "FLOP/lane/cycle": 1024, "hertz": 1e12, "cycles": 10 ** 6, "bit/cycle": 2 ** 16,
    "ports": 64, "colors": 1024, "color ids": 1023, "dies": 256, "bytes_per_s": 1e21, "seconds": 1e3,
    "watts": 1e9, "fraction": 1,
}


def F(dimension: str, kind: type = int, check: str = "positive", doc: str = "", hi: float | None = None):
    """Field metadata: ``check`` is positive | nonneg | fraction | colors (a list of color ids);
    ``hi`` the largest value in the canonical unit (default: MAX_BY_DIMENSION)."""
    return field(metadata={"dimension": dimension, "kind": kind, "check": check, "doc": doc,
                           "hi": MAX_BY_DIMENSION[dimension] if hi is None else hi})


@dataclass(frozen=True)
class Quantity:
    """One number from a target file, with where it came from."""
    field: str          # "core.sram"
    value: object       # canonical value (int, float or tuple of ints)
    unit: str           # canonical unit
    given: str          # as written, e.g. "48 KiB"
    source: str         # key into the file's [sources] table
    citation: str       # that key's text
    confidence: str     # one of CONFIDENCE


@dataclass(frozen=True)
class Mesh:
    fabric_width: int = F("cores", doc="PEs per row exposed to programs (--fabric-dims W)")
    fabric_height: int = F("cores", doc="PEs per column exposed to programs (--fabric-dims H)")
    reserved_west_columns: int = F("columns", check="nonneg", doc="memcpy/IO columns on the west edge")
    reserved_east_columns: int = F("columns", check="nonneg", doc="memcpy/IO columns on the east edge")
    halo: int = F("cores", check="nonneg", doc="halo rows/columns around the program rectangle")
    offset_x: int = F("cores", check="nonneg", doc="first program column (--fabric-offsets x)")
    offset_y: int = F("cores", check="nonneg", doc="first program row (--fabric-offsets y)")


@dataclass(frozen=True)
class Core:
    sram: int = F("bytes", doc="SRAM per core", hi=2 ** 30)
    sram_reserved: int = F("bytes", check="nonneg", doc="SRAM per core kept for code and runtime")
    receive_buffer: int = F("bytes", check="nonneg",
                            doc="SRAM per core for receive buffers (broadcast input slices, partial sums)")
    sram_read_bandwidth: int = F("B/cycle", doc="SRAM read bytes per core per cycle")
    sram_write_bandwidth: int = F("B/cycle", doc="SRAM write bytes per core per cycle")
    simd_lanes_fp16: int = F("lanes", doc="FP16 SIMD lanes per core")
    flop_per_lane_cycle: int = F("FLOP/lane/cycle", doc="FLOP per lane per cycle (2 with FMA)")
    clock: float = F("hertz", float, doc="core clock")


@dataclass(frozen=True)
class Fabric:
    hop_latency: int = F("cycles", doc="router-to-router latency per hop")
    link_width: int = F("bit/cycle", doc="bits per link per cycle (one wavelet)")
    router_ports: int = F("ports", doc="router ports (N, S, E, W, ramp)")
    colors: int = F("colors", doc="virtual channels (colors) per link")
    reserved_colors: tuple = F("color ids", tuple, check="colors", doc="colors the runtime reserves (memcpy)")


@dataclass(frozen=True)
class Dies:
    columns: int = F("dies", doc="die columns across the fabric width (step-and-repeat)")
    rows: int = F("dies", doc="die rows across the fabric height")


@dataclass(frozen=True)
class IO:
    off_wafer_bandwidth: float = F("bytes_per_s", float, doc="off-wafer I/O bandwidth per system")
    off_wafer_latency: float = F("seconds", float, doc="one-way latency wafer to wafer (placeholder)")


@dataclass(frozen=True)
class Power:
    system: float = F("watts", float, doc="system power")
    chip: float = F("watts", float, doc="wafer (chip) power")


@dataclass(frozen=True)
class DefectDefaults:
    default_dead_core_rate: float = F("fraction", float, check="fraction",
                                      doc="default fraction of dead cores (routed around)")


@dataclass(frozen=True)
class Published:
    """Vendor figures the compiler does not use; tests cross-check the model against them."""
    cores: int = F("cores", doc="marketing core count", hi=2 ** 26)
    total_sram: float = F("bytes", float, doc="total on-wafer SRAM")
    memory_bandwidth: float = F("bytes_per_s", float, doc="whole-wafer SRAM bandwidth")
    fabric_bandwidth: float = F("bytes_per_s", float, doc="whole-wafer fabric bandwidth")


SECTIONS: dict[str, type] = {
    "mesh": Mesh, "core": Core, "fabric": Fabric, "dies": Dies, "io": IO,
    "power": Power, "defects": DefectDefaults, "published": Published,
}
# Free-form sections: any key, each a numeric field with any unit (kept as written).
FREE_SECTIONS = ("cost_model",)


def section_fields(cls) -> list:
    return list(fields(cls))


@dataclass(frozen=True, eq=False)
class Target:
    name: str
    description: str
    path: str
    mesh: Mesh
    core: Core
    fabric: Fabric
    dies: Dies
    io: IO
    power: Power
    defects: DefectDefaults
    published: Published
    cost_model: Mapping[str, Quantity]
    quantities: Mapping[str, Quantity]     # "section.field" -> provenance, in file order
    sources: Mapping[str, str]
    notes: Mapping[str, str]               # section -> note text

    def __reduce__(self):
        # its read-only mappings go as dicts and come back frozen (a worker process or a Ray task
        # gets the very target the driver loaded, wafercc/executor.py)
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        state = {k: dict(v) if isinstance(v, MappingProxyType) else v for k, v in state.items()}
        return _rebuild_target, (state,)

    # ---- derived (never stored in a file) ----
    @property
    def usable_x0(self) -> int:
        return self.mesh.offset_x

    @property
    def usable_y0(self) -> int:
        return self.mesh.offset_y

    @property
    def usable_cols(self) -> int:
        m = self.mesh
        return m.fabric_width - m.reserved_west_columns - m.reserved_east_columns - 2 * m.halo

    @property
    def usable_rows(self) -> int:
        return self.mesh.fabric_height - 2 * self.mesh.halo

    @property
    def usable_cores(self) -> int:
        return self.usable_cols * self.usable_rows

    @property
    def usable_bytes_per_core(self) -> int:
        return self.core.sram - self.core.sram_reserved

    @property
    def usable_sram_total(self) -> int:
        """Program SRAM on a defect-free wafer (usable cores x usable bytes per core)."""
        return self.usable_cores * self.usable_bytes_per_core

    @property
    def sram_total(self) -> int:
        """Raw SRAM of the usable rectangle (usable cores x SRAM per core)."""
        return self.usable_cores * self.core.sram

    @property
    def flop_per_core_cycle(self) -> int:
        return self.core.simd_lanes_fp16 * self.core.flop_per_lane_cycle

    @property
    def peak_flops_per_core(self) -> float:
        return self.flop_per_core_cycle * self.core.clock

    @property
    def peak_flops(self) -> float:
        """Dense FP16 peak of the usable rectangle, FLOP/s."""
        return self.peak_flops_per_core * self.usable_cores

    @property
    def link_bytes_per_cycle(self) -> float:
        return self.fabric.link_width / 8

    @property
    def link_bandwidth(self) -> float:
        """Bytes per second per link per direction."""
        return self.link_bytes_per_cycle * self.core.clock

    @property
    def hop_seconds(self) -> float:
        return self.fabric.hop_latency / self.core.clock

    @property
    def die_count(self) -> int:
        return self.dies.columns * self.dies.rows

    @property
    def free_colors(self) -> tuple[int, ...]:
        return tuple(c for c in range(self.fabric.colors) if c not in self.fabric.reserved_colors)

    def derived(self) -> dict[str, tuple[object, str]]:
        """Derived quantities for display: name -> (value, unit)."""
        return {
            "usable_cols": (self.usable_cols, "cores"), "usable_rows": (self.usable_rows, "cores"),
            "usable_cores": (self.usable_cores, "cores"),
            "usable_bytes_per_core": (self.usable_bytes_per_core, "B"),
            "usable_sram_total": (self.usable_sram_total, "B"),
            "flop_per_core_cycle": (self.flop_per_core_cycle, "FLOP/cycle"),
            "peak_flops": (self.peak_flops, "FLOP/s"), "link_bandwidth": (self.link_bandwidth, "B/s"),
            "hop_seconds": (self.hop_seconds, "s"), "die_count": (self.die_count, "dies"),
            "free_colors": (len(self.free_colors), "colors"),
        }


def _rebuild_target(state: dict) -> Target:
    return Target(**{k: freeze(v) if isinstance(v, dict) else v for k, v in state.items()})


def freeze(d: dict) -> Mapping:
    return MappingProxyType(dict(d))


def is_finite_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
