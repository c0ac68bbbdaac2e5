"""Event-driven replay of a schedule directory with link contention: a check on the analytic model.

Every tile is a core and every route (wafer{k}.npz) a message.  A message of ``w`` wavelets
(ceil(bytes / link bytes per cycle), at least 1) moves cut-through: its head takes ``hop`` cycles
per link, and each directed link it crosses is busy for ``w`` cycles.  A link carries one message at
a time per direction; a head that finds its link busy waits (FIFO by head arrival, ties by route
index), buffered at the router (virtual cut-through: a stalled head does not hold upstream links).

Per op, in the wafer's dataflow order (``records``); each grid's compute and message sizes come from
the cost kernel (passes/cost_kernel.py) that the analytic model and the tiler also use:

* the op's input arrives on its activation route (kind 2) from the previous op with tiles, sent
  when the op before it (host or rider) ends; the message is the producer's output slice of its
  last tile: ``tile_n x act_bytes`` (KV: ``group x head_dim x act_bytes``).  The analytic model
  charges this route's hops only, no bytes.  The other row roots of the op are assumed to hold
  their input slice at the same time (the schedule routes the activation to the first tile only;
  the analytic model assumes the same);
* after ``op_sync`` its grids run one after another; in a grid every broadcast root starts at
  once, a tile forwards its broadcast down the tree as soon as the head arrives (cut-through, so
  the tree pays one serialisation, as the analytic ``hops x hop + tile_k x a / link``), computes
  once the tail is in, and sends its partial sums once its compute is done and the heads of all
  partials into it arrived, adding ``reduce_step`` per received partial in arrival order (t =
  max(t, arrival) + reduce_step: a binomial tree's root adds its smaller subtrees while the larger
  still reduce, the steps wafercc/perf/paths.py counts; streamed adds: again one serialisation per
  chain, as the analytic reduction term).  ``cut_through=False`` makes both wait
  for tails (store-and-forward).  A grid ends when all its reduction roots hold their sums;
* a GEMV reading an RMS norm whose scale is deferred (``scale_deferred``) starts when the norm
  starts and ends no earlier than the norm's end plus its activation hops (model.deferred_deps);
* riders run at their place in the list (like the analytic model, also when the host comes later)
  on the host's cores; norms and softmax add an all-reduce over the host's last grid, 1-wavelet
  messages: up its all-reduce routes (kind 4, the binomial tree over the output row's columns),
  adding ``reduce_step`` per partial, then the result back down the broadcast routes into those
  tiles, cut-through; a host without kind-4 routes (``--reduction chain``) reduces up its broadcast
  trees reversed instead and sends the result back down all of them.

Boundaries: the last op's east-edge route (kind 3) starts when the wafer ends; at the edge (head
arrival) the off-wafer link adds the inter-wafer latency plus the bytes over the off-wafer
bandwidth; then the next wafer's west-edge route carries the bytes to its first op.  Wafer-local op
times count from the token's arrival at that first op (the analytic timeline's origin).
"""
from __future__ import annotations

import collections
import dataclasses
import bisect
import heapq
import json
import math
import os

import numpy as np

from ..backend.route_codec import route_paths
from .evaluate import Boundary, Program, tpot_seconds
from ..passes import cost_kernel as ck
from .model import (ALLREDUCE_RIDERS, CostParams, Machine, Workload, deferred_deps, host_cores, kernel_phases,
                    rates)

ARRAYS = ("tile_op", "tile_grid", "tile_col", "route_src_tile", "route_dst_tile", "route_kind",
          "route_op_src", "route_op_dst")
# the paths: CSR link ids (schema 2), or hops and directions from the source core (schema 3)
PATH_ARRAYS = (("route_offsets", "route_links"), ("route_hops", "route_dirs", "route_src_row", "route_src_col"))


@dataclasses.dataclass
class EventSimResult:
    wafers: list[dict]            # {index, arrive, op_start, op_end, cycles}: cycles from arrival
    total_cycles: float           # the token's end-to-end decode cycles
    seconds: float
    link_stats: dict              # queueing: max delay, totals, the most contended link
    boundary_cycles: list[float] = dataclasses.field(default_factory=list)


def load_schedule(outdir: str) -> dict:
    with open(os.path.join(outdir, "schedule.json"), encoding="utf-8") as f:
        return json.load(f)


def _target(doc: dict, outdir: str):
    from ..target import load_target
    name = doc["target"]
    if not os.path.isabs(name) and os.path.exists(os.path.join(outdir, name)) and not os.path.exists(name):
        name = os.path.join(outdir, name)     # a relative target path, as the verifier resolves it
    return load_target(name)


def _report_options(outdir: str) -> dict:
    try:
        with open(os.path.join(outdir, "report.json"), encoding="utf-8") as f:
            return json.load(f).get("options") or {}
    except (OSError, ValueError):
        return {}


def role_view(doc: dict, role: str = "target") -> dict:
    """schedule.json seen as one model: "target" (every wafer but a speculative draft's, the
    file's ``timeline``) or "draft" (the draft's wafers, ``draft.timeline``); wafers keep their
    ``index`` (the npz file and the inter-wafer entries name it)."""
    if role not in ("target", "draft"):
        raise ValueError(f"role {role!r}: expected 'target' or 'draft'")
    mine = [w for w in doc["wafers"] if (w.get("role") == "draft") == (role == "draft")]
    if role == "target":
        return dict(doc, wafers=mine)
    if not doc.get("draft") or not mine:
        raise ValueError("the schedule holds no speculative draft")
    return dict(doc, wafers=mine, timeline=doc["draft"]["timeline"], model=doc["draft"]["model"])


def schedule_act_bytes(outdir: str, doc: dict | None = None) -> float:
    """Activation element bytes as ScheduleWriter.program() takes them (act dtype, else the plan's
    weight dtype).  schedule.json does not store it: read ``timeline.act_bytes`` if a writer adds it,
    else report.json's options, else the most common weight ``unit_bits`` of the records."""
    from ..ir import DType
    doc = doc or load_schedule(outdir)
    if doc.get("timeline", {}).get("act_bytes"):
        return float(doc["timeline"]["act_bytes"])
    opts = _report_options(outdir)
    name = opts.get("act_dtype") or opts.get("dtype")
    if name:
        return DType.parse(name).bits / 8
    bits = collections.Counter(g["unit_bits"] for w in doc["wafers"] for o in w["ops"] for g in o["grids"]
                               if g["operand"] != "kv")
    if not bits:
        raise ValueError(f"{outdir}: cannot tell the activation bytes; pass act_bytes")
    return max(bits.items(), key=lambda kv: (kv[1], kv[0]))[0] / 8


def schedule_kv_len(doc: dict) -> int:
    """evaluate.decode_position: the prompt capped by the context, here the positions the KV grids
    hold (``n``: min(context, sliding window), which gives the same per-core positions)."""
    prompt = int(doc["timeline"]["prompt_tokens"])
    ctx = doc["timeline"].get("context") or max(
        (g["n"] for w in doc["wafers"] for o in w["ops"] for g in o["grids"] if g["operand"] == "kv"), default=prompt)
    return max(1, min(int(ctx), prompt))


def wavelets(nbytes: float, link_bytes: float) -> int:
    return max(1, math.ceil(nbytes / link_bytes - 1e-9))


