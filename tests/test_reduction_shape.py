"""The reduction shape (--reduction tree|chain): the transfer builder, the tiler's step count and
the estimate follow it; the launch-style chain stays selectable (the calibration's CS-3 rows are
placed with it); both verify, and the tree is never slower."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from wafercc.cli import main
from wafercc.passes.cost_kernel import chain_paths, reduce_steps, segment_shape
from wafercc.passes.transfers import grid_transfers
from wafercc.plan.options import PlanError, PlanOptions
from wafercc.verify import verify_dir

TINY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models", "onnx", "tiny-llama.onnx")


def _depth(src, dst, n):
    """Links from each tile to its in-tree root."""
    parent = np.full(n, -1)
    parent[src] = dst
    depth = np.zeros(n, int)
    for t in range(n):
        p, d = t, 0
        while parent[p] >= 0:
            p, d = parent[p], d + 1
        depth[t] = d
    return depth


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 8, 13])
def test_column_reduction_edges(rows):
    _, _, cs, cd = grid_transfers(0, 1, rows, 2, reduction="chain")
    assert sorted(zip(cs.tolist(), cd.tolist())) == sorted((i * 2 + j, (i + 1) * 2 + j)
                                                          for i in range(rows - 1) for j in range(2))
    _, _, ts, td = grid_transfers(0, 1, rows, 2, reduction="tree")
    assert len(ts) == len(cs) == 2 * (rows - 1) and len(set(ts.tolist())) == len(ts)   # one parent each
    roots = set(range(2 * rows)) - set(ts.tolist())
    assert roots == {2 * (rows - 1), 2 * (rows - 1) + 1}        # both shapes end at the last row
    assert np.all(td // 2 > ts // 2)                             # partials move toward the root row
    assert _depth(cs, cd, 2 * rows).max() == max(rows - 1, 0)
    assert reduce_steps(rows, "chain") == max(rows - 1, 0)
    assert reduce_steps(rows, "tree") == (int(np.ceil(np.log2(rows))) if rows > 1 else 0)
    assert chain_paths("gemv", rows, 2, "chain")[2] == rows - 1
    assert chain_paths("gemv", rows, 2, "tree")[2] == reduce_steps(rows)


def test_kv_row_chain_is_the_broadcast_reversed():
    bs, bd, rs, rd = grid_transfers(0, 1, 2, 6, along_row=True, reduction="chain")
    assert (rs == bd).all() and (rd == bs).all()
    _, _, ts, td = grid_transfers(0, 1, 2, 6, along_row=True, reduction="tree")
    assert set(range(12)) - set(ts.tolist()) == {0, 6}          # rooted at each row's column 0


def test_bad_reduction_is_refused(capsys, tmp_path):
    with pytest.raises(PlanError, match="reduction 'ring'"):
        PlanOptions(reduction="ring")
    with pytest.raises(SystemExit) as e:          # argparse's choices: usage and one error line
        main(["compile", TINY, "-o", str(tmp_path / "o"), "--reduction", "ring"])
    assert e.value.code == 2 and "invalid choice: 'ring'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_tree_and_chain_both_verify_and_tree_is_not_slower(tmp_path):
    tps = {}
    for red in ("chain", "tree"):
        out = tmp_path / red
        assert main(["compile", TINY, "-o", str(out), "--context", "512", "--reduction", red,
                     "--no-curve", "--format", "json"]) == 0
        assert verify_dir(str(out)).ok
        doc = json.loads((out / "schedule.json").read_text())
        links = [g["reduction_links"] for w in doc["wafers"] for o in w["ops"] for g in o["grids"]]
        rows = [g["rows"] for w in doc["wafers"] for o in w["ops"] for g in o["grids"] if g["operand"] != "kv"]
        tps[red] = json.loads((out / "report.json").read_text())["performance"]["decode_tokens_per_s_per_user"]
        if red == "chain":
            assert max(links) == max(max(rows) - 1, max(links))   # a chain's steps are its rows - 1
        else:       # the routed root steps are the segmented tree's the tiler chose (1: binomial)
            grids = [g for w in doc["wafers"] for o in w["ops"] if "routes_of" not in o for g in o["grids"]]
            assert [g["reduction_links"] for g in grids] == [
                segment_shape(g["cols"] if g["operand"] == "kv" else g["rows"], g["segment"], g["head_segment"])[0]
                for g in grids]
    assert tps["tree"] >= tps["chain"]


def test_unknown_shape_is_an_error_not_a_tree():
    with pytest.raises(ValueError, match="reduction 'ring'"):
        grid_transfers(0, 1, 4, 2, reduction="ring")
    with pytest.raises(ValueError, match="reduction 'ring'"):
        reduce_steps(4, "ring")
