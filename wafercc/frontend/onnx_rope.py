"""The rotary frequencies a rotary region's cos/sin tables hold, read from the file.

The rotary IR op computes its tables from ``theta`` (inv_freq[i] = theta^(-2i/rd)) unless its
``scaling`` says otherwise.  Exports store the inverse frequencies in different places:

* an initializer (dynamo) or a Constant node (TorchScript) multiplied by the positions before Cos/Sin;
* folded into the cos/sin tables themselves (static-shape exports), one row per position.

Either way the vector is read back; when it is not the plain ``theta`` progression (YaRN blends
interpolated and extrapolated frequencies, llama3 rescales the low ones) the op carries the table
itself (``scaling = {"rope_type": "table", "inv_freq": [...]}``).  A constant multiplying cos and sin
(YaRN's attention factor) is carried as ``scaling["attention_factor"]``.
"""
from __future__ import annotations

import numpy as np

# ops between Cos/Sin and the table a rotation multiplies by that keep its values
_TABLE_PASS = {"Cast", "CastLike", "Identity", "Unsqueeze", "Squeeze", "Reshape", "Expand", "Flatten"}
_REL_TOL = 1e-4


def rope_frequencies(src, tables: list[str], rd: int) -> dict:
    """``{"theta": float | None, "scaling": dict | None}`` for a rotation over ``rd`` dims per head
    whose cos/sin tables are ``tables`` (cos first)."""
    if not isinstance(rd, int) or rd < 2 or rd % 2:
        return {"theta": None, "scaling": None}
    half = rd // 2
    inv, amp = _inline(src, tables[0], half)
    if inv is None:
        inv, amp = _folded(src, tables, half)
    if inv is None:
        return {"theta": None, "scaling": None}
    ratio = inv[1] / inv[0] if half >= 2 else 0.0
    theta = float(f"{ratio ** -float(half):.6g}") if 0 < ratio < 1 else None
    scaling: dict = {}
    plain = np.arange(half, dtype=np.float64) / half
    if theta is None or not np.allclose(inv, theta ** -plain, rtol=_REL_TOL, atol=0.0):
        scaling = {"rope_type": "table", "inv_freq": [float(v) for v in inv]}
    if amp is not None and abs(amp - 1.0) > 1e-6:
        scaling["attention_factor"] = float(amp)
    return {"theta": theta, "scaling": scaling or None}


def _inline(src, table: str, half: int):
    """(inverse frequencies, amplitude) when the table is computed in the graph: Cos(positions x
    inv_freq) seen through layout ops, a Concat of the two halves and a constant factor."""
    amp, t = 1.0, table
    for _ in range(16):
        p = src.prod(t)
        if p is None:
            return None, None
        if p.op_type in ("Cos", "Sin"):
            break
        if p.op_type in _TABLE_PASS:
            t = p.input[0]
        elif p.op_type in ("Gather", "GatherElements", "Slice"):  # rows picked by position
            t = p.input[0]
        elif p.op_type == "Mul":
            c = [src.scalar(i) for i in p.input]
            if sum(v is not None for v in c) != 1:
                return None, None
            amp *= next(v for v in c if v is not None)
            t = next(i for i, v in zip(p.input, c) if v is None)
        else:
            return None, None
    else:
        return None, None
    # backwards from the angle to the inverse frequencies (a 1-D constant, decreasing, in (0, 1])
    seen, stack = set(), [p.input[0]]
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        v = src.const(t) if (t not in src.inits or src.has_data(t)) else None
        if v is not None:
            v = np.asarray(v, dtype=np.float64).reshape(-1) if v.ndim <= 3 and max(v.shape, default=0) == v.size else None
        if v is not None and v.size == half and half >= 2 and 0 < v[-1] and v[0] <= 1.0 and np.all(np.diff(v) < 0):
            return v, amp
        p = src.prod(t)
        if p is not None and p.op_type not in ("Shape", "Size"):
            stack.extend(i for i in p.input if i)
    return None, None


def _table_array(src, t: str, depth: int = 0):
    """The values of a table: a constant, or the rows of a [.., positions, half] initializer that
    ``t`` gathers by position (a cos/sin cache, as onnxruntime's RotaryEmbedding takes), seen through
    layout ops and the Concat of the table with itself (the rotate-half layout's two halves)."""
    if t in src.inits and src.has_data(t):
        return np.asarray(src.array(t), dtype=np.float64)
    a = src.const(t)
    if a is not None or depth > 12:
        return None if a is None else np.asarray(a, dtype=np.float64)
    p = src.prod(t)
    if p is None:
        return None
    if p.op_type in _TABLE_PASS - {"Expand"} or p.op_type in ("Transpose", "Gather") \
            or (p.op_type == "Concat" and len(set(p.input)) == 1):
        return _table_array(src, p.input[0], depth + 1)
    return None


def _folded(src, tables: list[str], half: int):
    """(inverse frequencies, amplitude) from cos/sin tables folded to initializers, one row per
    position from 0: row 0 is (amp, 0), row r is amp * (cos, sin)(r * inv_freq)."""
    arrays = []
    for t in dict.fromkeys(tables):
        a = _table_array(src, t)
        if a is None or a.ndim < 2 or a.shape[-1] < half or np.prod(a.shape[:-2], dtype=int) != 1:
            return None, None
        arrays.append(a.reshape(a.shape[-2], a.shape[-1])[:, :half])
    if len(arrays) != 2 or arrays[0].shape != arrays[1].shape or arrays[0].shape[0] < 2:
        return None, None
    c, s = arrays
    if np.any(np.abs(s[0]) > 1e-6):
        c, s = s, c
    amp = float(c[0, 0])
    if amp <= 0 or np.any(np.abs(s[0]) > 1e-6 * amp) or not np.allclose(c[0], amp, rtol=1e-6):
        return None, None
    inv = np.arctan2(s[1], c[1])
    if np.any(inv <= 0):
        return None, None
    ang = np.arange(c.shape[0], dtype=np.float64)[:, None] * inv
    if not (np.allclose(amp * np.cos(ang), c, atol=1e-4 * amp) and np.allclose(amp * np.sin(ang), s, atol=1e-4 * amp)):
        return None, None  # the rows are not positions 0, 1, 2, ...
    return inv, amp
