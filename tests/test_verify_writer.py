"""A hand-rolled schedule writer for the verifier tests, and the verifier accepting what it writes.

The writer (``Sched``) is deliberately independent of the compiler's passes: ops are rectangles of
tiles (tile (0, r, c) on core (r0 + r, c0 + c)), broadcasts run east along each tile row and
reductions north along each tile column, one route per neighbouring pair of tiles (trees rooted at
column 0 and row 0), activations follow an explicit core path from a tile to a tile.
"""
from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest
from target_util import tiny_target
from verify_tamper import save

from wafercc.cli import main
from wafercc.verify import verify_dir

DIRS = {(0, 1): 0, (1, 0): 1, (0, -1): 2, (-1, 0): 3}


def path_links(cols: int, cores: list) -> list[int]:
    out = []
    for (r, c), (r2, c2) in itertools.pairwise(cores):
        out.append((r * cols + c) * 4 + DIRS[(r2 - r, c2 - c)])
    return out


def l_path(a, b) -> list:
    """Cores from a to b: along the row first, then the column."""
    (r, c), (r2, c2) = a, b
    out = [(r, c)]
    while c != c2:
        c += 1 if c2 > c else -1
        out.append((r, c))
    while r != r2:
        r += 1 if r2 > r else -1
        out.append((r, c))
    return out


def bfs_path(alive: np.ndarray, a, b) -> list:
    """A shortest path of live cores from a to b (the test's stand-in for a router)."""
    rows, cols = alive.shape
    prev = {tuple(a): None}
    todo = [tuple(a)]
    for cur in todo:
        if cur == tuple(b):
            break
        for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0)):
            n = (cur[0] + dr, cur[1] + dc)
            if 0 <= n[0] < rows and 0 <= n[1] < cols and alive[n] and n not in prev:
                prev[n] = cur
                todo.append(n)
    assert tuple(b) in prev, (a, b)
    out, cur = [], tuple(b)
    while cur is not None:
        out.append(cur)
        cur = prev[cur]
    return out[::-1]


