"""Malformed ONNX graphs fail with one clear line naming what and where."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from wafercc.cli import main
from wafercc.errors import InputFileError, UnsupportedOpError
from wafercc.frontend.onnx_frontend import lower_onnx


def _model(nodes, inits, inputs=None, outputs=None):
    inputs = inputs or [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])]
    outputs = outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _save(model, tmp_path, name="m.onnx"):
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _emb(rows=16, dim=8):
    return numpy_helper.from_array(np.zeros((rows, dim), np.float32), "emb")


def test_cycle_is_named(tmp_path):
    w = numpy_helper.from_array(np.zeros((8, 8), np.float32), "w")
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["h"], name="embed"),
             helper.make_node("Add", ["h", "b"], ["a"], name="add_a"),
             helper.make_node("MatMul", ["a", "w"], ["b"], name="mm_b"),
             helper.make_node("Identity", ["b"], ["y"], name="out")]
    path = _save(_model(nodes, [_emb(), w]), tmp_path)
    with pytest.raises(InputFileError, match="cycle through nodes 'add_a'.*'mm_b'"):
        lower_onnx(path)


def test_unsorted_graph_is_sorted(tmp_path):
    w = numpy_helper.from_array(np.ones((8, 4), np.float32), "w")
    nodes = [helper.make_node("MatMul", ["h", "w"], ["y"], name="mm"),
             helper.make_node("Gather", ["emb", "ids"], ["h"], name="embed")]
    g = lower_onnx(_save(_model(nodes, [_emb(), w]), tmp_path))
    assert [n.op for n in g.nodes] == ["embedding", "matmul"]


@pytest.mark.parametrize("dims, why", [([2**31, 8], "dim 2147483648"), ([2**30, 2**30], "1152921504606846976 elements")])
def test_overflowing_dims_are_refused_before_lifting(tmp_path, dims, why):
    big = TensorProto(name="emb", data_type=TensorProto.FLOAT, dims=dims)
    big.data_location = TensorProto.EXTERNAL
    big.external_data.add(key="location", value="absent.bin")
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["y"], name="embed")]
    with pytest.raises(InputFileError, match=f"initializer 'emb' has {why}"):
        lower_onnx(_save(_model(nodes, [big]), tmp_path))


def test_op_outside_the_set_is_named(tmp_path, capsys):
    w = numpy_helper.from_array(np.zeros((4, 8, 3), np.float32), "conv_w")
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["h"], name="embed"),
             helper.make_node("Conv", ["h", "conv_w"], ["y"], name="my_conv")]
    path = _save(_model(nodes, [_emb(), w]), tmp_path)
    with pytest.raises(UnsupportedOpError) as e:
        lower_onnx(path)
    assert e.value.op_type == "Conv" and e.value.node == "my_conv"
    assert main(["compile", str(path), "--no-cache", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "my_conv" in err[0] and "Conv" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "out").exists()  # no half-written output


def test_external_data_that_is_absent_still_lowers(tmp_path):
    w = numpy_helper.from_array(np.ones((8, 4), np.float32), "w")
    model = _model([helper.make_node("Gather", ["emb", "ids"], ["h"], name="embed"),
                    helper.make_node("MatMul", ["h", "w"], ["y"], name="mm")], [_emb(), w])
    onnx.save(model, str(tmp_path / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.onnx.data", size_threshold=0)
    with_data = lower_onnx(tmp_path / "m.onnx")
    (tmp_path / "m.onnx.data").unlink()
    without = lower_onnx(tmp_path / "m.onnx")
    from wafercc.ir import print_graph
    assert print_graph(with_data) == print_graph(without)
    assert without.values["w"].shape == (8, 4)
