"""Negative tests: a valid hand-written schedule, edited to break one rule, is rejected naming it."""
from __future__ import annotations

import json

import numpy as np
import pytest
from target_util import tiny_target
from test_verify_writer import Sched, l_path, path_links, two_wafer
from verify_tamper import drop_routes

from wafercc.cli import main
from wafercc.verify import verify_dir

COLS = 8


def lid(r, c, d):
    return (r * COLS + c) * 4 + d


@pytest.fixture
def tiny(tmp_path):
    return tiny_target(tmp_path, width=15, height=10)   # usable 8 x 8


def reject(tiny, tmp_path, edit, code, *needles, sched=None):
    res = verify_dir((sched or two_wafer(tiny)).write(tmp_path / "out", edit))
    assert not res.ok
    assert code in res.counts, (code, [str(v) for v in res.violations])
    msgs = [str(v) for v in res.violations if v.code == code]
    for n in needles:
        assert any(n in m for m in msgs), (n, msgs)
    return res


def kill(defects, k, r, c):
    defects[f"alive_{k}"][r, c] = False


def test_tile_on_dead_core(tiny, tmp_path):
    def edit(doc, a, d):
        kill(d, 1, 5, 5)                                  # under lm_head's only tile (and its input route's end)
    res = reject(tiny, tmp_path, edit, "tile-dead-core", "wafer 1", "op 1 'lm_head'", "dead core (5, 5)")
    assert set(res.counts) == {"tile-dead-core", "route-dead-core"}


def test_tile_moved_onto_dead_core(tiny, tmp_path):
    def edit(doc, a, d):
        kill(d, 0, 7, 7)
        a[0]["tile_core_row"][0], a[0]["tile_core_col"][0] = 7, 7
    reject(tiny, tmp_path, edit, "tile-dead-core", "tile 0 (op 0 'embed' grid 0", "dead core (7, 7)")


def test_cut_route(tiny, tmp_path):
    def edit(doc, a, d):                                  # drop the second link of route 36 (a -> b)
        w = a[0]
        w["route_links"] = np.delete(w["route_links"], w["route_offsets"][36] + 1)
        w["route_offsets"][37:] -= 1
    reject(tiny, tmp_path, edit, "route-broken", "route 36 (activation, op 1 'layers.0.q_proj' -> op 2 "
           "'layers.1.q_proj', color 2", "is cut", "link (3, 1)->W")


def test_route_start_end_and_empty(tiny, tmp_path):
    def edit(doc, a, d):
        w = a[0]
        w["route_src_col"][0] = 1                        # route 0 starts at (0, 1)
        w["route_dst_col"][1] = 2                        # route 1 ends at (1, 2)
        w["route_links"] = np.delete(w["route_links"], 2)   # route 2 loses its link
        w["route_offsets"][3:] -= 1
    res = reject(tiny, tmp_path, edit, "route-start", "route 0 ")
    assert "route-end" in res.counts and "route-empty" in res.counts


def test_overfill_core(tiny, tmp_path):
    def edit(doc, a, d):
        a[1]["tile_bytes"][-1] = tiny.usable_bytes_per_core + 1   # lm_head's tile
    reject(tiny, tmp_path, edit, "sram-over-budget", "core (5, 5) holds 45057 B > budget 45056 B")


def test_reserved_color(tiny, tmp_path):
    def edit(doc, a, d):
        a[0]["route_color"][3] = 21                       # reserved by the runtime
    reject(tiny, tmp_path, edit, "color-not-allowed", "route 3 ", "color 21")


def test_schedule_colors_beyond_target(tiny, tmp_path):
    def edit(doc, a, d):
        doc["colors"] = list(range(24))
    reject(tiny, tmp_path, edit, "color-config", "not allowed: [21, 22, 23]")


def test_color_reused_on_link(tiny, tmp_path):
    s = two_wafer(tiny)
    s.route(0, 2, 1, 2, 0, l_path((1, 0), (1, 2)))        # color 0 again on (1,0)->E and (1,1)->E
    res = reject(tiny, tmp_path, None, "color-reuse", "link (1, 0)->E color 0 used 2 times (> 1) by routes 1, 38",
                 sched=s)
    assert res.counts["color-reuse"] == 2 and "port-conflict" in res.counts   # same source ramp, same color


