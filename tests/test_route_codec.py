"""Routed paths as hops and directions (wafercc/backend/route_codec.py, schedule version 3): the
writer's encoding decodes to the router's links, every reader takes both forms, and the verifier
still sees a path that walks off the mesh or does not add up."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from wafercc.backend.route_codec import decode, encode, route_paths
from wafercc.cli import main
from wafercc.verify import verify_dir
from wafercc.verify.files import ScheduleFileError

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = os.path.join(HERE, "..", "models", "onnx", "tiny-llama.onnx")
E, S, W, N = 0, 1, 2, 3


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("codec") / "out"
    assert main(["compile", TINY, "-o", str(out), "--wafers", "2", "--no-cache", "--no-curve", "-q"]) == 0
    return out


def test_paths_round_trip():
    cols = 6
    #           (0,0) E E S          (2,3) W N         (4,4) stays
    offsets = np.array([0, 3, 5, 5])
    links = np.array([(0 * cols + 0) * 4 + E, (0 * cols + 1) * 4 + E, (0 * cols + 2) * 4 + S,
                      (2 * cols + 3) * 4 + W, (2 * cols + 2) * 4 + N])
    src_r, src_c = np.array([0, 2, 4]), np.array([0, 3, 4])
    enc = encode(offsets, links, src_r, src_c, cols)
    assert enc["route_hops"].tolist() == [3, 2, 0] and enc["route_dirs"].tolist() == [E, E, S, W, N]
    off, back = decode(enc["route_hops"], enc["route_dirs"], src_r, src_c, cols)
    assert off.tolist() == offsets.tolist() and back.tolist() == links.tolist()


def test_encode_refuses_links_that_are_not_a_chain():
    cols = 6
    with pytest.raises(ValueError, match="route 0"):
        encode(np.array([0, 2]), np.array([0 * 4 + E, 5 * 4 + E]), np.array([0]), np.array([0]), cols)


def test_a_hop_from_outside_the_rectangle_has_no_link():
    _, links = decode(np.array([2]), np.array([W, W]), np.array([1]), np.array([0]), 4, 4)
    assert links.tolist() == [(1 * 4 + 0) * 4 + W, -1]      # west of column 0, then from nowhere


def test_a_compiled_wafer_stores_directions_that_decode_to_its_routes(compiled):
    with np.load(compiled / "wafer0.npz") as z:
        arrs = {k: z[k] for k in z.files}
    assert "route_links" not in arrs and arrs["route_dirs"].dtype == np.int8
    from wafercc.target import load_target
    cols = load_target("wse3").usable_cols
    off, links = route_paths(arrs, cols)
    assert off[-1] == arrs["route_hops"].sum() == len(links)
    # every link leaves the core the previous one entered, the first the source core
    core = links // 4
    step = np.array([1, cols, -1, -cols])[links % 4]
    first = off[:-1][arrs["route_hops"] > 0]
    src = (arrs["route_src_row"] * cols + arrs["route_src_col"])[arrs["route_hops"] > 0]
    assert (core[first] == src).all()
    inner = np.setdiff1d(np.arange(len(links)), first)
    assert (core[inner] == (core + step)[inner - 1]).all()
    assert verify_dir(str(compiled)).ok


def _tampered(compiled, tmp_path, edit):
    out = tmp_path / "t"
    shutil.copytree(compiled, out)
    with np.load(out / "wafer0.npz") as z:
        arrs = {k: z[k] for k in z.files}
    edit(arrs)
    np.savez(out / "wafer0.npz", **arrs)
    return str(out)


def test_the_verifier_sees_a_path_walked_off_the_mesh(compiled, tmp_path):
    def edit(a):
        i = int(np.flatnonzero(a["route_hops"] > 0)[0])
        start = int(a["route_hops"][:i].sum())
        a["route_src_row"][i] = 0                      # route i now starts on row 0 ...
        a["route_dirs"][start] = N                     # ... and its first hop goes north
    res = verify_dir(_tampered(compiled, tmp_path, edit))
    assert not res.ok and "route-off-mesh" in res.counts


def test_hops_that_do_not_add_up_are_a_file_error(compiled, tmp_path):
    def edit(a):
        a["route_dirs"] = a["route_dirs"][:-1]
    with pytest.raises(ScheduleFileError, match="route_dirs"):
        verify_dir(_tampered(compiled, tmp_path, edit))
