"""Property tests of the Route pass on random small meshes, defects and transfers."""
from __future__ import annotations

from collections import deque

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_route import check_routes
from wafercc.passes.route import RouteOptions, RoutingError, Transfers, route


@st.composite
def cases(draw, max_side=8, max_n=12):
    rows = draw(st.integers(1, max_side))
    cols = draw(st.integers(1, max_side))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    alive = rng.random((rows, cols)) >= draw(st.sampled_from([0.0, 0.1, 0.25]))
    if not alive.any():
        alive[rng.integers(rows), rng.integers(cols)] = True
    nl = draw(st.integers(0, 4))
    dead = np.stack([rng.integers(0, rows, nl), rng.integers(0, cols, nl), rng.integers(0, 2, nl)], 1)
    dead = dead[((dead[:, 2] == 0) & (dead[:, 1] < cols - 1)) | ((dead[:, 2] == 1) & (dead[:, 0] < rows - 1))]
    ar, ac = np.nonzero(alive)
    n = draw(st.integers(0, max_n))
    a, b = rng.integers(0, len(ar), n), rng.integers(0, len(ar), n)
    t = Transfers(ar[a], ac[a], ar[b], ac[b], kind=rng.integers(0, 4, n))
    return alive, dead.astype(np.int32), t


def connected(alive, dead, s, d):
    rows, cols = alive.shape
    dl = {tuple(x) for x in dead.tolist()}
    seen, q = {s}, deque([s])
    while q:
        r, c = q.popleft()
        for nr, nc in ((r, c + 1), (r + 1, c), (r, c - 1), (r - 1, c)):
            if 0 <= nr < rows and 0 <= nc < cols and alive[nr, nc] and (nr, nc) not in seen:
                if (min(r, nr), min(c, nc), 0 if nr == r else 1) in dl:
                    continue
                seen.add((nr, nc))
                q.append((nr, nc))
    return d in seen


def ends(t, i):
    return (int(t.src_row[i]), int(t.src_col[i])), (int(t.dst_row[i]), int(t.dst_col[i]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), st.integers(1, 4), st.integers(1, 2))
def test_routes_are_legal_or_error_names_a_transfer(case, colors, cap):
    alive, dead, t = case
    try:
        res = route(alive, dead, t, colors, cap, RouteOptions(max_iterations=20))
    except RoutingError as e:
        assert 0 <= e.index < len(t) and f"transfer {e.index} " in str(e)
        s, d = ends(t, e.index)
        if "disconnect" in str(e):
            assert not connected(alive, dead, s, d)
        return
    check_routes(alive, dead, t, res, colors, cap)
    for i in range(len(t)):
        s, d = ends(t, i)
        assert connected(alive, dead, s, d)


@settings(max_examples=200, deadline=None)
@given(cases())
def test_enough_colors_always_routes_connected_transfers(case):
    alive, dead, t = case
    keep = [i for i in range(len(t)) if connected(alive, dead, *ends(t, i))]
    t = Transfers(*(a[keep] for a in (t.src_row, t.src_col, t.dst_row, t.dst_col, t.kind, t.tag)))
    colors = max(len(t), 1)
    res = route(alive, dead, t, colors)
    check_routes(alive, dead, t, res, colors)


@settings(max_examples=50, deadline=None)
@given(cases(max_side=12, max_n=40), st.integers(2, 6))
def test_same_inputs_same_arrays(case, colors):
    alive, dead, t = case
    outs = []
    for _ in range(2):
        try:
            r = route(alive, dead, t, colors)
            outs.append((r.offsets.tobytes(), r.links.tobytes(), r.color.tobytes(), r.iterations))
        except RoutingError as e:
            outs.append(str(e))
    assert outs[0] == outs[1]


def _medium_case():
    """A 40x40 mesh with 5 % dead cores and 600 random transfers up to 12 rows/cols long."""
    rng = np.random.default_rng(7)
    alive = rng.random((40, 40)) >= 0.05
    ar, ac = np.nonzero(alive)
    a = rng.integers(0, len(ar), 600)
    tr = np.clip(ar[a] + rng.integers(-12, 13, 600), 0, 39)
    tc = np.clip(ac[a] + rng.integers(-12, 13, 600), 0, 39)
    keep = alive[tr, tc] & (tr > 0) & (tr < 39) & (tc > 0) & (tc < 39)
    return alive, Transfers(ar[a][keep], ac[a][keep], tr[keep], tc[keep])


def test_random_medium_mesh_with_congestion():
    alive, t = _medium_case()
    res = route(alive, np.zeros((0, 3), np.int32), t, 6)
    check_routes(alive, np.zeros((0, 3), np.int32), t, res, 6)
    assert res.iterations >= 1 and res.stats["searched"] > 0
    assert res.total_hops <= 1.2 * res.lower_bound


def test_uncolorable_routes_are_repaired_per_color():
    alive, t = _medium_case()
    res = route(alive, np.zeros((0, 3), np.int32), t, 4)      # greedy leaves some routes uncolored
    check_routes(alive, np.zeros((0, 3), np.int32), t, res, 4)
    assert res.stats["color_repaired"] > 0 and res.colors_used == 4
