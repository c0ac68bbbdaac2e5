"""Rotary embeddings and split-heads slicing as real exporters write them (corpus entries, exported here).

Partial rotary (GPT-NeoX, Phi-3, GPT-J: the first part of every head rotates, the rest passes),
interleaved rotation (GPT-J's rotate-every-two), tables looked up by position in a precomputed
sinusoid table (GPT-J), tables folded to the traced positions by a static-shape dynamo export (Llama),
a fused per-head QKV split by shape-derived bounds (GPT-NeoX), and a multi-query fused QKV whose
key and value heads are picked by Gather or GatherND (Falcon): each lowers to one rotary op per
Q and K with the right rotary_dim, the IR's numbers equal torch's, and the IR computes what
onnxruntime computes.
"""
from __future__ import annotations

import pytest

import wafercc
from corpus import build, variants
from onnx_compare import ir_vs_onnxruntime

CASES = {  # (arch, variant): (rotary_dim, head_dim, interleaved)
    ("gpt_neox", "ts17"): (4, 16, False),        # rotary_pct 0.25; QKV split per head by Shape-derived bounds
    ("gpt_neox", "dynamo-noopt"): (4, 16, False),  # the same split as SplitToSequence along the head dim
    ("phi3", "dynamo-noopt"): (16, 16, False),   # full rotary with an empty pass-through slice
    ("gptj", "ts17"): (8, 16, True),             # interleaved, sinusoid table gathered by position
    ("llama", "dynamo"): (16, 16, False),        # static shapes: cos/sin folded to [1, 1, S, D] constants
    # multi-query fused QKV [b, s, heads + 2, d]: K and V heads picked by Gather (TorchScript) or by
    # Transpose to heads-first + GatherND of a lifted index constant (dynamo)
    ("falcon", "ts17"): (16, 16, False),
    ("falcon", "dynamo-noopt"): (16, 16, False),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("rotary"))
    return out, {k: build.build_entry(out, k[0], variants.VARIANTS[k[1]]) for k in CASES}


@pytest.mark.parametrize("case", list(CASES), ids=lambda c: "-".join(c))
def test_rotary_lowers_with_its_rotary_dim(corpus, case):
    out, recs = corpus
    rec = recs[case]
    assert rec["export_error"] is None, rec
    c = wafercc.compile(f"{out}/{rec['path']}", until="ir", cache=False)
    rotary = [n for n in c.graph.nodes if n.op == "rotary"]
    rdim, hd, interleaved = CASES[case]
    assert len(rotary) == 4  # q and k of two layers
    for n in rotary:
        assert n.attrs["head_dim"] == hd and (n.attrs.get("rotary_dim") or hd) == rdim
        assert bool(n.attrs.get("interleaved")) == interleaved
    assert c.facts.params == rec["params_torch"]
    assert c.facts.kv_bytes_per_token == rec["kv_bytes_per_token"]
    assert not [n for n in c.graph.nodes if n.op == "layout" and n.outputs[0] not in
                {v for m in c.graph.nodes for v in m.inputs.values()}]  # the pass-through slices are gone


@pytest.mark.parametrize("case", list(CASES), ids=lambda c: "-".join(c))
def test_rotary_computes_what_onnxruntime_computes(corpus, case):
    out, recs = corpus
    path = f"{out}/{recs[case]['path']}"
    assert ir_vs_onnxruntime(wafercc.compile(path, until="ir", cache=False).graph, path) <= 1e-4

def test_sliding_window_cache_trim_and_external_mask_data(tmp_path):
    """A static-shape dynamo export with past inputs of a sliding-window model: the mask is built
    from an initializer in model.onnx.data (read, not refused) and present.* keeps only the window's
    last positions (a Slice of the appended cache: still the cache state)."""
    rec = build.build_entry(str(tmp_path), "mistral_swa", variants.VARIANTS["dynamo-past"])
    assert rec["export_error"] is None, rec
    c = wafercc.compile(tmp_path / rec["path"], until="ir", cache=False)
    attn = [n for n in c.graph.nodes if n.op == "attention"]
    assert len(attn) == 2 and all(n.attrs["causal"] for n in attn)
    assert all("k_cache" in n.inputs for n in attn)
    assert c.facts.kv_bytes_per_token == rec["kv_bytes_per_token"] and c.facts.params == rec["params_torch"]


