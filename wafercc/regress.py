"""``wafercc regress``: compile reference models through the driver and compare their quality of
result with checked-in golden files (docs/regress.md).

One golden file per model (``tests/golden/qor/<model>.json``) holds the compile options, whether
the model is in the fast set, and each metric's golden value with its tolerance.  Every run prints
a table (metric, golden, now, delta, verdict); ``--format json|junit`` prints JSON or JUnit XML and
``--junit FILE`` also writes the XML.  Exit 1 on any regression, 2 on bad input; goldens are
rewritten only with ``--update``.

Verdicts: ``ok`` within tolerance; ``improved`` outside it in the good direction (not a failure;
run --update to accept); ``REGRESSED`` outside it in the bad direction, or any change of an exact
metric; ``slow`` a stage's seconds past its band (a failure: bands are generous); ``new`` a
metric the golden lacks; ``error`` the compile failed.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from importlib import resources
from typing import Any

from .errors import WaferccError

GOLDEN_SCHEMA = "wafercc.qor-golden/1"
RESULT_SCHEMA = "wafercc.regress/1"
# models that compile in seconds: the set .ci/run checks (``--fast``)
FAST = ("tiny-llama", "tiny-moe", "gpt2", "minilm-l6", "llama-3.2-1b")
SHIPPED_ONNX = ("tiny-llama", "tiny-moe")
# wall-time bands: fail only past golden x factor + slack (machines and loads differ)
SECONDS_FACTOR, SECONDS_SLACK = 3.0, 30.0


class RegressError(WaferccError):
    """A golden file is missing or malformed, or a model name is unknown."""


@dataclasses.dataclass(frozen=True)
class Metric:
    name: str
    path: tuple[str, ...]           # keys into the measured dict
    better: str                     # higher | lower | exact
    rel: float = 0.0
    abs: float = 0.0

    def tolerance(self) -> dict:
        return {"exact": True} if self.better == "exact" else {"rel": self.rel, "abs": self.abs,
                                                                "better": self.better}


METRICS: tuple[Metric, ...] = (
    Metric("wafers.required", ("wafers", "required"), "exact"),
    Metric("wafers.used", ("wafers", "used"), "exact"),
    Metric("wafers.lower_bound", ("wafers", "lower_bound"), "exact"),
    Metric("placement.routed_hops", ("placement", "routed_hops"), "lower", rel=0.02),
    Metric("placement.hops_ratio", ("placement", "hops_ratio"), "lower", abs=0.01),
    Metric("placement.max_link_load", ("placement", "max_link_load"), "lower", abs=2),
    Metric("placement.colors_used_max", ("placement", "colors_used_max"), "lower", abs=2),
    Metric("performance.tokens_per_s_per_user", ("performance", "decode_tokens_per_s_per_user"), "higher", rel=0.02),
    Metric("performance.tokens_per_s_aggregate", ("performance", "decode_tokens_per_s_aggregate"), "higher",
           rel=0.02),
    Metric("performance.ttft_s", ("performance", "ttft_s"), "lower", rel=0.02),
    Metric("performance.energy_j_per_token", ("performance", "energy_j_per_token"), "lower", rel=0.02),
    # the QoR headline: the bound's time per token over the prediction's (docs/cost-model.md "Speed of light")
    Metric("speed_of_light.prediction_fraction", ("speed_of_light", "prediction_fraction"), "higher", rel=0.02),
)


def golden_dir() -> str:
    """The checked-in goldens of this source tree (``tests/golden/qor`` beside the package)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "golden", "qor")


def model_source(name: str) -> str:
    """What to compile for a regress model name: a shipped tiny ONNX file or a reference model."""
    from . import models_registry
    if name in SHIPPED_ONNX:
        return str(resources.files("wafercc.models") / "onnx" / f"{name}.onnx")
    if models_registry.is_reference(name):
        return name
    raise RegressError(f"unknown regress model '{name}': expected one of "
                       f"{', '.join((*SHIPPED_ONNX, *models_registry.names()))}")


def default_options(name: str) -> dict:
    """The compile options of a new golden: the reference reports' (WSE-3, bf16, defaults otherwise)."""
    return {"target": "wse3"} if name in SHIPPED_ONNX else {"target": "wse3", "dtype": "bf16"}