def test_link_overload_with_capacity(tiny, tmp_path):
    s = Sched(tiny, 1)
    s.layers(0, 0, 0)
    o = s.op(0, "a", 0, (0, 0, 1, 2))
    for col in range(3):
        s.route(0, 0, o, o, col, [(0, 0), (0, 1)])

    def edit(doc, a, d):
        doc["colors"] = [0, 1]                             # 3 routes > 2 colors x capacity 1
        a[0]["route_color"][2] = 1
    res = reject(tiny, tmp_path, edit, "link-overload", "link (0, 0)->E carries 3 routes > 2", sched=s)
    assert "color-reuse" in res.counts


def test_ramp_port_conflict(tiny, tmp_path):
    s = Sched(tiny, 1)
    s.layers(0, 0, 0)
    o = s.op(0, "a", 0, (0, 0, 2, 2))
    s.route(0, 0, o, o, 5, [(0, 0), (0, 1)])
    s.route(0, 1, o, o, 5, [(0, 0), (1, 0)])             # same source, same color, other link
    reject(tiny, tmp_path, None, "port-conflict", "core (0, 0) ramp input color 5 used by 2 routes (> 1): 0, 1",
           sched=s)


def test_route_over_dead_link(tiny, tmp_path):
    def edit(doc, a, d):
        d["dead_links_0"] = np.array([[2, 1, 0]], np.int32)   # (2,1) -E- (2,2): route 5 runs (2,1)->(2,2)
    reject(tiny, tmp_path, edit, "route-dead-link", "route 5 ", "dead link (2, 1)->E")


def test_route_over_dead_link_reverse_direction(tiny, tmp_path):
    def edit(doc, a, d):
        d["dead_links_0"] = np.array([[2, 1, 1]], np.int32)   # (2,1) -S- (3,1): reduction 12 runs north over it
    reject(tiny, tmp_path, edit, "route-dead-link", "dead link (3, 1)->N")


def test_route_over_dead_core(tiny, tmp_path):
    s = two_wafer(tiny)
    s.route(0, 2, 1, 2, 4, l_path((1, 3), (1, 7)) + [(2, 7), (3, 7), (4, 7), (4, 6), (4, 5), (4, 4), (4, 3)])

    def edit(doc, a, d):
        kill(d, 0, 2, 7)
    reject(tiny, tmp_path, edit, "route-dead-core", "crosses dead core (2, 7) at link (1, 7)->S", sched=s)


def test_route_leaves_rectangle(tiny, tmp_path):
    def edit(doc, a, d):
        a[0]["route_links"][0] = lid(7, 7, 0)            # east of the last column
        a[0]["route_links"][1] = 8 * 8 * 4 + 3            # no such link
    res = reject(tiny, tmp_path, edit, "route-off-mesh", "leaves the rectangle at link (7, 7)->E")
    assert "route-broken" in res.counts or "route-start" in res.counts


def test_missing_tile(tiny, tmp_path):
    def edit(doc, a, d):
        for key in a[0]:
            if key.startswith("tile_"):
                a[0][key] = np.delete(a[0][key], 5)          # tile 5: op 1 grid 0 [0, 0, 3]
    reject(tiny, tmp_path, edit, "tile-missing", "op 1 'layers.0.q_proj' grid 0 tile [expert 0, row 0, col 3] "
           "is not placed")


def test_duplicated_tile(tiny, tmp_path):
    def edit(doc, a, d):
        a[0]["tile_col"][6] = 3                          # tile 6 ([0, 1, 0]) claims tile 5's [0, 0, 3]
        a[0]["tile_row"][6] = 0
    res = reject(tiny, tmp_path, edit, "tile-duplicate", "grid 0 tile [expert 0, row 0, col 3] placed 2 times "
                 "(tiles 5, 6)")
    assert "tile-missing" in res.counts                  # [0, 1, 0] is left unplaced


