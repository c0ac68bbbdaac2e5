"""The build cache (wafercc/build_cache.py): a rerun of the same compile copies its entry; every
input and option that decides the output is in the key; stale entries are rebuilt; the size limit
evicts the least recently used; ``wafercc cache list|clear``."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from wafercc.cli import main

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = os.path.join(HERE, "..", "models", "onnx", "tiny-llama.onnx")
CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 256, "intermediate_size": 512,
          "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1024,
          "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "torch_dtype": "bfloat16"}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("WAFERCC_CACHE_DIR", str(d))
    monkeypatch.setenv("WAFERCC_BUILD_CACHE_MB", "4096")
    monkeypatch.delenv("WAFERCC_NO_CACHE", raising=False)
    return d


def _compile(capsys, out, *args, model=TINY):
    code = main(["compile", str(model), "-o", str(out), "--no-curve", *args])
    text = capsys.readouterr().out
    assert code == 0, text
    with open(os.path.join(out, "compile.json"), encoding="utf-8") as f:
        record = json.load(f)
    return record.get("build_cache"), text


def _outputs(out, copy: bool = False) -> dict[str, bytes]:
    """The files of an output; without ``copy`` the two whose times vary between compiles left out."""
    skip = {"compile.json"} if copy else {"compile.json", "summary.json"}
    return {n: open(os.path.join(out, n), "rb").read() for n in sorted(os.listdir(out)) if n not in skip}


def test_a_rerun_is_a_copy_of_the_first_compile(cache, tmp_path, capsys):
    first, text1 = _compile(capsys, tmp_path / "a")
    again, text2 = _compile(capsys, tmp_path / "b", "--jobs", "2")     # where the work runs is not in the key
    assert first["hit"] is False and again == {**again, "hit": True, "key": first["key"]}
    assert _outputs(tmp_path / "a", copy=True) == _outputs(tmp_path / "b", copy=True)
    assert "build cache: the same compile as before" in text2
    # the same tables, and the wrote line names the new directory
    assert text2.split("build cache:")[0] == text1.split("wrote ")[0]
    assert f"{tmp_path / 'b'}{os.sep}report.json" in text2
    rebuilt, _ = _compile(capsys, tmp_path / "c", "--rebuild")
    assert rebuilt["hit"] is False and _outputs(tmp_path / "c") == _outputs(tmp_path / "a")


def test_the_json_summary_of_a_hit_names_the_new_outputs(cache, tmp_path, capsys):
    _compile(capsys, tmp_path / "a", "--format", "json")
    _, text = _compile(capsys, tmp_path / "b", "--format", "json")
    doc = json.loads(text)
    assert doc["outputs"]["report"] == str(tmp_path / "b" / "report.json") and doc["model"] == "tiny-llama"


@pytest.mark.parametrize("change", [("--context", "4096"), ("--seed", "3"), ("--defects", "none"),
                                    ("--layout", "spares"), ("--batch", "2")])
def test_every_option_is_in_the_key(cache, tmp_path, capsys, change):
    first, _ = _compile(capsys, tmp_path / "a")
    other, _ = _compile(capsys, tmp_path / "b", *change)
    assert other["hit"] is False and other["key"] != first["key"]


def test_the_models_and_the_targets_content_are_in_the_key(cache, tmp_path, capsys):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(CONFIG))
    first, _ = _compile(capsys, tmp_path / "a", model=cfg)
    assert _compile(capsys, tmp_path / "b", model=cfg)[0]["hit"] is True
    cfg.write_text(json.dumps({**CONFIG, "intermediate_size": 768}))          # same path, new content
    assert _compile(capsys, tmp_path / "c", model=cfg)[0]["hit"] is False
    from wafercc.target.loader import resolve
    target = tmp_path / "t.toml"
    shutil.copyfile(resolve("wse3"), target)
    a, _ = _compile(capsys, tmp_path / "d", "--target", str(target))
    with open(target, "a", encoding="utf-8") as f:
        f.write("\n# an edit\n")
    b, _ = _compile(capsys, tmp_path / "e", "--target", str(target))
    assert a["hit"] is False and b["hit"] is False and a["key"] != b["key"]


def test_a_stale_entry_is_rebuilt(cache, tmp_path, capsys):
    first, _ = _compile(capsys, tmp_path / "a")
    entry = cache / "builds" / first["key"]
    with open(entry / "report.json", "a", encoding="utf-8") as f:
        f.write(" ")                                           # edited in place
    again, _ = _compile(capsys, tmp_path / "b")
    assert again["hit"] is False and _outputs(tmp_path / "b") == _outputs(tmp_path / "a")
    assert _compile(capsys, tmp_path / "c")[0]["hit"] is True   # the rebuilt entry serves the next one


def test_the_size_limit_keeps_the_most_recently_used(cache, tmp_path, capsys, monkeypatch):
    first, _ = _compile(capsys, tmp_path / "a")
    size = sum(f.stat().st_size for f in (cache / "builds" / first["key"]).iterdir() if f.name != "entry.json")
    monkeypatch.setenv("WAFERCC_BUILD_CACHE_MB", str(1.5 * size / 2 ** 20))     # room for one entry
    second, _ = _compile(capsys, tmp_path / "b", "--context", "4096")
    assert sorted(p.name for p in (cache / "builds").iterdir()) == [second["key"]]
    assert _compile(capsys, tmp_path / "c")[0]["hit"] is False


def test_no_cache_neither_reads_nor_writes(cache, tmp_path, capsys):
    assert _compile(capsys, tmp_path / "a", "--no-cache")[0] is None
    assert not (cache / "builds").exists()


def test_cache_list_and_clear(cache, tmp_path, capsys):
    first, _ = _compile(capsys, tmp_path / "a")
    assert main(["cache", "list", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [e["key"] for e in doc["entries"]] == [first["key"]] and doc["entries"][0]["model"] == "tiny-llama"
    assert main(["cache", "clear"]) == 0
    assert "removed 1 build(s)" in capsys.readouterr().out
    assert main(["cache", "list", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == []
