"""Activation routes against the wafer's dataflow (ops in order; ``deps``, looked through riders).

- every op holding tiles but the wafer's first receives an activation route from an earlier op, and
  every one but the last sends one to a later op (``activation-missing``); none runs backwards
  (``dataflow-order``);
- an activation (or incoming inter-wafer) route enters its op at a broadcast root
  (``activation-endpoint``): the input is what the op's broadcast trees spread;
- every op holding tiles is reached by a chain of activation routes from every op holding tiles
  whose output it reads (``deps``, looking through riders and other ops without tiles)
  (``dataflow-unreached``).

Ops per wafer are hundreds, so the reachability is a Python loop over ops (bitsets as ints); the
per-route work is vectorised.
"""
from __future__ import annotations

import numpy as np

from .checks import Sink, op_label
from .shared import effective_edges


def _producers(ops: list, has_tiles: np.ndarray, o: int) -> set[int]:
    """Ops holding tiles whose outputs op o reads: its ``deps``, looking through ops without tiles
    (riders: they compute along the chain wherever their inputs are, so only their inputs count).
    Iterative, so a long (or cyclic) chain of tile-less ops cannot exhaust the stack."""
    out: set[int] = set()
    seen, todo = {o}, [o]
    while todo:
        for d in ops[todo.pop()].get("deps", []):
            if not (isinstance(d, int) and not isinstance(d, bool) and 0 <= d < len(ops)) or d in seen:
                continue
            seen.add(d)
            if has_tiles[d]:
                out.add(d)
            else:
                todo.append(d)
    return out


def check_dataflow(w, ops: list, tiles: dict, good_src: np.ndarray, good_dst: np.ndarray,
                   bcast_root: np.ndarray, sink: Sink, tmpl: list[int] | None = None) -> dict:
    ro, k = w.routes, w.index
    nops = len(ops)
    kind, osrc, odst, dt = ro["route_kind"], ro["route_op_src"], ro["route_op_dst"], ro["route_dst_tile"]
    has_tiles = np.bincount(tiles["op"][tiles["valid_op"]], minlength=nops)[:nops] > 0
    holders = np.flatnonzero(has_tiles)
    entry, exit_ = (int(holders[0]), int(holders[-1])) if holders.size else (None, None)

    act = np.flatnonzero((kind == 2) & (osrc >= 0) & (osrc < nops) & (odst >= 0) & (odst < nops))
    back = act[osrc[act] >= odst[act]]
    sink.add("dataflow-order", k, back, lambda i: f"route {i} (activation) runs from "
             f"{op_label(ops, int(osrc[i]))} back to {op_label(ops, int(odst[i]))} (ops are in dataflow order)")
    fwd = act[osrc[act] < odst[act]]
    e_src, e_dst = effective_edges(osrc[fwd].tolist(), odst[fwd].tolist(), holders.tolist(),
                                   tmpl if tmpl is not None else list(range(nops)))
    indeg = np.bincount(np.asarray(e_dst, np.int64), minlength=nops)
    outdeg = np.bincount(np.asarray(e_src, np.int64), minlength=nops)
    no_in = holders[(indeg[holders] == 0) & (holders != entry)]
    no_out = holders[(outdeg[holders] == 0) & (holders != exit_)]
    sink.add("activation-missing", k, no_in, lambda o: f"{op_label(ops, int(o))} holds tiles but no activation "
             "route brings it an input (only the wafer's first op is fed from the edge)")
    sink.add("activation-missing", k, no_out, lambda o: f"{op_label(ops, int(o))} holds tiles but no activation "
             "route takes its output on (only the wafer's last op sends to the edge)")

    enters = np.flatnonzero(((kind == 2) | (kind == 3)) & good_dst)
    off_root = enters[~bcast_root[dt[enters]]]
    sink.add("activation-endpoint", k, off_root, lambda i: f"route {i} ({'activation' if kind[i] == 2 else 'inter-wafer'}) "
             f"enters {tiles['desc'](int(dt[i]))}, which is not the root of its broadcast tree (an input enters "
             "at a root and the broadcast spreads it)")

    # reachability along activation routes: reach[o] = bitset of ops with a chain of routes to o
    preds: dict[int, set[int]] = {}
    for a, b in zip(e_src, e_dst):
        preds.setdefault(b, set()).add(a)
    reach = [0] * nops
    for o in holders.tolist():
        bits = 0
        for p in preds.get(o, ()):
            bits |= reach[p] | (1 << p)
        reach[o] = bits
    for o, op in enumerate(ops):
        for d in op.get("deps", []):
            if not (isinstance(d, int) and not isinstance(d, bool) and 0 <= d < nops):
                sink.one("op-ref", k, f"{op_label(ops, o)} reads op {d!r}, not an op of wafer {k}")
        if not has_tiles[o]:
            continue
        for src in sorted(_producers(ops, has_tiles, o)):
            if src != o and not (reach[o] >> src) & 1:
                sink.one("dataflow-unreached", k, f"{op_label(ops, o)} reads the output of "
                         f"{op_label(ops, src)} (directly or through ops without tiles), but no chain of "
                         "activation routes leads there from it")

    inter = {"in": {}, "out": {}}
    for e in w.meta.get("inter_wafer", []):
        if not isinstance(e, dict):
            continue
        ids = e.get("route")
        ids = [ids] if isinstance(ids, int) and not isinstance(ids, bool) else ids
        if not isinstance(ids, list):
            continue
        for i in ids:
            if isinstance(i, int) and 0 <= i < kind.size and kind[i] == 3:
                side, op = ("in", int(odst[i])) if osrc[i] == -1 else ("out", int(osrc[i]))
                inter[side][(e.get("src_wafer"), e.get("dst_wafer"))] = (op, e.get("bytes_per_token"))
    return {"entry": entry, "exit": exit_, **inter}
