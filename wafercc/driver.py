"""The compile driver: one object per compilation, one straight list of named stages.

    frontend  model -> verified IR graph and its facts           (wafercc.frontend.load)
    plan      graph -> target, device model, wafer plan          (wafercc.plan.planner)
    tile      plan -> tile grids of every op, lane geometry      (passes.place_route.tile_program)
    floorplan per wafer: tiles on cores, transfers to route      (passes.place_route.layout_wafer)
    route     per wafer: every transfer routed on the live mesh  (passes.place_route.route_wafer)
    schedule  per wafer: the schedule files, the timing program  (wafercc.backend.schedule)
    timing    program -> decode performance, wafers curve        (wafercc.perf.report)
    report    everything -> report.json                          (wafercc.report)

Every stage names the ``Compilation`` fields it ``requires`` and ``produces``; the ``StageManager``
checks both around each stage and names the stage that broke them, records its seconds, stops after
``until``, can dump each stage's product and run the checks after it (the IR verifier after the
frontend, the independent schedule verifier after the schedule).  The per-wafer stages (floorplan,
route, schedule) run wafer by wafer, so a program of dozens of wafers holds one in memory; the
last per-wafer stage asked for keeps its products (``until="floorplan"`` keeps every floorplan).

    c = Compilation("llama-3.1-8b", build_options(context=4096))
    c.run()                      # through options.until; c.run(until="report") later resumes where it stopped
    c.wafers, c.performance.tokens_per_s_per_user, c.report, c.save("out/")
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import shutil
import tempfile
import time
import weakref
from typing import Any, ClassVar

from .errors import Infeasible, PlacementError, StageError
from .executor import Serial, executor_for
from .progress import DONE, STARTED, WAFER, ProgressEvent
from .options import STAGES, CompileOptions, build_options, resolve_until


@dataclasses.dataclass(frozen=True)
class Performance:
    """The headline decode figures of the routed schedule (docs/metrics.md defines each)."""
    tokens_per_s_per_user: float
    tokens_per_s_aggregate: float
    time_per_output_token_s: float
    ttft_s: float
    energy_j_per_token: float
    breakdown_s: dict
    batch: int
    prompt_tokens: int
    speculative_tokens_per_s_per_user: float | None
    section: dict = dataclasses.field(repr=False)       # the report's whole performance section

    @classmethod
    def of(cls, perf: dict) -> "Performance":
        spec = perf.get("speculative")
        return cls(perf["decode_tokens_per_s_per_user"], perf["decode_tokens_per_s_aggregate"],
                   perf["time_per_output_token_s"], perf["ttft_s"], perf["energy_j_per_token"],
                   dict(perf["breakdown_s"]), perf["batch"], perf["prompt_tokens"],
                   spec["decode_tokens_per_s_per_user"] if spec else None, perf)


class Compilation:
    """What each stage produced so far.  Fields stay None until their stage has run."""

    def __init__(self, model: Any, options: CompileOptions | None = None, example_inputs: Any = None, *,
                 stage_dir: str | None = None):
        self.model, self.example_inputs = model, example_inputs
        self.options = options or build_options()
        self.stage_dir = stage_dir                 # where the schedule is staged (default: the system temp)
        self.lowered = self.graph = self.facts = None                    # frontend
        self.target = self.device = self.plan = None                     # plan
        self.tiles = None                                                # tile
        self.floorplans = None                                           # floorplan (kept if last)
        self.routed = None                                               # route (kept if last)
        self.placement = self.program = self.schedule_files = None       # schedule
        self.performance_section = None                                  # timing
        self.draft = None                  # the speculative draft's lowered IR (prepare: before anything runs)
        self.draft_lowered = None          # ... and its frontend result
        self.draft_placed = None           # the draft placed on its own wafers (schedule: wafercc/draft.py)
        self.placement_failure = None      # (stage, message) of a PlacementError: the report says so
        self.mapping_search = None         # the report's mapping section (plan stage: chosen, priced, why)
        self.report_dict = None                                          # report
        self.seconds: dict[str, float] = {}
        self.wall_seconds = 0.0            # of every run() (per-wafer stages' seconds are summed over workers)
        self.executor = None               # (kind, workers) that ran the per-wafer stages
        self.build_key = None              # the CLI's build-cache key of this compile (wafercc/build_cache.py)
        self.ran: list[str] = []
        self._workdir = None

    # ---- running ----
    def prepare(self) -> "Compilation":
        """Load the target and parse the defect spec now (cheap), so bad ones fail before the frontend;
        lower a speculative draft too, so an unresolvable one fails before anything is compiled."""
        last = STAGES.index(self.options.last_stage)
        if last >= STAGES.index("plan") and self.target is None:
            from .target import load_target
            from .target.device import Device
            self.target = load_target(self.options.target)
            self.device = Device(self.target, self.options.defects, self.options.seed)
        spec = self.options.perf.speculative
        if last >= STAGES.index("schedule") and spec is not None and self.draft is None:
            from .frontend.load import lower_model
            self.draft_lowered = lower_model(spec.draft, cache=self.options.frontend.cache)
            self.draft = self.draft_lowered.graph
        return self

    def run(self, until: str | None = None, *, dump_dir: str | None = None, dump: tuple[str, ...] = (),
            verify: bool = False, progress=None) -> "Compilation":
        """Run the stages after the last one run, through ``until`` (default ``options.until``).
        ``progress(event)`` (wafercc.progress.ProgressEvent) is called when a stage starts, after
        each wafer of a per-wafer stage and when a stage is done; an exception it raises stops the
        compile."""
        last = resolve_until(until or self.options.until)
        if STAGES.index(last) >= STAGES.index("plan"):
            self.prepare()
        t0 = time.perf_counter()
        try:
            StageManager(dump_dir, tuple(dump), verify, progress).run(self, last)
        finally:
            self.wall_seconds += time.perf_counter() - t0
        return self

    def workdir(self) -> str:
        """A private directory for the schedule until ``save`` moves it (removed with this object)."""
        if self._workdir is None:
            if self.stage_dir:
                os.makedirs(self.stage_dir, exist_ok=True)
            self._workdir = tempfile.mkdtemp(prefix=".wafercc-", dir=self.stage_dir)
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._workdir, True)
        return self._workdir

    def staged_dumps(self) -> str | None:
        """The stage dumps written into the private directory (``dump_dir=c.stage_path("dump")``)."""
        d = os.path.join(self._workdir, "dump") if self._workdir else None
        return d if d and os.path.isdir(d) else None

    def stage_path(self, name: str) -> str:
        return os.path.join(self.workdir(), name)

    def close(self) -> None:
        """Remove the private directory now (an unsaved schedule with it); ``save`` before this."""
        if self._workdir is not None:
            self._cleanup()
            self._workdir = None

    # ---- what users read ----
    @property
    def name(self) -> str:
        return self.graph.name

    @property
    def source(self) -> str:
        return self.lowered.source

    @property
    def cached(self) -> bool:
        return self.lowered.cached

    @property
    def wafers(self) -> int | None:
        """Wafers the compiled plan uses (None before planning, 0 when infeasible)."""
        return None if self.plan is None else self.plan.used

    @property
    def performance(self) -> Performance | None:
        return None if self.performance_section is None else Performance.of(self.performance_section)

    @property
    def report(self) -> dict | None:
        """report.json as a dict: the plan and whatever later stages have run (None before planning)."""
        if self.report_dict is not None:
            return self.report_dict
        from .report import build_report
        return build_report(self) if self.plan is not None else None

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())

    def compile_record(self) -> dict:
        """compile.json: wall times per stage (the only output that varies between identical runs)."""
        from .plan.report import solve_seconds
        rec = {"schema": "wafercc.compile/1", "model": self.name, "cached": self.cached,
               "stages": [{"name": s, "seconds": round(self.seconds[s], 3)} for s in self.ran],
               "seconds": round(self.total_seconds, 3), "wall_seconds": round(self.wall_seconds, 3),
               "peak_rss_mb": peak_rss_mb(),
               "executor": None if self.executor is None else {"kind": self.executor[0], "workers": self.executor[1]},
               **({"build_cache": {"hit": False, "key": self.build_key}} if self.build_key else {}),
               "solves": solve_seconds(self.plan) if self.plan is not None else []}
        if self.draft_placed is not None:   # inside the schedule stage's seconds
            d = self.draft_placed.compilation
            rec["draft"] = {"model": d.name, "stages": [{"name": s, "seconds": round(d.seconds[s], 3)} for s in d.ran],
                            "seconds": round(d.total_seconds, 3)}
        return rec

    def save(self, outdir: str) -> dict[str, str]:
        from .report import save_outputs
        return save_outputs(self, outdir)


def peak_rss_mb() -> int:
    """Peak resident memory of this process and of its largest finished child (a pool worker), MB."""
    import resource
    kb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return round(kb / 1024)          # ru_maxrss is in KB on Linux


@dataclasses.dataclass(frozen=True)
class Stage:
    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()
    produces: ClassVar[tuple[str, ...]] = ()
    per_wafer: ClassVar[bool] = False

    # a whole-program stage defines run(c); a WaferStage defines run_wafer(c, k, item) instead

    def dump(self, c: Compilation) -> tuple[str, str] | None:
        """(file name, text) of this stage's product, or None."""
        return None

    def check(self, c: Compilation) -> None:
        """The independent check after this stage (``verify=True``); raises on a violation."""