class _Net:
    """The directed links of one wafer and the messages crossing them."""

    def __init__(self, links: np.ndarray, offsets: np.ndarray, cols: int, hop: float, contention: bool):
        self.links, self.off = links.tolist(), offsets.tolist()
        self.cols, self.hop, self.contention = cols, hop, contention
        self.extra: dict[int, list[int]] = {}          # reversed routes (all-reduce), ids past the routes
        self.free: dict[int, list[tuple[float, float]]] = {}
        self.stats: dict[int, list[float]] = {}        # link -> [messages, busy, total wait, max wait]

    def path(self, pid: int) -> list[int]:
        if pid < len(self.off) - 1:
            return self.links[self.off[pid]:self.off[pid + 1]]
        return self.extra[pid]

    def reversed_route(self, r: int) -> int:
        """A new path id: route ``r`` walked backwards (dead links are dead both ways)."""
        out = []
        for link in reversed(self.path(r)):
            cell, d = divmod(link, 4)
            cell += (1, self.cols, -1, -self.cols)[d]        # the core the link enters (E, S, W, N)
            out.append(cell * 4 + (d + 2) % 4)           # ... and its link back
        pid = len(self.off) - 1 + len(self.extra)
        self.extra[pid] = out
        return pid

    def run(self, starts, on_arrive) -> None:
        """``starts``: (time, path id, wavelets) of messages; ``on_arrive(pid, head, tail)`` returns
        the messages the arrival releases.  Events are (time, path, link position): deterministic."""
        heap = [(t, p, 0, w) for t, p, w in starts]
        heapq.heapify(heap)
        while heap:
            t, pid, pos, w = heapq.heappop(heap)
            links = self.path(pid)
            if pos == len(links):
                for nt, npid, nw in on_arrive(pid, t, t + w if links else t):
                    heapq.heappush(heap, (nt, npid, 0, nw))
                continue
            link = links[pos]
            s = self._reserve(link, t, w) if self.contention else t
            st = self.stats.setdefault(link, [0, 0.0, 0.0, 0.0])
            st[0] += 1
            st[1] += w
            st[2] += s - t
            st[3] = max(st[3], s - t)
            heapq.heappush(heap, (s + self.hop, pid, pos + 1, w))

    def _reserve(self, link: int, t: float, w: float) -> float:
        """The first start >= t at which ``link`` is free for ``w`` cycles; ops are replayed one after
        another in program order, so a later op's message may fit in a gap before an earlier op's."""
        busy = self.free.setdefault(link, [])           # sorted, disjoint (start, end) intervals
        i = bisect.bisect_left(busy, (t, -math.inf))
        if i > 0 and busy[i - 1][1] > t:
            i -= 1
        s = t
        while i < len(busy) and busy[i][0] < s + w:
            s = max(s, busy[i][1])
            i += 1
        busy.insert(i, (s, s + w))
        return s

    def send(self, t: float, pid: int, w: int) -> tuple[float, float]:
        """(head, tail) arrival of one lone message."""
        got = []
        self.run([(t, pid, w)], lambda p, h, tl: got.append((h, tl)) or [])
        return got[0]

    def phase(self, t0: float, tiles, comp: dict, b: list[tuple[int, int, int]], r: list[tuple[int, int, int]],
              wb: int, wr: int, rs: float, cut: bool) -> float:
        """One grid: broadcast trees ``b`` and reduction forest ``r`` as (pid, src tile, dst tile);
        returns when the last reduction root holds its sums."""
        b_out = collections.defaultdict(list)
        for pid, s, _ in b:
            b_out[s].append(pid)
        dst_of = {pid: (True, d) for pid, _, d in b}
        dst_of.update({pid: (False, d) for pid, _, d in r})
        fed = {d for _, _, d in b}
        r_out = {s: pid for pid, s, _ in r}
        need = collections.Counter(d for _, _, d in r)
        got, heads, tails, done = collections.Counter(), collections.defaultdict(list), collections.defaultdict(list), {}
        end = [t0]

        def added(x, arrivals):
            # one receive-add per partial, in arrival order: t = max(t, arrival) + reduce_step
            t = done[x]
            for a in sorted(arrivals):
                t = max(t, a) + rs
            return t

        def reduce(x):
            if x not in done or got[x] < need[x]:
                return []
            if x in r_out:
                return [(added(x, (heads if cut else tails)[x]), r_out[x], wr)]
            end[0] = max(end[0], added(x, tails[x]))   # the root's sum: all tails in
            return []

        def fed_at(x, head, tail):
            done[x] = tail + comp.get(x, 0.0)
            return [(head if cut else tail, pid, wb) for pid in b_out[x]] + reduce(x)

        def arrive(pid, head, tail):
            is_b, x = dst_of[pid]
            if is_b:
                return fed_at(x, head, tail)
            got[x] += 1
            heads[x].append(head)
            tails[x].append(tail)
            return reduce(x)

        starts = []
        for x in tiles:
            if x not in fed:
                starts += fed_at(x, t0, t0)
        self.run(starts, arrive)
        return end[0]


