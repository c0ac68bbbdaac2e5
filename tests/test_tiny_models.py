"""The checked-in tiny reference models (models/onnx/) are reproducible, small, runnable and lowerable."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from wafercc.frontend.onnx_frontend import lower_onnx
from wafercc.ir import model_facts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ONNX_DIR = os.path.join(ROOT, "models", "onnx")
MAKE_TINY = os.path.join(ROOT, "models", "make_tiny.py")
NAMES = ["tiny-llama", "tiny-moe"]
MAX_BYTES = 2 * 1024 * 1024


def _sha(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _path(name: str) -> str:
    return os.path.join(ONNX_DIR, f"{name}.onnx")


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    proc = subprocess.run([sys.executable, MAKE_TINY, "--out", str(out)], capture_output=True, text=True,
                          cwd=str(out), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_regeneration_is_byte_identical(regenerated, name):
    fresh = regenerated / f"{name}.onnx"
    assert _sha(fresh) == _sha(_path(name)), (
        f"models/onnx/{name}.onnx differs from a fresh `python models/make_tiny.py` run")


@pytest.mark.slow
def test_regenerated_sha256sums_match(regenerated):
    with open(os.path.join(ONNX_DIR, "SHA256SUMS")) as f:
        checked_in = f.read()
    assert (regenerated / "SHA256SUMS").read_text() == checked_in


def test_sha256sums_describe_checked_in_files():
    with open(os.path.join(ONNX_DIR, "SHA256SUMS")) as f:
        rows = [line.split() for line in f if line.strip()]
    assert sorted(fname for _, fname in rows) == sorted(f"{n}.onnx" for n in NAMES)
    for digest, fname in rows:
        assert _sha(os.path.join(ONNX_DIR, fname)) == digest, fname


@pytest.mark.parametrize("name", NAMES)
def test_file_is_small(name):
    assert os.path.getsize(_path(name)) < MAX_BYTES


@pytest.mark.parametrize("name", NAMES)
def test_onnxruntime_runs(name):
    import onnxruntime as ort

    sess = ort.InferenceSession(_path(name), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "attention_mask"]
    for batch, seq in [(1, 5), (3, 11)]:
        rng = np.random.default_rng(batch * 100 + seq)
        ids = rng.integers(0, 256, size=(batch, seq), dtype=np.int64)
        mask = np.ones((batch, seq), dtype=np.int64)
        (logits,) = sess.run(None, {"input_ids": ids, "attention_mask": mask})
        assert logits.shape == (batch, seq, 256)
        assert np.isfinite(logits).all()


@pytest.mark.parametrize("name", NAMES)
def test_onnxruntime_matches_torch(name):
    import onnxruntime as ort
    import torch

    from wafercc.models import make_tiny

    model = make_tiny.build(name)
    ids = torch.randint(0, 256, (2, 7), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(2, 7, dtype=torch.long)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.numpy()
    sess = ort.InferenceSession(_path(name), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)


def _torch_param_count(name: str) -> int:
    from wafercc.models import make_tiny

    # .parameters() yields a tied weight once
    return sum(p.numel() for p in make_tiny.build(name).parameters())


def test_tiny_llama_lowers():
    graph = lower_onnx(_path("tiny-llama"))
    facts = model_facts(graph)
    assert facts.layers == 2
    attn = [n for n in graph.nodes if n.op == "attention"]
    assert len(attn) == 2
    for node in attn:
        assert node.attrs["num_heads"] == 4
        assert node.attrs["num_kv_heads"] == 2
        assert node.attrs["head_dim"] == 16
        assert node.attrs["causal"] is True
    assert facts.params == _torch_param_count("tiny-llama")


def test_tiny_moe_lowers():
    graph = lower_onnx(_path("tiny-moe"))
    facts = model_facts(graph)
    assert facts.layers == 2
    assert sum(n.op == "moe" for n in graph.nodes) == 2
    assert all(n.attrs["num_heads"] == 4 and n.attrs["num_kv_heads"] == 2
               for n in graph.nodes if n.op == "attention")
    assert facts.params == _torch_param_count("tiny-moe")
