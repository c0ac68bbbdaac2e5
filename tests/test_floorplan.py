"""Lane floorplan (passes/floorplan.py) and the transfers of a placed wafer (passes/transfers.py)."""
import numpy as np
import pytest

from wafercc.passes.floorplan import (FloorplanError, choose_lane, curve, floorplan_wafer, grid_slots,
                                      tile_capacity)
from wafercc.passes.tile_shapes import narrow_limit, slots
from wafercc.passes.transfers import (KIND_ACTIVATION, KIND_BROADCAST, KIND_INTER_WAFER, KIND_REDUCTION,
                                      grid_transfers, wafer_transfers)


def test_curve_visits_live_cores_of_whole_lanes_once():
    alive = np.ones((6, 10), bool)
    alive[2, :9] = False         # a dead row, but for one core: still one connected part
    alive[4, 3] = False
    r, c = curve(alive, 4)       # lanes [0,4) and [4,8); columns 8, 9 are left over
    assert len(r) == alive[:, :8].sum() == tile_capacity(alive, 4, 0)
    assert alive[r, c].all() and c.max() == 7
    assert len(set(zip(r.tolist(), c.tolist()))) == len(r)


def test_lanes_alternate_direction_so_consecutive_lanes_meet():
    r, c = curve(np.ones((5, 6), bool), 3)
    assert (r[14], c[14]) == (4, 2) and (r[15], c[15]) == (4, 3)   # lane 0 ends at the bottom, lane 1 starts there
    assert r[-1] == 0


@pytest.mark.parametrize("width,lane", [(755, 58), (64, 64), (100, 50), (27, 27)])
def test_choose_lane_wastes_fewest_columns(width, lane):
    assert choose_lane(width) == lane


def test_wide_grid_chains_are_mesh_links_without_defects():
    lane, rows, cols = 8, 5, 19                          # 3 chunks of 8, 8, 3 columns
    assert cols > narrow_limit(lane)
    fp = floorplan_wafer(0, np.ones((40, 16), bool), [[(1, rows, cols)]], lane)
    assert fp.slots_used == slots(1, rows, cols, lane) == rows * 3 * lane
    pos = np.stack([fp.core_row, fp.core_col], 1).reshape(rows, cols, 2)
    down = np.abs(pos[1:] - pos[:-1]).sum(-1)             # (i, j) -> (i+1, j)
    assert (down == 1).all()
    right = np.abs(pos[:, 1:] - pos[:, :-1]).sum(-1)      # (i, j) -> (i, j+1) inside a chunk
    inner = (np.arange(1, cols) % lane) != 0
    assert (right[:, inner] == 1).all()
    assert len({tuple(p) for p in pos.reshape(-1, 2).tolist()}) == rows * cols


def test_dead_core_bends_chains_locally_and_never_wraps_across_the_lane():
    alive = np.ones((40, 16), bool)
    alive[2, 3] = False
    fp = floorplan_wafer(0, alive, [[(1, 6, 8)]], 8)
    pos = np.stack([fp.core_row, fp.core_col], 1).reshape(6, 8, 2)
    assert alive[fp.core_row, fp.core_col].all()
    down = np.abs(pos[1:] - pos[:-1]).sum(-1)
    right = np.abs(pos[:, 1:] - pos[:, :-1]).sum(-1)
    # chunk row 2 loses (2, 3) and takes (3, 0): tiles sorted by column form a staircase
    assert pos[2, 0].tolist() == [2, 0] and pos[2, 1].tolist() == [3, 0] and pos[2, 4].tolist() == [2, 4]
    assert down.max() <= 3 and right.max() <= 3           # before the staircase one chain wrapped 8 columns
    assert (down[:1] == 1).all() and (down[3:] == 1).all()  # the bend stays in the rows around the dead core


def test_grid_starting_mid_row_is_a_staircase():
    lane, rows, cols = 8, 4, 16                            # two chunks, starting 3 cores into a lane row
    fp = floorplan_wafer(0, np.ones((40, 16), bool), [[(1, 3, 1)], [(1, rows, cols)]], lane)   # (3, 1) is narrow
    pos = np.stack([fp.core_row, fp.core_col], 1)[3:].reshape(rows, cols, 2)
    assert (pos[..., 1] % lane == np.arange(cols) % lane).all()     # every tile keeps its lane column
    down = np.abs(pos[1:] - pos[:-1]).sum(-1)
    assert (down == 1).all()
    right = np.abs(pos[:, 1:] - pos[:, :-1]).sum(-1)
    inner = (np.arange(1, cols) % lane) != 0
    assert (right[:, inner] <= 2).all() and (right[:, inner] == 2).sum() == rows * 2   # one step per chunk row


def test_narrow_grid_packs_column_major_and_baseline_packs_everything_row_major():
    fp = floorplan_wafer(0, np.ones((10, 16), bool), [[(1, 4, 2)], [(2, 3, 9)]], 16, layout="row-major")
    assert fp.slots_used == 4 * 2 + 2 * 3 * 9
    assert fp.core_row[:8].tolist() == [0] * 8 and fp.core_col[:8].tolist() == list(range(8))
    # narrow in lanes: a column's rows on consecutive slots (its reduction tree along one lane row),
    # a row's next column ``rows`` slots on
    s, used = grid_slots(1, 4, 2, 16, baseline=False)
    assert used == 8 and s.tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    s, _ = grid_slots(2, 3, 2, 16, baseline=False, start=10)
    assert s.tolist() == [10, 13, 11, 14, 12, 15, 16, 19, 17, 20, 18, 21]


