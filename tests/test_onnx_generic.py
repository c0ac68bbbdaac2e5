"""The generic lowering: ONNX operators without a semantic lowering become the IR's ``onnx`` op when
they work per token, run by their ONNX definition; token-mixing ones are refused in one line."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_compare import ir_vs_onnxruntime
from wafercc.errors import UnsupportedOpError
from wafercc.frontend.onnx_frontend import lower_onnx
from wafercc.ir import CostContext, parse_graph, print_graph, verify

V, D = 128, 8
RNG = np.random.default_rng(0)


def _model(body, opset=18, extra_inits=(), tmp=None):
    """input_ids -> embedding [b, s, D] ('x') -> body nodes -> 'y' [b, s, *] -> MatMul -> logits."""
    nodes, y_width = body
    inits = [numpy_helper.from_array(RNG.standard_normal((V, D)).astype(np.float32), "emb"),
             numpy_helper.from_array(RNG.standard_normal((y_width, V)).astype(np.float32), "head"),
             *extra_inits]
    g = helper.make_graph(
        [helper.make_node("Gather", ["emb", "input_ids"], ["x"], name="embed"), *nodes,
         helper.make_node("MatMul", ["y", "head"], ["logits"], name="lm_head")],
        "g", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", V])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    path = tmp / "m.onnx"
    onnx.save(m, path)
    return path


def _c(name, arr):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(arr)))


def n(op, ins, outs, **kw):
    return helper.make_node(op, ins, outs, name=f"{op}_{outs[0]}", **kw)


CASES = {
    "erf": ([n("Erf", ["x"], ["y"])], D),
    "sin_cos": ([n("Sin", ["x"], ["s"]), n("Cos", ["x"], ["c"]), n("Mul", ["s", "c"], ["y"])], D),
    "floor_sign": ([n("Floor", ["x"], ["f"]), n("Sign", ["x"], ["g"]), n("Add", ["f", "g"], ["y"])], D),
    "leaky_hardswish": ([n("LeakyRelu", ["x"], ["a"], alpha=0.2), n("HardSwish", ["a"], ["y"])], D),
    "mish": ([n("Mish", ["x"], ["y"])], D),
    "prelu_weight": ([n("PRelu", ["x", "slope"], ["y"])], D),
    "where_greater": ([_c("zero", np.float32(0)), n("Greater", ["x", "zero"], ["p"]),
                       n("Neg", ["x"], ["m"]), n("Where", ["p", "x", "m"], ["y"])], D),
    "div_const_left": ([_c("one", np.ones(D, np.float32)), n("Abs", ["x"], ["a"]),
                        n("Add", ["a", "one"], ["d"]), n("Div", ["one", "d"], ["y"])], D),
    "reduce_mean_last": ([_c("ax", np.array([-1], np.int64)), n("ReduceMean", ["x", "ax"], ["m"]),
                          n("Sub", ["x", "m"], ["y"])], D),
    "reduce_l2_keep0": ([_c("ax", np.array([2], np.int64)), n("ReduceL2", ["x", "ax"], ["r"], keepdims=0),
                         _c("shp", np.array([0, 0, 1], np.int64)), n("Reshape", ["r", "shp"], ["r1"]),
                         n("Div", ["x", "r1"], ["y"])], D),
    "logsoftmax": ([n("LogSoftmax", ["x"], ["y"], axis=-1)], D),
    "hardmax_lp": ([n("LpNormalization", ["x"], ["l"], axis=2, p=2), n("Hardmax", ["x"], ["h"]),
                    n("Add", ["l", "h"], ["y"])], D),
    "cumsum_last": ([_c("ax", np.array(2, np.int32)), n("CumSum", ["x", "ax"], ["y"], reverse=1)], D),
    "pad_last": ([_c("pads", np.array([0, 0, 1, 0, 0, 3], np.int64)), n("Pad", ["x", "pads"], ["y"])], D + 4),
    "pad_axes_reflect": ([_c("pads", np.array([2, 2], np.int64)), _c("axes", np.array([-1], np.int64)),
                          n("Pad", ["x", "pads", "", "axes"], ["y"], mode="reflect")], D + 4),
    "topk_values_indices": ([_c("k", np.array([3], np.int64)), n("TopK", ["x", "k"], ["v", "i"]),
                             n("Cast", ["i"], ["fi"], to=TensorProto.FLOAT), n("Mul", ["v", "fi"], ["y"])], 3),
    "argmax_keep": ([n("ArgMax", ["x"], ["a"], axis=-1), n("Cast", ["a"], ["fa"], to=TensorProto.FLOAT),
                     n("Mul", ["x", "fa"], ["y"])], D),
    "mvn": ([n("MeanVarianceNormalization", ["x"], ["y"], axes=[2])], D),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_per_token_op_lowers_to_onnx_op_and_matches_onnxruntime(case, tmp_path):
    inits = [numpy_helper.from_array(np.linspace(0.1, 0.8, D, dtype=np.float32), "slope")] \
        if case == "prelu_weight" else []
    path = _model(CASES[case], extra_inits=inits, tmp=tmp_path)
    g = lower_onnx(str(path))
    verify(g)
    generic = [nd for nd in g.nodes if nd.op == "onnx"]
    assert generic, "expected at least one generic op"
    # every generic op costs FLOPs on the wafer (a rider timed by its work), except second outputs
    ctx = CostContext({"batch": 1, "seq": 1})
    costs = [nd.spec.cost({r: g.values[v] for r, v in nd.inputs.items()}, [g.values[o] for o in nd.outputs],
                          nd.attrs, ctx) for nd in generic]
    assert sum(c.flops for c in costs) >= D
    # the text form round-trips
    assert print_graph(parse_graph(print_graph(g))) == print_graph(g)
    assert ir_vs_onnxruntime(g, path) < 1e-5
    if case == "prelu_weight":
        assert g.values["slope"].shape == (D,)


def test_topk_second_output_carries_no_flops(tmp_path):
    g = lower_onnx(str(_model(CASES["topk_values_indices"], tmp=tmp_path)))
    topk = [nd for nd in g.nodes if nd.op == "onnx" and nd.attrs["op_type"] == "TopK"]
    assert [nd.attrs["output"] for nd in topk] == [0, 1]
    assert [nd.attrs["counted"] for nd in topk] == [True, False]
    assert g.values[topk[1].outputs[0]].dtype.value == "i64"


MIXING = {
    "pad_seq": ([_c("pads", np.array([0, 1, 0, 0, 0, 0], np.int64)), n("Pad", ["x", "pads"], ["y"])], D,
                "mixes tokens"),
    "mean_over_seq": ([_c("ax", np.array([1], np.int64)), n("ReduceMean", ["x", "ax"], ["m"]),
                       n("Sub", ["x", "m"], ["y"])], D, "axis 1 of a 3-D activation mixes tokens"),
    "reduce_all": ([n("ReduceSum", ["x"], ["m"]), n("Sub", ["x", "m"], ["y"])], D, "every axis"),
    "cumsum_seq": ([_c("ax", np.array(1, np.int32)), n("CumSum", ["x", "ax"], ["y"])], D, "mixes tokens"),
    "topk_seq": ([_c("k", np.array([1], np.int64)), n("TopK", ["x", "k"], ["y", "i"], axis=1)], D,
                 "mixes tokens"),
    "argmax_default_axis": ([n("ArgMax", ["x"], ["a"]), n("Cast", ["a"], ["fa"], to=TensorProto.FLOAT),
                             n("Mul", ["x", "fa"], ["y"])], D, "axis 0"),
    "trilu": ([n("Trilu", ["x"], ["y"])], D, "no lowering for this operator"),
    "custom_domain": ([helper.make_node("FastGelu", ["x"], ["y"], name="fg", domain="com.example")], D,
                      "domain 'com.example'"),
}


@pytest.mark.parametrize("case", sorted(MIXING))
def test_token_mixing_or_unknown_op_is_refused_in_one_line(case, tmp_path):
    nodes, width, why = MIXING[case]
    path = _model((nodes, width), tmp=tmp_path)
    if case == "custom_domain":
        m = onnx.load(path)
        m.opset_import.append(helper.make_opsetid("com.example", 1))
        onnx.save(m, path)
    with pytest.raises(UnsupportedOpError) as e:
        lower_onnx(str(path))
    msg = str(e.value)
    assert why in msg and "\n" not in msg


def test_recurrence_is_refused_with_its_family_reason(tmp_path):
    w = numpy_helper.from_array(np.zeros((1, 4 * D, D), np.float32), "W")
    r = numpy_helper.from_array(np.zeros((1, 4 * D, D), np.float32), "R")
    nodes = [_c("perm", np.array([1, 0, 2], np.int64)), n("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
             n("LSTM", ["xt", "W", "R"], ["yl"], hidden_size=D), n("Squeeze", ["yl"], ["y"])]
    path = _model((nodes, D), extra_inits=[w, r], tmp=tmp_path)
    with pytest.raises(UnsupportedOpError, match="recurrence"):
        lower_onnx(str(path))


def test_constant_folding_falls_back_to_the_reference_definition(tmp_path):
    # pads computed by ops the folding rules do not cover (Tile of a constant): still read as constant
    nodes = [_c("p", np.array([0, 0, 1], np.int64)), _c("rep", np.array([2], np.int64)),
             n("Tile", ["p", "rep"], ["pads"]), n("Pad", ["x", "pads"], ["y"])]
    g = lower_onnx(str(_model((nodes, D + 2), tmp=tmp_path)))
    pad = next(nd for nd in g.nodes if nd.op == "onnx")
    assert pad.attrs["consts"]["c1"]["data"] == [0, 0, 1, 0, 0, 1]