class _Wafer:
    """One wafer's arrays, grouped per (op, grid)."""

    def __init__(self, arr: dict, ops: list[dict], cols: int, hop: float, contention: bool):
        self.ops, self.arr = ops, arr
        offsets, links = route_paths(arr, cols)
        self.net = _Net(links, offsets, cols, hop, contention)
        top, tgr = np.asarray(arr["tile_op"], np.int64), np.asarray(arr["tile_grid"], np.int64)
        key = top * 65536 + tgr
        order = np.argsort(key, kind="stable")
        uk, first = np.unique(key[order], return_index=True)
        self.tiles = {int(k): order[a:b].tolist() for k, a, b in zip(uk, first, [*first[1:], len(order)])}
        src, dst = np.asarray(arr["route_src_tile"], np.int64), np.asarray(arr["route_dst_tile"], np.int64)
        kind = np.asarray(arr["route_kind"], np.int64)
        self.routes = collections.defaultdict(lambda: ([], []))   # (op, grid) key -> (broadcast, reduction)
        self.allreduce = collections.defaultdict(list)            # (op, grid) key -> its all-reduce tree
        for i in np.flatnonzero(((kind <= 1) | (kind == 4)) & (src >= 0) & (dst >= 0)).tolist():
            e = (i, int(src[i]), int(dst[i]))
            if kind[i] == 4:
                self.allreduce[int(key[src[i]])].append(e)
            else:
                self.routes[int(key[src[i]])][int(kind[i])].append(e)
        self.act_in = {}                                           # op -> its activation route
        self.edge_in = self.edge_out = None
        # layer groups (docs/mapping.md): a shared op runs on its template's tiles and routes
        self.tmpl = [o.get("routes_of") if o.get("routes_of") is not None else i for i, o in enumerate(ops)]
        pairs = {}
        for i in np.flatnonzero(kind >= 2).tolist():
            if kind[i] == 2:
                self.act_in.setdefault(int(arr["route_op_dst"][i]), i)
                pairs.setdefault((self.tmpl[int(arr["route_op_src"][i])], self.tmpl[int(arr["route_op_dst"][i])]), i)
            elif src[i] < 0:
                self.edge_in = i
            else:
                self.edge_out = i
        prev = None
        for i, o in enumerate(ops):            # a group's later layers: the route of their templates' pair
            if o["grids"]:
                if prev is not None and i not in self.act_in and (self.tmpl[prev], self.tmpl[i]) in pairs:
                    self.act_in[i] = pairs[(self.tmpl[prev], self.tmpl[i])]
                prev = i
        self.cols = np.asarray(arr["tile_col"], np.int64)

    def grid(self, op: int, g: int):
        k = self.tmpl[op] * 65536 + g
        b, r = self.routes[k]
        return self.tiles.get(k, []), b, r


def _out_slice(op: dict, a: float) -> float:
    if not op["grids"]:
        return a
    if op["role"] == "kv":
        return op["attention"]["group"] * op["attention"]["head_dim"] * a
    return op["grids"][-1]["tile_n"] * a


def _grid_time(wf: _Wafer, t0: float, i: int, g: dict, op: dict, mc: Machine, p: CostParams,
               a: float, kv_len: int, cut: bool) -> float:
    tiles, b, r = wf.grid(i, g["grid"])
    rt = rates(mc, p)
    ph = kernel_phases(g, op, rt, Workload(a, kv_len))      # the cost kernel, at the busiest core
    if g["operand"] == "kv":       # each core's own positions (position p on column p mod cols)
        at = op["attention"]
        pos = ck.striped_positions(g["tile_n"], g["cols"], kv_len, wf.cols[tiles]) if tiles else np.zeros(0)
        comp = dict(zip(tiles, ck.kv(pos, at["group"], at["head_dim"], a, rt, at.get("score_flops", ck.SOFTMAX_FLOPS)).compute.tolist()))
    else:
        comp = dict.fromkeys(tiles, ph.compute) if ph.compute else {}
    wb, wr = wavelets(ph.bcast_bytes, mc.link_bytes), wavelets(ph.reduce_bytes, mc.link_bytes)
    return wf.net.phase(t0, tiles, comp, b, r, wb, wr, p.reduce_step, cut)


def _rider_time(wf: _Wafer, t0: float, op: dict, mc: Machine, p: CostParams, cut: bool) -> float:
    if op["host"] is None:
        return t0
    host = wf.ops[op["host"]]
    t = t0 + ck.rider_compute(1, op["flops"], host_cores(host), rates(mc, p))
    if op["op"] in ALLREDUCE_RIDERS and host["grids"]:
        gi = host["grids"][-1]["grid"]
        tiles, b, _ = wf.grid(op["host"], gi)
        tree = wf.allreduce.get(wf.tmpl[op["host"]] * 65536 + gi)    # a shared host: its template's tree
        if tree:                   # the routed tree up; down the broadcast routes into its tiles
            on = {x for _, s, d in tree for x in (s, d)}
            tiles, up, b = sorted(on), tree, [e for e in b if e[2] in on]
        else:                      # the chain: up the broadcast trees reversed
            up = [(wf.net.reversed_route(pid), d, s) for pid, s, d in b]
        t = wf.net.phase(t, tiles, {}, [], up, 1, 1, p.reduce_step, cut)
        t = wf.net.phase(t, tiles, {}, b, [], 1, 1, p.reduce_step, cut)
    return t


