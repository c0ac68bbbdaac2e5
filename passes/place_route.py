"""Tile -> floorplan/assign -> route for every wafer of a plan; the result the schedule writer emits.

The tiler and the floorplan are co-designed: the floorplan's lane width is fixed first (from the
mesh width), the tiler counts every grid by the cores it occupies in that lane layout and fills
the live cores of whole lanes, and the floorplan then lays each wide grid out so its chains are
mesh links (docs/placement.md).  ``baseline=True`` is the plain row-major layout the issue
compares against: one lane as wide as the mesh, grids packed row-major.

With ``on_wafer`` each placed wafer is handed to the callback and not kept, so a program of dozens
of wafers needs the memory of one."""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from ..target.geometry import DEFAULT_LAYOUT, DEFAULT_MAPPING, DEFAULT_REDUCTION
from .floorplan import WaferFloorplan, floorplan_wafer, is_wide, reachable
from .cost_kernel import ALLREDUCE_RIDERS
from .floorplan_cpsat import RefineOptions
from .tile import TileOptions, TilePlan, tile_plan
from .transfers import TransferSet, wafer_transfers


@dataclasses.dataclass(frozen=True)
class PlaceOptions:
    lane: int | None = None                     # lane width; None: the device model's (geometry.lane_for)
    layout: str = DEFAULT_LAYOUT                # LAYOUTS: lanes, spares (OR-Tools assign), row-major
    reduction: str = DEFAULT_REDUCTION          # REDUCTIONS: tree (binomial) or chain (launch-style)
    mapping: str = DEFAULT_MAPPING              # regions | groups:G | wafer (auto is resolved before tiling)
    tile: TileOptions = TileOptions()           # its ``lane`` is set from the floorplan's
    refine: bool = True                         # lanes: CP-SAT pads the curve to keep chunks off lane turns
    seed: int = 0

    @property
    def baseline(self) -> bool:
        return self.layout == "row-major"



@dataclasses.dataclass(frozen=True, eq=False)
class PlacedWafer:
    index: int
    ops: tuple                  # OpTiles of this wafer, in dataflow order (wafer-local op ids)
    floorplan: WaferFloorplan
    tile_op: np.ndarray         # int32 [T]
    tile_grid: np.ndarray       # int16 [T]
    tile_expert: np.ndarray     # int32 [T]
    tile_row: np.ndarray        # int32 [T]
    tile_col: np.ndarray        # int32 [T]
    tile_bytes: np.ndarray      # int64 [T]
    transfers: TransferSet
    route_src: np.ndarray       # int32 [R, 2]: (row, col) of each route's source core
    route_dst: np.ndarray       # int32 [R, 2]
    routes: object              # the router's result (paths, colors, loads)


@dataclasses.dataclass(frozen=True, eq=False)
class PlacedProgram:
    plan: object
    tiles: TilePlan
    wafers: tuple[PlacedWafer, ...]
    options: PlaceOptions
    seconds: dict


def _tile_arrays(ops, tp: TilePlan, wafer: int):
    cols = {k: [] for k in ("op", "grid", "expert", "row", "col")}
    for local, o in enumerate(ops):
        for gi, g in enumerate(o.grids):
            e, r, c = np.meshgrid(np.arange(g.experts), np.arange(g.rows), np.arange(g.cols), indexing="ij")
            n = g.cores
            cols["op"].append(np.full(n, local, np.int32))
            cols["grid"].append(np.full(n, gi, np.int16))
            cols["expert"].append(e.ravel().astype(np.int32))
            cols["row"].append(r.ravel().astype(np.int32))
            cols["col"].append(c.ravel().astype(np.int32))
    out = {k: (np.concatenate(v) if v else np.zeros(0, np.int32)) for k, v in cols.items()}
    ca = tp.core_arrays(wafer)
    if len(ca["data"]) != len(out["op"]):
        raise AssertionError(f"wafer {wafer}: {len(ca['data'])} tile bytes for {len(out['op'])} tiles")
    out["bytes"] = (ca["data"] + ca["extra"] + ca["buffer"]).astype(np.int64)
    return out


