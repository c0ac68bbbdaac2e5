"""Wafer budgets from training scripts: every N steps, does the model still fit and how fast will it
decode?  (docs/api.md, "Training scripts")

    from wafercc.training import WaferBudget, WaferccCallback
    budget = WaferBudget(max_wafers=4, min_tokens_per_s=500, every=200, log_file="wafercc.jsonl")
    Trainer(model=model, args=args, train_dataset=ds, callbacks=[WaferccCallback(budget)])   # transformers
    L.Trainer(callbacks=[WaferccLightningCallback(budget, example_inputs)])                   # Lightning
    for step in ...: budget.maybe_check(model, step, example_inputs)                         # any loop

Each check is ``wafercc.check`` (planning plus the tile-plan estimate unless ``place=True``); its
record (step, wafers, tokens/s per user, ok, reasons, seconds) goes to the JSON-lines ``log_file``,
to the trainer's own logs, and to ``budget.history``.  A broken budget warns (``on_violation="warn"``),
stops training (``"stop"``: the trainer's stop flag; a plain loop reads the record's ``ok``) or
raises ``BudgetExceeded`` (``"raise"``).

What is compiled: a Hugging Face model of a stock ``transformers`` class is compiled from its config
on the meta device (no export, nothing copied off the training weights); any other module is
exported with ``example_inputs``.  Both are cached by structure, not weights, so only the first check
of an architecture pays for lowering (after that a check of a cached 1B-class graph takes under
0.1 s: benchmarks/bench_check.py).
"""
from __future__ import annotations

import dataclasses
import json
import os
import warnings
from typing import Any

from .errors import WaferccError

VIOLATIONS = ("warn", "stop", "raise")


class BudgetExceeded(WaferccError):
    """A training-time check found the model over its wafer or speed budget (``on_violation="raise"``);
    ``record`` is the check's log record."""

    def __init__(self, message: str, record: dict):
        self.record = record
        super().__init__(message)


@dataclasses.dataclass
class WaferBudget:
    max_wafers: int | None = None
    min_tokens_per_s: float | None = None
    every: int = 100                      # training steps (or epochs, for epoch hooks) between checks
    on_violation: str = "warn"
    log_file: str | None = None           # JSON lines, one record per check (appended)
    place: bool = False                   # time the routed schedule instead of the tile-plan estimate
    options: dict = dataclasses.field(default_factory=dict)     # compile options: target, context, dtype...
    history: list = dataclasses.field(default_factory=list)

    def __post_init__(self):
        if self.on_violation not in VIOLATIONS:
            raise WaferccError(f"on_violation '{self.on_violation}': expected one of {', '.join(VIOLATIONS)}")
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise WaferccError(f"every {self.every!r}: expected a positive number of steps")

    def due(self, step: int) -> bool:
        return step > 0 and step % self.every == 0

    def maybe_check(self, model, step: int, example_inputs: Any = None, **where) -> dict | None:
        """``check`` when ``step`` is a multiple of ``every``; else None."""
        return self.check(model, example_inputs, step=step, **where) if self.due(step) else None

    def check(self, model, example_inputs: Any = None, *, step: int | None = None, **where) -> dict:
        """Check ``model`` against the budget now; returns (and logs) the record."""
        from .api import check
        source, inputs = compile_source(model, example_inputs)
        try:
            r = check(source, inputs, max_wafers=self.max_wafers, min_tokens_per_s=self.min_tokens_per_s,
                      place=self.place, **self.options)
            rec = {"step": step, **where, **r.as_dict(), "cached": bool(r.compilation.lowered
                                                                      and r.compilation.lowered.cached)}
        except WaferccError as e:      # a model wafercc cannot compile is a broken budget, not a crash
            rec = {"step": step, **where, "ok": False, "wafers": None, "tokens_per_s_per_user": None,
                   "source": None, "reasons": [f"compile failed: {e}"], "seconds": None, "cached": False}
        self.history.append(rec)
        if self.log_file:
            d = os.path.dirname(os.path.abspath(self.log_file))
            os.makedirs(d, exist_ok=True)
            with open(self.log_file, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec, sort_keys=True) + "\n")
        if not rec["ok"]:
            msg = f"wafercc budget broken at step {step}: " + "; ".join(rec["reasons"])
            if self.on_violation == "raise":
                raise BudgetExceeded(msg, rec)
            warnings.warn(msg, stacklevel=2)
        return rec


def compile_source(model, example_inputs: Any = None) -> tuple[Any, Any]:
    """(what to compile, its example inputs): a stock Hugging Face model by its config (see the module
    doc), anything else as the module itself with ``example_inputs``."""
    inner = getattr(model, "module", model)        # DataParallel / DDP wrappers
    cfg = getattr(inner, "config", None)
    stock = type(inner).__module__.startswith("transformers.") and hasattr(cfg, "to_dict")
    if stock and example_inputs is None:
        return cfg.to_dict(), None
    if example_inputs is None:
        raise WaferccError(f"checking a {type(inner).__name__} needs example_inputs (only stock Hugging Face "
                           f"models compile from their config)")
    return inner, example_inputs


def _trainer_callback_base():
    try:
        from transformers import TrainerCallback
    except ImportError:  # pragma: no cover - transformers is a dependency
        return object
    return TrainerCallback


class WaferccCallback(_trainer_callback_base()):
    """A ``transformers.Trainer`` callback: checks the model every ``budget.every`` global steps, adds
    ``wafercc/wafers`` and ``wafercc/tokens_per_s_per_user`` to the trainer's log history, and with
    ``on_violation="stop"`` sets the trainer's stop flag."""

    def __init__(self, budget: WaferBudget, example_inputs: Any = None):
        self.budget, self.example_inputs = budget, example_inputs

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is None or not self.budget.due(state.global_step):
            return control
        rec = self.budget.check(model, self.example_inputs, step=state.global_step, epoch=state.epoch)
        state.log_history.append({"step": state.global_step, "wafercc/wafers": rec["wafers"],
                                  "wafercc/tokens_per_s_per_user": rec["tokens_per_s_per_user"],
                                  "wafercc/ok": rec["ok"]})
        if not rec["ok"] and self.budget.on_violation == "stop":
            control.should_training_stop = True
        return control


def _lightning_callback_base():
    try:
        from lightning.pytorch.callbacks import Callback
    except ImportError:
        try:
            from pytorch_lightning.callbacks import Callback
        except ImportError:
            return object
    return Callback


class WaferccLightningCallback(_lightning_callback_base()):
    """A PyTorch Lightning callback: checks ``pl_module`` every ``budget.every`` global steps, logs
    ``wafercc/wafers`` and ``wafercc/tokens_per_s_per_user`` with ``pl_module.log``, and with
    ``on_violation="stop"`` sets ``trainer.should_stop``."""

    def __init__(self, budget: WaferBudget, example_inputs: Any = None):
        super().__init__()
        self.budget, self.example_inputs = budget, example_inputs

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if not self.budget.due(step):
            return
        rec = self.budget.check(pl_module, self.example_inputs, step=step, epoch=trainer.current_epoch)
        if rec["wafers"] is not None:
            pl_module.log("wafercc/wafers", float(rec["wafers"]))
        if rec["tokens_per_s_per_user"] is not None:
            pl_module.log("wafercc/tokens_per_s_per_user", float(rec["tokens_per_s_per_user"]))
        if not rec["ok"] and self.budget.on_violation == "stop":
            trainer.should_stop = True
