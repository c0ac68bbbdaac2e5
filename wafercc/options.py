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
import math
import re
from typing import Any, Callable

from . import limits as L
from .errors import WaferccError
from .executor import ExecOptions
from .ir import DType
from .passes.place_route import PlaceOptions
from .perf.evaluate import Speculative
from .perf.report import PerfOptions
from .plan.options import KV_PLACEMENTS, PARTITIONS, PlanOptions, SolverOptions
from .target.geometry import LAYOUTS, REDUCTIONS, parse_mapping


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
    execution: ExecOptions = ExecOptions()      # where per-wafer work runs; never changes an output

    def __post_init__(self):
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= L.MAX_SEED:
            raise OptionError(f"seed {self.seed!r}: expected an integer in 0..{L.MAX_SEED} (the solvers' seed range)")
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
    bounds: tuple[Any, Any] | None = None    # inclusive (low, high) of a number, checked after parse
    unit: str = ""                          # what the number counts, for messages and --help
    limit: str = ""                         # the wafercc.limits name of the high bound, if any

    @property
    def flag(self) -> str:
        return ("--no-" if self.cli == "negate" else "--") + self.name.replace("_", "-")


_DECIMAL = re.compile(r"[+-]?[0-9]+")


def _int(v):
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise ValueError(f"expected an integer, got {v!r}")
    if isinstance(v, str):
        if len(v) > L.MAX_INT_DIGITS:              # int() of 5000 digits is slow, then refused anyway
            raise ValueError(f"expected an integer, got a {len(v)}-character string")
        if not _DECIMAL.fullmatch(v):              # int() also takes "1_000", " 7" and non-ASCII digits
            raise ValueError(f"expected an integer, got {v!r}")
    return int(v)


def _float(v):
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise ValueError(f"expected a number, got {v!r}")
    try:
        f = float(v)
    except ValueError:
        raise ValueError(f"expected a number, got {v!r}") from None
    if not math.isfinite(f):
        raise ValueError(f"expected a finite number, got {v!r}")
    return f


# Formats weights and the KV cache are stored in on a wafer (bool, i32 and i64 are index types).
STORAGE_DTYPES = (DType.F32, DType.F16, DType.BF16, DType.F8E4M3, DType.F8E5M2, DType.F4E2M1, DType.I8, DType.I4)


def _storage(dt: Any, what: str) -> DType:
    known = ", ".join(d.value for d in STORAGE_DTYPES)
    if isinstance(dt, str) and not isinstance(dt, DType):
        try:
            dt = DType.parse(dt)
        except ValueError:
            raise ValueError(f"{what}: unknown dtype {_short(dt)}, expected a storage dtype, one of {known} "
                             f"(or an alias such as fp8, bfloat16)") from None
    if dt not in STORAGE_DTYPES:
        shown = _short(dt.value if isinstance(dt, DType) else dt)
        raise ValueError(f"{what} {shown}: not a storage dtype, expected one of {known}")
    return DType(dt)


def _dtype_of(what):
    return lambda v: _storage(v, what)


def _override_item(item: str) -> tuple[str, str]:
    pattern, sep, dt = item.partition("=")
    if not sep or not pattern or len(pattern) > 200:
        raise ValueError(f"dtype override {_short(item)}: expected PATTERN=DTYPE (e.g. moe=fp4), "
                         f"the pattern at most 200 characters")
    return pattern, dt


def _overrides(v):
    try:
        items = [v] if isinstance(v, str) else list(v)
        out = [_override_item(i) if isinstance(i, str) else (str(i[0]), i[1]) for i in items
               if isinstance(i, str) or len(i) == 2]
        if len(out) != len(items):
            raise TypeError
    except (TypeError, KeyError, IndexError):
        raise ValueError(f"expected PATTERN=DTYPE strings or (pattern, dtype) pairs, got {_short(v)}") from None
    return tuple((p, _storage(dt, f"dtype override {_short(p)}")) for p, dt in out)


def _mapping(v):
    parse_mapping(v)              # ValueError: a one-line OptionError from build_options
    return str(v).strip()


