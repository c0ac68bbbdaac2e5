"""Rotary frequencies read off the file, as real exporters store them (corpus entries, exported here).

TorchScript keeps inv_freq as a Constant node, a static dynamo export folds cos/sin to per-position
tables, and gpt-oss's YaRN blends its inverse frequencies and scales cos and sin by an attention
factor; gpt-oss also multiplies the tables with the two halves of each head (tables half the head
wide, the whole head rotates).  Mixtral's theta is 1e6, not the op's default 10000: reading none of
these lowered without error and computed other numbers than onnxruntime (a relative error of 6e-3
for Mixtral, 6e-2 for gpt-oss).
"""
from __future__ import annotations

import numpy as np
import pytest

import wafercc
from corpus import build, variants
from onnx_compare import ir_vs_onnxruntime

CASES = {  # (arch, variant): (theta, rotary_dim, YaRN table and attention factor)
    ("mixtral", "ts17"): (1e6, 16, False),      # inv_freq a Constant node
    ("mixtral", "dynamo"): (1e6, 16, False),    # static shapes: cos/sin folded to [1, 1, S, D] initializers
    ("gpt_oss", "ts17"): (150000.0, 16, True),  # split halves, YaRN
    ("gpt_oss", "dynamo-noopt"): (150000.0, 16, True),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("rope"))
    return out, {k: build.build_entry(out, k[0], variants.VARIANTS[k[1]]) for k in CASES}


@pytest.mark.parametrize("case", list(CASES), ids=lambda c: "-".join(c))
def test_rotary_frequencies_match_onnxruntime(corpus, case):
    out, recs = corpus
    rec = recs[case]
    assert rec["export_error"] is None, rec
    path = f"{out}/{rec['path']}"
    c = wafercc.compile(path, until="ir", cache=False)
    theta, rdim, yarn = CASES[case]
    rotary = [n for n in c.graph.nodes if n.op == "rotary"]
    assert len(rotary) == 4
    for n in rotary:
        assert n.attrs["theta"] == pytest.approx(theta, rel=1e-4)
        assert (n.attrs.get("rotary_dim") or n.attrs["head_dim"]) == rdim
        s = n.attrs.get("scaling") or {}
        assert (s.get("rope_type") == "table") == yarn
        assert s.get("attention_factor", 1.0) == pytest.approx(1 + 0.1 * np.log(32.0) if yarn else 1.0)
    assert ir_vs_onnxruntime(c.graph, path) <= 1e-4
