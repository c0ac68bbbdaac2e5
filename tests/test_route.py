"""Route pass on tiny meshes with hand-drawn defects (docs/routing.md)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from wafercc.passes.route import RouteOptions, RoutingError, Transfers, route

NO_LINKS = np.zeros((0, 3), np.int32)
STEP = ((0, 1), (1, 0), (0, -1), (-1, 0))


def check_routes(alive, dead_links, t: Transfers, res, colors, cap=1):
    """Independent checker: plain Python over the returned arrays.  Returns nothing, asserts."""
    rows, cols = alive.shape
    dead = {(int(r), int(c), int(d)) for r, c, d in np.asarray(dead_links).reshape(-1, 3)}
    n = len(t)
    assert res.offsets.dtype == np.int64 and res.links.dtype == np.int32 and res.color.dtype == np.int16
    assert len(res.offsets) == n + 1 and res.offsets[0] == 0 and res.offsets[-1] == len(res.links)
    per_link, per_link_color, per_ramp = Counter(), Counter(), Counter()
    lb = 0
    for i in range(n):
        s = (int(t.src_row[i]), int(t.src_col[i]))
        d = (int(t.dst_row[i]), int(t.dst_col[i]))
        path = res.links[res.offsets[i]:res.offsets[i + 1]].tolist()
        c = int(res.color[i])
        assert 0 <= c < colors
        r, q = s
        assert alive[r, q]
        for lk in path:
            node, dr = divmod(lk, 4)
            assert divmod(node, cols) == (r, q), f"route {i} breaks at link {lk}"
            nr, nq = r + STEP[dr][0], q + STEP[dr][1]
            assert 0 <= nr < rows and 0 <= nq < cols, f"route {i} leaves the mesh"
            assert alive[nr, nq], f"route {i} enters dead core {(nr, nq)}"
            und = (min(r, nr), min(q, nq), 0 if nr == r else 1)
            assert und not in dead, f"route {i} uses dead link {und}"
            per_link[lk] += 1
            per_link_color[lk, c] += 1
            r, q = nr, nq
        assert (r, q) == d, f"route {i} ends at {(r, q)}, not {d}"
        man = abs(s[0] - d[0]) + abs(s[1] - d[1])
        assert len(path) >= man
        lb += man
        if path:
            per_ramp["in", s, c] += 1
            per_ramp["out", d, c] += 1
    assert all(v <= colors * cap for v in per_link.values())
    assert all(v <= cap for v in per_link_color.values())
    assert all(v <= cap for v in per_ramp.values())
    assert res.lower_bound == lb and res.total_hops == len(res.links) >= lb
    load = np.zeros(rows * cols * 4, np.int64)
    for lk, v in per_link.items():
        load[lk] = v
    assert np.array_equal(res.link_load.reshape(-1), load)
    assert res.max_link_load == (max(per_link.values()) if per_link else 0)


def T(*rows_):
    a = np.array(rows_, dtype=np.int64).reshape(-1, 4)
    return Transfers(a[:, 0], a[:, 1], a[:, 2], a[:, 3], tag=np.arange(len(a)) + 100)


def run(alive, t, colors=4, dead_links=NO_LINKS, cap=1, **kw):
    res = route(alive, dead_links, t, colors, cap, RouteOptions(**kw))
    check_routes(alive, dead_links, t, res, colors, cap)
    return res


def test_clear_mesh_is_manhattan_and_fast_path():
    alive = np.ones((6, 6), bool)
    t = T((0, 0, 5, 5), (5, 5, 0, 0), (2, 3, 2, 3), (1, 4, 1, 0))
    res = run(alive, t)
    assert res.total_hops == res.lower_bound == 10 + 10 + 0 + 4
    assert res.iterations == 0 and res.stats["fast_path"] == 4
    assert len(res.path(2)) == 0


def test_link_ids_follow_the_schedule_format():
    alive = np.ones((3, 4), bool)
    res = run(alive, T((1, 1, 1, 2), (1, 1, 2, 1), (1, 1, 1, 0), (1, 1, 0, 1)))
    node = 1 * 4 + 1
    assert [res.path(i).tolist() for i in range(4)] == [[node * 4 + d] for d in range(4)]


def test_dead_row_with_one_gap():
    alive = np.ones((7, 9), bool)
    alive[3, :] = False
    alive[3, 6] = True                                  # the only way through
    t = T((0, 1, 6, 1), (6, 8, 0, 0), (1, 0, 5, 8))
    res = run(alive, t)
    for i in range(3):
        cores = {divmod(int(lk) // 4, 9) for lk in res.path(i)}
        assert (3, 6) in cores
    assert res.total_hops > res.lower_bound


def test_dead_column():
    alive = np.ones((6, 8), bool)
    alive[:5, 4] = False                                # a gap at the bottom row only
    res = run(alive, T((0, 0, 0, 7), (2, 7, 2, 0)))
    assert res.total_hops == 7 + 10 + 7 + 6


def test_checkerboard_of_dead_cores():
    r, c = np.indices((9, 9))
    alive = ~((r % 2 == 1) & (c % 2 == 1))               # every odd/odd core dead: a grid of streets
    t = T((0, 0, 8, 8), (8, 0, 0, 8), (1, 0, 1, 8), (0, 1, 8, 1), (4, 4, 0, 0))
    res = run(alive, t)
    hops = np.diff(res.offsets).tolist()
    assert hops == [16, 16, 8 + 2, 8 + 2, 8]              # odd row/col 1 needs a one-street detour


def test_dead_links_both_directions():
    alive = np.ones((3, 3), bool)
    dead = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0]], np.int32)   # every link between col 0 and col 1
    with pytest.raises(RoutingError, match="disconnect"):
        run(alive, T((0, 1, 0, 0)), dead_links=dead)
    dead = dead[:2]
    res = run(alive, T((0, 0, 0, 1), (0, 1, 0, 0)), dead_links=dead)
    assert res.total_hops == 2 * 5


def test_wall_disconnects_names_the_transfer():
    alive = np.ones((5, 5), bool)
    alive[:, 2] = False
    t = T((0, 0, 0, 1), (4, 0, 4, 4))
    with pytest.raises(RoutingError) as e:
        run(alive, t)
    assert e.value.index == 1 and e.value.tag == 101
    assert "transfer 1" in str(e.value) and "(4, 0) -> (4, 4)" in str(e.value)


def test_endpoint_on_dead_core():
    alive = np.ones((3, 3), bool)
    alive[1, 1] = False
    with pytest.raises(RoutingError, match="dead core"):
        run(alive, T((0, 0, 1, 1)))


def test_color_limit_on_a_single_link_names_the_link():
    alive = np.ones((1, 4), bool)                        # a 1-row mesh: no detour exists
    # 3 transfers over link (0,1)->E from distinct sources and destinations, 2 colors
    t = T((0, 0, 0, 2), (0, 1, 0, 3), (0, 1, 0, 2))
    with pytest.raises(RoutingError) as e:
        run(alive, t, colors=2)
    assert "(0,1)->E load 3/2" in str(e.value)


def test_ramp_limit_is_a_resource():
    alive = np.ones((3, 3), bool)
    t = T((1, 1, 0, 1), (1, 1, 1, 2), (1, 1, 2, 1))      # three routes leave core (1,1)
    with pytest.raises(RoutingError, match="ramp input of core"):
        run(alive, t, colors=2)
    res = run(alive, t, colors=3)
    assert sorted(res.color.tolist()) == [0, 1, 2]


def test_pathfinder_spreads_parallel_transfers():
    alive = np.ones((5, 8), bool)
    t = T(*[(2, i, 2, 7 - i) for i in range(4)])          # 4 nested transfers along row 2, 2 colors
    res = run(alive, t, colors=2)
    assert res.max_link_load <= 2 and res.iterations + res.stats["jogged"] >= 1
    assert res.total_hops > res.lower_bound               # some detour by a row or more


def test_parallel_crossings_spread_over_rows_by_patterns_without_search():
    # 40 transfers along the bottom row, each 40 columns east (a lane turn of the lane floorplan):
    # the pattern stage jogs them onto nearby rows, with no PathFinder search
    alive = np.ones((30, 90), bool)
    t = T(*[(29, i, 29, 40 + i) for i in range(40)])
    res = run(alive, t, colors=21)
    assert res.stats["jogged"] == 40 and res.stats["searched"] == 0
    assert res.max_link_load <= 21
    assert res.total_hops <= res.lower_bound + 2 * 40 * 4    # jogs of at most a few rows


def test_link_capacity_multiplies_routes_per_color():
    alive = np.ones((1, 4), bool)
    t = T((0, 0, 0, 2), (0, 1, 0, 3), (0, 1, 0, 2))
    with pytest.raises(RoutingError):
        run(alive, t, colors=1, cap=1)
    res = run(alive, t, colors=1, cap=3)
    assert res.colors_used == 1 and res.max_link_load == 3


def test_congestion_unresolvable_names_overused_links():
    alive = np.ones((2, 6), bool)
    alive[1, 2:4] = False                               # one-lane bridge along row 0, cols 1..4
    t = T((0, 0, 0, 5), (1, 0, 1, 5), (1, 1, 1, 4))
    with pytest.raises(RoutingError) as e:
        run(alive, t, colors=2, max_iterations=5)
    assert e.value.overused and "load 3/2" in str(e.value)


def test_deterministic():
    rng = np.random.default_rng(3)
    alive = rng.random((20, 20)) > 0.1
    ar, ac = np.nonzero(alive)
    a, b = rng.integers(0, len(ar), 200), rng.integers(0, len(ar), 200)
    t = Transfers(ar[a], ac[a], ar[b], ac[b])
    try:
        r1 = route(alive, NO_LINKS, t, 21)
    except RoutingError:
        pytest.skip("random case not routable")
    r2 = route(alive, NO_LINKS, t, 21)
    for f in ("offsets", "links", "color", "link_load", "ramp_in", "ramp_out"):
        assert np.array_equal(getattr(r1, f), getattr(r2, f))
    check_routes(alive, NO_LINKS, t, r1, 21)


def test_a_route_with_no_color_anywhere_bumps_the_one_route_in_its_way():
    """Coloring, capacity 1, one color on a 2 x 3 mesh: route i (0,0)->(0,1) can only take the
    link east of (0,0) (its other way out, south, is dead), where route j (1,0)->(0,0)->(0,1)->(1,1)
    holds the color.  ``repair`` finds no path for i; ``bump`` gives i the color and moves j to its
    one-hop path (1,0)->(1,1)."""
    from wafercc.passes.route import PathView
    from wafercc.passes.route_color import ColorState, bump, repair
    from wafercc.passes.route_grid import usable_links
    rows, cols, n = 2, 3, 6
    alive = np.ones((rows, cols), bool)
    ok = usable_links(alive, np.array([[0, 0, 1]], np.int32)).reshape(-1).astype(np.uint8).tobytes()
    lk = lambda r, c, d: (r * cols + c) * 4 + d                  # dir 0 E, 1 S, 2 W, 3 N
    pi, pj = [lk(0, 0, 0)], [lk(1, 0, 3), lk(0, 0, 0), lk(0, 1, 1)]
    offs = np.array([0, 1, 4], np.int64)
    paths = PathView(offs, np.array(pi + pj, np.int32), {})
    src, dst = [0 * cols + 0, 1 * cols + 0], [0 * cols + 1, 1 * cols + 1]
    state = ColorState(n, 1, 1)
    color = np.zeros(2, np.int16)
    state.take(state.resources(pj, src[1], dst[1]), 0)
    load = np.bincount(np.array(pi + pj), minlength=4 * n).astype(np.int64)
    assert not repair(0, paths, src, dst, state, color, rows, cols, ok, load, 64)
    assert bump(0, paths, src, dst, state, color, rows, cols, ok, load, 64)
    assert paths[0] == pi and paths[1] == [lk(1, 0, 0)] and color.tolist() == [0, 0]
    assert state.blocked(state.resources(pi, src[0], dst[0])) == 1          # i holds it now
    # nothing to bump into: j pinned too (its other link dead) leaves the state as it was
    ok2 = usable_links(alive, np.array([[0, 0, 1], [1, 0, 0]], np.int32)).reshape(-1).astype(np.uint8).tobytes()
    paths2 = PathView(offs, np.array(pi + pj, np.int32), {})
    state2, color2 = ColorState(n, 1, 1), np.zeros(2, np.int16)
    state2.take(state2.resources(pj, src[1], dst[1]), 0)
    before = dict(state2.full)
    assert not bump(0, paths2, src, dst, state2, color2, rows, cols, ok2, load.copy(), 64)
    assert {k: v for k, v in state2.full.items() if v} == {k: v for k, v in before.items() if v}
    assert paths2[1] == pj
