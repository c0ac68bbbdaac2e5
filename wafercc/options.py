"""Every compile option in one place: the options dataclasses hold the defaults, and ``KNOBS`` maps
each user-facing name to one field of one of them.  The CLI flags (``add_cli_flags``) and the API
keywords (``build_options``) are both derived from this table, so a default is written once.

    opts = build_options(context=4096, dtype="fp8", layout="spares", until="plan")
    opts.plan.context, opts.place.layout, opts.until            # 4096 'spares' 'plan'

The sections are the options of the stages that use them: ``FrontendOptions`` (here),
``PlanOptions`` (wafercc.plan.options), ``PlaceOptions`` (wafercc.passes.place_route) and
``PerfOptions`` (wafercc.perf.report); ``CompileOptions`` ties them with the target, defects, seed
and the stage to stop after.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from .errors import WaferccError
from .passes.place_route import PlaceOptions
from .perf.evaluate import Speculative
from .perf.report import PerfOptions
from .plan.options import KV_PLACEMENTS, PlanOptions, SolverOptions, parse_dtype, parse_overrides
from .target.geometry import LAYOUTS


class OptionError(WaferccError):
    """An unknown compile option, or a value of the wrong kind."""


# The stages of a compilation, in order (wafercc.driver); ``until`` names one of them or an alias.
STAGES = ("frontend", "plan", "tile", "floorplan", "route", "schedule", "timing", "report")
UNTIL_ALIASES = {"ir": "frontend", "place": "schedule", "perf": "timing"}


@dataclasses.dataclass(frozen=True)
class FrontendOptions:
    name: str | None = None        # graph name; None: from the model
    cache: bool = True             # read and write the on-disk IR cache
    layers: int | None = None      # keep only the first N layers (configs and reference models)


@dataclasses.dataclass(frozen=True)
class CompileOptions:
    target: str = "wse3"                 # preset name or .toml file
    defects: str | None = None           # defect spec; None: the target's own rate
    seed: int = 0                        # generated defects and every solver
    until: str = "report"                # the last stage to run (STAGES or UNTIL_ALIASES)
    frontend: FrontendOptions = FrontendOptions()
    plan: PlanOptions = PlanOptions()
    place: PlaceOptions = PlaceOptions()
    perf: PerfOptions = PerfOptions()

    def __post_init__(self):
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2 ** 31:
            raise OptionError(f"seed {self.seed!r}: expected an integer in 0..{2 ** 31 - 1} (the solvers' seed range)")
        resolve_until(self.until)

    @property
    def last_stage(self) -> str:
        return resolve_until(self.until)


def resolve_until(until: str) -> str:
    name = UNTIL_ALIASES.get(until, until)
    if name not in STAGES:
        raise OptionError(f"until '{until}': expected one of {', '.join((*STAGES, *UNTIL_ALIASES))}")
    return name


@dataclasses.dataclass(frozen=True)
class Knob:
    """One user-facing option: API keyword ``name``, CLI flag ``--name`` (underscores as dashes)."""
    name: str
    section: str                            # compile | frontend | plan | place | perf | speculative
    field: str
    help: str
    parse: Callable[[Any], Any] | None = None   # a CLI string (or an API value) -> the field's value
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    cli: str = "value"                      # value | append (repeatable) | negate (--no-NAME sets False)

    @property
    def flag(self) -> str:
        return ("--no-" if self.cli == "negate" else "--") + self.name.replace("_", "-")


def _int(v):
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise ValueError(f"expected an integer, got {v!r}")
    return int(v)


def _float(v):
    if isinstance(v, bool):
        raise ValueError(f"expected a number, got {v!r}")
    return float(v)


def _dtype_of(what):
    return lambda v: v if not isinstance(v, str) else parse_dtype(v, what)


def _overrides(v):
    if isinstance(v, str):
        return parse_overrides([v])
    if v and all(isinstance(i, str) for i in v):
        return parse_overrides(list(v))
    return tuple(tuple(i) for i in v)


KNOBS: tuple[Knob, ...] = (
    Knob("until", "compile", "until", "the last stage to run; ir = frontend, place = schedule, perf = timing",
         choices=(*STAGES, *UNTIL_ALIASES)),
    Knob("target", "compile", "target", "target preset or .toml file"),
    Knob("defects", "compile", "defects", "defect spec, e.g. random:0.01, none (default: the target's rate)"),
    Knob("seed", "compile", "seed", "seed for generated defects and the solvers", _int),
    Knob("name", "frontend", "name", "graph name (default: from the model)"),
    Knob("layers", "frontend", "layers", "keep only the first N layers (configs only)", _int),
    Knob("cache", "frontend", "cache", "do not read or write the IR cache", cli="negate"),
    Knob("dtype", "plan", "dtype", "weight dtype (bf16, fp16, fp8, fp4, int8; default: the model's)",
         _dtype_of("--dtype")),
    Knob("dtype_override", "plan", "dtype_overrides", "weight dtype for ops whose name matches PATTERN "
         "(or op kind), e.g. moe=fp4", _overrides, metavar="PATTERN=DTYPE", cli="append"),
    Knob("kv_dtype", "plan", "kv_dtype", "KV-cache dtype (default: the weight dtype)", _dtype_of("--kv-dtype")),
    Knob("context", "plan", "context", "tokens of KV cache per sequence", _int),
    Knob("batch", "plan", "batch", "sequences decoded together", _int),
    Knob("kv_placement", "plan", "kv_placement", "KV cache beside each layer's weights, or on dedicated "
         "KV wafers", choices=KV_PLACEMENTS),
    Knob("max_wafers", "plan", "max_wafers", "fail with levers if more wafers are needed", _int),
    Knob("wafers", "plan", "wafers", "spread over this many wafers (>= the minimum)", _int),
    Knob("layout", "place", "layout", "floorplan: lanes (the curve skips dead cores), spares (spare columns, "
         "displaced tiles placed by an OR-Tools min-cost assignment) or the row-major baseline", choices=LAYOUTS),
    Knob("prompt_tokens", "perf", "prompt_tokens", "prompt length for time to first token and the decode "
         "position", _int),
    Knob("speculative", "speculative", "draft", "also report speculative decoding with this draft model "
         "(reference name, config or .onnx)", metavar="DRAFT"),
    Knob("spec_tokens", "speculative", "proposed", "draft tokens proposed per step", _int),
    Knob("spec_acceptance", "speculative", "acceptance", "probability each draft token is accepted", _float),
    Knob("curve", "perf", "curve", "skip the speed-versus-wafers curve", cli="negate"),
)
KNOB_BY_NAME = {k.name: k for k in KNOBS}
_SECTIONS = {"compile": CompileOptions, "frontend": FrontendOptions, "plan": PlanOptions,
             "place": PlaceOptions, "perf": PerfOptions, "speculative": Speculative}


def default(knob: Knob) -> Any:
    """The knob's default, read from its dataclass (the one place it is written)."""
    f = {f.name: f for f in dataclasses.fields(_SECTIONS[knob.section])}[knob.field]
    return None if f.default is dataclasses.MISSING else f.default


