"""Tamperings of an emitted schedule (issue 14's verifier misses), shared by the negative and the
random-tampering tests.  Each works on ``(doc, arrays_per_wafer, defects)`` as loaded from a
directory and returns False when the schedule offers nothing to tamper with."""
from __future__ import annotations

import json
import os

import numpy as np

ROUTE_KEYS = ("route_src_row", "route_src_col", "route_dst_row", "route_dst_col", "route_kind",
              "route_src_tile", "route_dst_tile", "route_op_src", "route_op_dst", "route_color")


def load(outdir):
    with open(os.path.join(outdir, "schedule.json")) as f:
        doc = json.load(f)
    arrs = []
    for k in range(len(doc["wafers"])):
        with np.load(os.path.join(outdir, f"wafer{k}.npz")) as z:
            arrs.append({n: z[n].copy() for n in z.files})
    with np.load(os.path.join(outdir, "defects.npz")) as z:
        defects = {n: z[n].copy() for n in z.files}
    return doc, arrs, defects


def save(outdir, doc, arrs, defects) -> str:
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "schedule.json"), "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
    np.savez_compressed(os.path.join(outdir, "defects.npz"), **defects)
    for k, a in enumerate(arrs):
        np.savez_compressed(os.path.join(outdir, f"wafer{k}.npz"), **a)
    return str(outdir)


def drop_routes(doc, arrs, k: int, drop) -> None:
    """Delete routes ``drop`` of wafer k (links included); inter_wafer entries follow the new
    indices, and an entry whose routes are all gone is removed (the tampering stays consistent)."""
    a = arrs[k]
    n = a["route_kind"].size
    keep = np.ones(n, bool)
    keep[np.asarray(drop, np.int64)] = False
    if "route_hops" in a:                       # schema 3: hops and directions
        lens = a["route_hops"].astype(np.int64)
        a["route_dirs"] = a["route_dirs"][np.repeat(keep, lens)]
        a["route_hops"] = a["route_hops"][keep]
    else:                                       # CSR link ids
        off = a["route_offsets"]
        lens = np.diff(off)
        a["route_links"] = a["route_links"][np.repeat(keep, lens)]
        a["route_offsets"] = np.concatenate([[0], np.cumsum(lens[keep])]).astype(off.dtype)
    for key in ROUTE_KEYS:
        a[key] = a[key][keep]
    new = np.cumsum(keep) - 1
    entries = []
    for e in doc["wafers"][k].get("inter_wafer", []):
        ids = e["route"] if isinstance(e["route"], list) else [e["route"]]
        ids = [int(new[i]) for i in ids if keep[i]]
        if ids:
            entries.append(dict(e, route=ids[0] if len(ids) == 1 else ids))
    doc["wafers"][k]["inter_wafer"] = entries


def _pick(rng, idx):
    return int(idx[int(rng.integers(idx.size))]) if idx.size else None


def _routed_tiles(a) -> np.ndarray:
    return np.unique(np.concatenate([a["route_src_tile"], a["route_dst_tile"]]))


def _wafer(rng, arrs) -> int:
    return int(rng.integers(len(arrs)))


def drop_kind(kind: int):
    def tamper(doc, arrs, defects, rng):
        k = _wafer(rng, arrs)
        i = _pick(rng, np.flatnonzero(arrs[k]["route_kind"] == kind))
        if i is None:
            return False
        drop_routes(doc, arrs, k, [i])
        return True
    return tamper


def drop_all_routes(doc, arrs, defects, rng):
    k = _wafer(rng, arrs)
    if arrs[k]["route_kind"].size == 0:
        return False
    drop_routes(doc, arrs, k, np.arange(arrs[k]["route_kind"].size))
    return True


def _free_live_core(rng, a, alive):
    """A live core holding no tile."""
    used = np.zeros(alive.shape, bool)
    used[a["tile_core_row"], a["tile_core_col"]] = True
    return _pick(rng, np.flatnonzero(alive & ~used))


def move_tile(doc, arrs, defects, rng):
    """A tile with routes moves to a free live core; its routes stay where they were."""
    k = _wafer(rng, arrs)
    a, alive = arrs[k], defects[f"alive_{k}"]
    t = _pick(rng, _routed_tiles(a)[_routed_tiles(a) >= 0])
    core = _free_live_core(rng, a, alive)
    if t is None or core is None:
        return False
    a["tile_core_row"][t], a["tile_core_col"][t] = divmod(core, alive.shape[1])
    return True


