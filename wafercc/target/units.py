"""Units a target file may write a number in, and their factors to the canonical unit.

A field of dimension ``bytes`` may be written in ``B``, ``KiB``, ``GB``... and is stored in ``B``.
Count-like fields (``cores``, ``lanes``, ``cycles``...) have exactly one accepted unit.
"""
from __future__ import annotations

# dimension -> (canonical unit, {accepted unit: factor to canonical})
SCALED: dict[str, tuple[str, dict[str, float]]] = {
    "bytes": ("B", {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30,
                    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}),
    "hertz": ("Hz", {"Hz": 1, "kHz": 10**3, "MHz": 10**6, "GHz": 10**9}),
    "seconds": ("s", {"s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}),
    "watts": ("W", {"W": 1, "mW": 1e-3, "kW": 10**3}),
    "bytes_per_s": ("B/s", {"B/s": 1, "GB/s": 10**9, "TB/s": 10**12, "PB/s": 10**15,
                            "bit/s": 0.125, "Gb/s": 1.25e8, "Tb/s": 1.25e11, "Pb/s": 1.25e14}),
    "fraction": ("fraction", {"fraction": 1, "%": 0.01}),
}


def accepted(dimension: str) -> dict[str, float]:
    """Accepted units of ``dimension`` -> factor. An unknown dimension is a fixed unit label."""
    if dimension in SCALED:
        return SCALED[dimension][1]
    return {dimension: 1}


def canonical(dimension: str) -> str:
    return SCALED[dimension][0] if dimension in SCALED else dimension
