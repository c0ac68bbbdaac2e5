"""The Python API: the whole compiler (``compile``) and a quick budget check (``check``).

    import wafercc
    c = wafercc.compile("llama-3.1-8b")                 # any model source, every stage
    c.wafers, c.performance.tokens_per_s_per_user       # 1 1978.0...
    c.save("out/")                                      # the same files as `wafercc compile -o out/`

    r = wafercc.check(model, example_inputs, max_wafers=4, min_tokens_per_s=500)
    r.ok, r.reasons

Keyword options are the CLI's flags with underscores (``context=4096``, ``dtype="fp8"``,
``layout="spares"``; wafercc.options.KNOBS lists them).  Errors are ``WaferccError`` subclasses:
``Infeasible`` (no plan fits the budget; ``.levers``), ``PlacementError`` (fits by bytes, not as
tiles or routes), ``InputFileError``, ``ModelConfigError``, ``UnsupportedOpError``, ...
"""
from __future__ import annotations

import dataclasses
from typing import Any

from .driver import Compilation
from .errors import Infeasible, PlacementError
from .options import build_options

# IR-only callers of earlier versions: ``compile(m, until="ir")`` returns the same fields
CompileResult = Compilation


def compile(model: Any, example_inputs: Any = None, *, target: str = "wse3", until: str = "report",
            progress=None, **options) -> Compilation:
    """Compile ``model`` through ``until`` (default: every stage) and return the compilation.

    ``model``: an ``nn.Module`` (with ``example_inputs``), an ``.onnx`` path, a Hugging Face
    ``config.json`` path or dict, or a reference-model name.  Raises ``Infeasible`` when no plan
    fits ``max_wafers``/``wafers`` and ``PlacementError`` when a plan cannot be placed; the
    exception's ``.compilation`` holds what was compiled.  ``progress``: a callable taking each
    wafercc.progress.ProgressEvent (stage started, wafer done, stage done)."""
    opts = build_options(target=target, until=until, **options)
    return Compilation(model, opts, example_inputs).run(progress=progress)


@dataclasses.dataclass(frozen=True)
class CheckResult:
    ok: bool
    wafers: int | None                   # wafers the plan needs (None: infeasible at any count tried)
    tokens_per_s_per_user: float | None
    source: str                          # "estimate" (tile plan) or "schedule" (placed and routed)
    reasons: tuple[str, ...]             # why not ok (empty when ok)
    seconds: float
    compilation: Compilation = dataclasses.field(repr=False)

    def as_dict(self) -> dict:
        return {"ok": self.ok, "wafers": self.wafers, "tokens_per_s_per_user": self.tokens_per_s_per_user,
                "source": self.source, "reasons": list(self.reasons), "seconds": round(self.seconds, 3)}


def check(model: Any, example_inputs: Any = None, *, max_wafers: int | None = None,
          min_tokens_per_s: float | None = None, place: bool = False, target: str = "wse3",
          **options) -> CheckResult:
    """Does ``model`` fit ``max_wafers`` and decode at ``min_tokens_per_s`` per user?

    By default plans and times the tile plan (wafercc.perf.estimate: no placement or routing, well
    under a second for a cached 1B-class graph); ``place=True`` compiles every stage and times the
    routed schedule.  Never raises for a broken budget: ``ok`` is False and ``reasons`` say why."""
    import time
    t0 = time.perf_counter()
    # no speed-versus-wafers curve: a check asks about this compile only
    opts = build_options(target=target, until="report" if place else "plan", max_wafers=max_wafers,
                         **{"curve": False, **options})
    c = Compilation(model, opts, example_inputs)
    reasons: list[str] = []
    try:
        c.run()
    except Infeasible as e:
        budget = max_wafers or opts.plan.wafers
        lever = next((lv for lv in e.levers if lv.wafers is not None and lv.wafers <= budget), None)
        reasons.append(str(e) + (f" (fits with {lever.change})" if lever else ""))
        return CheckResult(False, e.needed_wafers, None, "estimate", tuple(reasons), time.perf_counter() - t0, c)
    except PlacementError as e:
        reasons.append(f"placement failed: {' '.join(str(e).split())}")
        return CheckResult(False, c.wafers, None, "schedule", tuple(reasons), time.perf_counter() - t0, c)
    if place:
        tps, source = c.performance.tokens_per_s_per_user, "schedule"
    else:
        tps, source = _estimate_tokens_per_s(c), "estimate"
    if min_tokens_per_s is not None and (tps is None or tps < min_tokens_per_s):
        reasons.append(f"predicted {tps:,.1f} tokens/s per user ({source}) is below the budget "
                       f"{min_tokens_per_s:,.1f}" if tps is not None else "no timing estimate for this plan")
    return CheckResult(not reasons, c.wafers, tps, source, tuple(reasons), time.perf_counter() - t0, c)


def _estimate_tokens_per_s(c: Compilation) -> float | None:
    from .perf.estimate import estimate_tokens_per_s
    return estimate_tokens_per_s(c.graph, c.target, c.options.plan, c.device, c.plan, c.options.perf.prompt_tokens)
