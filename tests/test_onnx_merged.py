"""optimum's merged decoder (an If on use_cache_branch between the no-past and with-past decoders)
lowers as its with-past branch: the KV cache, torch's parameters, and onnxruntime's numbers."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import wafercc
from corpus import archs, build, variants
from wafercc.errors import UnsupportedOpError
from wafercc.frontend.onnx_branches import inline_cache_branch


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    out = tmp_path_factory.mktemp("merged")
    return out, {a: build.build_entry(str(out), a, variants.VARIANTS["ts17-merged"]) for a in ("llama", "gpt2")}


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_merged_decoder_lowers_as_its_with_past_branch(merged, arch, tmp_path):
    out, recs = merged
    path = out / recs[arch]["path"]
    m = onnx.load(path, load_external_data=False)
    assert [n.op_type for n in m.graph.node] == ["If"] and "use_cache_branch" in {i.name for i in m.graph.input}
    c = wafercc.compile(path, until="ir", cache=False)
    assert c.facts.params == archs.unique_param_count(archs.build_model(arch))
    assert c.facts.kv_bytes_per_token == archs.kv_bytes_per_token(arch)
    assert sorted(c.graph.meta["past_inputs"].values()) == sorted(
        f"past.{i}.{kv}" for i in range(2) for kv in ("key", "value"))
    # simulate --compare as a user runs it: onnxruntime takes the with-past branch
    p = subprocess.run([sys.executable, "-m", "wafercc.cli", "compile", str(path), "--until", "ir", "-o",
                        str(tmp_path / "ir"), "--no-cache"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    np.save(tmp_path / "ids.npy", (np.arange(12).reshape(2, 6) * 7 + 3) % 128)
    p = subprocess.run([sys.executable, "-m", "wafercc.cli", "simulate", str(tmp_path / "ir"), "--model", str(path),
                        "--inputs", str(tmp_path / "ids.npy"), "--steps", "3", "--compare", "--format", "json"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["ok"] and doc["max_error"] <= 1e-4


def _switch_model(then_reads: str, else_reads: str) -> onnx.ModelProto:
    def branch(name, reads):
        return helper.make_graph([helper.make_node("Identity", [reads], [f"{name}_y"])], name, [],
                                 [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, None)])
    node = helper.make_node("If", ["flag"], ["y"], then_branch=branch("a", then_reads), else_branch=branch("b", else_reads))
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("flag", TensorProto.BOOL, [1]),
                                        helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
                                        helper.make_tensor_value_info("past.0.key", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.ones(2, np.float32), "w")])
    return helper.make_model(g)


def test_the_branch_reading_the_past_is_inlined_with_its_outputs_renamed():
    m = inline_cache_branch(_switch_model("x", "past.0.key"))
    assert [(n.op_type, list(n.input), list(n.output)) for n in m.graph.node] == [("Identity", ["past.0.key"], ["y"])]
    assert "flag" not in {i.name for i in m.graph.input}


@pytest.mark.parametrize("then_reads,else_reads", [("x", "w"), ("past.0.key", "past.0.key")])
def test_a_switch_without_one_kv_cache_branch_is_refused_in_one_line(then_reads, else_reads):
    with pytest.raises(UnsupportedOpError, match="runtime switch on graph input 'flag'") as e:
        inline_cache_branch(_switch_model(then_reads, else_reads))
    assert "\n" not in str(e.value)