def _short(v: Any, limit: int = 40) -> str:
    """``repr(v)`` cut to ``limit`` characters: a message echoes what the user wrote, not all of it."""
    text = repr(v)
    return text if len(text) <= limit else text[:limit - 3] + "..."


KNOBS: tuple[Knob, ...] = (
    Knob("until", "compile", "until", "the last stage to run; ir = frontend, place = schedule, perf = timing",
         choices=(*STAGES, *UNTIL_ALIASES)),
    Knob("target", "compile", "target", "target preset or .toml file"),
    Knob("defects", "compile", "defects", "defect spec, e.g. random:0.01, none (default: the target's rate)"),
    Knob("seed", "compile", "seed", "seed for generated defects and the solvers", _int,
         bounds=(0, L.MAX_SEED), limit="MAX_SEED"),
    Knob("name", "frontend", "name", "graph name (default: from the model)"),
    Knob("layers", "frontend", "layers", "keep only the first N layers (configs only)", _int,
         bounds=(1, L.MAX_LAYERS), unit="layers", limit="MAX_LAYERS"),
    Knob("cache", "frontend", "cache", "do not read or write the IR cache", cli="negate"),
    Knob("dtype", "plan", "dtype", "weight dtype (bf16, fp16, fp8, fp4, int8; default: the model's)",
         _dtype_of("--dtype")),
    Knob("dtype_override", "plan", "dtype_overrides", "weight dtype for ops whose name matches PATTERN "
         "(or op kind), e.g. moe=fp4", _overrides, metavar="PATTERN=DTYPE", cli="append"),
    Knob("kv_dtype", "plan", "kv_dtype", "KV-cache dtype (default: the weight dtype)", _dtype_of("--kv-dtype")),
    Knob("context", "plan", "context", "tokens of KV cache per sequence", _int,
         bounds=(1, L.MAX_CONTEXT), unit="tokens", limit="MAX_CONTEXT"),
    Knob("batch", "plan", "batch", "sequences decoded together", _int,
         bounds=(1, L.MAX_BATCH), unit="sequences", limit="MAX_BATCH"),
    Knob("kv_placement", "plan", "kv_placement", "KV cache beside each layer's weights, or on dedicated "
         "KV wafers", choices=KV_PLACEMENTS),
    Knob("partition", "plan", "partition", "the partition's units: whole layers, blocks (attention, MLP) or "
         "ops (default: the coarsest that needs the fewest wafers)", choices=PARTITIONS),
    Knob("max_wafers", "plan", "max_wafers", "fail with levers if more wafers are needed", _int,
         bounds=(1, L.MAX_WAFERS), unit="wafers", limit="MAX_WAFERS"),
    Knob("wafers", "plan", "wafers", "spread over this many wafers (>= the minimum)", _int,
         bounds=(1, L.MAX_WAFERS), unit="wafers", limit="MAX_WAFERS"),
    Knob("layout", "place", "layout", "floorplan: lanes (the curve skips dead cores), spares (spare columns, "
         "displaced tiles placed by an OR-Tools min-cost assignment) or the row-major baseline", choices=LAYOUTS),
    Knob("reduction", "place", "reduction", "partial sums: tree (binomial, ceil(log2 rows) steps) or chain "
         "(the launch-style mapping, rows - 1 steps)", choices=REDUCTIONS),
    Knob("mapping", "place", "mapping", "which layers share cores: regions (each op its own), groups:G "
         "(G consecutive layers share one floorplan), wafer (all layers of a wafer) or auto (the compiler "
         "prices them and picks the fastest that fits)", _mapping, metavar="MAPPING"),
    Knob("prompt_tokens", "perf", "prompt_tokens", "prompt length for time to first token and the decode "
         "position", _int,
         bounds=(1, L.MAX_CONTEXT), unit="tokens", limit="MAX_CONTEXT"),
    Knob("speculative", "speculative", "draft", "also place this draft model on its own wafers and report "
         "speculative decoding beside the plain figure (reference name, config or .onnx)", metavar="DRAFT"),
    Knob("spec_tokens", "speculative", "proposed", "draft tokens proposed per step (default: the fastest of "
         "the sweep 1..8)", _int,
         bounds=(1, L.MAX_SPEC_TOKENS), unit="tokens", limit="MAX_SPEC_TOKENS"),
    Knob("spec_acceptance", "speculative", "acceptance", "probability each draft token is accepted, in [0, 1) "
         "(default 0.75, Leviathan et al. 2023)", _float,
         bounds=(0.0, 1.0), unit="(a probability)"),
    Knob("curve", "perf", "curve", "skip the speed-versus-wafers curve", cli="negate"),
    Knob("jobs", "exec", "jobs", "worker processes for the per-wafer floorplan and route (default: the "
         "cores available; the output is the same for any count)", _int,
         bounds=(1, L.MAX_JOBS), unit="processes", limit="MAX_JOBS"),
    Knob("ray", "exec", "ray", "run the per-wafer floorplan and route as Ray tasks: a cluster's ADDRESS, "
         "'auto' (the running cluster, Ray's meaning) or 'local' (start one here); pip install 'wafercc[ray]'",
         metavar="ADDRESS"),
)
KNOB_BY_NAME = {k.name: k for k in KNOBS}
_SECTIONS = {"compile": CompileOptions, "frontend": FrontendOptions, "plan": PlanOptions,
             "place": PlaceOptions, "perf": PerfOptions, "speculative": Speculative, "exec": ExecOptions}


