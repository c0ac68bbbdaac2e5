"""Hardware targets, defect maps and the device model every pass reads.

    load_target(name_or_path) -> Target      presets by name (wse2, wse3) or a .toml file
    list_targets() -> list[str]
    parse_defect_spec(spec) -> DefectSpec    "none", "random:0.01", "dies:1", "file:x.json", joined with "+"
    Device(target, defect_spec=None, seed=0).wafer(i) -> WaferDevice

See docs/targets.md.
"""
from .defects import DefectMap, DefectSpec, generate_defects, parse_defect_spec
from .device import Device, WaferDevice
from .errors import DefectSpecError, TargetError
from .loader import list_targets, load_target
from .schema import Quantity, Target

__all__ = [
           "DefectMap",
           "DefectSpec",
           "DefectSpecError",
           "Device",
           "Quantity",
           "Target",
           "TargetError",
           "WaferDevice",
           "generate_defects",
           "list_targets",
           "load_target",
           "parse_defect_spec",
]