class WaferStage(Stage):
    per_wafer: ClassVar[bool] = True
    parallel: ClassVar[bool] = False            # run_wafer reads only WaferContext fields: any process may run it
    keeps: ClassVar[str] = ""                   # field holding every wafer's product when this stage is last

    def start(self, c: Compilation) -> None:
        pass

    def info(self, ctx, k: int, item) -> dict | None:
        """A small summary of wafer k's product, made where the wafer ran: this stage's dump entry
        (a JSON list, one entry per wafer) and what the progress events report."""
        return None

    def collect(self, c: Compilation, k: int, item) -> None:
        """Join wafer k's product in this process, in wafer order (after ``run_wafer`` ran anywhere)."""

    def finish(self, c: Compilation, items: list | None) -> None:
        if self.keeps:
            setattr(c, self.keeps, items)

    def abort(self, c: Compilation) -> None:
        pass


@dataclasses.dataclass(frozen=True)
class FrontendStage(Stage):
    name: ClassVar[str] = "frontend"
    produces: ClassVar[tuple[str, ...]] = ("lowered", "graph", "facts")

    def run(self, c):
        from .frontend.load import lower_model
        o = c.options.frontend
        c.lowered = lower_model(c.model, c.example_inputs, name=o.name, cache=o.cache, layers=o.layers)
        c.graph, c.facts = c.lowered.graph, c.lowered.facts

    def dump(self, c):
        from .ir import print_graph
        return "model.ir", print_graph(c.graph)

    def check(self, c):
        from .ir import verify
        verify(c.graph)


