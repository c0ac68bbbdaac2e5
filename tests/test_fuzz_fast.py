"""The fast fuzz subset CI runs: a few hundred cases across the families (docs/testing.md).

The cases are drawn by hypothesis from a fixed seed, so every run checks the same ones; they run
through the same harness as the long run (benchmarks/fuzz_long.py), two at a time, each in a forked
child or a new interpreter with 60 s and 6 GB.  A case may succeed or fail cleanly (a WaferccError,
exit 2 or 3 with one line); a traceback, a hang or a partial output fails the test, naming the
case's kept directory (its inputs and case.json; replay it with fuzz_long.py --replay).
"""
from __future__ import annotations

import pytest

from fuzz.families import FAMILIES, generate, warm
from fuzz.harness import CLASSES, Case, execute

SEED = 20240614
FAST = {"onnx": 90, "config": 70, "target": 70, "defects": 70, "cli": 8}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    warm()
    cases = [Case(f, FAMILIES[f].kind, p) for f, n in FAST.items() for p in generate(f, n, SEED)]
    return list(zip(cases, execute(cases, jobs=2, root=str(tmp_path_factory.mktemp("fuzz")))))


@pytest.mark.parametrize("family", sorted(FAST))
def test_no_traceback_hang_or_partial_output(outcomes, family):
    mine = [o for c, o in outcomes if c.family == family]
    assert len(mine) >= FAST[family] // 2, f"hypothesis drew only {len(mine)} {family} cases"
    assert all(o.klass in CLASSES for o in mine)
    bad = [o for o in mine if o.failed]
    assert not bad, "\n".join(f"{o.klass}: {o.signature}: {o.detail}\n  case: {o.case_dir}\n{o.top}" for o in bad[:5])


def test_the_cases_reach_past_validation(outcomes):
    """A fuzz that only ever meets the first check proves little: some cases of each call family
    must get through (ok) and some must be refused."""
    for family in ("target", "defects", "onnx"):
        kinds = {o.klass for c, o in outcomes if c.family == family}
        assert {"ok", "clean_error"} <= kinds, (family, kinds)