def test_static_export_with_folded_sinks(tmp_path):
    """gpt-oss from dynamo with its defaults: the per-head sinks parameter, expanded to the traced
    [batch, heads, S, 1] and folded into a constant concatenated to the scores, is read as one sink
    per head (declared [heads]; the loader takes one of the identical copies), counted once, and the
    split-halves rotary on folded cos/sin tables is one rotary op per q and k."""
    from wafercc.sim.weights import load_weights
    rec = build.build_entry(str(tmp_path), "gpt_oss", variants.VARIANTS["dynamo"])
    assert rec["export_error"] is None, rec
    path = tmp_path / rec["path"]
    c = wafercc.compile(path, until="ir", cache=False)
    attn = [n for n in c.graph.nodes if n.op == "attention"]
    assert len(attn) == 2 and all(c.graph.values[n.inputs["sinks"]].shape == (4,) for n in attn)
    assert len([n for n in c.graph.nodes if n.op == "rotary"]) == 4
    assert c.facts.params == rec["params_torch"] and c.facts.kv_bytes_per_token == rec["kv_bytes_per_token"]
    weights = load_weights(c.graph, path)
    sinks = weights[attn[0].inputs["sinks"]]
    assert sinks.shape == (4,) and len(set(sinks.tolist())) == 4
    assert ir_vs_onnxruntime(c.graph, path) <= 1e-4


def test_with_past_mask_fixed_to_the_traced_cache_is_refused(tmp_path):
    """Mistral's TorchScript with-past export computes its sliding-window mask with index arithmetic
    fixed to the traced cache length: probed after another cache it fails, and an empty cache would
    hide the window, so the file is refused in one line (not lowered without its window)."""
    from wafercc.errors import InputFileError
    rec = build.build_entry(str(tmp_path), "mistral_swa", variants.VARIANTS["ts17-past"])
    assert rec["export_error"] is None, rec
    with pytest.raises(InputFileError, match="fixed to the cache length it was traced with"):
        wafercc.compile(tmp_path / rec["path"], until="ir", cache=False)


def test_compare_refuses_a_static_shape_file_in_one_line():
    """simulate --compare feeding a static-shape export another shape: a SimulationError naming the
    input and its fixed shape, not onnxruntime's traceback."""
    import types

    import numpy as np

    from wafercc.sim.errors import SimulationError
    from wafercc.sim.run import _ort_feeds
    sess = types.SimpleNamespace(get_inputs=lambda: [types.SimpleNamespace(name="input_ids", shape=[2, 8])])
    ids = np.zeros((1, 8), np.int64)
    with pytest.raises(SimulationError, match=r"'input_ids' is fixed to \[2, 8\] \(a static-shape export\)"):
        _ort_feeds(sess, ids, np.ones_like(ids))
    assert _ort_feeds(sess, np.zeros((2, 8), np.int64), np.ones((2, 8), np.int64))["input_ids"].shape == (2, 8)


def test_loader_takes_one_copy_of_folded_sinks_and_rejects_differing_copies():
    """A weight declared [heads] from a stored [b, heads, S, 1] broadcast: one copy when all copies
    are equal, a SimulationError when they differ (not a silent pick)."""
    import numpy as np

    from wafercc.ir import DType, Graph, ValueKind
    from wafercc.sim.errors import SimulationError
    from wafercc.sim.weights import check_weights
    g = Graph("sinks")
    g.add_value("s", (4,), DType.F32, ValueKind.WEIGHT)
    stored = np.broadcast_to(np.arange(4, dtype=np.float32)[None, :, None, None], (2, 4, 8, 1)).copy()
    assert check_weights(g, {"s": stored})["s"].tolist() == [0, 1, 2, 3]
    stored[1, 2, 5, 0] = 9.0
    with pytest.raises(SimulationError, match="copies differ"):
        check_weights(g, {"s": stored})
