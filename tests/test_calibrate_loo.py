"""The calibration fit and its leave-one-out (wafercc.perf.fit, run by benchmarks/calibrate.py --loo)
on fake rows whose published speeds come from known parameters: a small synthetic program timed by
both protocols, so each prediction costs milliseconds, not a placed 70B."""
from __future__ import annotations

import pytest

from wafercc.perf.evaluate import Program
from wafercc.perf.fit import FREE, fit, fit_multistart, leave_one_out, predict, row_params, sensitivity
from wafercc.perf.model import CostModelError
from wafercc.target import load_target

TRUE = (0.8, 300.0, 20.0)      # efficiency, op_sync, reduce_step the fake rows are generated from


def _grid(k, n, rows, cols, operand="w"):
    return {"grid": 0, "operand": operand, "experts": 1, "rows": rows, "cols": cols, "k": k, "n": n,
            "tile_k": -(-k // rows), "tile_n": -(-n // cols), "unit_bits": 16, "broadcast_hops": cols + rows,
            "broadcast_links": cols - 1, "reduction_hops": rows - 1, "reduction_links": rows - 1}


def _program(width: int, rows: int, cols: int, layers: int = 2) -> Program:
    """An embedding, then per layer a norm riding on the previous op, q and k in parallel, o after both."""
    ops = [{"id": 0, "name": "emb", "op": "embedding", "role": "lookup", "layer": None, "host": None,
            "flops": 1e4, "grids": [_grid(width, width, rows, cols, "table")], "act_in_hops": 7, "deps": []}]
    for layer in range(layers):
        b = len(ops)
        def op(i, grids, deps, kind="matmul", role="gemv", host=None):
            return {"id": i, "name": f"op{i}", "op": kind, "role": role, "layer": layer, "host": host,
                    "flops": 1e4, "grids": grids, "act_in_hops": 7, "deps": deps}
        ops += [op(b, [], [b - 1], "norm", "rider", host=b - 1),
                op(b + 1, [_grid(width, width, rows, cols)], [b]),
                op(b + 2, [_grid(width, width // 4, rows, cols // 4)], [b]),
                op(b + 3, [_grid(width, width, rows, cols)], [b + 1, b + 2])]
    return Program((tuple(ops),), (), 2.0, 8192, 1)


def _rows():
    """Fake rows of both protocols and both targets whose overheads weigh differently: MAC-bound
    (big tiles), chain-bound (long reduction chains), tree-reduced on square grids of several sides.
    Every parameter weighs in at least two rows, so any one row left out is still predicted."""
    wse2, wse3 = load_target("wse2"), load_target("wse3")
    rows = [{"label": "placed, big tiles", "protocol": "placed", "target": wse3, "prog": _program(4096, 8, 16)},
            {"label": "placed, long chains", "protocol": "placed", "target": wse3, "prog": _program(4096, 256, 64)},
            {"label": "placed, chains, WSE-2", "protocol": "placed", "target": wse2, "prog": _program(2048, 128, 32)}]
    for side in (16, 96, 720):
        rows.append({"label": f"one layer, side {side}", "protocol": "one-layer", "target": wse2,
                     "prog": _program(4096, 8, 16), "layers": 32, "side": side})
    for r in rows:
        r["published"] = predict(r, row_params(TRUE, r))
    return rows


def test_fit_recovers_known_parameters():
    res = fit(_rows())
    # the weak prior pulls a little toward full efficiency and zero overheads; exact rows barely move
    assert res["x"] == pytest.approx(TRUE, rel=0.03)
    assert all(abs(predict(r, row_params(res["x"], r)) / r["published"] - 1) < 0.005 for r in _rows())


def test_leave_one_out_on_consistent_rows_is_exact():
    rows = _rows()
    loo = leave_one_out(rows)
    assert [e["row"] for e in loo] == [r["label"] for r in rows]
    for e in loo:
        assert abs(e["in_sample_error"]) < 0.01
        assert abs(e["held_out_error"]) < 0.01, e
        assert tuple(e["held_out_params"][k] for k in FREE) == pytest.approx(TRUE, rel=0.05)


def test_an_inconsistent_row_has_a_large_held_out_error():
    rows = _rows()
    bad = 1
    rows[bad]["published"] *= 1.6           # a row no parameter set shared with the others explains
    loo = leave_one_out(rows)
    e = loo[bad]
    # the others are consistent: their fit finds the true parameters and so predicts the row
    # 1 / 1.6 - 1 = -37.5 % off; in sample, the fit bends its parameters toward the row and hides part
    assert tuple(e["held_out_params"][k] for k in FREE) == pytest.approx(TRUE, rel=0.05)
    assert e["held_out_error"] == pytest.approx(1 / 1.6 - 1, abs=0.02)
    assert abs(e["held_out_error"]) > abs(e["in_sample_error"]) + 0.1
    # the row that shares its weight on reduce_step (long chains on WSE-2) is now predicted badly too
    assert abs(loo[2]["held_out_error"]) > 0.2


def test_multistart_agrees_on_a_well_posed_fit_and_sensitivities_name_the_binding_parameter():
    rows = _rows()
    m = fit_multistart(rows)
    assert m["starts"] > 30 and m["improved"] is False
    assert m["x"] == pytest.approx(fit(rows)["x"])
    big, chains = sensitivity(rows[0], TRUE), sensitivity(rows[1], TRUE)
    assert big["compute_efficiency"] > 0.8 > abs(big["reduce_step_cycles"])         # big tiles: MAC-bound
    assert -chains["reduce_step_cycles"] > 0.6 > chains["compute_efficiency"]        # long chains: link-bound
    assert all(sensitivity(r, TRUE)["op_sync_plus_100_cycles"] < 0 for r in rows)


def test_bad_input_is_one_error():
    with pytest.raises(CostModelError, match="at least 2 rows"):
        leave_one_out(_rows()[:1])
    with pytest.raises(CostModelError, match="no rows"):
        fit([])
    r = dict(_rows()[0], protocol="guess")
    with pytest.raises(CostModelError, match="unknown protocol 'guess'"):
        predict(r, row_params(TRUE, r))
