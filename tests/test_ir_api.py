"""Unit tests of the IR building blocks and of errors only the JSON/API forms can express."""
from __future__ import annotations

import json
import pathlib

import pytest

from wafercc.errors import IRError, IRParseError, IRVerificationError, WaferccError
from wafercc.ir import (OPS, DType, Graph, ValueKind, collect_problems, from_dict, from_json,
                        parse_graph, print_graph, to_dict, to_json, topological_sort, verify)
from wafercc.ir.values import same_numel

CASES = pathlib.Path(__file__).parent / "ir_cases"


def test_dtype_bits_and_packing():
    assert DType.BF16.bits == 16 and DType.F8E4M3.bits == 8 and DType.I64.bits == 64
    assert DType.F4E2M1.nbytes(3) == 2 and DType.I4.nbytes(4) == 2
    assert DType.BOOL.nbytes(3) == 3
    assert DType.BF16.is_float and DType.F4E2M1.is_float and not DType.I8.is_float
    assert not DType.BOOL.is_float


@pytest.mark.parametrize("alias, dtype", [("bfloat16", DType.BF16), ("FP16", DType.F16), ("float", DType.F32),
                                          ("fp8", DType.F8E4M3), ("e5m2", DType.F8E5M2), ("mxfp4", DType.F4E2M1),
                                          ("int4", DType.I4), ("i32", DType.I32)])
def test_dtype_aliases(alias, dtype):
    assert DType.parse(alias) is dtype


def test_dtype_parse_unknown():
    with pytest.raises(ValueError, match="unknown dtype 'f99'"):
        DType.parse("f99")


def test_same_numel_with_symbols():
    assert same_numel(("batch", "seq", 64), ("batch", "seq", 4, 16))
    assert not same_numel(("batch", "seq", 64), ("batch", 64, "context"))
    assert not same_numel(("batch", 64), ("batch", 32))


def test_error_hierarchy():
    assert issubclass(IRParseError, IRError) and issubclass(IRVerificationError, IRError)
    assert issubclass(IRError, WaferccError)


def test_builder_infers_outputs_and_verifies():
    g = Graph("built")
    x = g.add_value("x", ("batch", "seq", 8), DType.BF16, ValueKind.INPUT)
    w = g.add_value("w", (8, 4), DType.BF16, ValueKind.WEIGHT)
    n = g.add_node("matmul", {"w": w.name, "x": x.name}, layer=0)
    assert list(n.inputs) == ["x", "w"]                    # op-spec order, not call order
    assert g.values[n.outputs[0]].shape == ("batch", "seq", 4)
    g.outputs.append(n.outputs[0])
    verify(g)
    assert g.inputs == ["x"] and [v.name for v in g.weights()] == ["w"]
    with pytest.raises(ValueError, match="no operand"):
        g.add_node("matmul", {"x": "x", "w": "w", "bias": "w"})
    with pytest.raises(ValueError, match="defined twice"):
        g.add_value("x", (1,), DType.F32, ValueKind.INPUT)


def test_topological_sort_reorders_and_detects_cycles():
    text = (CASES / "invalid" / "not_topological.ir").read_text()
    g = parse_graph(text)
    topological_sort(g)
    assert [n.name for n in g.nodes] == ["n2", "n1"]
    verify(g)
    cyc = parse_graph((CASES / "invalid" / "cycle.ir").read_text())
    with pytest.raises(IRVerificationError, match="cycle through nodes"):
        topological_sort(cyc)


def _json_case():
    return to_dict(parse_graph((CASES / "matmul_basic.ir").read_text()))


def test_json_value_produced_twice():
    d = _json_case()
    d["nodes"].append(dict(d["nodes"][0], name="proj2"))
    with pytest.raises(IRVerificationError, match=r"output %y is also produced by node 'proj'"):
        verify(from_dict(d))


def test_json_output_into_graph_input():
    d = _json_case()
    d["nodes"][0]["outputs"] = ["x"]
    with pytest.raises(IRVerificationError, match="output %x is a graph input, weight or KV cache"):
        verify(from_dict(d))


def test_json_activation_without_producer():
    d = _json_case()
    d["values"].append({"name": "orphan", "shape": [4], "dtype": "f32", "kind": "activation"})
    with pytest.raises(IRVerificationError, match="value %orphan: activation with no producing node"):
        verify(from_dict(d))


def test_json_output_not_declared():
    d = _json_case()
    d["nodes"][0]["outputs"] = ["ghost"]
    d["outputs"] = ["ghost"]
    problems = collect_problems(from_dict(d))
    assert any("output %ghost is not defined" in p for p in problems)


@pytest.mark.parametrize("text, match", [
    ("{not json", "not JSON"),
    ('{"schema": "other/1"}', "expected an object with schema 'wafercc.ir/1'"),
    ("[1, 2]", "expected an object with schema"),
    ('{"schema": "wafercc.ir/1", "name": "x"}', "malformed IR JSON"),
])
def test_json_parse_errors(text, match):
    with pytest.raises(IRParseError, match=match):
        from_json(text)


def test_json_bad_dtype_and_kind():
    d = _json_case()
    d["values"][0]["dtype"] = "f99"
    with pytest.raises(IRParseError, match="malformed IR JSON"):
        from_dict(d)
    d = _json_case()
    d["values"][0]["kind"] = "param"
    with pytest.raises(IRParseError, match="malformed IR JSON"):
        from_json(json.dumps(d))


def test_json_is_stable_and_sorted():
    g = parse_graph((CASES / "decoder_layer.ir").read_text())
    js = to_json(g)
    assert js.endswith("\n")
    assert json.loads(js)["nodes"][0]["inputs"] == [["ids", "input_ids"], ["table", "embed.weight"]]
    assert to_json(from_json(js)) == js


def test_print_quotes_non_bare_names():
    g = parse_graph((CASES / "quoted_names.ir").read_text())
    assert "my input" in g.values and g.nodes[0].name == "node with spaces"
    assert '%"my input"' in print_graph(g)


def test_every_op_documented():
    doc = (pathlib.Path(__file__).parent.parent / "docs" / "ir.md").read_text()
    for name, spec in OPS.items():
        assert f"`{name}`" in doc, name
        for a in spec.attrs:
            assert f"`{a.name}`" in doc, (name, a.name)
        for o in spec.operands:
            assert f"`{o.role}`" in doc, (name, o.role)