class Sched:
    def __init__(self, target, nwafers: int = 1, alive=None, target_name=None):
        self.t = target
        self.rows, self.cols = target.usable_rows, target.usable_cols
        self.alive = [np.ones((self.rows, self.cols), bool) if alive is None else np.array(alive[k], bool)
                      for k in range(nwafers)]
        self.dead_links = [np.zeros((0, 3), np.int32) for _ in range(nwafers)]
        self.doc = {"schema": "wafercc.schedule/2", "model": "tiny", "target": target_name or target.path,
                    "defects": "hand", "seed": 0, "budget_bytes_per_core": target.usable_bytes_per_core,
                    "colors": list(target.free_colors), "link_capacity": 1,
                    "wafers": [{"index": k, "layers": None, "units": [], "ops": [], "inter_wafer": []}
                               for k in range(nwafers)],
                    "qor": {"wafers": [{"solver_status": "OPTIMAL", "gap": 0.0} for _ in range(nwafers)]}}
        self.tiles = [[] for _ in range(nwafers)]    # (op, grid, e, r, c, core_r, core_c, bytes)
        self.routes = [[] for _ in range(nwafers)]   # (src, dst, kind, op_src, op_dst, color, links, tiles)

    def layers(self, k: int, first: int, last: int, extra=()):
        w = self.doc["wafers"][k]
        w["layers"] = [first, last]
        w["units"] = list(extra) + [f"layer {i}" for i in range(first, last + 1)]

    def op(self, k: int, name: str, layer, rect, tile_bytes: int = 1000, experts: int = 1, deps=()) -> int:
        r0, c0, nr, nc = rect
        ops = self.doc["wafers"][k]["ops"]
        o = len(ops)
        ops.append({"id": o, "name": name, "layer": layer, "deps": list(deps),
                    "grids": [{"grid": 0, "experts": experts, "rows": nr, "cols": nc}], "region": [list(rect)]})
        for e in range(experts):
            for r in range(nr):
                for c in range(nc):
                    assert self.alive[k][r0 + r, c0 + c], (r0 + r, c0 + c)
                    self.tiles[k].append((o, 0, e, r, c, r0 + r, c0 + c, tile_bytes))
        return o

    def tile_at(self, k: int, op: int, core) -> int:
        """Index of op's first tile on ``core`` (-1 for the edge, op -1, or no such tile)."""
        for i, t in enumerate(self.tiles[k]):
            if op >= 0 and t[0] == op and (t[5], t[6]) == tuple(core):
                return i
        return -1

    def route(self, k: int, kind: int, op_src: int, op_dst: int, color: int, cores: list, tiles=None) -> int:
        """A route along ``cores``; its end tiles are op_src's / op_dst's tiles on the end cores."""
        st, dt = tiles or (self.tile_at(k, op_src, cores[0]), self.tile_at(k, op_dst, cores[-1]))
        self.routes[k].append((cores[0], cores[-1], kind, op_src, op_dst, color, path_links(self.cols, cores),
                               (st, dt)))
        return len(self.routes[k]) - 1

    def gemv_routes(self, k: int, o: int, bcast_color: int = 0, reduce_color: int = 1):
        r0, c0, nr, nc = self.doc["wafers"][k]["ops"][o]["region"][0]
        for r in range(r0, r0 + nr):
            for c in range(c0, c0 + nc - 1):
                self.route(k, 0, o, o, bcast_color, [(r, c), (r, c + 1)])
        for c in range(c0, c0 + nc):
            for r in range(r0 + nr - 1, r0, -1):
                self.route(k, 1, o, o, reduce_color, [(r, c), (r - 1, c)])

    def arrays(self, k: int) -> dict:
        t = np.array(self.tiles[k], dtype=np.int64).reshape(-1, 8)
        rs = self.routes[k]
        lens = [len(x[6]) for x in rs]
        a = {"tile_op": t[:, 0].astype(np.int32), "tile_grid": t[:, 1].astype(np.int16),
             "tile_expert": t[:, 2].astype(np.int32), "tile_row": t[:, 3].astype(np.int32),
             "tile_col": t[:, 4].astype(np.int32), "tile_core_row": t[:, 5].astype(np.int32),
             "tile_core_col": t[:, 6].astype(np.int32), "tile_bytes": t[:, 7].astype(np.int64)}
        for name, f in (("route_src_row", lambda x: x[0][0]), ("route_src_col", lambda x: x[0][1]),
                        ("route_dst_row", lambda x: x[1][0]), ("route_dst_col", lambda x: x[1][1]),
                        ("route_op_src", lambda x: x[3]), ("route_op_dst", lambda x: x[4])):
            a[name] = np.array([f(x) for x in rs], dtype=np.int32)
        a["route_kind"] = np.array([x[2] for x in rs], dtype=np.int8)
        a["route_src_tile"] = np.array([x[7][0] for x in rs], dtype=np.int64)
        a["route_dst_tile"] = np.array([x[7][1] for x in rs], dtype=np.int64)
        a["route_color"] = np.array([x[5] for x in rs], dtype=np.int16)
        a["route_offsets"] = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        a["route_links"] = np.array([lk for x in rs for lk in x[6]], dtype=np.int32)
        return a

    def write(self, outdir, edit=None) -> str:
        """Write OUTDIR; ``edit(doc, arrays_per_wafer, defects)`` may corrupt it first."""
        os.makedirs(outdir, exist_ok=True)
        arrs = [self.arrays(k) for k in range(len(self.alive))]
        defects = {}
        for k in range(len(self.alive)):
            defects[f"alive_{k}"] = self.alive[k].copy()
            defects[f"dead_links_{k}"] = np.array(self.dead_links[k], np.int32).reshape(-1, 3)
        doc = json.loads(json.dumps(self.doc))
        if edit is not None:
            edit(doc, arrs, defects)
        return save(outdir, doc, arrs, defects)


@pytest.fixture
def tiny(tmp_path):
    return tiny_target(tmp_path, width=15, height=10)   # usable 8 x 8


