"""The Python examples of docs/api.md and the README run as written (in a scratch directory that
sees the repository's models/)."""
from __future__ import annotations

import contextlib
import io
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _blocks(path: str) -> list[str]:
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


def _run(code: str, tmp_path, monkeypatch) -> str:
    (tmp_path / "models").symlink_to(os.path.join(ROOT, "models"))
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<docs example>", "exec"), {"__name__": "__docs__"})
    return out.getvalue()


@pytest.mark.parametrize("i", range(len(_blocks("docs/api.md"))))
def test_api_doc_examples_run(i, tmp_path, monkeypatch):
    out = _run(_blocks("docs/api.md")[i], tmp_path, monkeypatch)
    assert out.strip(), "every example prints what it shows"


def test_api_doc_has_examples():
    assert len(_blocks("docs/api.md")) >= 5


@pytest.mark.slow
def test_readme_example_runs_and_matches_the_cli(tmp_path, monkeypatch):
    """The issue's example: llama-3.1-8b from Python, byte for byte the CLI's report.json."""
    from wafercc.cli import main
    (block,) = [b for b in _blocks("README.md") if "wafercc.compile(" in b]
    out = _run(block, tmp_path, monkeypatch)
    wafers, tps = out.splitlines()[0].split()
    assert int(wafers) >= 1 and float(tps) > 0
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["compile", "llama-3.1-8b", "-o", str(tmp_path / "cli"), "--format", "json"]) == 0
    assert (tmp_path / "cli" / "report.json").read_bytes() == \
        (tmp_path / "wafercc-out" / "llama-3.1-8b" / "report.json").read_bytes()