def measure(name: str, options: dict) -> dict:
    """Compile ``name`` with ``options`` through every stage: {metric name: value, 'seconds.<stage>': s,
    'report': report.json's dict} or {'error': message}.  Runs in a worker process with --jobs."""
    from .driver import Compilation
    from .options import build_options
    try:
        # uncached: the frontend's seconds are a cold compile's, whatever the machine's cache holds
        c = Compilation(model_source(name), build_options(**{"cache": False, **options})).run()
    except WaferccError as e:
        return {"error": f"{type(e).__name__}: {' '.join(str(e).split())}"}
    rep = c.report
    out: dict[str, Any] = {}
    for m in METRICS:
        v: Any = rep
        for k in m.path:
            v = v.get(k) if isinstance(v, dict) else None
        out[m.name] = v
    out.update({f"seconds.{s}": round(t, 3) for s, t in c.seconds.items()})
    out["report"] = rep
    return out


def load_golden(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            g = json.load(f)
    except FileNotFoundError:
        raise RegressError("no golden file (run wafercc regress MODEL --update to create it)", where=path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RegressError(f"unreadable golden file: {e}", where=path) from None
    if not isinstance(g, dict) or g.get("schema") != GOLDEN_SCHEMA or not isinstance(g.get("metrics"), dict) \
            or not isinstance(g.get("options"), dict):
        raise RegressError(f"not a golden file: expected schema {GOLDEN_SCHEMA} with options and metrics",
                           where=path)
    return g


def compare(golden: dict, now: dict) -> list[dict]:
    """One row per metric: golden, now, delta, verdict."""
    rows = []
    gm = golden.get("metrics", {})
    for name in [m.name for m in METRICS] + [k for k in now if k.startswith("seconds.")]:   # stage order
        g = gm.get(name)
        v = now.get(name)
        if g is None:
            rows.append(_row(name, None, v, "new", None))
            continue
        rows.append(_row(name, g["value"], v, _verdict(g["value"], v, g["tolerance"]), g["tolerance"]))
    return rows


def _row(name, golden, now, verdict, tol) -> dict:
    delta = (now - golden) if isinstance(now, (int, float)) and isinstance(golden, (int, float)) else None
    return {"metric": name, "golden": golden, "now": now, "delta": delta, "verdict": verdict, "tolerance": tol}


def _verdict(golden, now, tol: dict) -> str:
    if "band" in tol:
        return "ok" if now is None or now <= tol["band"][1] else "slow"
    if tol.get("exact"):
        return "ok" if now == golden else "REGRESSED"
    if golden is None or now is None:
        return "ok" if golden == now else "REGRESSED"
    room = max(float(tol.get("abs", 0.0)), float(tol.get("rel", 0.0)) * abs(golden))
    d = now - golden
    if abs(d) <= room + 1e-12 * max(1.0, abs(golden)):
        return "ok"
    good = d > 0 if tol.get("better") == "higher" else d < 0
    return "improved" if good else "REGRESSED"


def new_golden(name: str, options: dict, now: dict, old: dict | None) -> dict:
    """A golden from this run's figures, keeping an old golden's fast flag and custom tolerances."""
    old_metrics = (old or {}).get("metrics", {})
    metrics = {}
    for m in METRICS:
        tol = old_metrics.get(m.name, {}).get("tolerance") or m.tolerance()
        metrics[m.name] = {"value": now.get(m.name), "tolerance": tol}
    for k, v in now.items():
        if k.startswith("seconds."):
            metrics[k] = {"value": v, "tolerance": {"band": [0.0, round(v * SECONDS_FACTOR + SECONDS_SLACK, 1)]}}
    return {"schema": GOLDEN_SCHEMA, "model": name, "fast": (old or {}).get("fast", name in FAST),
            "options": options, "metrics": metrics}


FAILING = frozenset({"REGRESSED", "slow", "error"})


def failed(result: dict) -> bool:
    return result.get("error") is not None or any(r["verdict"] in FAILING for r in result["rows"])


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else str(v)