def build_options(**kw) -> CompileOptions:
    """CompileOptions from API keywords (each a ``KNOBS`` name); unknown names raise OptionError."""
    unknown = sorted(set(kw) - set(KNOB_BY_NAME))
    if unknown:
        raise OptionError(f"unknown compile option(s) {', '.join(unknown)}: expected any of "
                          f"{', '.join(KNOB_BY_NAME)}")
    vals: dict[str, dict[str, Any]] = {s: {} for s in _SECTIONS}
    for name, v in kw.items():
        k = KNOB_BY_NAME[name]
        if v is not None and k.parse is not None:
            try:
                v = k.parse(v)
            except ValueError as e:
                raise OptionError(f"option {name}: {e}") from None
        if k.choices is not None and v is not None and v not in k.choices:
            raise OptionError(f"option {name} '{v}': expected one of {', '.join(k.choices)}")
        if v is None:
            continue                            # None asks for the default
        vals[k.section][k.field] = v
    top = vals["compile"]
    seed = top.get("seed", CompileOptions.seed)
    spec = vals["speculative"]
    perf = dict(vals["perf"], speculative=Speculative(**spec) if spec.get("draft") else None)
    if spec and not spec.get("draft"):
        raise OptionError("spec_tokens / spec_acceptance need speculative=DRAFT")
    # the planner counts the cores of the layout the placer will use (the device model's tiler slots)
    plan_kw = dict(vals["plan"], layout=vals["place"].get("layout", PlaceOptions.layout))
    return CompileOptions(**top, frontend=FrontendOptions(**vals["frontend"]),
                          plan=PlanOptions(**plan_kw, solver=SolverOptions(seed=seed)),
                          place=PlaceOptions(**vals["place"], seed=seed), perf=PerfOptions(**perf))


def add_cli_flags(parser) -> None:
    """One flag per knob; defaults stay None so only what the user gave reaches build_options."""
    for k in KNOBS:
        d = default(k)
        if k.cli == "negate":
            parser.add_argument(k.flag, dest=k.name, action="store_const", const=False, default=None, help=k.help)
            continue
        shown = f" (default {d})" if d not in (None, ()) else ""
        parser.add_argument(k.flag, dest=k.name, default=None, choices=k.choices, metavar=k.metavar,
                            action="append" if k.cli == "append" else "store",
                            type=int if k.parse is _int else float if k.parse is _float else None,
                            help=k.help + shown)


def cli_keywords(args) -> dict[str, Any]:
    """The knobs the user gave on the command line, as API keywords."""
    return {k.name: getattr(args, k.name) for k in KNOBS if getattr(args, k.name) is not None}


def options_from_cli(args) -> CompileOptions:
    return build_options(**cli_keywords(args))