def two_wafer(t) -> Sched:
    """Layers 0-1 on wafer 0, layer 2 on wafer 1; GEMV ops chained by activation routes (an op's
    last tile to the next op's first), an inter-wafer hop from wafer 0's last op to wafer 1's first.

    Wafer 0 routes: 0 embed broadcast; 1-9 a's broadcasts, 10-17 a's reductions; 18-26, 27-34 b's;
    35 embed -> a, 36 a -> b, 37 b -> east edge.  Wafer 1: 0-1 c's broadcasts, 2-3 c's reductions,
    4 west edge -> c, 5 c -> lm_head."""
    s = Sched(t, 2)
    s.layers(0, 0, 1, extra=["embed"])
    s.layers(1, 2, 2, extra=["head"])
    e = s.op(0, "embed", None, (0, 0, 1, 2))
    a = s.op(0, "layers.0.q_proj", 0, (1, 0, 3, 4), deps=[e])
    b = s.op(0, "layers.1.q_proj", 1, (4, 0, 3, 4), deps=[a])
    for o in (e, a, b):
        s.gemv_routes(0, o)
    s.route(0, 2, e, a, 2, l_path((0, 1), (1, 0)))
    s.route(0, 2, a, b, 2, l_path((3, 3), (4, 0)))
    x = s.route(0, 3, b, -1, 3, l_path((6, 3), (6, 7)))
    s.doc["wafers"][0]["inter_wafer"].append({"src_wafer": 0, "dst_wafer": 1, "bytes_per_token": 64, "route": x})
    c = s.op(1, "layers.2.q_proj", 2, (2, 2, 2, 2), tile_bytes=s.t.usable_bytes_per_core)
    h = s.op(1, "lm_head", None, (5, 5, 1, 1), deps=[c])
    s.gemv_routes(1, c)
    y = s.route(1, 3, -1, c, 3, l_path((2, 0), (2, 2)))
    s.route(1, 2, c, h, 2, l_path((3, 3), (5, 5)))
    s.doc["wafers"][1]["inter_wafer"].append({"src_wafer": 0, "dst_wafer": 1, "bytes_per_token": 64, "route": y})
    return s


def test_clean_schedule_verifies_with_qor(tiny, tmp_path):
    res = verify_dir(two_wafer(tiny).write(tmp_path / "out"))
    assert res.ok, [str(v) for v in res.violations]
    q0, q1 = res.wafers
    assert q0["tiles"] == 2 + 12 + 12 and q0["cores_used"] == 26 and q0["live_cores"] == 64
    assert q0["hops"] == q0["hops_lower_bound"] == 1 + 2 * (3 * 3 + 4 * 2) + 2 + 4 + 4
    assert q0["colors_used"] == 4 and q0["max_link_load"] == 1 and q0["solver_status"] == "OPTIMAL"
    assert q1["max_core_bytes"] == tiny.usable_bytes_per_core
    assert q1["sram_utilisation"] == pytest.approx((4 * tiny.usable_bytes_per_core + 1000)
                                                   / (64 * tiny.usable_bytes_per_core))


def test_dead_row_dead_link_and_detour(tiny, tmp_path):
    alive = np.ones((8, 8), bool)
    alive[3, :7] = False                        # a dead row, but for its last core
    s = Sched(tiny, 1, [alive])
    s.dead_links[0] = np.array([[0, 1, 0]], np.int32)   # (0,1) -E- (0,2) dead
    s.layers(0, 0, 0)
    a = s.op(0, "a", 0, (0, 0, 3, 2))
    b = s.op(0, "b", 0, (0, 4, 2, 2))
    s.gemv_routes(0, a)
    s.gemv_routes(0, b)
    s.route(0, 2, a, b, 2, [(0, 1), (1, 1), (1, 2), (1, 3), (0, 3), (0, 4)])   # around the dead link
    c = s.op(0, "c", 0, (5, 0, 3, 8))
    s.gemv_routes(0, c)
    s.route(0, 2, b, c, 2, l_path((1, 5), (1, 7)) + l_path((2, 7), (4, 7)) + l_path((4, 6), (4, 0)) + [(5, 0)])
    res = verify_dir(s.write(tmp_path / "o"))
    assert res.ok, [str(v) for v in res.violations]
    assert res.wafers[0]["dead_cores"] == 7 and res.wafers[0]["hops_ratio"] > 1