@dataclasses.dataclass(frozen=True)
class PlanStage(Stage):
    name: ClassVar[str] = "plan"
    requires: ClassVar[tuple[str, ...]] = ("graph",)
    produces: ClassVar[tuple[str, ...]] = ("target", "device", "plan")

    def run(self, c):
        from .plan.planner import plan_wafers
        c.prepare()
        from .mapping_auto import resolve_mapping
        if resolve_mapping(c):
            return                          # a confirmed candidate's compile was adopted, plan included
        c.plan = plan_wafers(c.graph, c.target, c.options.plan, c.device, tile_check=_tile_check(c))
        if c.plan.infeasible:
            inf = c.plan.infeasible
            o = c.options.plan
            needs = f"; needs {inf.needed_wafers}" if inf.needed_wafers else ""
            budget = f"{inf.max_wafers} wafer(s)" if (o.max_wafers or o.wafers) else "any wafer count"
            raise Infeasible(f"no plan fits {budget}: {inf.reason}{needs}",
                             levers=inf.levers, needed_wafers=inf.needed_wafers, compilation=c)

    def dump(self, c):
        from .plan.report import plan_dict
        return "plan.json", _json(plan_dict(c.plan))


def _tile_check(c: Compilation):
    """The planner's check that a plan's tiles fit: the tile stage's own function on the floorplan's
    slots (tile padding, lane slots, the real receive buffers), so a plan is never claimed that the
    tiler disproves.  None when they fit; else the tiler's one-line shortfall."""
    from .passes.place_route import tile_program

    def check(plan):
        try:
            tprog = tile_program(c.graph, plan, c.target, c.device, c.options.place)
        except PlacementError as e:
            if getattr(e, "short_cores", None) is None:
                raise                                   # not a matter of cores: more wafers would not help
            from .plan.planner import tile_shortfall
            return tile_shortfall(e)
        c._checked_tiles = (plan, tprog)
        return None
    return check