def test_tile_out_of_grid(tiny, tmp_path):
    def edit(doc, a, d):
        a[0]["tile_row"][3] = 9
        a[0]["tile_op"][4] = 17
    res = reject(tiny, tmp_path, edit, "tile-out-of-grid", "tile 3 (op 1 'layers.0.q_proj' grid 0 [expert 0, "
                 "row 9", "tile 4 (op 17 (no such op)")
    assert res.counts["tile-out-of-grid"] == 2


def test_op_on_wrong_wafer(tiny, tmp_path):
    def edit(doc, a, d):
        doc["wafers"][1]["ops"][0]["layer"] = 1            # layer 1 belongs to wafer 0
    reject(tiny, tmp_path, edit, "layer-wrong-wafer", "op 0 'layers.2.q_proj' of layer 1 on wafer 1, which "
           "holds layers 2-2")


def test_units_disagree_with_layers(tiny, tmp_path):
    def edit(doc, a, d):
        doc["wafers"][0]["units"].append("layer 5")
    reject(tiny, tmp_path, edit, "partition-units", "units [0, 1, 5] disagree with layers 0-1")


def test_route_endpoint_and_kind(tiny, tmp_path):
    s = two_wafer(tiny)
    s.route(0, 2, 1, 2, 5, l_path((7, 7), (6, 7)), tiles=(13, 14))   # tile 13 of op 1 is on (3, 3)
    s.route(0, 0, 1, 2, 6, l_path((1, 0), (2, 0)))        # a broadcast between two ops
    res = reject(tiny, tmp_path, None, "route-endpoint", "route 38: source core (7, 7) is not the core (3, 3) of "
                 "its source tile 13 (op 1 'layers.0.q_proj' grid 0 [expert 0, row 2, col 3])", sched=s)
    assert "route-kind" in res.counts


def test_inter_wafer_table(tiny, tmp_path):
    def edit(doc, a, d):
        doc["wafers"][1]["inter_wafer"] = []
        a[0]["route_dst_col"][37] = 6                     # no longer on the east edge column
        a[0]["route_links"] = a[0]["route_links"][:-1]
        a[0]["route_offsets"][-1] -= 1
    res = reject(tiny, tmp_path, edit, "inter-wafer", "route 4 is inter-wafer (kind 3) but no inter_wafer entry")
    assert "not on the west or east edge column" in " ".join(str(v) for v in res.violations)


def test_budget_beyond_target(tiny, tmp_path):
    def edit(doc, a, d):
        doc["budget_bytes_per_core"] = tiny.core.sram
    reject(tiny, tmp_path, edit, "budget", "exceeds the target's sram - sram_reserved")


def test_cli_exit_1_and_truncation(tiny, tmp_path, capsys):
    def edit(doc, a, d):
        d["alive_0"][:, :] = False                         # every tile and route of wafer 0 on dead cores
    out = two_wafer(tiny).write(tmp_path / "out", edit)
    assert main(["verify", out, "--max-violations", "3"]) == 1
    text = capsys.readouterr().out
    assert text.count("[tile-dead-core]") == 2 and text.count("[route-dead-core]") == 1 and "more" in text and "violation(s)" in text
    assert main(["verify", out, "--format", "json", "--max-violations", "2"]) == 1
    d = json.loads(capsys.readouterr().out)
    assert not d["ok"] and len(d["violations"]) == 2 and d["counts"]["tile-dead-core"] == 26
    assert d["wafers"][0]["violations"] == d["violation_count"] and d["wafers"][1]["violations"] == 0


def test_path_links_helper():
    assert path_links(COLS, [(0, 0), (0, 1), (1, 1), (1, 0), (0, 0)]) == [lid(0, 0, 0), lid(0, 1, 1),
                                                                           lid(1, 1, 2), lid(1, 0, 3)]


# issue 14: the tamperings the verifier used to miss; each is rejected naming the rule it breaks

def only(res, *codes):
    assert set(res.counts) == set(codes), ([str(v) for v in res.violations], codes)