def test_narrow_grid_columns_reduce_along_a_lane_row():
    """A 12 x 3 grid in a 32-wide lane: each column's 12 rows sit side by side on one lane row, so
    its reduction tree's links are its own (they were 3 slots apart, interleaved with the other
    columns' trees)."""
    fp = floorplan_wafer(0, np.ones((10, 32), bool), [[(1, 12, 3)]], 32)
    pos = np.stack([fp.core_row, fp.core_col], 1).reshape(12, 3, 2)
    for j in range(3):
        col = pos[:, j]
        steps = np.abs(np.diff(col, axis=0)).sum(1)
        assert (steps == 1).sum() >= 10          # neighbours along the curve (one lane turn at most)
    assert len({tuple(p) for p in pos.reshape(-1, 2).tolist()}) == 36


def test_ops_take_consecutive_runs_in_order():
    alive = np.ones((8, 8), bool)
    alive[0, 0] = False
    fp = floorplan_wafer(0, alive, [[(1, 10, 1)], [], [(1, 4, 5)]], 4)
    assert fp.op_first.tolist() == [0, 10, 10] and fp.op_count.tolist() == [10, 0, 20]
    assert not ((fp.core_row == 0) & (fp.core_col == 0)).any()
    assert fp.regions(1) == []
    assert all(r0 >= 0 and rows > 0 for r0, _, rows, _ in fp.regions(2))


def test_too_many_tiles_fail_loudly():
    alive = np.ones((8, 8), bool)
    alive[1, 1] = False
    with pytest.raises(FloorplanError, match="wafer 3: its grids occupy 65 cores but the 8-column lanes hold 63 usable"):
        floorplan_wafer(3, alive, [[(1, 65, 1)]], 8)


@pytest.mark.parametrize("rows,cols,chunk", [(3, 5, 2), (7, 20, 8), (4, 16, 8), (1, 9, 4), (5, 3, 0)])
def test_broadcast_reaches_every_tile_of_a_row_once_from_its_first_tile(rows, cols, chunk):
    bs, bd, rs, rd = grid_transfers(0, 2, rows, cols, chunk)
    n = 2 * rows * cols
    recv = np.bincount(bd, minlength=n).reshape(2, rows, cols)
    assert (recv[:, :, 0] == 0).all() and (recv[:, :, 1:] == 1).all()
    parent = dict(zip(bd.tolist(), bs.tolist()))
    for t in range(n):                                  # follow parents back to column 0 of the same row
        seen = 0
        while t in parent:
            assert parent[t] // cols == t // cols       # never leaves its (expert, row)
            t = parent[t]
            seen += 1
            assert seen <= cols
        assert t % cols == 0
    # reductions: binomial trees down each column to its last row, distance p from it sending to
    # p with its lowest set bit cleared
    tile = lambda e, i, j: e * rows * cols + i * cols + j     # noqa: E731
    assert sorted(zip(rs.tolist(), rd.tolist())) == sorted(
        (tile(e, rows - 1 - p, j), tile(e, rows - 1 - (p & (p - 1)), j))
        for e in range(2) for p in range(1, rows) for j in range(cols))


def test_transfers_cover_grid_chains_ops_and_edges():
    t = wafer_transfers([[(1, 2, 3)], [], [(2, 1, 2)]], first_wafer=False, last_wafer=False)
    pairs = set(zip(t.src.tolist(), t.dst.tolist(), t.kind.tolist()))
    assert {(0, 1, KIND_BROADCAST), (1, 2, KIND_BROADCAST), (3, 4, KIND_BROADCAST),
            (0, 3, KIND_REDUCTION), (2, 5, KIND_REDUCTION)} <= pairs
    assert (6, 7, KIND_BROADCAST) in pairs and (7, 8, KIND_BROADCAST) not in pairs   # experts apart
    assert (5, 6, KIND_ACTIVATION) in pairs                      # op 0 -> op 2 (op 1 holds no tiles)
    assert (-1, 0, KIND_INTER_WAFER) in pairs and (9, -1, KIND_INTER_WAFER) in pairs
    assert len(t) == 4 + 3 + 2 + 1 + 2


def test_cp_sat_pads_the_curve_to_keep_a_chunk_off_the_lane_turn():
    # lane 8 on a 10 x 16 mesh: lanes of 80 cores.  A 3 x 1 narrow grid, then a 9 x 8 wide grid:
    # packed, the wide grid spans slots 3..75 (fine); a second 2 x 8 grid spans 75..91 and straddles
    # the turn at 80.  Slack 160 - 91 = 69: padding 5 before it moves it to 80..96.
    alive = np.ones((10, 16), bool)
    grids = [[(1, 3, 1)], [(1, 9, 8)], [(1, 2, 8)]]
    packed = floorplan_wafer(0, alive, grids, 8, refine=None)
    fp = floorplan_wafer(0, alive, grids, 8)
    r = fp.refine
    assert (r.status, r.straddling_before, r.straddling_after, r.gap) == ("OPTIMAL", 1, 0, 0.0)
    assert r.padding_used == 5 and fp.slots_used == packed.slots_used + 5
    hops = lambda f: np.abs(np.diff(np.stack([f.core_row, f.core_col], 1)[-16:].reshape(2, 8, 2), axis=0)).sum()
    assert hops(fp) == 8 < hops(packed)            # the grid's 8 column links are single hops again
    again = floorplan_wafer(0, alive, grids, 8)
    assert (again.core_row == fp.core_row).all() and (again.core_col == fp.core_col).all()


def test_cp_sat_is_skipped_without_slack():
    alive = np.ones((10, 16), bool)
    fp = floorplan_wafer(0, alive, [[(1, 20, 8)]], 8)      # 160 slots: the wafer is full
    assert fp.refine.status == "SKIPPED" and fp.refine.slack == 0
