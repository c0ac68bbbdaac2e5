"""Errors raised for bad target files and bad defect specs (one line each; the CLI exits 2)."""
from __future__ import annotations

from ..errors import WaferccError


class TargetError(WaferccError):
    """A target name is unknown or a target file is malformed (names file, field, value, expectation)."""


class DefectSpecError(WaferccError):
    """A defect spec string or defect-map JSON file is malformed."""