def test_dropped_broadcast_route(tiny, tmp_path):
    res = reject(tiny, tmp_path, lambda doc, a, d: drop_routes(doc, a, 0, [5]), "broadcast-tree",
                 "op 1 'layers.0.q_proj' grid 0 expert 0 row 1: its 4 tiles form 2 trees, not one; from root tile 6 "
                 "the broadcast reaches 2 (not tiles 8, 9)")
    only(res, "broadcast-tree")


def test_dropped_reduction_route(tiny, tmp_path):
    res = reject(tiny, tmp_path, lambda doc, a, d: drop_routes(doc, a, 0, [11]), "reduction-tree",
                 "op 1 'layers.0.q_proj' grid 0 expert 0 column 0: its 3 tiles form 2 trees")
    only(res, "reduction-tree")


def test_dropped_activation_route(tiny, tmp_path):
    res = reject(tiny, tmp_path, lambda doc, a, d: drop_routes(doc, a, 0, [36]), "activation-missing",
                 "op 2 'layers.1.q_proj' holds tiles but no activation route brings it an input",
                 "op 1 'layers.0.q_proj' holds tiles but no activation route takes its output on")
    assert "reads the output of op 1 'layers.0.q_proj'" in str(res.violations)
    only(res, "activation-missing", "dataflow-unreached")


def test_dropped_inter_wafer_route(tiny, tmp_path):
    res = reject(tiny, tmp_path, lambda doc, a, d: drop_routes(doc, a, 0, [37]), "pipeline",
                 "no inter-wafer route from wafer 0's last op 2 to its edge, listed with dst_wafer 1")
    only(res, "pipeline")


def test_all_routes_dropped(tiny, tmp_path):
    def edit(doc, a, d):
        for k in (0, 1):
            drop_routes(doc, a, k, np.arange(a[k]["route_kind"].size))
    res = reject(tiny, tmp_path, edit, "broadcast-tree")
    only(res, "broadcast-tree", "reduction-tree", "activation-missing", "dataflow-unreached", "pipeline")


def test_tile_moved_to_free_live_core(tiny, tmp_path):
    def edit(doc, a, d):
        a[0]["tile_core_row"][7], a[0]["tile_core_col"][7] = 7, 0   # tile 7 (op 1 [0, 1, 1]) from (2, 1)
    res = reject(tiny, tmp_path, edit, "route-endpoint", "route 4: destination core (2, 1) is not the core (7, 0) "
                 "of its destination tile 7")
    only(res, "route-endpoint")
    assert res.counts["route-endpoint"] == 4            # its 4 routes: in and out of both trees


def test_cores_of_two_ops_tiles_swapped(tiny, tmp_path):
    def edit(doc, a, d):                                  # tile 13 (op 1, on (3, 3)) <-> tile 14 (op 2, on (4, 0))
        for key in ("tile_core_row", "tile_core_col"):
            a[0][key][[13, 14]] = a[0][key][[14, 13]]
    res = reject(tiny, tmp_path, edit, "route-endpoint", "source core (3, 3) is not the core (4, 0) of its source "
                 "tile 13", "destination core (4, 0) is not the core (3, 3) of its destination tile 14")
    only(res, "route-endpoint")


def test_layer_on_two_wafers(tiny, tmp_path):
    def edit(doc, a, d):
        doc["wafers"][1]["layers"] = [1, 2]
        doc["wafers"][1]["units"].append("layer 1")
    res = reject(tiny, tmp_path, edit, "layer-duplicate", "layer 1 is on wafer 0 and on wafer 1")
    only(res, "layer-duplicate", "layer-order")


def test_unit_on_two_wafers(tiny, tmp_path):
    def edit(doc, a, d):
        doc["wafers"][1]["units"].append("embed")
    reject(tiny, tmp_path, edit, "layer-duplicate", "unit 'embed' is on wafer 0 and on wafer 1")


def test_layer_on_no_wafer(tiny, tmp_path):
    def edit(doc, a, d):
        w = doc["wafers"][1]
        w["layers"], w["units"], w["ops"][0]["layer"] = [3, 3], ["head", "layer 3"], 3
    only(reject(tiny, tmp_path, edit, "layer-missing", "layers 2 are on no wafer (the wafers hold 0-1, 3)"),
         "layer-missing")