def swap_ops_tiles(doc, arrs, defects, rng):
    """Two tiles of different ops, on different cores, trade cores."""
    k = _wafer(rng, arrs)
    a = arrs[k]
    routed = _routed_tiles(a)
    routed = routed[routed >= 0]
    t1 = _pick(rng, routed)
    if t1 is None:
        return False
    other = routed[(a["tile_op"][routed] != a["tile_op"][t1]) &
                   ((a["tile_core_row"][routed] != a["tile_core_row"][t1]) |
                    (a["tile_core_col"][routed] != a["tile_core_col"][t1]))]
    t2 = _pick(rng, other)
    if t2 is None:
        return False
    for key in ("tile_core_row", "tile_core_col"):
        a[key][t1], a[key][t2] = a[key][t2], a[key][t1]
    return True


def layer_on_two_wafers(doc, arrs, defects, rng):
    """Wafer k also claims a neighbour's layer (its range and units widened to include it)."""
    ws = [w for w in doc["wafers"] if w.get("layers")]
    if len(ws) < 2:
        return False
    i = int(rng.integers(len(ws) - 1))
    a, b = ws[i], ws[i + 1]
    if rng.integers(2):             # a takes b's first layer
        lay = b["layers"][0]
        a["layers"][1] = lay
        a["units"].append(f"layer {lay}")
    else:                           # b takes a's last layer
        lay = a["layers"][1]
        b["layers"][0] = lay
        b["units"].insert(0, f"layer {lay}")
    return True


def empty_wafer_list(doc, arrs, defects, rng):
    doc["wafers"] = []
    return True


def raise_link_capacity(doc, arrs, defects, rng):
    doc["link_capacity"] = int(doc["link_capacity"]) + int(rng.integers(1, 4))
    return True


# family -> (tamper, the violation codes that name it)
FAMILIES = {
    "drop a broadcast route": (drop_kind(0), {"broadcast-tree"}),
    "drop a reduction route": (drop_kind(1), {"reduction-tree"}),
    "drop an activation route": (drop_kind(2), {"activation-missing", "dataflow-unreached"}),
    "drop an inter-wafer route": (drop_kind(3), {"pipeline"}),
    "drop all routes of a wafer": (drop_all_routes, {"broadcast-tree", "reduction-tree", "activation-missing"}),
    "move a routed tile to a free live core": (move_tile, {"route-endpoint"}),
    "swap the cores of two ops' tiles": (swap_ops_tiles, {"route-endpoint"}),
    "give one layer to two wafers": (layer_on_two_wafers, {"layer-duplicate"}),
    "empty wafer list": (empty_wafer_list, {"plan-empty"}),
    "link_capacity above the target's": (raise_link_capacity, {"link-capacity"}),
}


def table(outdir: str, trials: int, tmp: str) -> list[str]:
    """Markdown rows ``| family | rejected/total | named/total | codes seen |``: each family applied
    ``trials`` times (seeds 0..trials-1) to OUTDIR, the tampered copy written to ``tmp`` (unchanged
    files hard-linked, so a 70B schedule is not recompressed) and verified."""
    import copy
    import shutil

    from wafercc.verify import verify_dir

    doc0, arrs0, defects0 = load(outdir)
    rows = []
    for fam, (tamper, codes) in FAMILIES.items():
        total = rejected = named = 0
        seen: set[str] = set()
        for seed in range(trials):
            doc, arrs = copy.deepcopy(doc0), [{n: v.copy() for n, v in a.items()} for a in arrs0]
            if not tamper(doc, arrs, defects0, np.random.default_rng(seed)):
                continue
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            with open(os.path.join(tmp, "schedule.json"), "w") as f:
                json.dump(doc, f)
            os.link(os.path.join(outdir, "defects.npz"), os.path.join(tmp, "defects.npz"))
            for k, a in enumerate(arrs):
                name = f"wafer{k}.npz"
                if all(np.array_equal(a[n], arrs0[k][n]) for n in a):
                    os.link(os.path.join(outdir, name), os.path.join(tmp, name))
                else:
                    np.savez(os.path.join(tmp, name), **a)
            res = verify_dir(tmp)
            total += 1
            rejected += not res.ok
            named += bool(codes & set(res.counts))
            seen |= set(res.counts)
        rows.append(f"| {fam} | {rejected}/{total} | {named}/{total} | {', '.join(sorted(seen))} |")
    return rows


if __name__ == "__main__":      # python tests/verify_tamper.py OUTDIR [TRIALS] [TMPDIR]
    import sys

    args = sys.argv[1:]
    print("| family | rejected | named by the family's code | codes |\n|---|---|---|---|")
    for row in table(args[0], int(args[1]) if len(args) > 1 else 10,
                     args[2] if len(args) > 2 else "/tmp/wafercc-tampered"):
        print(row, flush=True)
