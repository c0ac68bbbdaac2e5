"""The corpus builder's records and the corpus benchmark's classifier (not whether the corpus lowers)."""
import json
import os
import sys

import pytest
import torch

from corpus import archs, build, variants

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import bench_corpus  # noqa: E402

ENTRIES = [("llama", "dynamo-noopt"), ("gpt2", "ts17"), ("bert", "dynamo")]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("corpus"))
    return out, [build.build_entry(out, a, variants.VARIANTS[v]) for a, v in ENTRIES]


def test_entries_export_with_their_numbers(corpus):
    out, records = corpus
    for rec in records:
        assert rec["export_error"] is None, rec
        assert os.path.exists(os.path.join(out, rec["path"]))
        # nn.Module.parameters() yields each tensor once, so it is the unique count
        assert rec["params_torch"] == sum(p.numel() for p in archs.build_model(rec["arch"]).parameters())
    llama, gpt2, bert = records
    assert llama["kv_bytes_per_token"] == 2 * 2 * 2 * 16 * 4  # 2 x layers x kv heads x head_dim x fp32
    assert gpt2["kv_bytes_per_token"] == 2 * 2 * 4 * 16 * 4 and bert["kv_bytes_per_token"] == 0
    assert bert["files"] == ["model.onnx", "model.onnx.data"]  # dynamo's default writes a side file


def test_tied_weights_count_once():
    model = archs.build_model("gpt2")
    every = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    assert archs.unique_param_count(model) == every - model.lm_head.weight.numel()


@pytest.mark.parametrize("arch", [a for a, (_, kind, _) in archs.ARCHS.items() if kind == "decoder"])
def test_kv_formula_matches_the_models_own_cache(arch):
    model = archs.build_model(arch)
    past = archs.example_inputs(arch, model, past=True)
    widths = [t.shape[1] * t.shape[3] for n, t in past.items() if n.startswith("past.")]
    assert archs.kv_bytes_per_token(arch) == sum(widths) * torch.finfo(torch.float32).bits // 8


def test_built_entries_are_reused(corpus):
    out, records = corpus
    path = os.path.join(out, records[1]["path"])
    before = os.stat(path).st_mtime_ns
    again = build.build_entry(out, "gpt2", variants.VARIANTS["ts17"])
    assert again == records[1] and os.stat(path).st_mtime_ns == before


def test_nodata_variant_drops_the_side_file(tmp_path):
    rec = build.build_entry(str(tmp_path), "gpt2", variants.VARIANTS["dynamo-nodata"])
    assert rec["export_error"] is None and rec["files"] == ["model.onnx"]
    with open(build.write_config(str(tmp_path), "gpt2")) as f:
        assert json.load(f)["architectures"] == ["GPT2LMHeadModel"]


def test_classifier():
    c = bench_corpus.classify
    assert c(0, "")["status"] == "ok"
    assert c(2, "some warning\nwafercc: error: unsupported operator 'Foo'\n") == \
        {"status": "refused", "error": "wafercc: error: unsupported operator 'Foo'"}
    tb = "Traceback (most recent call last):\n  File \"x.py\", line 1\nKeyError: 'w'\n"
    assert c(1, tb) == {"status": "traceback", "error": "KeyError: 'w'"}
    assert c(2, tb + "wafercc: error: boom\n")["status"] == "traceback"  # a refusal with a traceback is not clean
    assert c(-11, "")["status"] == "traceback"
    assert c(None, "", timed_out=True)["status"] == "timeout"


def test_a_bad_file_is_a_clean_refusal(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    res = bench_corpus.compile_one(str(bad), str(tmp_path / "out"), timeout=60)
    assert res["status"] == "refused" and "not an ONNX model" in res["error"]


def test_numerics_classifier_marks_a_mismatch_wrong():
    """simulate --compare's exit 1 (above the tolerance) is `wrong`, exit 0 keeps ok, a refusal is
    `not compared` with its line; the table cell says so."""
    n = bench_corpus.numerics
    doc = lambda e, match=True: json.dumps({"max_error": e, "tolerance": 1e-4, "tokens_match": match})  # noqa: E731
    assert n(0, doc(3e-7), "")["numerics"] == "ok"
    bad = n(1, doc(0.8, False), "")
    assert bad["numerics"] == "wrong" and bad["max_rel_error"] == 0.8
    assert bad["numerics_error"] == "max relative error 8.00e-01 (tolerance 0.0001), greedy tokens differ"
    nc = n(2, "", "wafercc: error: onnxruntime cannot run the model: boom\n")
    assert nc == {"numerics": "not compared", "numerics_error": "wafercc: error: onnxruntime cannot run the model: boom"}
    assert n(1, "", "Traceback (most recent call last):\nKeyError: 'x'\n")["numerics"] == "not compared"
    assert n(None, "", "", timed_out=True)["numerics_error"] == "timeout"
    row = dict(status="wrong", params_match=True, kv_match=True, error=bad["numerics_error"], arch="opt",
               variant="ts17", source="onnx")
    assert bench_corpus.code(row) == "W"
    assert bench_corpus.failure_class(row).startswith("wrong: max relative error")
    ok = dict(row, status="ok", numerics="not compared")
    assert bench_corpus.code(ok) == "ok?" and bench_corpus.code(dict(ok, params_match=False)) == "ok*?"


def test_compare_inputs_follow_the_files_shapes(corpus):
    """Dynamic files get 2 x 8 ids and several steps; a static file its own shape and one step."""
    out, records = corpus
    ids, steps = bench_corpus.compare_inputs(os.path.join(out, records[1]["path"]))   # gpt2 ts17: dynamic
    assert ids.shape == (2, 8) and steps == bench_corpus.STEPS
    ids, steps = bench_corpus.compare_inputs(os.path.join(out, records[2]["path"]))   # bert dynamo: static
    assert ids.shape == (2, 8) and steps == 1