def default(knob: Knob) -> Any:
    """The knob's default, read from its dataclass (the one place it is written)."""
    f = {f.name: f for f in dataclasses.fields(_SECTIONS[knob.section])}[knob.field]
    return None if f.default is dataclasses.MISSING else f.default


def check_bounds(k: Knob, v) -> None:
    """OptionError unless ``v`` is within the knob's bounds (wafercc.limits)."""
    lo, hi = k.bounds
    if not lo <= v <= hi:
        kind = "a number" if isinstance(lo, float) else "an integer"
        why = f" (wafercc.limits.{k.limit})" if k.limit else ""
        raise OptionError(f"option {k.name} {v}: expected {kind} in {lo}..{hi}{' ' + k.unit if k.unit else ''}{why}")


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
        if v is not None and k.bounds is not None:
            check_bounds(k, v)
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
    plan_kw = dict(vals["plan"], layout=vals["place"].get("layout", PlaceOptions.layout),
                   reduction=vals["place"].get("reduction", PlaceOptions.reduction),
                   mapping=vals["place"].get("mapping", PlaceOptions.mapping))
    return CompileOptions(**top, frontend=FrontendOptions(**vals["frontend"]),
                          plan=PlanOptions(**plan_kw, solver=SolverOptions(seed=seed)),
                          place=PlaceOptions(**vals["place"], seed=seed), perf=PerfOptions(**perf),
                          execution=ExecOptions(**vals["exec"]))


def add_cli_flags(parser) -> None:
    """One flag per knob; defaults stay None so only what the user gave reaches build_options."""
    for k in KNOBS:
        d = default(k)
        if k.cli == "negate":
            parser.add_argument(k.flag, dest=k.name, action="store_const", const=False, default=None, help=k.help)
            continue
        shown = f" (default {d})" if d not in (None, ()) else ""
        rng = f"; {k.bounds[0]}..{k.bounds[1]}" if k.bounds else ""
        # values stay strings: build_options parses them, with the bounds in its one-line errors
        parser.add_argument(k.flag, dest=k.name, default=None, choices=k.choices, metavar=k.metavar,
                            action="append" if k.cli == "append" else "store", help=k.help + rng + shown)


def cli_keywords(args) -> dict[str, Any]:
    """The knobs the user gave on the command line, as API keywords."""
    return {k.name: getattr(args, k.name) for k in KNOBS if getattr(args, k.name) is not None}


def options_from_cli(args) -> CompileOptions:
    return build_options(**cli_keywords(args))
