"""Displaced-tile assignment (passes/assign.py) and the spares layout (passes/floorplan.py)."""
import numpy as np
import pytest

from wafercc.passes.assign import AssignError, assign_displaced
from wafercc.passes.floorplan import choose_spare, floorplan_wafer, lane_geometry


def test_min_cost_beats_nearest_first():
    # tiles on dead cores 2 and 5, free cores 0 and 4: nearest-first from the tile at 2 takes 4 (it
    # ties with 0 and comes first in row-major order), leaving 5 -> 0 (total 7); the optimum is 3
    usable = np.ones((1, 10), bool)
    usable[0, [2, 5]] = False
    row = np.zeros(8, np.int32)
    col = np.array([1, 2, 3, 5, 6, 7, 8, 9], np.int32)          # free usable cores: 0 and 4
    r, c, res = assign_displaced(0, row, col, usable)
    assert res.status == "OPTIMAL" and res.displaced == 2 and res.cost == 3
    assert (c[1], c[3]) == (0, 4)
    assert usable[r, c].all() and len(set(c.tolist())) == 8


def test_assignment_spreads_a_cluster_over_many_free_cores():
    usable = np.ones((30, 30), bool)
    usable[10:16, 10:16] = False                                 # a dead die of 36 cores
    rr, cc = np.nonzero(np.ones((30, 30), bool))
    keep = (rr + cc) % 3 != 0                                    # tiles on two thirds of the cells
    r, c, res = assign_displaced(4, rr[keep], cc[keep], usable)
    assert res.displaced == int((~usable[rr[keep], cc[keep]]).sum()) > 8   # more than K_FIRST around
    assert usable[r, c].all()
    assert len(set(zip(r.tolist(), c.tolist()))) == len(r)
    again = assign_displaced(4, rr[keep], cc[keep], usable)
    assert (again[0] == r).all() and (again[1] == c).all()      # deterministic


def test_too_few_free_cores_fail_loudly():
    usable = np.ones((2, 4), bool)
    usable[0, 0] = False
    rr, cc = np.nonzero(np.ones((2, 4), bool))
    with pytest.raises(AssignError, match="wafer 7: 1 tiles sit on dead cores but only 0 good cores are free"):
        assign_displaced(7, rr, cc, usable)


@pytest.mark.parametrize("p,lane,spare", [(0.0, 58, 0), (0.01, 58, 1), (0.03, 58, 2), (0.5, 8, 2), (0.01, 2, 0)])
def test_choose_spare(p, lane, spare):
    assert choose_spare(p, lane) == spare


def test_spare_columns_sit_inside_the_lane_and_dead_rows_are_skipped():
    usable = np.ones((6, 17), bool)
    usable[4, :] = False
    usable[4, 0] = True                                          # mostly dead: this lane row is skipped
    g = lane_geometry(usable, 8, 1)
    assert g.width == 7 and 4 not in g.col_map.tolist()         # spare column in the middle of each lane
    assert g.row_of.tolist() == [0, 1, 2, 3, 5, 5, 3, 2, 1, 0] and g.capacity == 10 * 7


def test_spares_layout_keeps_chains_and_moves_only_the_displaced():
    alive = np.ones((40, 16), bool)
    alive[3, 2] = alive[30, 12] = False                          # the second one holds no tile
    fp = floorplan_wafer(0, alive, [[(1, 8, 14)]], 8, layout="spares", spare=1)
    assert fp.width == 7 and fp.assign.displaced == 1 and fp.assign.status == "OPTIMAL"
    assert alive[fp.core_row, fp.core_col].all()
    pos = np.stack([fp.core_row, fp.core_col], 1).reshape(8, 14, 2)
    down = np.abs(pos[1:] - pos[:-1]).sum(-1)
    assert (down == 1).sum() == down.size - 2                    # only the displaced tile's chains grow
    assert fp.assign.max_move == 2                               # (3, 2) -> the spare column at (3, 4)
