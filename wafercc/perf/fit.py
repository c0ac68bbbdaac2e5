"""Fitting the timing model's free parameters to published decode speeds, and leave-one-out.

A row is a dict with ``published`` (tok/s/user), ``target`` (a loaded target), ``prog`` (the timing
model's Program) and ``protocol``: ``"placed"`` (the routed schedule, timed as the report does) or
``"one-layer"`` (WaferLLM's protocol, wafercc.perf.protocol, with ``layers`` and ``side``).
benchmarks/calibrate.py builds the rows from the published table; the fit here is the one copy it
and the leave-one-out both call, so a held-out fit differs from the full fit only in its rows.
"""
from __future__ import annotations

import math

from .evaluate import tpot_seconds
from .model import CostModelError, CostParams, Machine
from .protocol import one_layer_seconds

PROMPT = 1024       # prompt tokens: the decode position every row is timed at
PRIOR = 0.05        # weight of the prior toward full efficiency and small overheads
FREE = ("compute_efficiency", "op_sync_cycles", "reduce_step_cycles")
X0 = (0.5, 200.0, 10.0)
LOWER = (0.05, 0.0, 0.0)
UPPER = (1.0, 20000.0, 2000.0)
X_SCALE = (0.1, 100.0, 10.0)


def row_params(x, row) -> CostParams:
    """The fitted values ``x`` as the row's target's CostParams (the inter-wafer latency is the
    target's own ``io`` figure: no row identifies it)."""
    return CostParams(float(x[0]), float(x[1]), float(x[2]), float(row["target"].io.off_wafer_latency))


def predict(row, params: CostParams) -> float:
    """Decode tokens/s/user of ``row`` at ``params``, timed by the row's protocol."""
    mc = Machine.of(row["target"])
    if row["protocol"] == "one-layer":
        return 1.0 / one_layer_seconds(row["prog"], row["layers"], row["side"], mc, params, PROMPT)
    if row["protocol"] == "placed":
        return 1.0 / tpot_seconds(row["prog"], mc, params, PROMPT)
    raise CostModelError(f"calibration row '{row.get('label')}': unknown protocol '{row['protocol']}'")


def fit(rows, prior: float = PRIOR) -> dict:
    """Bounded least squares on log(predicted / published) over ``rows``, one parameter set for
    every row (the WSE-2 and WSE-3 cores share the architecture the parameters describe).

    Returns ``{"x", "status", "evaluations", "cost"}``; ``x`` is (efficiency, op_sync, reduce_step)."""
    import numpy as np
    from scipy.optimize import least_squares

    if not rows:
        raise CostModelError("calibration: no rows to fit")

    def resid(x):
        data = [math.log(predict(r, row_params(x, r)) / r["published"]) for r in rows]
        # a weak prior makes the fit unique where the rows do not pin every parameter:
        # full SIMD efficiency, and overheads of order 1,000 / 100 cycles, not larger
        pri = [math.log(x[0]), x[1] / 1000.0, x[2] / 100.0]
        return np.array(data + [prior * v for v in pri])

    res = least_squares(resid, np.array(X0), bounds=(np.array(LOWER), np.array(UPPER)),
                        x_scale=np.array(X_SCALE), max_nfev=400)
    return {"x": tuple(float(v) for v in res.x), "status": res.message, "evaluations": int(res.nfev),
            "cost": float(res.cost)}


def leave_one_out(rows, prior: float = PRIOR, full: dict | None = None) -> list[dict]:
    """For each row: the full fit's (in-sample) prediction, and the prediction of a fit on the
    other rows (same prior, same bounds, same start) with that fit's parameters.  ``full`` is
    the fit on every row when the caller already has it."""
    if len(rows) < 2:
        raise CostModelError(f"leave-one-out needs at least 2 rows, got {len(rows)}")
    full = full or fit(rows, prior)
    out = []
    for i, r in enumerate(rows):
        held = fit(rows[:i] + rows[i + 1:], prior)
        pin = predict(r, row_params(full["x"], r))
        pout = predict(r, row_params(held["x"], r))
        out.append({"row": r.get("label", i), "published": r["published"],
                    "in_sample": pin, "in_sample_error": pin / r["published"] - 1,
                    "held_out": pout, "held_out_error": pout / r["published"] - 1,
                    "held_out_params": dict(zip(FREE, held["x"])),
                    "held_out_cost": held["cost"], "held_out_status": held["status"],
                    "held_out_evaluations": held["evaluations"]})
    return out