def _edge_core(alive: np.ndarray, row: int, col: int) -> tuple[int, int]:
    """The usable (reachable) core of column ``col`` (a wafer edge) nearest to ``row``."""
    live = np.flatnonzero(alive[:, col])
    if len(live) == 0:
        raise ValueError(f"edge column {col} has no live core")
    return int(live[np.argmin(np.abs(live - row))]), col


@dataclasses.dataclass(frozen=True, eq=False)
class TileProgram:
    """The tile stage's product: the tile plan and the lane geometry every wafer shares."""
    tiles: TilePlan
    lane: int
    spare: int
    width: int                  # lane - spare: the columns a tile row may use
    seconds: float


@dataclasses.dataclass(frozen=True, eq=False)
class WaferLayout:
    """The floorplan stage's product for one wafer: its tiles on cores and the transfers to route."""
    index: int
    ops: tuple
    arrays: dict
    floorplan: WaferFloorplan
    transfers: TransferSet
    src: np.ndarray
    dst: np.ndarray


def tile_program(graph, plan, target, device, options: PlaceOptions = PlaceOptions()) -> TileProgram:
    t0 = time.perf_counter()
    n_wafers = len(plan.wafers)
    # the device model's figures, the same the planner counted (PlanOptions.layout / lane)
    lane = device.lane_width(options.layout, options.lane)
    spare = device.spare(options.layout, lane, n_wafers)   # one for every wafer: the tiler has one slot width
    width = lane - spare
    slots = [device.wafer(k).lane_slots(lane, spare, options.layout) for k in range(n_wafers)]
    topt = dataclasses.replace(options.tile, lane=0 if options.baseline else width, reduction=options.reduction,
                               mapping=options.mapping)
    tp = tile_plan(graph, plan, target, topt, slots)
    return TileProgram(tp, lane, spare, width, time.perf_counter() - t0)


def layout_wafer(tprog: TileProgram, k: int, device, options: PlaceOptions = PlaceOptions()) -> WaferLayout:
    """Floorplan wafer k of a tile program and derive its transfers and their end cores."""
    tp, lane, width = tprog.tiles, tprog.lane, tprog.width
    wt = tp.wafers[k]
    w = device.wafer(k)
    ops = tuple(tp.ops[i] for i in wt.ops)
    arrays = _tile_arrays(ops, tp, k)
    tmpl = shared_templates(ops)
    # a shared op takes no cores of its own: the floorplan lays out the others, then its tiles copy
    # the cores of its template's tiles of the same index
    op_grids = [[] if tmpl[i] != i else [(g.experts, g.rows, g.cols, g.operand == "kv") for g in o.grids]
                for i, o in enumerate(ops)]
    fp = floorplan_wafer(k, w.alive, op_grids, lane, options.layout, tprog.spare,
                         RefineOptions(seed=options.seed) if options.refine else None)
    if any(t != i for i, t in enumerate(tmpl)):
        fp = _share_cores(fp, ops, tmpl)
    tr = wafer_transfers([[(g.experts, g.rows, g.cols, g.operand == "kv", g.segment, g.head_segment) for g in o.grids] for o in ops],
                         first_wafer=k == 0, last_wafer=k == len(tp.wafers) - 1,
                         chunk_of=lambda c: width if is_wide(c, width, options.baseline) else 0,
                         reduction=options.reduction, allreduce=allreduce_hosts(ops),
                         templates=tmpl)
    src, dst = _endpoints(tr, fp, reachable(w.alive))
    return WaferLayout(k, ops, arrays, fp, tr, src, dst)


def allreduce_hosts(ops) -> frozenset[int]:
    """Indices (in ``ops``) of the ops with tiles that host a norm or softmax rider."""
    ids = {o.node: i for i, o in enumerate(ops)}
    return frozenset(ids[o.host] for o in ops if o.op in ALLREDUCE_RIDERS and o.host in ids
                     and ops[ids[o.host]].grids)