def test_dead_die_from_device(tiny, tmp_path):
    from wafercc.target import Device

    alive = np.array(Device(tiny, "dies:1", seed=3).wafer(0).alive)
    assert (~alive).sum() > 4
    s = Sched(tiny, 1, [alive])
    s.layers(0, 0, 0)
    live = np.argwhere(alive)
    prev = None
    for i, (r, c) in enumerate(live[::3][:20].tolist()):   # one-tile ops on live cores, chained around the die
        o = s.op(0, f"op{i}", 0, (r, c, 1, 1))
        if prev is not None:
            s.route(0, 2, o - 1, o, i, bfs_path(alive, prev, (r, c)))
        prev = (r, c)
    res = verify_dir(s.write(tmp_path / "o"))
    assert res.ok, [str(v) for v in res.violations]


def test_checkerboard(tiny, tmp_path):
    """Every neighbour of a live core is dead: one expert's 1 x 1 tile per live core (no tree needs a
    link), and a zero-length activation to a second op on the first core."""
    alive = (np.add.outer(np.arange(8), np.arange(8)) % 2) == 0
    s = Sched(tiny, 1, [alive])
    s.layers(0, 0, 0)
    s.doc["wafers"][0]["ops"].append({"id": 0, "name": "scatter", "layer": 0,
                                      "grids": [{"grid": 0, "experts": 32, "rows": 1, "cols": 1}]})
    s.tiles[0] = [(0, 0, i, 0, 0, r, c, 10) for i, (r, c) in enumerate(np.argwhere(alive).tolist())]
    s.op(0, "gather", 0, (0, 0, 1, 1))
    s.route(0, 2, 0, 1, 0, [(0, 0)])
    res = verify_dir(s.write(tmp_path / "o"))
    assert res.ok, [str(v) for v in res.violations]
    assert res.wafers[0]["cores_used"] == 32 and res.wafers[0]["hops"] == 0


def test_cli_text_and_json(tiny, tmp_path, capsys):
    out = two_wafer(tiny).write(tmp_path / "out")
    assert main(["verify", out]) == 0
    text = capsys.readouterr().out
    assert "max load" in text and "OPTIMAL" in text and "ok" in text
    assert main(["verify", out, "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["ok"] and d["violation_count"] == 0 and len(d["wafers"]) == 2


def test_target_path_beside_outdir(tiny, tmp_path):
    out = tmp_path / "out"
    os.makedirs(out)
    (out / "my.toml").write_text(Path(tiny.path).read_text())
    s = two_wafer(tiny)
    s.doc["target"] = "my.toml"
    assert verify_dir(s.write(out)).ok


@pytest.mark.parametrize("edit, needle", [
    (lambda d: os.remove(os.path.join(d, "schedule.json")), "schedule.json: no such file"),
    (lambda d: Path(d, "schedule.json").write_text("{"), "not valid JSON"),
    (lambda d: os.remove(os.path.join(d, "wafer1.npz")), "wafer1.npz: no such file"),
    (lambda d: Path(d, "defects.npz").write_bytes(b"junk"), "cannot read npz"),
])
def test_unreadable_files_exit_2(tiny, tmp_path, capsys, edit, needle):
    out = two_wafer(tiny).write(tmp_path / "out")
    edit(out)
    assert main(["verify", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("wafercc: error:") and needle in err[0]


def test_malformed_exit_2(tiny, tmp_path, capsys):
    def drop(doc, arrs, defects):
        del arrs[0]["route_links"]
    assert main(["verify", two_wafer(tiny).write(tmp_path / "a", drop)]) == 2
    assert "missing array 'route_links'" in capsys.readouterr().err

    def bad_target(doc, arrs, defects):
        doc["target"] = "wse9"
    assert main(["verify", two_wafer(tiny).write(tmp_path / "b", bad_target)]) == 2
    assert "unknown target 'wse9'" in capsys.readouterr().err
    assert main(["verify", str(tmp_path / "nope")]) == 2
    assert "no such output directory" in capsys.readouterr().err


def test_empty_wafer_and_empty_grid(tiny, tmp_path):
    s = Sched(tiny, 2)
    s.layers(0, 0, 0)
    s.doc["wafers"][0]["ops"].append({"id": 0, "name": "nothing", "layer": 0,
                                      "grids": [{"grid": 0, "experts": 0, "rows": 4, "cols": 4}]})
    res = verify_dir(s.write(tmp_path / "o"))
    assert res.ok, [str(v) for v in res.violations]
    assert res.wafers[1]["tiles"] == 0 and res.wafers[1]["hops_ratio"] is None
