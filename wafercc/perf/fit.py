"""Fitting the timing model's free parameters to published decode speeds, and leave-one-out.

A row is a dict with ``published`` (tok/s/user), ``target`` (a loaded target), ``prog`` (the timing
model's Program) and ``protocol``: ``"placed"`` (the routed schedule, timed as the report does) or
``"one-layer"`` (WaferLLM's protocol, wafercc.perf.protocol, with ``layers`` and ``side``).
benchmarks/calibrate.py builds the rows from the published table; the fit here is the one copy it
and the leave-one-out both call, so a held-out fit differs from the full fit only in its rows.
"""
from __future__ import annotations

import itertools
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
# starts of fit_multistart: a grid over the bounds' plausible range, to tell a global minimum
# from a stuck optimiser (the model is piecewise smooth: critical paths switch)
STARTS = tuple(itertools.product((0.3, 0.6, 0.95), (0.0, 100.0, 1000.0), (0.0, 10.0, 40.0, 100.0)))


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


def fit(rows, prior: float = PRIOR, x0=X0) -> dict:
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

    res = least_squares(resid, np.array(x0), bounds=(np.array(LOWER), np.array(UPPER)),
                        x_scale=np.array(X_SCALE), max_nfev=400)
    return {"x": tuple(float(v) for v in res.x), "status": res.message, "evaluations": int(res.nfev),
            "cost": float(res.cost)}


def fit_multistart(rows, prior: float = PRIOR) -> dict:
    """``fit`` from X0 and from every point of STARTS; the lowest cost wins (X0 on a tie), and
    ``improved`` says whether any start beat X0's fit."""
    first = fit(rows, prior)
    best = first
    for x0 in STARTS:
        res = fit(rows, prior, x0)
        if res["cost"] < best["cost"] * (1 - 1e-9):
            best = res
    return dict(best, improved=best is not first, starts=1 + len(STARTS))


def sensitivity(row, x) -> dict:
    """How the row's log speed moves at ``x``: elasticities to efficiency and reduce_step
    (d log speed / d log parameter, 1 % steps) and the change for op_sync + 100 cycles."""
    base = math.log(predict(row, row_params(x, row)))

    def moved(i, v):
        y = list(x)
        y[i] = v
        return math.log(predict(row, row_params(y, row))) - base

    step = math.log(1.01)
    return {"compute_efficiency": moved(0, x[0] * 1.01) / step,
            "reduce_step_cycles": moved(2, x[2] * 1.01) / step if x[2] > 0 else 0.0,
            "op_sync_plus_100_cycles": moved(1, x[1] + 100.0)}


def leave_one_out(rows, prior: float = PRIOR, full: dict | None = None, fitter=fit) -> list[dict]:
    """For each row: the full fit's (in-sample) prediction, and the prediction of a fit on the
    other rows (the same ``fitter``: same prior, bounds and start) with that fit's parameters.
    ``full`` is the fit on every row when the caller already has it."""
    if len(rows) < 2:
        raise CostModelError(f"leave-one-out needs at least 2 rows, got {len(rows)}")
    full = full or fitter(rows, prior)
    out = []
    for i, r in enumerate(rows):
        held = fitter(rows[:i] + rows[i + 1:], prior)
        pin = predict(r, row_params(full["x"], r))
        pout = predict(r, row_params(held["x"], r))
        out.append({"row": r.get("label", i), "published": r["published"],
                    "in_sample": pin, "in_sample_error": pin / r["published"] - 1,
                    "held_out": pout, "held_out_error": pout / r["published"] - 1,
                    "held_out_params": dict(zip(FREE, held["x"])),
                    "held_out_cost": held["cost"], "held_out_status": held["status"],
                    "held_out_evaluations": held["evaluations"], "held_out_improved": held.get("improved"),
                    "sensitivity": sensitivity(r, full["x"])})
    return out