def shared_templates(ops) -> list[int]:
    """Per op (wafer-local id), the id of the op whose cores and routes it uses: itself, or for an op
    of a layer group (OpTiles.shares) its template's id."""
    ids = {o.node: i for i, o in enumerate(ops)}
    return [ids[o.shares] if getattr(o, "shares", None) else i for i, o in enumerate(ops)]


def _share_cores(fp: WaferFloorplan, ops, tmpl: list[int]) -> WaferFloorplan:
    """The floorplan over every op's tiles: a shared op's tile j sits on its template's tile j's core."""
    counts = np.array([sum(g.cores for g in o.grids) for o in ops], np.int64)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    rows, cols = [], []
    for i, t in enumerate(tmpl):
        a, n = int(fp.op_first[t]), int(fp.op_count[t])
        if n != counts[i]:
            raise AssertionError(f"op {i}: {counts[i]} tiles, its template op {t} {n}")
        rows.append(fp.core_row[a:a + n])
        cols.append(fp.core_col[a:a + n])
    cat = (lambda xs: np.concatenate(xs).astype(np.int32) if xs else np.zeros(0, np.int32))
    return dataclasses.replace(fp, core_row=cat(rows), core_col=cat(cols), op_first=first, op_count=counts)


def route_wafer(lw: WaferLayout, target, device, options: PlaceOptions = PlaceOptions(), router=None) -> PlacedWafer:
    """Route every transfer of a laid-out wafer on its live mesh."""
    from .route import RouteOptions, Transfers, route as default_route
    router = router or default_route
    w = device.wafer(lw.index)
    src, dst, tr, a = lw.src, lw.dst, lw.transfers, lw.arrays
    res = router(w.alive, w.dead_links, Transfers(src[:, 0], src[:, 1], dst[:, 0], dst[:, 1], tr.kind,
                                                  np.arange(len(tr), dtype=np.int64)),
                 len(device.free_colors), device.link_capacity, RouteOptions(seed=options.seed))
    return PlacedWafer(lw.index, lw.ops, lw.floorplan, a["op"], a["grid"], a["expert"], a["row"], a["col"],
                       a["bytes"], tr, src, dst, res)


def place_and_route(graph, plan, target, device, options: PlaceOptions = PlaceOptions(), router=None,
                    on_wafer=None) -> PlacedProgram:
    """Every stage from tile to route in one call (wafercc.driver runs them as named stages)."""
    tprog = tile_program(graph, plan, target, device, options)
    secs = {"tile": tprog.seconds, "floorplan": 0.0, "route": 0.0}
    wafers = []
    for k in range(len(tprog.tiles.wafers)):
        t1 = time.perf_counter()
        lw = layout_wafer(tprog, k, device, options)
        t2 = time.perf_counter()
        pw = route_wafer(lw, target, device, options, router)
        secs["floorplan"] += t2 - t1
        secs["route"] += time.perf_counter() - t2
        if on_wafer is None:
            wafers.append(pw)
        else:
            on_wafer(pw)
    return PlacedProgram(plan, tprog.tiles, tuple(wafers), options, secs)


def _endpoints(tr: TransferSet, fp: WaferFloorplan, alive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) of each transfer's ends: the cores of its tiles, or edge cores for -1."""
    rows, cols = fp.core_row, fp.core_col
    src = np.stack([rows[np.maximum(tr.src, 0)], cols[np.maximum(tr.src, 0)]], axis=1).astype(np.int32)
    dst = np.stack([rows[np.maximum(tr.dst, 0)], cols[np.maximum(tr.dst, 0)]], axis=1).astype(np.int32)
    for i in np.flatnonzero(tr.src < 0):   # from the west edge
        src[i] = _edge_core(alive, int(dst[i, 0]), 0)
    for i in np.flatnonzero(tr.dst < 0):   # to the east edge
        dst[i] = _edge_core(alive, int(src[i, 0]), alive.shape[1] - 1)
    return src, dst