@dataclasses.dataclass(frozen=True)
class TileStage(Stage):
    name: ClassVar[str] = "tile"
    requires: ClassVar[tuple[str, ...]] = ("graph", "plan", "target", "device")
    produces: ClassVar[tuple[str, ...]] = ("tiles",)

    def run(self, c):
        from .passes.place_route import tile_program
        checked = getattr(c, "_checked_tiles", None)      # the plan stage tiled this very plan already
        c.tiles = checked[1] if checked and checked[0] is c.plan else \
            tile_program(c.graph, c.plan, c.target, c.device, c.options.place)
        c._checked_tiles = None

    def dump(self, c):
        tp = c.tiles.tiles
        return "tiles.json", _json({"lane": c.tiles.lane, "spare": c.tiles.spare, "width": c.tiles.width,
                                    "ops": [{"node": o.node, "op": o.op, "wafer": o.wafer,
                                             "grids": [[g.experts, g.rows, g.cols, g.operand] for g in o.grids]}
                                            for o in tp.ops]})


@dataclasses.dataclass(frozen=True)
class FloorplanStage(WaferStage):
    name: ClassVar[str] = "floorplan"
    requires: ClassVar[tuple[str, ...]] = ("tiles", "device")
    produces: ClassVar[tuple[str, ...]] = ("floorplans",)
    keeps: ClassVar[str] = "floorplans"
    parallel: ClassVar[bool] = True

    def run_wafer(self, c, k, item):
        from .passes.place_route import layout_wafer
        return layout_wafer(c.tiles, k, c.device, c.options.place)

    def info(self, ctx, k, lw):
        from .backend.schedule import floorplan_qor
        return {"wafer": k, "transfers": len(lw.transfers), **floorplan_qor(lw.floorplan, ctx.options.place.layout)}


@dataclasses.dataclass(frozen=True)
class RouteStage(WaferStage):
    name: ClassVar[str] = "route"
    requires: ClassVar[tuple[str, ...]] = ("floorplans", "target", "device")
    produces: ClassVar[tuple[str, ...]] = ("routed",)
    keeps: ClassVar[str] = "routed"
    parallel: ClassVar[bool] = True

    def run_wafer(self, c, k, item):
        from .passes.place_route import route_wafer
        return route_wafer(item, c.target, c.device, c.options.place)

    def info(self, ctx, k, pw):
        from .backend.qor import wafer_row
        return wafer_row(pw, ctx.options.place.layout)


@dataclasses.dataclass(frozen=True)
class ScheduleStage(WaferStage):
    name: ClassVar[str] = "schedule"
    requires: ClassVar[tuple[str, ...]] = ("routed", "graph", "plan", "target", "device")
    produces: ClassVar[tuple[str, ...]] = ("placement", "program", "schedule_files")
    parallel: ClassVar[bool] = True             # each wafer's records and npz; the writer joins them here

    def start(self, c):
        from .backend.schedule import ScheduleWriter
        c._writer = ScheduleWriter(c.workdir(), c.graph, c.target, c.device, c.plan, c.options.place,
                                   c.options.perf.prompt_tokens)
        c.part_context = c._writer.part_context()
        c._rows = []

    def run_wafer(self, c, k, pw):
        from .backend.schedule import wafer_part
        return wafer_part(c.part_context, pw)

    def collect(self, c, k, part):
        c._rows.append(part.row)
        c._writer.add_part(part)

    def finish(self, c, items):
        from .backend.qor import placement_section
        c.schedule_files = c._writer.finish()
        c.program = c._writer.program()
        c.placement = placement_section(c._rows, c.options.place.layout)
        del c._writer, c._rows, c.part_context
        if c.draft_lowered is not None:
            c.draft_placed = _place_draft(c)

    def abort(self, c):
        if getattr(c, "_writer", None) is not None:
            c._writer.abort()
            del c._writer

    def dump(self, c):
        return "placement.json", _json(c.placement)

    def check(self, c):
        from .verify import verify_dir
        res = verify_dir(os.path.dirname(c.schedule_files["schedule"]))
        if not res.ok:
            first = res.violations[0] if res.violations else {}
            raise StageError(f"stage 'schedule': the independent verifier found {res.violation_count} "
                             f"violation(s), first: {first}")


def _place_draft(c: Compilation):
    """The speculative draft on its own wafers after the target's (wafercc/draft.py); a draft that
    does not fit or place is a one-line error naming it."""
    from .draft import place_draft
    from .errors import WaferccError
    try:
        return place_draft(c)
    except WaferccError as e:
        line = " ".join(str(e).split("\n")[0].split())
        raise StageError(f"speculative draft '{c.options.perf.speculative.draft}': {line}") from None


