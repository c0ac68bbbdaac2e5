"""`wafercc simulate --compare` on an IR-only output directory (`compile --until ir`: the reference
kernels on the IR), on with-past files (an empty cache; a static export's traced cache filled by the
IR's own prefill, fed to onnxruntime as its past) and on position ids the exporter computes with an
offset (OPT's, RoBERTa's and BART's tables start at row 2): each computes what onnxruntime computes."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from corpus import build, variants

CASES = {("gpt2", "ts17-past"): 3, ("gpt2", "dynamo-past"): 1, ("opt", "ts17"): 3, ("roberta", "ts17"): 2,
         ("opt", "ts17-past"): 3, ("bart_encoder", "dynamo-dynamic"): 2,   # BART: a Range + 2
         ("bart_encoder", "dynamo"): 1,   # the static file's positions + 2, folded to a constant
         ("mixtral", "dynamo-past"): 1}   # rotary tables folded from position 4 (theta 1e6 read off them)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp")
    return out, {k: build.build_entry(str(out), k[0], variants.VARIANTS[k[1]]) for k in CASES}


def _compile_ir(path, outdir):
    """`wafercc compile FILE --until ir -o OUTDIR` as a user runs it; the IR it wrote."""
    from wafercc.ir import parse_graph
    p = subprocess.run([sys.executable, "-m", "wafercc.cli", "compile", str(path), "--until", "ir", "-o", str(outdir),
                        "--no-cache"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return parse_graph((outdir / "model.ir").read_text())


def _simulate(outdir, model, ids, steps, tmp_path):
    np.save(tmp_path / "ids.npy", ids)
    p = subprocess.run([sys.executable, "-m", "wafercc.cli", "simulate", str(outdir), "--model", str(model),
                        "--inputs", str(tmp_path / "ids.npy"), "--steps", str(steps), "--compare", "--format", "json"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and not p.stderr.strip(), (p.returncode, p.stdout[-500:], p.stderr)
    return json.loads(p.stdout)


@pytest.mark.parametrize("case", list(CASES), ids=lambda c: "-".join(c))
def test_compare_on_an_ir_only_output_directory(corpus, case, tmp_path):
    out, recs = corpus
    rec = recs[case]
    assert rec["export_error"] is None, rec
    path = out / rec["path"]
    g = _compile_ir(path, tmp_path / "ir")
    if case[1].endswith("past"):   # every cache knows the past input it stands for
        assert sorted(g.meta["past_inputs"].values()) == sorted(
            f"past.{i}.{kv}" for i in range(2) for kv in ("key", "value"))
    if case[0] in ("opt", "roberta", "bart_encoder"):
        assert list(g.meta["position_offsets"].values()) == [2]
    steps = CASES[case]
    # the static files: 4 traced cache tokens + their 8, or just their 8
    seq = 12 if case[1] == "dynamo-past" else 8 if case[1] == "dynamo" else 6
    ids = (np.arange(2 * seq).reshape(2, seq) * 7 + 3) % 128
    doc = _simulate(tmp_path / "ir", path, ids, steps, tmp_path)
    assert doc["ok"] and len(doc["errors"]) == steps and doc["max_error"] <= 1e-4
    assert doc["tiled_calls"] == {}   # the reference kernels ran: there are no tiles


def test_positions_without_their_offset_are_a_mismatch(corpus, tmp_path):
    """The offset matters: OPT fed plain positions (the recorded offset dropped) differs from onnxruntime."""
    from wafercc.sim.run import compare_with_onnxruntime
    out, recs = corpus
    path = out / recs[("opt", "ts17")]["path"]
    _compile_ir(path, tmp_path / "ir")
    ir = (tmp_path / "ir" / "model.ir").read_text()
    (tmp_path / "ir" / "model.ir").write_text(ir.replace('"position_offsets"', '"dropped_offsets"'))
    cmp = compare_with_onnxruntime(tmp_path / "ir", path, np.array([[3, 10, 17, 24]]), 1)
    assert not cmp.ok and max(cmp.errors) > 1e-2


@pytest.mark.parametrize("how", ["abort", "raise"])
def test_onnxruntime_failure_is_one_line(corpus, tmp_path, monkeypatch, how):
    """onnxruntime runs in a forked child: a process abort inside it (as on a hostile attribute) is a
    SimulationError naming it, and the compiler's process goes on."""
    import os

    import onnxruntime as ort

    from wafercc.sim.errors import SimulationError
    from wafercc.sim.run import compare_with_onnxruntime
    out, recs = corpus
    path = out / recs[("opt", "ts17")]["path"]
    _compile_ir(path, tmp_path / "ir")

    def run(self, *a, **k):
        if how == "abort":
            os.abort()
        raise RuntimeError("Non-zero status code returned while running Gather node\nsecond line")
    monkeypatch.setattr(ort.InferenceSession, "run", run)
    want = "crashed (SIGABRT)" if how == "abort" else "onnxruntime cannot run the model: Non-zero status"
    with pytest.raises(SimulationError, match=want.replace("(", r"\(").replace(")", r"\)")) as e:
        compare_with_onnxruntime(tmp_path / "ir", path, np.array([[3, 10, 17, 24]]), 1)
    assert "\n" not in str(e.value)
