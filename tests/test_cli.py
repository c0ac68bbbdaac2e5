"""The wafercc command line: compile, models, ir verify, and one-line errors (exit 2)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from wafercc import __version__
from wafercc.cli import main


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err):
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("wafercc: error: ")
    assert "Traceback" not in err


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("WAFERCC_CACHE_DIR", str(d))
    monkeypatch.delenv("WAFERCC_NO_CACHE", raising=False)
    return d


@pytest.fixture(scope="module")
def real_onnx(tmp_path_factory):
    """A real (tiny, random-weight) exported ONNX model file."""
    import onnx
    import torch
    import transformers

    from wafercc.frontend.torch_frontend import to_onnx

    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=128, max_position_embeddings=256, head_dim=16)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    ids = torch.zeros(1, 8, dtype=torch.long)
    p = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    onnx.save(to_onnx(Wrap(), (ids, torch.ones_like(ids))), p)
    return p


def test_version(capsys):
    with pytest.raises(SystemExit) as ei:
        main(["--version"])
    assert ei.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_models(capsys):
    code, out, err = run(["models"], capsys)
    assert code == 0 and not err
    for key in ("gpt2", "llama-3.1-70b", "qwen3-235b-a22b", "minilm-l6"):
        assert key in out
    assert "70.60 B" in out
    code, out, _ = run(["models", "--format", "json"], capsys)
    data = json.loads(out)
    assert {d["key"] for d in data} >= {"llama-3.2-1b", "mixtral-8x7b"}


@pytest.mark.slow
def test_compile_reference_model(tmp_path, cache_dir, capsys):
    out_dir = tmp_path / "out"
    code, out, err = run(["compile", "llama-3.2-1b", "-o", str(out_dir)], capsys)
    assert code == 0, err
    assert "layers" in out and "16" in out
    assert "1.24 B" in out            # 1,235,814,400 parameters
    assert "KV bytes / token" in out and "decode FLOPs / token @ 8192" in out
    assert "attention" in out          # op histogram
    for f in ("model.ir", "model.ir.json", "summary.json"):
        assert (out_dir / f).is_file()
    assert not [p for p in os.listdir(out_dir) if p.endswith(".tmp")]
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["layers"] == 16 and summary["model"] == "llama-3.2-1b"
    assert abs(summary["params"] - 1_230_000_000) / 1_230_000_000 < 0.01
    assert summary["cached"] is False
    # the IR file verifies
    code, out, err = run(["ir", "verify", str(out_dir / "model.ir")], capsys)
    assert code == 0 and "ok" in out
    # second run: cache hit, json format
    code, out, err = run(["compile", "llama-3.2-1b", "-o", str(out_dir), "--format", "json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["cached"] is True and data["layers"] == 16


def test_compile_onnx_file_json_and_default_outdir(real_onnx, cache_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["compile", str(real_onnx), "--format", "json", "--no-cache"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["layers"] == 2 and data["source"] == "onnx" and data["model"] == "tiny"
    assert (tmp_path / "wafercc-out" / "tiny" / "model.ir").is_file()
    assert not cache_dir.exists()  # --no-cache


def test_compile_config_dir_layers(tmp_path, cache_dir, capsys):
    from wafercc import models_registry as reg
    d = tmp_path / "mymodel"
    d.mkdir()
    (d / "config.json").write_text(reg.config_text("llama-3.2-1b"))
    code, out, err = run(["compile", str(d), "--layers", "2", "-o", str(tmp_path / "o")], capsys)
    assert code == 0, err
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["layers"] == 2 and s["model"] == "mymodel" and s["model_type"] == "llama"


# -- errors: exit 2, one line, no traceback ------------------------------------------------------
def test_error_missing_file(tmp_path, cache_dir, capsys):
    code, out, err = run(["compile", str(tmp_path / "missing.onnx")], capsys)
    assert_one_line_error(code, err)
    assert "missing.onnx" in err
    code, out, err = run(["compile", str(tmp_path / "nodir" / "config.json")], capsys)
    assert_one_line_error(code, err)


def test_error_text_file_named_onnx(tmp_path, cache_dir, capsys):
    p = tmp_path / "x.onnx"
    p.write_text("this is not an onnx model\n")
    code, out, err = run(["compile", str(p)], capsys)
    assert_one_line_error(code, err)
    assert "x.onnx" in err


def test_error_truncated_onnx(real_onnx, tmp_path, cache_dir, capsys):
    data = real_onnx.read_bytes()
    p = tmp_path / "half.onnx"
    p.write_bytes(data[: len(data) // 2])
    code, out, err = run(["compile", str(p)], capsys)
    assert_one_line_error(code, err)
    assert "half.onnx" in err


def test_error_unknown_model_name(cache_dir, capsys):
    code, out, err = run(["compile", "no-such-model-xyz"], capsys)
    assert_one_line_error(code, err)
    assert "no-such-model-xyz" in err


def test_error_unknown_model_type(tmp_path, cache_dir, capsys):
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"model_type": "no_such_arch", "hidden_size": 8}))
    code, out, err = run(["compile", str(p)], capsys)
    assert_one_line_error(code, err)
    assert "no_such_arch" in err
    code, out, err = run(["compile", str(tmp_path)], capsys)  # the directory
    assert_one_line_error(code, err)


def test_error_bad_json_config(tmp_path, cache_dir, capsys):
    p = tmp_path / "config.json"
    p.write_text("{bad json")
    code, out, err = run(["compile", str(p)], capsys)
    assert_one_line_error(code, err)


def test_ir_verify_errors(tmp_path, capsys):
    code, _, err = run(["ir", "verify", str(tmp_path / "none.ir")], capsys)
    assert_one_line_error(code, err)
    bad = tmp_path / "bad.ir"
    bad.write_text("this is not IR\n")
    code, _, err = run(["ir", "verify", str(bad)], capsys)
    assert_one_line_error(code, err)
    assert "bad.ir" in err


def test_ir_verify_case_file(capsys):
    here = os.path.join(os.path.dirname(__file__), "ir_cases")
    files = sorted(f for f in os.listdir(here) if f.endswith(".ir"))
    code, out, err = run(["ir", "verify", os.path.join(here, files[0])], capsys)
    assert code == 0 and "ok" in out


def test_usage_errors_exit_2(capsys):
    for argv in (["compile"], ["frobnicate"], ["compile", "x", "--format", "xml"], []):
        with pytest.raises(SystemExit) as ei:
            main(argv) if argv else sys.exit(main(argv))
        assert ei.value.code == 2
        assert "Traceback" not in capsys.readouterr().err


def test_subprocess_error_has_no_traceback(tmp_path):
    p = tmp_path / "x.onnx"
    p.write_text("hello")
    r = subprocess.run([sys.executable, "-m", "wafercc.cli", "compile", str(p)], capture_output=True, text=True,
                       env={**os.environ, "WAFERCC_CACHE_DIR": str(tmp_path / "c")}, timeout=120)
    assert r.returncode == 2
    assert r.stderr.startswith("wafercc: error: ") and r.stderr.count("\n") == 1
    assert "Traceback" not in r.stderr


def _shipped_onnx(name="tiny-llama.onnx"):
    from importlib import resources
    p = resources.files("wafercc.models") / "onnx" / name
    if not p.is_file():
        pytest.skip(f"{name} not shipped (models/make_tiny.py)")
    return str(p)


def test_compile_shipped_onnx_text_then_cached(tmp_path, cache_dir, capsys):
    src = _shipped_onnx()
    out_dir = tmp_path / "o"
    code, out, err = run(["compile", src, "-o", str(out_dir)], capsys)
    assert code == 0, err
    assert "tiny-llama" in out and "layers" in out and "parameters" in out and "attention" in out
    for f in ("model.ir", "model.ir.json", "summary.json"):
        assert (out_dir / f).is_file()
    assert json.loads((out_dir / "summary.json").read_text())["cached"] is False
    code, out, err = run(["compile", src, "-o", str(out_dir), "--format", "json"], capsys)
    assert code == 0 and json.loads(out)["cached"] is True
    code, out, err = run(["ir", "verify", str(out_dir / "model.ir.json")], capsys)
    assert code == 0 and "2 layers" in out