@dataclasses.dataclass(frozen=True)
class TimingStage(Stage):
    name: ClassVar[str] = "timing"
    requires: ClassVar[tuple[str, ...]] = ("program", "graph", "plan", "target", "device")
    produces: ClassVar[tuple[str, ...]] = ("performance_section",)

    def run(self, c):
        from .perf.report import performance_section
        c.performance_section = performance_section(c.program, c.graph, c.plan, c.target, c.device,
                                                    c.options.perf, c.draft_placed)

    def dump(self, c):
        return "performance.json", _json(c.performance_section)


@dataclasses.dataclass(frozen=True)
class ReportStage(Stage):
    name: ClassVar[str] = "report"
    requires: ClassVar[tuple[str, ...]] = ("graph", "facts", "plan")
    produces: ClassVar[tuple[str, ...]] = ("report_dict",)

    def run(self, c):
        from .report import build_report
        c.report_dict = build_report(c)

    def dump(self, c):
        return "report.json", _json(c.report_dict)


PIPELINE: tuple[Stage, ...] = (FrontendStage(), PlanStage(), TileStage(), FloorplanStage(), RouteStage(),
                               ScheduleStage(), TimingStage(), ReportStage())
assert tuple(s.name for s in PIPELINE) == STAGES


@dataclasses.dataclass(frozen=True)
class WaferContext:
    """What the parallel per-wafer stages read (sent once to each worker): the stages' ``run_wafer``
    see it in place of the Compilation."""
    stages: tuple[str, ...]
    tiles: Any
    device: Any
    target: Any
    options: CompileOptions
    part_context: Any = None            # the schedule writer's (backend/schedule.py PartContext)


def _wafer_task(ctx: WaferContext, k: int):
    """Wafer k through ``ctx.stages`` (floorplan, route, schedule): its last product, each
    stage's summary (``info``) and seconds; the products in between are freed here."""
    item, infos, seconds = None, {}, {}
    for name in ctx.stages:
        stage = PIPELINE[STAGES.index(name)]
        t0 = time.perf_counter()
        try:
            item = stage.run_wafer(ctx, k, item)
        except PlacementError as e:
            e.stage = name                      # the driver names it (the task may run in another process)
            raise
        infos[name] = stage.info(ctx, k, item)
        seconds[name] = time.perf_counter() - t0
    return (item, infos), seconds


def _json(d) -> str:
    return json.dumps(d, indent=1, sort_keys=True, default=str) + "\n"