def test_empty_wafer_list(tiny, tmp_path):
    def edit(doc, a, d):
        doc["wafers"] = []
    only(reject(tiny, tmp_path, edit, "plan-empty", "lists no wafers"), "plan-empty")


def test_timeline_names_other_wafers(tiny, tmp_path):
    def edit(doc, a, d):
        doc["timeline"] = {"wafers": [{"wafer": 0}]}
    reject(tiny, tmp_path, edit, "plan-wafers", "timeline.wafers lists wafers [0], the schedule has 2")


def test_link_capacity_above_target(tiny, tmp_path):
    s = two_wafer(tiny)
    s.route(0, 2, 1, 2, 0, l_path((1, 0), (1, 2)))        # color 0 twice on a link: legal only at capacity 2

    def edit(doc, a, d):
        doc["link_capacity"] = 2
    res = reject(tiny, tmp_path, edit, "link-capacity", "link_capacity 2 exceeds the target's 1", sched=s)
    assert "color-reuse" in res.counts                    # the routes are checked at the target's capacity


def test_broadcast_cycle(tiny, tmp_path):
    s = two_wafer(tiny)
    s.route(0, 0, 1, 1, 6, l_path((1, 3), (1, 0)))        # tile 5 -> tile 2 closes row 0 of op 1 into a ring
    res = reject(tiny, tmp_path, None, "broadcast-tree", "row 0: its broadcast routes form a cycle (no root tile)",
                 sched=s)
    assert "activation-endpoint" in res.counts            # embed -> op 1 now enters a tile that has a parent


def test_two_broadcast_parents(tiny, tmp_path):
    s = two_wafer(tiny)
    s.route(0, 0, 1, 1, 6, l_path((1, 3), (1, 1)))        # tile 5 -> tile 3, which tile 2 feeds already
    reject(tiny, tmp_path, None, "broadcast-tree", "receives its broadcast on 2 routes", sched=s)


def test_broadcast_across_rows(tiny, tmp_path):
    s = two_wafer(tiny)
    s.route(0, 0, 1, 1, 6, l_path((1, 0), (2, 0)))        # row 0 -> row 1: not one grid row
    reject(tiny, tmp_path, None, "broadcast-tree", "route 38 (broadcast) joins tile 2", "not two tiles of one grid row",
           sched=s)


def test_activation_enters_off_root(tiny, tmp_path):
    s = two_wafer(tiny)                                   # a -> b ends at b's tile [0, 0, 3] on (4, 3), not [0, 0, 0]
    s.routes[0][36] = ((3, 3), (4, 3), 2, 1, 2, 2, path_links(COLS, l_path((3, 3), (4, 3))), (13, 17))
    res = reject(tiny, tmp_path, None, "activation-endpoint", "route 36 (activation) enters tile 17 (op 2 "
                 "'layers.1.q_proj' grid 0 [expert 0, row 0, col 3]), which is not the root of its broadcast tree",
                 sched=s)
    only(res, "activation-endpoint")


def test_activation_backwards(tiny, tmp_path):
    s = two_wafer(tiny)
    s.route(0, 2, 2, 1, 6, l_path((4, 0), (1, 0)))        # op 2 -> op 1
    reject(tiny, tmp_path, None, "dataflow-order", "runs from op 2 'layers.1.q_proj' back to op 1", sched=s)


def test_route_tile_index_and_op(tiny, tmp_path):
    def edit(doc, a, d):
        a[0]["route_src_tile"][35] = 99                   # no such tile
        a[0]["route_dst_tile"][36] = 13                   # a tile of op 1, the route names op 2
    reject(tiny, tmp_path, edit, "route-tile", "route 35: source tile 99 is not a tile index of the wafer (0..25)",
           "route 36: destination tile 13 is a tile of op 1 'layers.0.q_proj', the route names op 2")


def test_pipeline_bytes_disagree(tiny, tmp_path):
    def edit(doc, a, d):
        doc["wafers"][1]["inter_wafer"][0]["bytes_per_token"] = 32
    only(reject(tiny, tmp_path, edit, "pipeline", "wafer 0 sends 64 bytes per token to wafer 1, which lists 32"),
         "pipeline")


