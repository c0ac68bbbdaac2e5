"""The package layering: ir <- target <- passes <- plan <- (backend, perf, sim, verify) <- top.

Every module's imports (module- and function-level, parsed with ast) may reach only the layers
below its own, its own layer and the base utilities.  Top-level modules not named here (cli, api,
driver, options, report, regress, training, ...) are the top layer, which may import anything.
"""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCES = {"wafercc": "wafercc", "ir": "wafercc.ir", "passes": "wafercc.passes", "models": "wafercc.models"}
BASE = {"wafercc.errors", "wafercc.cache", "wafercc.console",     # usable anywhere
        "wafercc.limits", "wafercc.jsonsafe"}
PACKAGES = {"ir", "target", "frontend", "passes", "plan", "backend", "perf", "sim", "verify"}
MID = {"backend", "perf", "sim", "verify"}
BELOW_MID = {"ir", "target", "models", "frontend", "passes", "plan"}
# layer -> the other layers its modules may import
ALLOWED = {
    "base": {"ir", "frontend", "models"},         # the IR cache keys on the frontend's version
    "ir": set(),
    "target": {"ir"},
    "models": set(),                              # models_registry: the reference-model catalogue
    "frontend": {"ir", "models"},
    "passes": {"ir", "target"},
    "plan": {"ir", "target", "passes"},
    "backend": BELOW_MID | MID, "perf": BELOW_MID | MID, "sim": BELOW_MID | MID,
    "verify": {"target"},                         # files, target and defect map only (test_verify_isolation)
}
# (importer, imported): why it is still there.  Each entry must still occur, so a fix removes it.
KNOWN: dict[tuple[str, str], str] = {}


def layer(module: str) -> str:
    if module in BASE:
        return "base"
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in PACKAGES:
        return parts[1]
    if module == "wafercc.models_registry" or parts[:2] == ["wafercc", "models"]:
        return "models"
    return "top"


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for top, pkg in SOURCES.items():
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT / top).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([pkg, *parts])] = path
    return out


MODULES = _modules()


def _imports(module: str, path: pathlib.Path):
    """(line, imported module) of every wafercc import in ``path``, relative ones resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(pkg + ([node.module] if node.module else []))
            # ``from pkg import name`` imports the submodule pkg.name when there is one
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "wafercc" and name != "wafercc":   # the root package is always loaded
                yield node.lineno, name


def _violations():
    for module, path in MODULES.items():
        src = layer(module)
        if src == "top":
            continue
        for line, imported in _imports(module, path):
            dst = layer(imported)
            if dst != src and dst != "base" and dst not in ALLOWED[src]:
                yield module, imported, f"{path.relative_to(ROOT)}:{line}", src, dst


def test_layer_rules_cover_every_package_module():
    assert len(MODULES) > 50
    assert all(layer(m) in ALLOWED or layer(m) == "top" for m in MODULES)
    assert layer("wafercc.driver") == layer("wafercc.regress") == layer("wafercc.cli") == "top"
    assert layer("wafercc.passes.floorplan") == "passes" and layer("wafercc.ir.graph") == "ir"


def test_imports_follow_the_layering():
    found = list(_violations())
    bad = [f"{where}: {m} imports {i}: the {s} layer may import only "
           f"{', '.join(sorted(ALLOWED[s])) or 'nothing else'} (+ {', '.join(sorted(BASE))}), not {d}"
           for m, i, where, s, d in found if (m, i) not in KNOWN]
    assert not bad, "layering broken:\n" + "\n".join(bad)
    stale = set(KNOWN) - {(m, i) for m, i, *_ in found}
    assert not stale, f"fixed, drop from KNOWN: {sorted(stale)}"


@pytest.mark.parametrize("module, imported", [("wafercc.passes.x", "wafercc.plan.options"),
                                               ("wafercc.target.x", "wafercc.passes.floorplan"),
                                               ("wafercc.plan.x", "wafercc.backend.schedule"),
                                               ("wafercc.perf.x", "wafercc.driver"),
                                               ("wafercc.ir.x", "wafercc.target")])
def test_the_rules_reject_upward_imports(module, imported):
    assert layer(imported) not in ALLOWED[layer(module)] | {layer(module), "base"}
