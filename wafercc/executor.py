"""Where the per-wafer work runs: in this process, in a local process pool, or on a Ray cluster.

After the tile stage the wafers are independent until the schedule writer joins them, so the
driver hands the floorplan and route of each wafer to an executor (wafercc.driver ``_wafers``):

    ex = executor_for(ExecOptions(jobs=2))          # Serial, ProcessPool or RayPool
    for k, item, seconds in ex.ordered(task, context, range(n)):
        ...                                          # wafer 0, 1, ... in order, as each is ready

Every executor yields the same results in the same order (a task is a pure function of the shared
context and its wafer index: fixed seeds, CP-SAT on deterministic time), so the serial, pooled
and Ray runs write byte-identical outputs.  At most ``window`` wafers are in flight or waiting, so
memory stays that of a few wafers however many the model has.  A task's exception is raised here
with its type and attributes (WaferccError pickles them); Ctrl-C or any other exception stops the
workers at once.

Why processes and Ray (docs/design-choices.md): routing is pure Python and NumPy, so threads would
serialise on the GIL; ``spawn`` workers import only the passes (~0.3 s) and receive the context
once.  Ray is the maintained engine for the same tasks on a cluster (``ray.put`` the context once,
one remote task per wafer); it is an optional extra, ``pip install 'wafercc[ray]'``.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import pickle
from typing import Any, Callable, Iterable, Iterator

from .errors import WaferccError


class ExecutorError(WaferccError):
    """The executor asked for cannot run: Ray is not installed or its cluster cannot be reached."""


@dataclasses.dataclass(frozen=True)
class ExecOptions:
    """How the per-wafer stages run, never what they produce (not part of the build cache's key)."""
    jobs: int | None = None        # worker processes; None: the cores available to this process
    ray: str | None = None         # a Ray cluster's address, "auto" (the running one) or "local" (a new one)


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                              # not on Linux
        return max(1, os.cpu_count() or 1)


Task = Callable[[Any, int], tuple[Any, dict]]          # (context, wafer) -> (product, stage seconds)


class Serial:
    name = "serial"
    workers = 1

    def ordered(self, task: Task, context: Any, keys: Iterable[int]) -> Iterator[tuple[int, Any, dict]]:
        for k in keys:
            yield (k, *task(context, k))


class ProcessPool:
    """``jobs`` spawned worker processes; the context is pickled once and unpickled in each worker."""
    name = "processes"

    def __init__(self, jobs: int):
        self.workers = jobs

    def ordered(self, task, context, keys):
        import multiprocessing
        blob = pickle.dumps(context, protocol=pickle.HIGHEST_PROTOCOL)
        pool = multiprocessing.get_context("spawn").Pool(self.workers, _init_worker, (blob,))
        try:
            pending: collections.deque = collections.deque()
            todo = iter(keys)
            for k in _take(todo, self.workers + 1):
                pending.append((k, pool.apply_async(_run_task, (task, k))))
            while pending:
                k, res = pending.popleft()
                product, seconds = res.get()
                for nxt in _take(todo, 1):
                    pending.append((nxt, pool.apply_async(_run_task, (task, nxt))))
                yield k, product, seconds
            pool.close()
        finally:
            pool.terminate()                            # Ctrl-C or an error: stop every worker now
            pool.join()


class RayPool:
    """One Ray task per wafer on the cluster at ``address``; the context goes once into its object store."""
    name = "ray"

    def __init__(self, address: str):
        try:
            import ray
        except ImportError:
            raise ExecutorError("--ray needs Ray: pip install 'wafercc[ray]'") from None
        self.ray = ray
        self.address = address
        if not ray.is_initialized():
            try:
                ray.init(address=None if address == "local" else address, include_dashboard=False,
                         log_to_driver=False, configure_logging=False)
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise ExecutorError(f"ray {address}: cannot connect: {' '.join(str(e).split())[:200]}") from None
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))

    def ordered(self, task, context, keys):
        ray = self.ray
        remote = ray.remote(num_cpus=1, max_retries=0)(_run_task_with)
        ref = ray.put(context)
        pending: collections.deque = collections.deque()
        todo = iter(keys)
        try:
            for k in _take(todo, self.workers + 1):
                pending.append((k, remote.remote(task, ref, k)))
            while pending:
                k, obj = pending.popleft()
                try:
                    product, seconds = ray.get(obj)
                except ray.exceptions.RayTaskError as e:
                    raise e.as_instanceof_cause() from None
                for nxt in _take(todo, 1):
                    pending.append((nxt, remote.remote(task, ref, nxt)))
                yield k, product, seconds
        finally:
            for _, obj in pending:
                ray.cancel(obj, force=True)


def executor_for(opts: ExecOptions, wafers: int):
    """The executor for ``wafers`` independent tasks: Ray when asked, else a pool of
    min(jobs, wafers) processes when that is more than one, else this process (also inside a
    daemonic process, which cannot start workers; compile.json's ``executor`` says which ran)."""
    if opts.ray:
        return RayPool(opts.ray)
    import multiprocessing
    if multiprocessing.current_process().daemon:     # a daemonic worker (a Pool's) may not have children
        return Serial()
    jobs = min(opts.jobs or available_cores(), wafers)
    return ProcessPool(jobs) if jobs > 1 else Serial()


def _take(it: Iterator, n: int) -> list:
    out = []
    for _ in range(n):
        try:
            out.append(next(it))
        except StopIteration:
            break
    return out


_CONTEXT = None


def _init_worker(blob: bytes) -> None:
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # Ctrl-C is the driver's to handle (it stops us)
    global _CONTEXT
    _CONTEXT = pickle.loads(blob)


def _run_task(task: Task, k: int):
    return task(_CONTEXT, k)


def _run_task_with(task: Task, context, k: int):
    return task(context, k)