def _kv_wafer(doc, layers):
    w = doc["wafers"][1]
    w["role"], w["layers"] = "kv", [layers[0], layers[-1]]
    w["units"] = ["head"] + [f"layer {i}" for i in layers]
    w["ops"][0]["layer"] = layers[-1]


def test_dedicated_kv_wafer_holds_pipeline_layers(tiny, tmp_path):
    res = verify_dir(two_wafer(tiny).write(tmp_path / "out", lambda doc, a, d: _kv_wafer(doc, [0, 1])))
    assert res.ok, [str(v) for v in res.violations]    # a KV wafer's layers are also a pipeline wafer's


def test_dedicated_kv_wafer_layer_no_pipeline_runs(tiny, tmp_path):
    only(reject(tiny, tmp_path, lambda doc, a, d: _kv_wafer(doc, [2]), "layer-missing",
                "kv wafers hold layers 2, which no pipeline wafer runs"), "layer-missing")


def test_long_rider_chain_is_no_recursion(tiny, tmp_path):
    s = Sched(tiny, 1)
    s.layers(0, 0, 0)
    a = s.op(0, "a", 0, (0, 0, 1, 1))
    ops = s.doc["wafers"][0]["ops"]
    for i in range(1, 3001):                              # 3000 tile-less riders, each reading the previous
        ops.append({"id": i, "name": f"r{i}", "layer": 0, "grids": [], "deps": [i - 1], "host": a})
    b = s.op(0, "b", 0, (0, 2, 1, 1), deps=[3000])
    s.route(0, 2, a, b, 2, l_path((0, 0), (0, 2)))
    res = verify_dir(s.write(tmp_path / "out"))
    assert res.ok, [str(v) for v in res.violations]


def test_trailing_layer_on_no_wafer(tiny, tmp_path):
    # the model's units say 4 layers, the wafers hold 0-2: no gap inside the range, so only the
    # units list shows the last layer was dropped
    def edit(doc, a, d):
        doc["units"] = ["layer 0", "layer 1", "layer 2", "layer 3"]
    reject(tiny, tmp_path, edit, "layer-missing", "layers 3 of the model are on no wafer (the model has 4 layers)")


def test_unit_on_no_wafer(tiny, tmp_path):
    def edit(doc, a, d):
        doc["units"] = ["embed", "layer 0", "layer 1", "layer 2", "head", "mtp"]
    reject(tiny, tmp_path, edit, "layer-missing", "unit 'mtp' is on no wafer")


def test_units_listed_match_wafers(tiny, tmp_path):
    def edit(doc, a, d):
        doc["units"] = ["embed", "layer 0", "layer 1", "layer 2", "head"]
    assert verify_dir(two_wafer(tiny).write(tmp_path / "out", edit)).ok


def _tree_column(tiny):
    """two_wafer with op a's column 0 reducing as a tree: rows 3 and 2 both send to root row 1
    (route 10 runs (3,0) -> (2,0) -> (1,0) on its own color), as the transfer builder's trees do."""
    s = two_wafer(tiny)
    a = 1
    cores = [(3, 0), (2, 0), (1, 0)]
    s.routes[0][10] = (cores[0], cores[-1], 1, a, a, 4, path_links(s.cols, cores),
                       (s.tile_at(0, a, cores[0]), s.tile_at(0, a, cores[-1])))
    return s


def test_a_reduction_tree_passes(tiny, tmp_path):
    res = verify_dir(_tree_column(tiny).write(tmp_path / "out"))
    assert res.ok, [str(v) for v in res.violations]


def test_a_reduction_tree_with_a_tile_sending_twice_fails(tiny, tmp_path):
    s = _tree_column(tiny)
    s.route(0, 1, 1, 1, 5, [(3, 0), (2, 0)])           # row 3 also sends to row 2: two parents
    res = verify_dir(s.write(tmp_path / "out"))
    assert not res.ok and "reduction-tree" in res.counts
    assert any("sends its partial sums on 2 routes" in str(v) for v in res.violations)
