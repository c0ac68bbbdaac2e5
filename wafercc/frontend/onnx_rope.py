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
    plain = np.arange(half, dtype=np.float64) / half
    theta = None
    if 0 < ratio < 1:   # the roundest theta the tables fit (float32 tables blur its last digits)
        raw = ratio ** -float(half)
        theta = next((t for t in (float(f"{raw:.{d}g}") for d in range(2, 7))
                      if np.allclose(inv, t ** -plain, rtol=_REL_TOL, atol=0.0)), float(f"{raw:.6g}"))
    scaling: dict = {}
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
    position from some P (0, or the cache length a static with-past export was traced with): row r
    is amp * (cos, sin)((P + r) * inv_freq)."""
    arrays = []
    for t in dict.fromkeys(tables):
        a = _table_array(src, t)
        if a is None or a.ndim < 2 or a.shape[-1] < half or np.prod(a.shape[:-2], dtype=int) != 1:
            return None, None
        arrays.append(a.reshape(a.shape[-2], a.shape[-1])[:, :half].astype(np.float64))
    if len(arrays) != 2 or arrays[0].shape != arrays[1].shape or arrays[0].shape[0] < 2:
        return None, None
    c, s = arrays
    if np.all(np.abs(c[0]) < 1e-6) or np.abs(s[0]).max() > np.abs(c[0]).max() and np.abs(c[:, -1]).min() < 1e-6:
        c, s = s, c   # which of the two is the cosine: at the lowest frequency it stays near amp
    z = c + 1j * s
    amp = float(np.abs(z[0]).mean())
    if amp <= 0 or not np.allclose(np.abs(z), amp, rtol=1e-4):
        return None, None
    step = np.angle(z[1] * np.conj(z[0]))         # one position's step per frequency, then refined
    if np.any(step <= 0):
        return None, None
    rows = np.arange(z.shape[0], dtype=np.float64)[:, None]
    turns = np.round((step * rows - np.angle(z * np.conj(z[0]))) / (2 * np.pi))
    inv = ((np.angle(z * np.conj(z[0])) + 2 * np.pi * turns)[1:] / rows[1:]).mean(axis=0)
    if np.any(inv <= 0):
        return None, None
    start = _first_position(z[0] / amp, inv)
    if start is None:
        return None, None
    ang = (start + np.arange(c.shape[0], dtype=np.float64))[:, None] * inv
    if not np.allclose(amp * np.exp(1j * ang), z, atol=1e-4 * amp):
        return None, None  # the rows are not consecutive positions
    return inv, amp


def _first_position(z0: np.ndarray, inv: np.ndarray, most: int = 1 << 16) -> int | None:
    """The integer P with exp(i P inv) = z0 for every frequency (the first row's position), if any."""
    p = np.arange(most, dtype=np.float64)[:, None]
    err = np.abs(np.exp(1j * p * inv[None, :]) - z0[None, :]).max(axis=1)
    best = int(np.argmin(err))
    return best if err[best] < 1e-3 else None
