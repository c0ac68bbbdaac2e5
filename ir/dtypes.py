"""Element types of IR values and their storage size."""
from __future__ import annotations

import enum


class DType(str, enum.Enum):
    """Element type; the value is the name used in the text form."""

    F32 = "f32"
    F16 = "f16"
    BF16 = "bf16"
    F8E4M3 = "f8e4m3"
    F8E5M2 = "f8e5m2"
    F4E2M1 = "f4e2m1"
    I64 = "i64"
    I32 = "i32"
    I8 = "i8"
    I4 = "i4"
    BOOL = "bool"

    @property
    def bits(self) -> int:
        return _BITS[self]

    @property
    def is_float(self) -> bool:
        return self.value.startswith("f") or self is DType.BF16

    def nbytes(self, elements: int) -> int:
        """Bytes to store ``elements`` packed values (sub-byte types round up)."""
        return (elements * self.bits + 7) // 8

    @classmethod
    def parse(cls, text: str) -> "DType":
        try:
            return cls(_ALIASES.get(text.lower(), text.lower()))
        except ValueError:
            known = ", ".join(d.value for d in cls)
            raise ValueError(f"unknown dtype '{text}' (expected one of {known})") from None


_BITS = {
    DType.F32: 32, DType.F16: 16, DType.BF16: 16, DType.F8E4M3: 8, DType.F8E5M2: 8,
    DType.F4E2M1: 4, DType.I64: 64, DType.I32: 32, DType.I8: 8, DType.I4: 4, DType.BOOL: 8,
}

# Spellings users and frameworks use for the same types.
_ALIASES = {
    "float32": "f32", "fp32": "f32", "float": "f32",
    "float16": "f16", "fp16": "f16", "half": "f16",
    "bfloat16": "bf16",
    "fp8": "f8e4m3", "float8_e4m3fn": "f8e4m3", "e4m3": "f8e4m3",
    "float8_e5m2": "f8e5m2", "e5m2": "f8e5m2",
    "fp4": "f4e2m1", "float4_e2m1fn": "f4e2m1", "mxfp4": "f4e2m1",
    "int64": "i64", "int32": "i32", "int8": "i8", "int4": "i4",
}
