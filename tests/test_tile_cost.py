"""The shape search scores tilings with the target's calibrated cost model (passes/tile_shapes.py)."""
from __future__ import annotations

import dataclasses

import numpy as np

from target_util import preset_text, write_variant
from wafercc.passes.tile_shapes import Machine, matrix_frontier
from wafercc.target import load_target


def _fastest_rows(m: Machine) -> int:
    f = matrix_frontier("gemv", 8192, 8192, 1, 16, 1, 0, 1, m)
    return int(f.rows[int(np.argmin(f.cycles))])


def test_tiler_reads_the_calibrated_parameters(tmp_path):
    t = load_target("wse3")
    m = Machine.of(t, 16, 4)
    assert m.efficiency == float(t.cost_model["compute_efficiency"].value)
    assert m.reduce_step == float(t.cost_model["reduce_step"].value)
    lines = {ln.split(" =")[0]: ln for ln in preset_text("wse3").splitlines() if " = { value" in ln}
    bare = write_variant(tmp_path, lines["reduce_step"] + "\n", "")       # no reduce step: a plain chain
    assert Machine.of(load_target(bare), 16, 4).reduce_step == 0.0


def test_a_costly_reduction_step_keeps_partial_sum_chains_short():
    # chains: the receive-add steps grow with the rows (a binomial tree of big partials is bound by
    # the partials queued beside its root instead, whatever the step costs)
    m = dataclasses.replace(Machine.of(load_target("wse3"), 16, 4), reduction="chain")
    free = dataclasses.replace(m, reduce_step=0.0, efficiency=1.0)
    costly = dataclasses.replace(m, reduce_step=100.0)
    assert _fastest_rows(costly) < _fastest_rows(free)
