"""Partition: CP-SAT against the exact dynamic programs, and the DPs against brute force."""
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from wafercc.passes.partition import (balance_dp, min_wafers_cpsat, min_wafers_dp, partition, stage_latencies,
                                      stages)
from wafercc.plan.options import SolverOptions

SOLVER = SolverOptions(seed=0, workers=1, time_limit_s=5.0)


def _contiguous(assign):
    return assign[0] == 0 and all(b - a in (0, 1) for a, b in zip(assign, assign[1:]))


def _fits(assign, sizes, caps):
    return all(sum(sizes[i] for i in r) <= caps[k] for k, r in enumerate(stages(assign)))


def _all_assignments(n, w):
    """Every contiguous split of n units into exactly w non-empty stages."""
    for cuts in itertools.combinations(range(1, n), w - 1):
        bounds = (0, *cuts, n)
        yield [k for k in range(w) for _ in range(bounds[k], bounds[k + 1])]


instances = st.integers(1, 9).flatmap(lambda n: st.tuples(
    st.lists(st.integers(1, 20), min_size=n, max_size=n),
    st.lists(st.integers(1, 9), min_size=n, max_size=n),
    st.lists(st.integers(15, 45), min_size=n + 1, max_size=n + 1)))


@settings(max_examples=60, deadline=None)
@given(instances)
def test_dp_matches_brute_force(inst):
    sizes, lat, caps = inst
    dp = min_wafers_dp(sizes, caps)
    feasible = [w for w in range(1, len(sizes) + 1)
                if any(_fits(a, sizes, caps) for a in _all_assignments(len(sizes), w))]
    if dp is None:
        assert not feasible
        return
    assert _contiguous(dp) and _fits(dp, sizes, caps)
    assert dp[-1] + 1 == min(feasible)
    for w in feasible[:3]:
        best = min(max(stage_latencies(a, lat)) for a in _all_assignments(len(sizes), w) if _fits(a, sizes, caps))
        bal = balance_dp(sizes, lat, caps, w)
        assert _fits(bal, sizes, caps) and max(stage_latencies(bal, lat)) == best


@settings(max_examples=40, deadline=None)
@given(instances)
def test_cpsat_agrees_with_dp(inst):
    sizes, lat, caps = inst
    dp = min_wafers_dp(sizes, caps)
    if dp is None:
        assert partition(sizes, lat, caps, SOLVER) is None
        return
    cp, stats = min_wafers_cpsat(sizes, caps, SOLVER)
    assert stats.status == "OPTIMAL"
    assert _contiguous(cp) and _fits(cp, sizes, caps)
    assert cp[-1] + 1 == dp[-1] + 1
    res = partition(sizes, lat, caps, SOLVER)
    assert res.wafers == dp[-1] + 1 and _fits(res.wafer_of_unit, sizes, caps)
    assert res.max_stage_latency_ns == max(stage_latencies(balance_dp(sizes, lat, caps, res.wafers), lat))
    assert [s.status for s in res.stats if s.solver == "cp-sat"] == ["OPTIMAL", "OPTIMAL"]


def test_more_wafers_spread_thinner():
    sizes, lat, caps = [10] * 12, [5] * 12, [60] * 12
    base = partition(sizes, lat, caps, SOLVER)
    assert base.wafers == 2 and base.max_stage_latency_ns == 30
    wide = partition(sizes, lat, caps, SOLVER, wafers=4)
    assert wide.wafers == 4 and wide.max_stage_latency_ns == 15


def test_unit_larger_than_any_wafer_is_infeasible():
    assert partition([5, 50, 5], [1, 1, 1], [40, 40, 40], SOLVER) is None


def test_heterogeneous_capacities():
    # wafer 1 lost capacity to defects: it takes fewer units
    res = partition([10] * 6, [1] * 6, [30, 10, 30], SOLVER)
    assert res.wafers == 3 and res.max_stage_latency_ns == 3
    assert len(stages(res.wafer_of_unit)[1]) == 1
    # a big last unit fits only the last wafer: the early wafers must take fewer units
    assert min_wafers_dp([1] * 8 + [16], [15] * 8 + [16]) == list(range(9))


def test_deterministic():
    sizes, lat, caps = [7, 3, 9, 4, 4, 8, 2, 6] * 4, [3, 1, 4, 1, 5, 9, 2, 6] * 4, [30] * 32
    a = partition(sizes, lat, caps, SOLVER)
    b = partition(sizes, lat, caps, SOLVER)
    assert a.wafer_of_unit == b.wafer_of_unit
