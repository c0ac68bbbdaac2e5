"""Defect maps: spec grammar, determinism per (seed, wafer), rates, clusters, dies, links, JSON files, speed."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
from target_util import tiny_target

from wafercc.target import (
    DefectSpecError,
    Device,
    generate_defects,
    load_target,
    parse_defect_spec,
)
from wafercc.target.defects import EAST, SOUTH, die_edges

WSE3 = load_target("wse3")


def gen(spec, seed=0, index=0, target=WSE3):
    return generate_defects(parse_defect_spec(spec), target, seed, index)


def test_parse_grammar():
    assert parse_defect_spec("none").is_empty
    assert parse_defect_spec("none+none").is_empty
    s = parse_defect_spec("random:0.01 + clustered:rate=1%,size=8,seed=3 + dies:1 + links:0.001")
    assert [t.kind for t in s.terms] == ["random", "clustered", "dies", "links"]
    assert s.terms[0].params == {"rate": 0.01}
    assert s.terms[1].params == {"rate": 0.01, "size": 8.0, "seed": 3}
    assert s.terms[2].params == {"count": 1}
    assert parse_defect_spec(None).terms[0].kind == "default"
    assert parse_defect_spec("clustered:count=5").terms[0].params == {"count": 5}


@pytest.mark.parametrize("spec,needle", [
    ("", "empty"), ("random", "needs rate"), ("random:2", "fraction in [0, 1)"), ("random:abc", "fraction"),
    ("bogus:1", "unknown term 'bogus:1'"), ("random:rate=0.01,foo=1", "no parameter 'foo'"),
    ("random:0.01+", "unknown term ''"), ("dies:-1", "integer >= 0"), ("dies:1.5", "integer >= 0"),
    ("clustered:rate=0.01,size=0", "number >= 1"), ("file:", "needs a path"),
    ("file:/nonexistent/defects.json", "no such defect map file"), ("random:0.01,0.02", "no parameter"),
])
def test_parse_errors(spec, needle):
    with pytest.raises(DefectSpecError) as ei:
        parse_defect_spec(spec)
    assert needle in str(ei.value) and "\n" not in str(ei.value)


def test_none_and_default():
    assert gen("none").alive.all()
    d = gen("default")
    assert np.array_equal(d.alive, gen(f"random:{WSE3.defects.default_dead_core_rate}").alive)


def test_same_seed_same_map_and_wafers_differ():
    a, b = gen("random:0.01", seed=7, index=3), gen("random:0.01", seed=7, index=3)
    assert np.array_equal(a.alive, b.alive)
    assert not np.array_equal(a.alive, gen("random:0.01", seed=8, index=3).alive)
    assert not np.array_equal(a.alive, gen("random:0.01", seed=7, index=4).alive)
    assert np.array_equal(a.alive, gen("random:rate=0.01,seed=7", seed=123, index=3).alive)  # term seed wins


def test_lazy_wafers_are_independent_of_generation_order():
    d1, d2 = Device(WSE3, "random:0.01+dies:1", seed=5), Device(WSE3, "random:0.01+dies:1", seed=5)
    for i in range(4):
        d1.wafer(i)
    assert np.array_equal(d1.wafer(3).alive, d2.wafer(3).alive)
    assert d1.wafer(2) is d1.wafer(2)


def test_terms_are_order_independent():
    a, b = gen("random:0.01+dies:1+links:0.001", seed=3), gen("links:0.001+dies:1+random:0.01", seed=3)
    assert np.array_equal(a.alive, b.alive) and np.array_equal(a.dead_dies, b.dead_dies)
    assert np.array_equal(a.dead_links, b.dead_links)


def test_random_rate_and_percent():
    d = gen("random:1%", seed=1)
    assert 0.009 < 1 - d.alive.mean() < 0.011
    assert d.alive.dtype == bool and d.alive.shape == (WSE3.usable_rows, WSE3.usable_cols)
    assert not d.alive.flags.writeable


def _dead_neighbours(dead):
    p = np.pad(dead, 1)
    n = p[:-2, 1:-1].astype(int) + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]
    return n[dead].mean()


def test_clustered_rate_and_clustering():
    d = gen("clustered:rate=0.01,size=8", seed=2)
    dead = ~d.alive
    assert 0.0095 < dead.mean() < 0.0115
    assert _dead_neighbours(dead) > 1.0                       # clusters: dead cores sit next to dead cores
    assert _dead_neighbours(~gen("random:0.01", seed=2).alive) < 0.1
    few = gen("clustered:count=3,size=20", seed=2)
    assert 3 <= (~few.alive).sum() <= 3 * 60


def test_dead_dies_cover_their_boxes():
    d = gen("dies:2", seed=4)
    assert d.dead_dies.shape == (2, 2)
    re, ce = die_edges(WSE3)
    area = 0
    for dr, dc in d.dead_dies.tolist():
        box = d.alive[re[dr]:re[dr + 1], ce[dc]:ce[dc + 1]]
        assert box.size > 0 and not box.any()
        area += box.size
    assert (~d.alive).sum() == area
    with pytest.raises(DefectSpecError, match="at most 84"):
        gen("dies:85")


def test_die_edges_tile_the_rectangle():
    re, ce = die_edges(WSE3)
    assert re[0] == 0 and re[-1] == WSE3.usable_rows and ce[0] == 0 and ce[-1] == WSE3.usable_cols
    assert len(re) == 8 and len(ce) == 13 and (np.diff(re) > 0).all() and (np.diff(ce) > 0).all()


def test_random_links():
    d = gen("links:0.001", seed=9)
    assert d.alive.all()
    r, c, k = d.dead_links.T
    assert set(np.unique(k)) <= {EAST, SOUTH}
    assert (c[k == EAST] < WSE3.usable_cols - 1).all() and (r[k == SOUTH] < WSE3.usable_rows - 1).all()
    n_links = WSE3.usable_rows * (WSE3.usable_cols - 1) + (WSE3.usable_rows - 1) * WSE3.usable_cols
    assert 0.0008 < len(d.dead_links) / n_links < 0.0012


def _write(tmp_path, data, name="defects.json"):
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return str(p)


def test_file_defects(tmp_path):
    t = tiny_target(tmp_path)                                  # usable 20 x 20, dies 3 x 2
    path = _write(tmp_path, {"version": 1, "all": {"dead_cores": [[0, 0], [5, 7]]},
                             "wafers": {"1": {"dead_dies": [[1, 2]], "dead_links": [[3, 3, "W"], [4, 4, "N"], [0, 0, "N"]]}}})
    w0 = generate_defects(parse_defect_spec(f"file:{path}"), t, 0, 0)
    assert sorted(map(tuple, np.argwhere(~w0.alive).tolist())) == [(0, 0), (5, 7)]
    assert len(w0.dead_links) == 0 and len(w0.dead_dies) == 0
    w1 = generate_defects(parse_defect_spec(f"file:{path}"), t, 0, 1)
    assert w1.dead_dies.tolist() == [[1, 2]]
    re, ce = die_edges(t)
    assert not w1.alive[re[1]:re[2], ce[2]:ce[3]].any()
    # W of (3,3) is E of (3,2); N of (4,4) is S of (3,4); N of (0,0) leaves the rectangle and is dropped
    assert w1.dead_links.tolist() == [[3, 2, EAST], [3, 4, SOUTH]]


def test_file_fabric_frame(tmp_path):
    t = tiny_target(tmp_path)
    path = _write(tmp_path, {"version": 1, "frame": "fabric", "all": {"dead_cores": [[1, 4], [0, 0], [21, 26]]}})
    d = generate_defects(parse_defect_spec(f"file:{path}"), t, 0, 0)
    assert np.argwhere(~d.alive).tolist() == [[0, 0]]          # fabric (1,4) is program (0,0); others outside


@pytest.mark.parametrize("data,needle", [
    ({"version": 2}, "'version': got 2, expected 1"),
    ({"version": 1, "frame": "die"}, "'frame'"),
    ({"version": 1, "dead": []}, "unknown key 'dead'"),
    ({"version": 1, "all": {"dead_cores": [[1]]}}, "'all.dead_cores[0]': got [1], expected [row, col]"),
    ({"version": 1, "all": {"dead_links": [[1, 1, "up"]]}}, "expected [row, col, \"N|E|S|W\"]"),
    ({"version": 1, "all": {"dead_core": []}}, "'all.dead_core': unknown key"),
    ({"version": 1, "wafers": {"first": {}}}, "'wafers.first': expected a wafer index"),
    ([1, 2], "JSON object"),
])
def test_bad_defect_files(tmp_path, data, needle):
    path = _write(tmp_path, data)
    with pytest.raises(DefectSpecError) as ei:
        parse_defect_spec(f"file:{path}")
    assert needle in str(ei.value) and path in str(ei.value)


@pytest.mark.parametrize("entry,needle", [
    ({"dead_cores": [[20, 0]]}, "outside the 20 x 20 program rectangle"),
    ({"dead_dies": [[2, 0]]}, "outside the 2 x 3 die grid"),
])
def test_defect_file_ranges(tmp_path, entry, needle):
    t = tiny_target(tmp_path)
    spec = parse_defect_spec("file:" + _write(tmp_path, {"version": 1, "all": entry}))
    with pytest.raises(DefectSpecError, match="outside"):
        generate_defects(spec, t, 0, 0)
    try:
        generate_defects(spec, t, 0, 0)
    except DefectSpecError as e:
        assert needle in str(e)


def test_invalid_json(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(DefectSpecError, match="not valid JSON"):
        parse_defect_spec(f"file:{p}")


def test_generation_is_fast():
    spec = parse_defect_spec("random:0.01+clustered:0.005+dies:1")
    best = min(_timed(spec, i) for i in range(3))
    assert best < 0.05, f"{best * 1000:.1f} ms per WSE-3 wafer"


def _timed(spec, i):
    t0 = time.perf_counter()
    generate_defects(spec, WSE3, 0, i)
    return time.perf_counter() - t0


def test_maps_are_identical_across_processes():
    import hashlib
    import subprocess
    import sys

    code = ("import hashlib; from wafercc.target import Device; "
            "w = Device('wse3', 'random:0.01+clustered:0.01+dies:1+links:0.001', seed=42).wafer(3); "
            "print(hashlib.sha256(w.alive.tobytes() + w.dead_links.tobytes() + w.dead_dies.tobytes()).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    w = Device(WSE3, "random:0.01+clustered:0.01+dies:1+links:0.001", seed=42).wafer(3)
    here = hashlib.sha256(w.alive.tobytes() + w.dead_links.tobytes() + w.dead_dies.tobytes()).hexdigest()
    assert out.stdout.strip() == here
