"""The wheel and the editable install expose ir/, passes/ and models/ only as wafercc.ir, wafercc.passes and
wafercc.models (with the reference configs and tiny ONNX models as package data)."""
from __future__ import annotations

import glob
import importlib.util
import os
import site
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ["pyproject.toml", "README.md", "wafercc", "ir", "passes", "models"]

pytestmark = pytest.mark.slow


def _run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


# Can this interpreter's setuptools build the project without pip fetching one (pyproject's
# build-system: setuptools>=68 and a bdist_wheel, built in since setuptools 70.1)?  A venv made by
# ``python -m venv`` holds the setuptools its ensurepip bundles (65 on Python 3.11), too old.
_CAN_BUILD = r"""
import importlib.util, sys
try:
    import setuptools
    v = tuple(int(p) for p in setuptools.__version__.split(".")[:2])
except Exception:
    sys.exit(1)
sys.exit(0 if v >= (68, 0) and (v >= (70, 1) or importlib.util.find_spec("wheel")) else 1)
"""


def _pip_build_flags(python: str = sys.executable) -> list[str]:
    # Build with the setuptools ``python`` already has (fast, works offline); without a suitable
    # one, pip fetches the build backend into an isolated environment.
    ok = subprocess.run([python, "-c", _CAN_BUILD], capture_output=True, timeout=60).returncode == 0
    return ["--no-build-isolation"] if ok else []


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A copy of the project's sources, so building leaves no build/ or egg-info in the work tree."""
    dst = tmp_path_factory.mktemp("src") / "wafercc-src"
    dst.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in SOURCES:
        src = os.path.join(ROOT, name)
        if os.path.isdir(src):
            shutil.copytree(src, dst / name, ignore=ignore)
        else:
            shutil.copy2(src, dst / name)
    return dst


@pytest.fixture(scope="module")
def wheel(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-q", "-w", str(out), *_pip_build_flags()],
         cwd=str(source))
    (whl,) = glob.glob(str(out / "wafercc-*.whl"))
    return whl


# Run by the test venv at start-up: this interpreter's site directories (a virtualenv's and, with
# --system-site-packages, the base's), their .pth files processed except wafercc's own (an editable
# install of the work tree must not be what the test imports).
_SEE_DEPS = r"""
import os, site, sys
for d in {dirs!r}:
    if os.path.isdir(d) and d not in sys.path:
        sys.path.append(d)
        for name in sorted(os.listdir(d)):
            if name.endswith(".pth") and not name.startswith(("__editable__.wafercc-", "wafercc")):
                site.addpackage(d, name, None)
"""


def _site_dirs() -> list[str]:
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
        dirs.append(site.getusersitepackages())
    return dirs


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory):
    """A fresh venv that sees the dependencies this interpreter sees (torch, onnx, setuptools...;
    in a virtualenv those are the virtualenv's, not the base interpreter's) but not wafercc's own
    files; returns a function making one venv per call.  The venv gets no pip (and so no old bundled
    setuptools of its own): pip runs from this interpreter with ``--python``."""
    def make(tag: str) -> str:
        env_dir = tmp_path_factory.mktemp(tag) / "venv"
        _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)])
        python = str(env_dir / "bin" / "python")
        purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
        with open(os.path.join(purelib, "_wafercc_test_deps.py"), "w", encoding="utf-8") as f:
            f.write(_SEE_DEPS.format(dirs=_site_dirs()))
        with open(os.path.join(purelib, "_wafercc_test_deps.pth"), "w", encoding="utf-8") as f:
            f.write("import _wafercc_test_deps\n")
        return python
    return make


def _pip_into(python: str, *args: str):
    # --ignore-installed: a wafercc this interpreter has (the work tree's editable install) is not
    # the venv's and must neither satisfy the install nor be uninstalled by it
    return _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--ignore-installed",
                 "-q", *args])


def test_wheel_file_list(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    ir_files = [n for n in names if n.startswith("wafercc/ir/") and n.endswith(".py")]
    expected_ir = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "ir", "*.py")))
    assert sorted(os.path.basename(n) for n in ir_files) == expected_ir
    assert "wafercc/passes/__init__.py" in names
    assert "wafercc/models/__init__.py" in names
    configs = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "models", "configs", "*.json")))
    assert configs and sorted(os.path.basename(n) for n in names
                              if n.startswith("wafercc/models/configs/") and n.endswith(".json")) == configs
    onnx_files = [n for n in names if n.startswith("wafercc/models/onnx/") and n.endswith(".onnx")]
    assert sorted(onnx_files) == ["wafercc/models/onnx/tiny-llama.onnx", "wafercc/models/onnx/tiny-moe.onnx"]
    top = {n.split("/", 1)[0] for n in names}
    for bad in ("ir", "passes", "models"):
        assert bad not in top, f"wheel has a top-level '{bad}/' package"
    assert {t for t in top if not t.endswith(".dist-info")} == {"wafercc"}


_IMPORT_CHECK = r"""
import importlib.util, os, sys
import wafercc, wafercc.ir, wafercc.passes, wafercc.models
import wafercc.frontend.onnx_frontend
for top in ("ir", "passes", "models"):
    assert importlib.util.find_spec(top) is None, f"top-level '{top}' is importable"
pkg = os.path.dirname(wafercc.models.__file__)
assert os.path.isfile(os.path.join(pkg, "onnx", "tiny-llama.onnx")), pkg
assert os.path.isfile(os.path.join(pkg, "configs", "llama-3.1-70b.json")), pkg
print(wafercc.__file__)
"""


def _check_imports(python: str, cwd, expect_under: str):
    proc = _run([python, "-c", _IMPORT_CHECK], cwd=str(cwd))
    where = proc.stdout.strip().splitlines()[-1]
    # the venv's own install must win over any wafercc installed in the base interpreter
    assert os.path.realpath(where).startswith(os.path.realpath(expect_under)), where


def test_wheel_installs_and_imports(wheel, venv_python, tmp_path):
    python = venv_python("wheel-venv")
    _pip_into(python, wheel)
    neutral = tmp_path / "cwd"
    neutral.mkdir()
    _check_imports(python, neutral, os.path.dirname(os.path.dirname(python)))


def test_editable_install_imports(source, venv_python, tmp_path):
    python = venv_python("editable-venv")
    _pip_into(python, *_pip_build_flags(python), "-e", str(source))
    neutral = tmp_path / "cwd"
    neutral.mkdir()
    _check_imports(python, neutral, str(source))
