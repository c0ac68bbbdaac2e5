"""Band-serpentine floorplan and the transfers of a placed wafer."""
import numpy as np
import pytest

from wafercc.passes.floorplan import FloorplanError, floorplan_wafer, serpentine
from wafercc.passes.transfers import (KIND_ACTIVATION, KIND_BROADCAST, KIND_INTER_WAFER, KIND_REDUCTION,
                                      wafer_transfers)


def test_serpentine_visits_every_live_core_once_and_skips_dead_ones():
    alive = np.ones((6, 10), bool)
    alive[2, :] = False          # a dead row
    alive[4, 3] = False
    r, c = serpentine(alive, 4)
    assert len(r) == alive.sum()
    assert alive[r, c].all()
    assert len(set(zip(r.tolist(), c.tolist()))) == len(r)


def test_bands_alternate_direction_so_consecutive_bands_meet():
    alive = np.ones((5, 6), bool)
    r, c = serpentine(alive, 3)
    # band 0 ends at the bottom row, band 1 starts there
    assert (r[14], c[14]) == (4, 2) and (r[15], c[15]) == (4, 3)
    steps = np.abs(np.diff(r)) + np.abs(np.diff(c))
    assert steps.max() <= 3  # row ends jump back across the band only


def test_ops_take_consecutive_runs_in_order():
    alive = np.ones((8, 8), bool)
    alive[0, 0] = False
    fp = floorplan_wafer(0, alive, [10, 0, 20], 4)
    assert fp.op_first.tolist() == [0, 10, 10] and fp.op_count.tolist() == [10, 0, 20]
    assert not ((fp.core_row == 0) & (fp.core_col == 0)).any()
    assert fp.regions(1) == []
    assert all(r0 >= 0 and rows > 0 for r0, _, rows, _ in fp.regions(2))


def test_too_many_tiles_fail_loudly():
    with pytest.raises(FloorplanError, match="wafer 3: 65 tiles but 63 live cores"):
        alive = np.ones((8, 8), bool)
        alive[1, 1] = False
        floorplan_wafer(3, alive, [65], 4)


def test_transfers_cover_grid_chains_ops_and_edges():
    t = wafer_transfers([[(1, 2, 3)], [], [(2, 1, 2)]], first_wafer=False, last_wafer=False)
    pairs = set(zip(t.src.tolist(), t.dst.tolist(), t.kind.tolist()))
    # op 0: grid 2x3 tiles 0..5: broadcast along rows, reduction down columns
    assert {(0, 1, KIND_BROADCAST), (1, 2, KIND_BROADCAST), (3, 4, KIND_BROADCAST),
            (0, 3, KIND_REDUCTION), (2, 5, KIND_REDUCTION)} <= pairs
    # op 2: two experts of 1x2: no chain between experts
    assert (6, 7, KIND_BROADCAST) in pairs and (7, 8, KIND_BROADCAST) not in pairs
    assert (5, 6, KIND_ACTIVATION) in pairs                      # op 0 -> op 2 (op 1 holds no tiles)
    assert (-1, 0, KIND_INTER_WAFER) in pairs and (9, -1, KIND_INTER_WAFER) in pairs
    assert len(t) == 4 + 3 + 2 + 1 + 2