@dataclasses.dataclass
class StageManager:
    dump_dir: str | None = None
    dump: tuple[str, ...] = ()          # stage names to dump after ("all": every stage)
    verify: bool = False
    progress: Any = None                # progress(ProgressEvent)
    current: str | None = None          # the stage running (names a PlacementError's stage)
    t0: float = 0.0                     # perf_counter when run() began (events' elapsed_s)

    def run(self, c: Compilation, last: str) -> None:
        todo = [s for s in PIPELINE[: STAGES.index(last) + 1] if s.name not in c.ran]
        self.t0 = time.perf_counter()
        i = 0
        self.current = None
        try:
            while i < len(todo):
                if todo[i].name in c.ran:        # adopted from a confirmed mapping candidate
                    i += 1
                    continue
                group = [todo[i]]
                while group[-1].per_wafer and i + len(group) < len(todo) and todo[i + len(group)].per_wafer:
                    group.append(todo[i + len(group)])
                if group[0].per_wafer:
                    self._wafers(c, group)
                else:
                    self._require(c, group[0], set())
                    self.current = group[0].name
                    self._emit(group[0].name, STARTED)
                    t0 = time.perf_counter()
                    group[0].run(c)
                    self._done(c, group[0], time.perf_counter() - t0)
                i += len(group)
        except PlacementError as e:
            e.compilation = c
            stage = getattr(e, "stage", None) or self.current or "tile"
            c.placement_failure = (stage, " ".join(str(e).split("\n")[0].split()))
            raise

    def _wafers(self, c: Compilation, group: list[WaferStage]) -> None:
        streamed: set[str] = set()
        for s in group:
            self._require(c, s, streamed)
            streamed |= set(s.produces)
        prev = PIPELINE[STAGES.index(group[0].name) - 1]
        source = getattr(c, prev.keeps) if isinstance(prev, WaferStage) else None
        secs = dict.fromkeys((s.name for s in group), 0.0)
        dumps = {s.name: [] for s in group if self._dumps(s)}
        kept = []
        n = len(c.tiles.tiles.wafers)
        try:
            for s in group:
                self._emit(s.name, STARTED, wafers=n)
                t0 = time.perf_counter()
                s.start(c)
                secs[s.name] += time.perf_counter() - t0
            # the leading parallel stages of a fresh run go to the executor, wafer by wafer; each
            # wafer's products are joined here in wafer order (collect), then any serial stage runs
            lead = [] if source is not None else list(itertools.takewhile(lambda s: s.parallel, group))
            ex = executor_for(c.options.execution, n) if lead else Serial()
            if lead:
                c.executor = (ex.name, ex.workers)
            part = getattr(c, "part_context", None)
            if part is not None and ex.name == "ray":       # a task on another machine sends its npz back
                part = dataclasses.replace(part, stage=None)
            ctx = WaferContext(tuple(s.name for s in lead), c.tiles, c.device, c.target, c.options, part)
            with contextlib.closing(ex.ordered(_wafer_task, ctx, range(n))) as results:
                for k, (item, infos), seconds in results:
                    if lead:                            # only the last product came back: its stage joins it
                        lead[-1].collect(c, k, item)
                    for s in lead:
                        self._wafer_done(c, k, s, infos[s.name], item, seconds[s.name], secs, dumps)
                    item = source[k] if source is not None else item
                    for s in group[len(lead):]:
                        self.current = s.name
                        t0 = time.perf_counter()
                        item = s.run_wafer(c, k, item)
                        s.collect(c, k, item)
                        self._wafer_done(c, k, s, s.info(c, k, item), item, time.perf_counter() - t0, secs, dumps)
                    kept.append(item)
            for s in group:
                t0 = time.perf_counter()
                s.finish(c, kept if s is group[-1] else None)
                secs[s.name] += time.perf_counter() - t0
        except BaseException:
            for s in group:
                s.abort(c)
            raise
        if source is not None and prev.keeps:     # resumed: the upstream products were consumed
            setattr(c, prev.keeps, None)
        for s in group:
            self._done(c, s, secs[s.name], streamed=s is not group[-1])
            if dumps.get(s.name) and dumps[s.name][0] is not None:
                self._write(s, f"{s.name}.json", _json(dumps[s.name]))

    def _wafer_done(self, c, k, s, info, item, seconds, secs, dumps) -> None:
        secs[s.name] += seconds
        if s.name in dumps:
            dumps[s.name].append(info)
        routes = info.get("routes") if s.name == "route" and info else None
        self._emit(s.name, WAFER, wafer=k, wafers=len(c.tiles.tiles.wafers), routes=routes, step_s=seconds,
                   product=item)

    @staticmethod
    def _require(c: Compilation, s: Stage, streamed: set[str]) -> None:
        missing = [f for f in s.requires if getattr(c, f, None) is None and f not in streamed]
        if missing:
            raise StageError(f"stage '{s.name}' requires {', '.join(missing)}, which no earlier stage produced "
                             f"(stages run: {', '.join(c.ran) or 'none'})")

    def _done(self, c: Compilation, s: Stage, seconds: float, streamed: bool = False) -> None:
        if not streamed:
            missing = [f for f in s.produces if getattr(c, f, None) is None]
            if missing:
                raise StageError(f"stage '{s.name}' did not produce {', '.join(missing)}")
        adopted = getattr(c, "_adopted", ())      # the stages the kept mapping candidate ran, inside this one
        if adopted:
            other = getattr(c, "_candidates_seconds", 0.0)
            seconds -= sum(secs for _, secs in adopted) + other
            c.seconds["mapping_candidates"] = other
        c.seconds[s.name] = seconds
        c.ran.append(s.name)
        for name, secs in adopted:
            c.seconds[name] = secs
            c.ran.append(name)
        c._adopted = ()
        if self.verify:
            s.check(c)
        d = s.dump(c) if self._dumps(s) and not streamed else None
        if d is not None:
            self._write(s, *d)
        self._emit(s.name, DONE, wafers=len(c.tiles.tiles.wafers) if s.per_wafer else None, step_s=seconds)

    def _emit(self, stage: str, state: str, **kw) -> None:
        if self.progress is not None:
            self.progress(ProgressEvent(stage, state, elapsed_s=time.perf_counter() - self.t0, **kw))

    def _dumps(self, s: Stage) -> bool:
        return bool(self.dump_dir) and ("all" in self.dump or s.name in self.dump)

    def _write(self, s: Stage, name: str, text: str) -> None:
        from .cache import atomic_write_text
        os.makedirs(self.dump_dir, exist_ok=True)
        atomic_write_text(os.path.join(self.dump_dir, f"{STAGES.index(s.name):02d}-{s.name}-{name}"), text)
