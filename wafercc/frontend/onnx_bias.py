"""Position biases added to attention scores: ALiBi slopes and T5-style relative position buckets.

A bias is an AUX tensor (computed from positions and the attention mask, never from token
activations) added to the scores before their softmax.  As with masks (onnx_masks), its meaning is
read off by running its subgraph on onnxruntime for a probe sequence, not by matching exporter ops:

* relative: the subgraph looks up rows of a 2-D weight (a table [num_buckets, heads]) by indices
  that are a function of key - query position only (a Toeplitz [q, k] grid); the bucketing is
  fitted to T5's (exact buckets, then logarithmic ones up to max_distance).  The table is a
  parameter and stays a weight; the bucket computation (Range, Sub, Abs, Log, Where, Min...) is AUX.
* alibi: the bias is, per head, a constant times the key position (up to a per-query constant,
  which the softmax ignores): ``slope[h] * (key - query)``.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import InputFileError
from ..ir.ops import relative_position_bucket
from .onnx_masks import Subgraph, _run, _signature

PROBE = 64             # keys of the probe sequence
LONG_PROBE = 1024      # to see where the logarithmic buckets end (max_distance), when 64 keys do not
MASKED = -1e4          # additive masks: at or below this a key is masked out


# --- relative position lookups (seen before the lifter classifies tensors) --------------------

def relative_lookup(src, node) -> dict | None:
    """Bucket parameters if ``node`` is a Gather of rows of a 2-D initializer by relative-position
    buckets (its indices depend on shapes and constants only, and form a non-constant Toeplitz
    [q, k] grid); None for any other Gather (token or position embeddings)."""
    cache = src.__dict__.setdefault("_relative_lookups", {})
    key = node.output[0]
    if key not in cache:
        cache[key] = _fit_lookup(src, node)
    return cache[key]


def _shape_only_ancestors(src, t: str):
    """Nodes computing ``t`` if it depends on no graph input's values (only on shapes, through
    Shape/Size nodes, whose inputs are returned as the ones to feed); None otherwise."""
    seen, stack, nodes, fed = set(), [t], set(), set()
    while stack:
        x = stack.pop()
        if x in seen or not x:
            continue
        seen.add(x)
        if x in src.graph_inputs:
            return None
        i = src.producer.get(x)
        if i is None:
            continue
        n = src.nodes[i]
        nodes.add(i)
        if n.op_type in ("Shape", "Size"):
            fed.add(n.input[0])
            continue
        stack.extend(n.input)
    return sorted(nodes), sorted(t for t in fed if src.producer.get(t) not in nodes)


def _fit_lookup(src, node):
    if node.op_type != "Gather" or src.attr(node, "axis", 0) != 0:
        return None
    table = node.input[0]
    if table not in src.inits or len(src.inits[table].dims) != 2:
        return None
    ids = node.input[1]
    anc = _shape_only_ancestors(src, ids)
    if anc is None:
        return None
    nodes, fed = anc
    used = {t for i in nodes for t in src.nodes[i].input if t}
    inits = [src.inits[t] for t in sorted(used) if t in src.inits]
    if any(i.data_location == 1 for i in inits):   # indices never live in a side file
        return None
    static = all(isinstance(d, int) and d > 0 for t in fed for d in src.shapes.get(t, (None,)))
    nb = int(src.inits[table].dims[0])
    fits = None
    for length in (PROBE, LONG_PROBE):
        c = src.const(ids)
        try:
            grid = np.asarray(c) if c is not None else _run(src, nodes, fed, inits, ids, length)
        except Exception:  # a subgraph onnxruntime cannot run is not a bucket computation
            return None
        rel = _toeplitz(grid)
        if rel is None:
            return None
        fits = _fit_buckets(rel, nb)
        if not fits or len({f["max_distance"] for f in fits}) == 1 or static or c is not None:
            break
    if not fits:
        return None
    if len({(f["bidirectional"], f["max_distance"]) for f in fits}) > 1:
        fits = _pin_max_distance(src, nodes, fits, nb)
    if len(fits) > 1:
        import warnings
        warnings.warn(f"{src.where}: the relative position buckets of '{node.name or node.output[0]}' fit several "
                      f"max_distance values over the file's sequence length; taking {fits[0]['max_distance']}",
                      stacklevel=2)
    return dict(fits[0], num_buckets=nb)


def _toeplitz(grid: np.ndarray):
    """``f`` with grid[i, j] == f[j - i + q - 1], if the grid (leading unit dims dropped) is a
    non-constant square integer grid whose entries depend on j - i only."""
    g = np.asarray(grid)
    while g.ndim > 2 and g.shape[0] == 1:
        g = g[0]
    if g.ndim != 2 or g.shape[0] != g.shape[1] or g.shape[0] < 2 or not np.issubdtype(g.dtype, np.integer):
        return None
    q = g.shape[0]
    f = np.concatenate([g[::-1, 0], g[0, 1:]])      # rel -(q-1) .. q-1
    i, j = np.indices(g.shape)
    if not (g == f[j - i + q - 1]).all() or (f == f[0]).all():
        return None
    return f


def _fit_buckets(f: np.ndarray, nb: int) -> list[dict]:
    """Every (bidirectional, max_distance) whose T5 bucketing gives ``f`` over its relative positions."""
    q = (len(f) + 1) // 2
    rel = np.arange(-(q - 1), q)
    fits = []
    for bi in (True, False):
        exact = (nb // 2 if bi else nb) // 2
        if exact < 1:
            continue
        for md in range(exact + 1, max(4 * q, 4 * nb, 256)):
            if (relative_position_bucket(rel, nb, md, bi) == f).all():
                fits.append({"bidirectional": bi, "max_distance": md})
    return fits


def _pin_max_distance(src, nodes, fits, nb: int):
    """A static-length file leaves max_distance open: the bucket computation divides the log of
    the distance by log(max_distance / exact); take the candidate that constant names."""
    consts = [src.scalar(t) for i in nodes for t in src.nodes[i].input if t]
    for c in (c for c in consts if c is not None and c > 0):
        for f in fits:
            exact = (nb // 2 if f["bidirectional"] else nb) // 2
            if math.isclose(math.log(f["max_distance"] / exact), c, rel_tol=1e-5):
                return [f]
    return fits


# --- a bias added to the scores ---------------------------------------------------------------

def score_bias(lifter, node, t: str, heads: int):
    """(position_bias attr, table initializer or None) of AUX tensor ``t`` added to attention
    scores; None if ``t`` is a mask (no finite part that varies along the keys).  Tensors computed
    the same way (one per layer) are read once."""
    src = lifter.src
    cache = src.__dict__.setdefault("_bias_cache", {})
    key = (_signature(src, t, lifter.act, src.__dict__.setdefault("_mask_sigs", {})), heads)
    if key not in cache:
        cache[key] = _score_bias(lifter, node, t, heads)
    return cache[key]


def _score_bias(lifter, node, t: str, heads: int):
    src = lifter.src
    lookups = _lookups_under(src, t, lifter.act)
    if len(lookups) > 1:
        lifter._fail(node, "attention scores with more than one relative position table")
    if lookups:
        n, pb = lookups[0]
        table = n.input[0]
        if src.has_data(table):
            _check_relative(lifter, node, t, pb, src.array(table), heads)
        return {"kind": "relative", **pb}, table
    v = _evaluate(lifter, node, t)
    if v is None:
        return None
    v = _heads_qk(v, heads)
    if v is None:
        lifter._fail(node, f"a tensor added to the attention scores ('{t}') that is not [.., heads or 1, q, k]")
    ok = v > MASKED
    if not ok.any():
        return None
    # a mask (one value per query where allowed) is the common case: decided without NaN arithmetic
    hi, lo = np.where(ok, v, -np.inf).max(axis=-1), np.where(ok, v, np.inf).min(axis=-1)
    live = np.isfinite(hi)
    if np.max(hi[live] - lo[live]) <= 1e-6 * max(1.0, float(np.max(np.maximum(np.abs(hi[live]), np.abs(lo[live]))))):
        return None
    h, q, k = v.shape
    x = np.where(ok, v, np.nan)
    # ALiBi: slope[h] * key position, up to a per-query constant
    jj = np.broadcast_to(np.arange(k, dtype=np.float64), x.shape)
    jc = np.where(ok, jj, np.nan)
    dj = jc - np.nanmean(jc, axis=-1, keepdims=True)
    dx = x - np.nanmean(x, axis=-1, keepdims=True)
    slopes = np.nansum(dj * dx, axis=(1, 2)) / np.maximum(np.nansum(dj * dj, axis=(1, 2)), 1e-30)
    resid = dx - slopes[:, None, None] * dj
    scale = max(1e-30, float(np.nanmax(np.abs(dx))))
    if np.nanmax(np.abs(resid)) <= 1e-4 * scale:
        sl = np.broadcast_to(slopes, (heads,)) if h == 1 else slopes
        return {"kind": "alibi", "slopes": [float(s) for s in sl]}, None
    i, j = np.indices((q, k))
    if q == k and all(np.allclose(x[hh][ok[hh]], _diag_means(x[hh], i, j)[ok[hh]], rtol=1e-5, atol=1e-6)
                      for hh in range(h)):
        lifter._fail(node, "a relative position bias the exporter folded into a constant for the traced "
                           "length: its table is not in the file; export with dynamic shapes "
                           "(dynamic_axes / dynamic_shapes) or without constant folding (optimize=False)")
    lifter._fail(node, f"a bias added to the attention scores ('{t}') that is neither ALiBi slopes nor a "
                       "relative position table: no lowering for it in the wafercc op set")


def _diag_means(x, i, j):
    q = x.shape[0]
    d = j - i + q - 1
    sums = np.bincount(d.ravel(), weights=np.nan_to_num(x).ravel(), minlength=2 * q - 1)
    counts = np.bincount(d.ravel(), weights=(~np.isnan(x)).ravel().astype(float), minlength=2 * q - 1)
    return (sums / np.maximum(counts, 1))[d]


def _lookups_under(src, t: str, act):
    """Relative position lookups among the nodes computing ``t`` (not looking past activations)."""
    seen, stack, out = set(), [t], []
    while stack:
        x = stack.pop()
        if x in seen or not x or x in act:
            continue
        seen.add(x)
        n = src.prod(x)
        if n is None:
            continue
        pb = relative_lookup(src, n) if n.op_type == "Gather" else None
        if pb is not None:
            out.append((n, pb))
            continue
        stack.extend(n.input)
    return out


def _evaluate(lifter, node, t: str):
    src = lifter.src
    c = src.const(t)
    if c is not None:
        return np.asarray(c, np.float64) if np.asarray(c).dtype != np.bool_ else None
    if t in src.inits:          # folded to a stored constant (a static export): its values, if present
        if not src.has_data(t):
            raise InputFileError(f"attention score bias '{t}' is an initializer whose data is not in the file "
                                 f"(external data absent); keep the data file beside the model", where=src.where)
        v = np.asarray(src.array(t))
        return None if v.dtype == np.bool_ else v.astype(np.float64)
    sub = Subgraph(src, t, lifter.act, what="attention score bias")
    v = sub.run(PROBE, frozenset(lifter.cached.values()))
    return None if v.dtype == np.bool_ else v.astype(np.float64)


def _heads_qk(v: np.ndarray, heads: int):
    """The probe's bias as [heads or 1, q or k, k] (batch 1, or the first sequence of a batch)."""
    if v.ndim == 4:
        v = v[0]
    elif v.ndim == 3 and v.shape[0] > 1:
        if v.shape[0] % heads:
            return None
        v = v.reshape(v.shape[0] // heads, heads, *v.shape[1:])[0]
    elif v.ndim == 3:
        pass
    elif v.ndim == 2:
        v = v[None]
    else:
        return None
    if v.shape[0] not in (1, heads):
        return None
    q = v.shape[1] if v.shape[1] > 1 else v.shape[2]
    return np.broadcast_to(v, (v.shape[0], q, v.shape[2])).astype(np.float64, copy=False)


def _check_relative(lifter, node, t, pb, table, heads):
    """The bias tensor is table[bucket(key - query), head] where not masked."""
    v = _evaluate(lifter, node, t)
    v = None if v is None else _heads_qk(v, heads)
    if v is None or v.shape[0] != heads or table.shape != (pb["num_buckets"], heads):
        lifter._fail(node, f"relative position bias '{t}' is not [heads, q, k] from a [buckets, heads] table")
    _, q, k = v.shape
    rel = np.arange(k)[None, :] - np.arange(k - q, k)[:, None]
    want = table[relative_position_bucket(rel, pb["num_buckets"], pb["max_distance"], pb["bidirectional"])]
    want = np.moveaxis(want, -1, 0)
    ok = v > MASKED
    if not np.allclose(v[ok], want[ok], rtol=1e-4, atol=1e-6):
        lifter._fail(node, f"the bias '{t}' added to the attention scores is not its table's rows at the "
                           "relative positions' buckets (scaled, or combined with another term)")