def _load_wafer(outdir: str, k: int) -> dict:
    with np.load(os.path.join(outdir, f"wafer{k}.npz")) as z:
        paths = next((p for p in PATH_ARRAYS if all(n in z.files for n in p)), PATH_ARRAYS[-1])
        missing = [n for n in (*ARRAYS, *paths) if n not in z.files]
        if missing:
            raise ValueError(f"{outdir}/wafer{k}.npz: no '{missing[0]}' (schema wafercc.schedule/2 or 3 needed)")
        return {n: z[n] for n in (*ARRAYS, *paths)}


def simulate_timing(outdir: str, target=None, act_bytes: float | None = None, contention: bool = True,
                    cut_through: bool = True, doc: dict | None = None, arrays: list[dict] | None = None,
                    role: str = "target") -> EventSimResult:
    """Replays one decode token (batch 1) through the schedule in ``outdir`` (``role``: the target
    or its speculative draft, role_view).  ``doc`` / ``arrays`` (schedule.json and the per-wafer npz
    arrays of the role's wafers) may be given in memory instead."""
    doc = role_view(doc or load_schedule(outdir), role)
    target = target or _target(doc, outdir)
    mc, p = Machine.of(target), CostParams.of(target)
    a = float(act_bytes) if act_bytes is not None else schedule_act_bytes(outdir, doc)
    kv_len = schedule_kv_len(doc)
    clock, link = mc.clock_hz, mc.link_bytes
    wafers, bounds, stats = [], [], []
    t_edge, bbytes, last_end = 0.0, 0.0, 0.0   # the token's head at this wafer's west edge (global)
    for k, wj in enumerate(doc["wafers"]):
        ops, idx = wj["ops"], wj.get("index", k)
        wf = _Wafer(arrays[k] if arrays is not None else _load_wafer(outdir, idx), ops, target.usable_cols,
                    mc.hop, contention)
        tin = 0.0                 # wafer frame: 0 = the edge; the ops count from the input's arrival
        if k > 0 and wf.edge_in is not None:
            tin = wf.net.send(0.0, wf.edge_in, wavelets(bbytes, link))[1]
        arrive = t_edge + tin
        if k > 0:
            bounds.append(arrive - last_end)
        start, end, done, began = [], [], [], []   # done / began: absolute end / start of each op
        prev_holder = None
        for i, op in enumerate(ops):
            # an op starts when the ops it reads have finished (inputs from earlier wafers: on arrival);
            # a GEMV reading an RMS norm starts with the norm and scales at its end (model.deferred_deps)
            late = deferred_deps(op, ops)
            t = ready = max(((began if d in late else done)[d] for d in op.get("deps", [])), default=tin)
            if op["grids"]:
                r = wf.act_in.get(i)
                if r is not None:
                    src = ops[prev_holder if prev_holder is not None else int(wf.arr["route_op_src"][r])]
                    t = wf.net.send(ready, r, wavelets(_out_slice(src, a), link))[1]
                s = t
                t += p.op_sync
                for g in op["grids"]:
                    t = _grid_time(wf, t, i, g, op, mc, p, a, kv_len, cut_through)
                prev_holder = i
            else:
                s = t
                t = _rider_time(wf, t, op, mc, p, cut_through)
            if late:
                t = max(t, max(done[d] for d in late) + op.get("act_in_hops", 0) * mc.hop)
            began.append(s)
            start.append(s - tin)
            end.append(t - tin)
            done.append(t)
        cycles = max(end, default=0.0)
        wafers.append({"index": k, "arrive": arrive, "op_start": start, "op_end": end, "cycles": cycles})
        stats.append((k, wf.net.stats, target.usable_cols))
        last_end = arrive + cycles
        if k < len(doc["wafers"]) - 1:
            out = [e for e in wj.get("inter_wafer", []) if e["src_wafer"] == idx]
            bbytes = float(out[0]["bytes_per_token"]) if out else _out_slice(ops[-1], a) if ops else a
            head = tin + cycles
            if wf.edge_out is not None:
                head = wf.net.send(head, wf.edge_out, wavelets(bbytes, link))[0]
            t_edge = arrive - tin + head + (p.inter_wafer_latency_s + bbytes / mc.off_wafer_bandwidth) * clock
    total = wafers[-1]["arrive"] + wafers[-1]["cycles"] if wafers else 0.0
    return EventSimResult(wafers, total, total / clock, _link_summary(stats), bounds)


