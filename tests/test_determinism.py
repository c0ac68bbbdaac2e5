"""Same inputs, byte-identical outputs, across processes (string hashing differs per process)."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _compile(model, out, seed, extra=()):
    env = dict(os.environ, PYTHONHASHSEED=str(seed), WAFERCC_NO_CACHE="1")
    subprocess.run([sys.executable, "-m", "wafercc.cli", "compile", model, "-o", str(out), *extra],
                   check=True, env=env, capture_output=True, cwd=ROOT)
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


@pytest.mark.parametrize("model,extra", [
    (str(ROOT / "models" / "onnx" / "tiny-moe.onnx"), ()),
    ("gpt-oss-120b", ("--layers", "2", "--no-place")),     # placement determinism: the tiny MoE above
])
def test_outputs_are_byte_identical(tmp_path, model, extra):
    a = _compile(model, tmp_path / "a", 1, extra)
    b = _compile(model, tmp_path / "b", 2, extra)
    wafers = {n for n in a if n.startswith("wafer") and n.endswith(".npz")}
    placed = "--no-place" not in extra
    sched = {"schedule.json", "defects.npz", *wafers} if placed else set()
    assert bool(wafers) == placed
    assert set(a) == {"model.ir", "model.ir.json", "summary.json", "report.json", "compile.json",
                      ".wafercc-manifest.json", *sched}
    for name in ("model.ir", "model.ir.json", "report.json", ".wafercc-manifest.json", *sched):   # wall times live in compile.json
        assert a[name] == b[name], name
    ca, cb = (json.loads(x["compile.json"]) for x in (a, b))
    assert [s["name"] for s in ca["stages"]] == [s["name"] for s in cb["stages"]]
    # the summary differs only in the measured compile time and the output paths
    sa, sb = (json.loads(x["summary.json"]) for x in (a, b))
    for s in (sa, sb):
        s.pop("seconds")
        s.pop("outputs", None)
    assert sa == sb
