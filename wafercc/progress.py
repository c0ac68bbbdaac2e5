"""Progress of a compile: the events the driver emits, and the two ways the CLI shows them.

    def show(ev: ProgressEvent):                    # the Python API: wafercc.compile(..., progress=show)
        print(ev.stage, ev.state, ev.wafer, ev.wafers, round(ev.elapsed_s, 1))

The driver (wafercc.driver) calls ``progress(event)`` when a stage starts, after each wafer of a
per-wafer stage (floorplan, route, schedule) and when a stage is done; an exception the callback
raises stops the compile.  On a terminal the CLI draws a rich progress display on stderr (stage,
wafer k of n, routes routed, elapsed); otherwise it writes plain lines for the steps that took about
a second or more, so a log of a long compile is never silent and a short one stays clean.
``--quiet`` shows neither.
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable

STARTED, WAFER, DONE = "start", "wafer", "done"
SLOW_S = 1.0                # plain lines report a step that took at least this long


@dataclasses.dataclass(frozen=True)
class ProgressEvent:
    stage: str                       # a driver stage name (wafercc.options.STAGES)
    state: str                       # "start", "wafer" (one wafer of a per-wafer stage done) or "done"
    wafer: int | None = None         # the wafer just done ("wafer" events)
    wafers: int | None = None        # wafers of a per-wafer stage (None for a whole-program stage)
    routes: int | None = None        # routes of that wafer (route stage)
    elapsed_s: float = 0.0           # since the compile started
    step_s: float = 0.0              # this wafer's (or, when done, this stage's) seconds
    product: Any = dataclasses.field(default=None, repr=False)   # the wafer's last product (the route's PlacedWafer, the schedule's WaferPart)


ProgressCallback = Callable[[ProgressEvent], None]


class PlainProgress:
    """One line per slow step on ``stream``: ``wafercc: route wafer 3/23 done in 8.1 s (12,345 routes; 95 s elapsed)``."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr

    def __call__(self, ev: ProgressEvent) -> None:
        if ev.state == STARTED or ev.step_s < SLOW_S:
            return
        if ev.state == WAFER:
            routes = f"{ev.routes:,} routes; " if ev.routes is not None else ""
            what = f"{ev.stage} wafer {ev.wafer + 1}/{ev.wafers} done in {ev.step_s:.1f} s ({routes}"
        else:
            what = f"{ev.stage} done in {ev.step_s:.1f} s ("
        self.stream.write(f"wafercc: {what}{ev.elapsed_s:.0f} s elapsed)\n")
        self.stream.flush()


class RichProgress:
    """A live display on a terminal's stderr: the stage running, a bar over the wafers of a
    per-wafer stage, routes so far and the elapsed time (refreshed by rich's own thread, so it
    moves during a long wafer).  Transient: the summary printed after it stands alone."""

    def __init__(self, console=None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description:<10}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[note]}"), TimeElapsedColumn(),
                                 console=console or Console(stderr=True), transient=True)
        self.tasks: dict[str, int] = {}
        self.routes = 0

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()
        return False

    def __call__(self, ev: ProgressEvent) -> None:
        p = self.progress
        if ev.state == STARTED:
            self.tasks[ev.stage] = p.add_task(ev.stage, total=ev.wafers, note="wafers" if ev.wafers else "")
            return
        task = self.tasks.get(ev.stage)
        if task is None:
            return
        if ev.state == WAFER:
            if ev.routes is not None:
                self.routes += ev.routes
                p.update(task, note=f"wafers, {self.routes:,} routes")
            p.advance(task)
        else:
            p.update(task, completed=ev.wafers or 1, total=ev.wafers or 1)
            p.stop_task(task)
