"""The fuzz families: what each one draws and what it runs (fuzz.harness runs and classifies).

    onnx     a mutated ONNX file (fuzz.onnx_strategies), lowered by the ONNX frontend
    config   a mutated Hugging Face config, as a dict or a config.json (fuzz.config_strategies),
             validated and built up to the meta model (hf_config.prepare); one draw in sixteen
             is also exported and lowered (from_config)
    target   a mutated target .toml (fuzz.target_strategies), loaded, wafer 0's map generated; one
             draw in eight also compiles the tiny Llama on it (until plan or report)
    defects  a defect spec and sometimes a defect-map file (fuzz.defect_strategies), parsed, wafers
             0 and 1 generated on WSE-2 or WSE-3; one draw in eight also compiles the tiny Llama with it
    cli      a whole ``wafercc`` command line in a new interpreter (fuzz.cli_strategies)

Every call family's ``run(payload)`` runs in the case's own directory (the harness's forked child)
and writes its inputs there, so a failure's directory is its reproducer.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

from hypothesis import strategies as st

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TINY_ONNX = os.path.join(ROOT, "models", "onnx", "tiny-llama.onnx")
# one draw in eight also compiles the tiny Llama (1-3 s, the rest take ~0.1 s)
_DEEP = st.sampled_from([None] * 14 + ["plan", "report"])


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    kind: str                                   # call | cli
    strategy: Callable[[], st.SearchStrategy]   # payloads (built lazily: the strategies import onnx...)
    run: Callable[[dict], None] | None = None   # call families: raises on failure


def _write(name: str, data) -> str:
    with open(name, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode("utf-8"))
    return name


def _compile_tiny(until: str, **options) -> None:
    from wafercc.api import compile as compile_model
    compile_model(TINY_ONNX, until=until, **options)


# ---- onnx ----
def _onnx_strategy():
    import onnx
    from .onnx_strategies import onnx_files, small_model
    tiny = onnx.load(TINY_ONNX)
    return st.one_of(onnx_files(small_model()), onnx_files(small_model()), onnx_files(small_model()),
                     onnx_files(tiny, max_mutations=2)).map(lambda b: {"model": b})


def _onnx_run(p: dict) -> None:
    from wafercc.frontend.onnx_frontend import lower_onnx
    lower_onnx(_write("model.onnx", p["model"]))


# ---- config ----
def _config_strategy():
    from .config_strategies import config_dicts, config_texts
    lower = st.sampled_from([False] * 15 + [True])
    return st.one_of(st.fixed_dictionaries({"dict": config_dicts(), "lower": lower}),
                     st.fixed_dictionaries({"text": config_texts(), "lower": lower}))


def _config_run(p: dict) -> None:
    from wafercc.frontend.hf_config import from_config, prepare
    source = p["dict"] if "dict" in p else _write("config.json", p["text"])
    prepare(source)
    if p["lower"]:
        from_config(source)


# ---- target ----
def _target_strategy():
    from .target_strategies import target_files
    return st.fixed_dictionaries({"target": target_files(), "deep": _DEEP})


def _target_run(p: dict) -> None:
    from wafercc.target import load_target
    from wafercc.target.device import Device
    path = os.path.abspath(_write("target.toml", p["target"]))
    Device(load_target(path), None, 0).wafer(0)
    if p["deep"]:
        _compile_tiny(p["deep"], target=path)


# ---- defects ----
def _defects_strategy():
    from .defect_strategies import FILE, defect_docs, defect_specs
    spec = st.one_of(defect_specs(), defect_specs(), st.just(f"file:{FILE}"),
                     defect_specs().map(lambda s: f"{s}+file:{FILE}"))
    return st.fixed_dictionaries({"spec": spec, "file": st.one_of(st.none(), defect_docs(), defect_docs()),
                                  "target": st.sampled_from(["wse3", "wse3", "wse2"]),
                                  "seed": st.one_of(st.just(0), st.integers(0, 2 ** 31 - 1)), "deep": _DEEP})


def _defects_run(p: dict) -> None:
    from wafercc.target import load_target
    from wafercc.target.defects import generate_defects, parse_defect_spec
    from .defect_strategies import FILE, render_defect_file
    target = load_target(p["target"])
    if p["file"] is not None:
        _write(FILE, render_defect_file(p["file"], target))
    spec = parse_defect_spec(p["spec"])
    for index in (0, 1):
        generate_defects(spec, target, p["seed"], index)
    if p["deep"]:
        _compile_tiny(p["deep"], target=p["target"], defects=p["spec"], seed=p["seed"])


# ---- cli ----
def _cli_strategy():
    from .cli_strategies import cli_cases
    return cli_cases()


FAMILIES = {f.name: f for f in (
    Family("onnx", "call", _onnx_strategy, _onnx_run),
    Family("config", "call", _config_strategy, _config_run),
    Family("target", "call", _target_strategy, _target_run),
    Family("defects", "call", _defects_strategy, _defects_run),
    Family("cli", "cli", _cli_strategy),
)}


def generate(family: str, n: int, seed: int) -> list[dict]:
    """``n`` payloads of ``family`` drawn by hypothesis from ``seed`` (the same list every time)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    drawn: list[dict] = []

    @hseed(seed)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(FAMILIES[family].strategy())
    def collect(payload):
        drawn.append(payload)

    collect()
    return drawn[:n]


def warm() -> None:
    """Import, once in the parent, what the call families use, so each forked case starts warm
    (imports only: a thread pool started here would not survive the fork)."""
    import wafercc.api  # noqa: F401
    import wafercc.backend.schedule  # noqa: F401
    import wafercc.frontend.hf_config  # noqa: F401
    import wafercc.frontend.onnx_frontend  # noqa: F401
    import wafercc.passes.place_route  # noqa: F401
    import wafercc.passes.solver  # noqa: F401  (ortools)
    import onnxruntime  # noqa: F401
    import importlib
    for arch in ("llama", "gpt2", "bert", "mixtral"):   # transformers imports each model lazily (~seconds)
        importlib.import_module(f"transformers.models.{arch}.configuration_{arch}")
        importlib.import_module(f"transformers.models.{arch}.modeling_{arch}")
    import wafercc.plan.planner  # noqa: F401
    import wafercc.target.device  # noqa: F401
