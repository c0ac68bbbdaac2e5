"""The exceptions wafercc raises on bad input.

Every error a user can cause derives from :class:`WaferccError`.  Its message
is one line that says what is wrong, where (file, node name, op type) and what
was expected; the CLI prints exactly that line and exits with status 2.
"""
from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
# lines of a third-party error that explain the tool, not the failure (torch.onnx's banners)
_BANNER = re.compile(r"(?:Failed to (?:export the model|convert the exported program|decompose)|This is step \d|"
                     r"Next steps|- |#+ |\(?Refer to |⬆|For more information)")
_CLASS_LINE = re.compile(r"<class '(?:[\w.]*\.)?(\w+)'>: (.+)")


def strip_ansi(text: str) -> str:
    """``text`` without terminal escape sequences (colours, cursor moves, hyperlinks)."""
    return _ANSI.sub("", text)


def shorten(text: str, limit: int = 300) -> str:
    """``text`` on one line (whitespace runs collapsed), cut at a word boundary with an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    if " " in cut[limit // 2:]:
        cut = cut[:cut.rindex(" ")]
    return cut.rstrip(" ,;:.") + "…"


def one_line(e: BaseException, limit: int = 300) -> str:
    """``Type: message`` of an exception in one readable line: its first line that is not a banner
    (an ``<class 'X'>: message`` summary line names its own type), ANSI escapes removed."""
    lines = [ln.strip() for ln in strip_ansi(str(e)).splitlines() if ln.strip()]
    first = next((ln for ln in lines if not _BANNER.match(ln)), lines[0] if lines else "")
    m = _CLASS_LINE.fullmatch(first)
    msg = f"{m.group(1)}: {m.group(2)}" if m else f"{type(e).__name__}: {first}" if first else type(e).__name__
    return shorten(msg, limit)


class WaferccError(Exception):
    """Base class of every error caused by the user's input."""

    def __init__(self, message: str, *, where: str | None = None):
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)

    def __reduce__(self):
        # the message and every attribute survive a trip through pickle (a worker process or a Ray
        # task raising it, wafercc/executor.py); the default would call __init__ with the message only
        return _rebuild_error, (type(self), self.args, self.__dict__)


def _rebuild_error(cls, args, state):
    e = Exception.__new__(cls)
    e.args = args
    e.__dict__.update(state)
    return e


class InputFileError(WaferccError):
    """A model file is missing, unreadable, truncated or not an ONNX model."""


class UnsupportedOpError(WaferccError):
    """The model uses an operator outside wafercc's op set."""

    def __init__(self, op_type: str, *, node: str | None = None, detail: str = ""):
        self.op_type = op_type
        self.node = node
        where = f"node '{node}' (op {op_type})" if node else f"op {op_type}"
        msg = f"unsupported operator '{op_type}'"
        if detail:
            msg += f": {detail}"
        super().__init__(msg, where=where)


class ModelConfigError(WaferccError):
    """A model config is unknown, malformed or names an unknown model_type."""


class FrontendError(WaferccError):
    """A model could not be exported or lowered by a frontend (e.g. ``torch.onnx.export``
    failed on an ``nn.Module``); the message names the exporter's error in one line."""


class IRError(WaferccError):
    """An IR graph is malformed (parse error, failed verification)."""


class IRParseError(IRError):
    """The textual IR could not be parsed."""


class IRVerificationError(IRError):
    """The IR verifier found problems; ``problems`` lists all of them."""

    def __init__(self, problems: list[str], *, where: str | None = None):
        self.problems = list(problems)
        first = problems[0] if problems else "unknown problem"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(first + more, where=where)


class StageError(WaferccError):
    """A compile stage was run without what it requires, or did not produce what it promises; the
    message names the stage (wafercc.driver)."""


class Infeasible(WaferccError):
    """No plan fits the wafer budget (``max_wafers`` / ``wafers``).  ``levers`` lists the single
    changes that would fit, each re-planned (``change``, ``wafers``, ``saves_bytes``);
    ``needed_wafers`` is what the model needs as asked (None: more than any count tried);
    ``compilation`` holds everything compiled so far (graph, facts, the infeasible plan)."""

    def __init__(self, message: str, *, levers=(), needed_wafers: int | None = None, compilation=None):
        self.levers, self.needed_wafers, self.compilation = tuple(levers), needed_wafers, compilation
        super().__init__(message)


class PlacementError(WaferccError):
    """A plan that fits by bytes could not be placed: its tiles do not fit a wafer's usable cores
    (TileError), the floorplan or the spare assignment failed (FloorplanError, AssignError), or
    its transfers could not be routed (RoutingError).  ``compilation`` is set by the driver."""

    compilation = None