def _link_summary(stats) -> dict:
    used = sum(len(s) for _, s, _ in stats)
    msgs = sum(v[0] for _, s, _ in stats for v in s.values())
    waits = [(v[2], v[0], -k, -link, k, link, v, cols) for k, s, cols in stats for link, v in s.items()]
    out = {"links_used": used, "link_traversals": int(msgs),
           "max_queue_delay": max((w[6][3] for w in waits), default=0.0),
           "total_queue_delay": sum(w[0] for w in waits),
           "delayed_links": sum(1 for w in waits if w[0] > 0), "most_contended": None}
    if waits:
        *_, k, link, v, cols = max(waits)
        row, col = divmod(link // 4, cols)
        out["most_contended"] = {"wafer": k, "link": link, "row": row, "col": col, "dir": link % 4,
                                 "messages": int(v[0]), "busy_cycles": v[1], "queue_delay": v[2],
                                 "max_queue_delay": v[3]}
    return out


def analytic_program(outdir: str, doc: dict | None = None, act_bytes: float | None = None,
                     role: str = "target") -> Program:
    """The timing model's Program rebuilt from the schedule directory (ScheduleWriter.program())."""
    doc = role_view(doc or load_schedule(outdir), role)
    a = float(act_bytes) if act_bytes is not None else schedule_act_bytes(outdir, doc)
    batch = int(_report_options(outdir).get("batch") or 1)
    edge = []                                  # (in hops, out hops) per wafer
    for k, wj in enumerate(doc["wafers"]):
        arr = _load_wafer(outdir, wj.get("index", k))
        hops = (np.asarray(arr["route_hops"], np.int64) if "route_hops" in arr
                else np.diff(np.asarray(arr["route_offsets"], np.int64)))
        kind, src = np.asarray(arr["route_kind"]), np.asarray(arr["route_src_tile"])
        h_in = [int(h) for h, kd, s in zip(hops, kind, src) if kd == 3 and s < 0]
        h_out = [int(h) for h, kd, s in zip(hops, kind, src) if kd == 3 and s >= 0]
        edge.append((max(h_in, default=0), max(h_out, default=0)))
    bounds = []
    for k, wj in enumerate(doc["wafers"][:-1]):
        out = [e for e in wj.get("inter_wafer", []) if e["src_wafer"] == wj.get("index", k)]
        # schedule/2 writes bytes per token (version 1 wrote the batch's), as Boundary holds them
        bounds.append(Boundary(k, out[0]["bytes_per_token"] if out else 0, edge[k][1] + edge[k + 1][0]))
    return Program(tuple(tuple(w["ops"]) for w in doc["wafers"]), tuple(bounds), a, schedule_kv_len(doc), batch)


def compare_with_analytic(outdir: str, target=None, act_bytes: float | None = None, role: str = "target") -> dict:
    """Both token totals (cycles) and (event - analytic) / analytic."""
    doc = role_view(load_schedule(outdir), role)
    target = target or _target(doc, outdir)
    mc, p = Machine.of(target), CostParams.of(target)
    a = float(act_bytes) if act_bytes is not None else schedule_act_bytes(outdir, doc)
    ev = simulate_timing(outdir, target, a, doc=doc, role=role)
    prog = analytic_program(outdir, doc, a, role=role)
    an = tpot_seconds(prog, mc, p, int(doc["timeline"]["prompt_tokens"])) * mc.clock_hz
    tl = doc["timeline"]["wafers"]
    stored = tl[-1]["arrive_cycle"] + tl[-1]["cycles"] if tl else 0
    return {"event_cycles": ev.total_cycles, "analytic_cycles": an, "analytic_timeline_cycles": stored,
            "relative_difference": (ev.total_cycles - an) / an if an else 0.0,
            "event_seconds": ev.seconds, "analytic_seconds": an / mc.clock_hz, "act_bytes": a,
            "kv_len": schedule_kv_len(doc), "link_stats": ev.link_stats}
