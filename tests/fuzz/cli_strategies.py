"""Hypothesis strategies for whole ``wafercc`` command lines (a subprocess each).

config_strategies.cli_argvs draws hostile compile flags; this adds what a whole run needs and
can get wrong: the MODEL (the tiny Llama, a tiny config, a mutated ONNX file, a missing file, a
directory), a mostly valid flag set (so compiles reach placement and routing), a mutated
``--target`` file, a ``--defects file:`` map, the output directory (new, nested, the default, an
existing file, beneath a file, a foreign directory) and the other subcommands on such files.
A draw is a cli payload for fuzz.harness: ``{"argv": [...], "files": {name: bytes}, "ok": [codes]}``.

    from fuzz.cli_strategies import cli_cases
"""
from __future__ import annotations

import json
import os

from hypothesis import strategies as st

from .config_strategies import LLAMA, cli_argvs
from .defect_strategies import defect_docs, render_defect_file
from .onnx_strategies import onnx_files, small_model
from .target_strategies import target_files

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TINY_ONNX = os.path.join(ROOT, "models", "onnx", "tiny-llama.onnx")
TINY_CONFIG = dict(LLAMA, num_hidden_layers=1)

_VALID_FLAGS = {
    "--until": ["ir", "plan", "tile", "floorplan", "route", "schedule", "report", "report"],
    "--context": ["16", "64", "128", "4096"],
    "--batch": ["1", "2"],
    "--dtype": ["bf16", "fp8", "fp16"],
    "--wafers": ["1", "2"],
    "--max-wafers": ["1", "2", "4"],
    "--layout": ["lanes", "spares"],
    "--seed": ["0", "1", "7", "2147483647"],
    "--defects": ["none", "random:0.01", "dies:1", "clustered:rate=0.01,size=8", "links:0.001", "default"],
    "--target": ["wse2", "wse3"],
}
_SWITCHES = ["--no-cache", "--format=json", "--verify-stages", "--no-place"]


@st.composite
def valid_flags(draw) -> list[str]:
    """A few compile flags, each with a valid value (the compile may still not fit: exit 3)."""
    argv = []
    for flag in draw(st.lists(st.sampled_from(sorted(_VALID_FLAGS)), max_size=4, unique=True), label="flags"):
        argv.append(f"{flag}={draw(st.sampled_from(_VALID_FLAGS[flag]))}")
    argv += draw(st.lists(st.sampled_from(_SWITCHES), max_size=2, unique=True), label="switches")
    return argv


def _tiny_target():
    from wafercc.target import load_target
    return load_target("wse3")


@st.composite
def cli_cases(draw) -> dict:
    files: dict[str, bytes] = {}
    model = draw(st.sampled_from(["tiny", "tiny", "tiny", "config", "onnx mutant", "missing", "directory"]),
                 label="model")
    if model == "tiny":
        src = TINY_ONNX
    elif model == "config":
        files["config.json"] = json.dumps(TINY_CONFIG).encode()
        src = "config.json"
    elif model == "onnx mutant":
        files["model.onnx"] = draw(onnx_files(small_model(), max_mutations=2), label="onnx")
        src = "model.onnx"
    else:
        src = "missing.onnx" if model == "missing" else "."

    sub = draw(st.sampled_from(["compile"] * 8 + ["verify", "ir verify", "targets show"]), label="command")
    if sub != "compile":
        return _other_command(draw, sub, files)

    argv = ["compile", src]
    argv += draw(st.one_of(valid_flags(), valid_flags(), cli_argvs()), label="flags")
    extra = draw(st.sampled_from([None, None, None, "target", "defects"]), label="file option")
    if extra == "target":
        files["target.toml"] = draw(target_files(max_mutations=2), label="target")
        argv.append("--target=target.toml")
    elif extra == "defects":
        files["defects.json"] = render_defect_file(draw(defect_docs(), label="defect map"), _tiny_target()).encode()
        argv.append("--defects=file:defects.json")
    out = draw(st.sampled_from(["out", "out", "out", "a/b/out", None, "file.txt", "file.txt/sub", "foreign"]),
               label="outdir")
    if out in ("file.txt", "file.txt/sub"):
        files["file.txt"] = b"not a directory\n"
    if out == "foreign":
        out = "."                                    # the case's own directory: it holds the inputs
        files.setdefault("notes.txt", b"the user's file\n")
    if out is not None:
        argv += ["-o", out]
    if out is not None and draw(st.integers(0, 9), label="dump") == 0:
        argv.append("--dump=" + draw(st.sampled_from(["all", "plan", "frontend,route", "lunch", ""])))
    return {"argv": argv, "files": files, "ok": [0]}


def _other_command(draw, sub: str, files: dict) -> dict:
    if sub == "targets show":
        files["target.toml"] = draw(target_files(max_mutations=2), label="target")
        fmt = draw(st.sampled_from([[], ["--format=json"]]))
        return {"argv": ["targets", "show", "target.toml", *fmt], "files": files, "ok": [0]}
    if sub == "ir verify":
        name = draw(st.sampled_from(["model.ir", "model.ir.json"]))
        files[name] = draw(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                                     st.just(b'{"name": "g", "nodes": [{}]}')), label="ir text")
        return {"argv": ["ir", "verify", name], "files": files, "ok": [0]}
    # verify: an output directory that is missing, or holds a mutated schedule/defect file
    if draw(st.booleans(), label="verify existing"):
        files["schedule.json"] = draw(st.one_of(st.binary(max_size=100), st.just(b"{}"), st.just(b"[]"),
                                                st.just(b'{"schema": "wafercc.schedule/1"}')), label="schedule")
        return {"argv": ["verify", ".", "--max-violations=" + draw(st.sampled_from(["5", "0", "-1", "x"]))],
                "files": files, "ok": [0, 1]}
    return {"argv": ["verify", "missing-dir"], "files": files, "ok": [0, 1]}
