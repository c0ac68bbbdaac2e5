"""The ONNX validation layer (wafercc.frontend.onnx_check, docs/onnx-lifter.md "Loading"): each
malformed model of issue 14 is refused with one WaferccError line naming the file (and the node),
exit 2 from the CLI; onnx's checker and onnxruntime run where their crash cannot kill the
compiler; a fuzz of a few hundred mutated models raises nothing but one-line WaferccErrors."""
import os
import time
from datetime import timedelta

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from onnx import TensorProto, helper, numpy_helper

from fuzz.onnx_strategies import onnx_files, small_model
from wafercc.cli import main
from wafercc.errors import InputFileError, UnsupportedOpError, WaferccError
from wafercc.frontend import isolated
from wafercc.frontend.onnx_frontend import lower_onnx, lower_onnx_model
from wafercc.ir import DType, ValueKind
from wafercc.ir.ops import ShapeError

TINY_LLAMA = os.path.join(os.path.dirname(__file__), "..", "models", "onnx", "tiny-llama.onnx")


def _node(m, name):
    return next(n for n in m.graph.node if n.name == name)


def _init(m, name):
    return next(t for t in m.graph.initializer if t.name == name)


def _set_dtype(m, tensor, code):
    tensor.data_type = code


def _external(m, name, location):
    t = _init(m, name)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value=location)


def _weight_without_rows(m):
    t = _init(m, "w1")
    t.dims[0] = 0
    t.raw_data = b""


def _absurd_table(m):
    t = _init(m, "emb")
    del t.dims[:]
    t.dims.extend([2**30, 2**30])
    _external(m, "emb", "absent.bin")


def _foreign(m, domain, imported):
    _node(m, "act").domain = domain
    if imported:
        m.opset_import.append(helper.make_opsetid(domain, 1))


def _replace_attr(m, node, name, value):
    n = _node(m, node)
    del n.attribute[:]
    n.attribute.append(helper.make_attribute(name, value))


# issue 14's ONNX examples (and their neighbours): mutation of small_model -> (error class, message)
CASES = {
    "int64 constant retyped as float16": (lambda m: _set_dtype(m, _init(m, "axes"), TensorProto.FLOAT16),
                                          InputFileError, r"initializer 'axes' holds 8 bytes of raw data; "
                                                          r"1 FLOAT16 elements take 2"),
    "float weight retyped as double": (lambda m: _set_dtype(m, _init(m, "emb"), TensorProto.DOUBLE),
                                       InputFileError, r"'emb' holds 4096 bytes .* take 8192"),
    "Constant value retyped": (lambda m: _set_dtype(m, _node(m, "eps").attribute[0].t, TensorProto.INT64),
                               InputFileError, r"node 'eps' \(Constant\): attribute 'value' holds 4 bytes"),
    "input dim 0": (lambda m: setattr(m.graph.input[0].type.tensor_type.shape.dim[1], "dim_value", 0),
                    InputFileError, r"graph input 'input_ids' has dim 0"),
    "input dim 2**40": (lambda m: setattr(m.graph.input[0].type.tensor_type.shape.dim[1], "dim_value", 2**40),
                        InputFileError, r"'input_ids' has dim 1099511627776"),
    "weight with no rows": (_weight_without_rows, InputFileError, r"initializer 'w1' has dim 0"),
    "2**60 elements": (_absurd_table, InputFileError, r"initializer 'emb' has 1152921504606846976 elements"),
    "empty input name": (lambda m: _node(m, "up").input.__setitem__(1, ""),
                         InputFileError, r"node 'up' \(MatMul\): input 1 \('B'\) is required but its name is empty"),
    "dangling input": (lambda m: _node(m, "up").input.__setitem__(1, "nowhere"),
                       InputFileError, r"node 'up' \(MatMul\): input 'nowhere' is produced by no node"),
    "two producers": (lambda m: _node(m, "down").output.__setitem__(0, "u"),
                      InputFileError, r"node 'down' \(MatMul\): output 'u' already comes from node 'up'"),
    "output overwrites a weight": (lambda m: _node(m, "up").output.__setitem__(0, "w2"),
                                   InputFileError, r"output 'w2' already comes from initializer"),
    "unknown domain, imported": (lambda m: _foreign(m, "evil.domain", True),
                                 UnsupportedOpError, r"node 'act' \(op Relu\).*domain 'evil.domain'"),
    "unknown domain, not imported": (lambda m: _foreign(m, "evil.domain", False),
                                     UnsupportedOpError, r"domain 'evil.domain'"),
    "known non-standard domain": (lambda m: _foreign(m, "ai.onnx.ml", True), UnsupportedOpError,
                                  r"domain 'ai.onnx.ml'"),
    "op type unknown to ONNX": (lambda m: setattr(_node(m, "act"), "op_type", "NoSuchOp"),
                                InputFileError, r"node 'act' \(NoSuchOp\): no operator 'NoSuchOp' in ONNX opset 18"),
    "too many inputs": (lambda m: _node(m, "act").input.append("u"),
                        InputFileError, r"node 'act' \(Relu\): 2 inputs, the operator takes 1"),
    "attribute of the wrong type": (lambda m: _replace_attr(m, "softmax", "axis", 1.5),
                                    InputFileError, r"node 'softmax' \(Softmax\): attribute 'axis' is FLOAT, "
                                                    r"expected INT"),
    "unknown attribute": (lambda m: _replace_attr(m, "act", "batch_dims", 3),
                          InputFileError, r"node 'act' \(Relu\): unknown attribute 'batch_dims'"),
    "external data outside the model's directory": (lambda m: _external(m, "emb", "../../etc/passwd"),
                                                    InputFileError, r"'\.\./\.\./etc/passwd' leaves the model's directory"),
    "opset from the future": (lambda m: setattr(m.opset_import[0], "version", 99),
                              InputFileError, r"standard opset 99 is outside"),
    "shape inference contradiction": (lambda m: _init(m, "w2").CopyFrom(
        numpy_helper.from_array(np.zeros((32, 17), np.float32), "w2")),
        InputFileError, r"ONNX checker: .*node name: residual.*Incompatible dimensions"),
}


def _one_line(e: BaseException, path) -> str:
    msg = str(e)
    assert "\n" not in msg and str(path) in msg and "Traceback" not in msg, msg
    return msg


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_model_is_one_line_and_exit_2(tmp_path, capsys, case):
    mutate, cls, pattern = CASES[case]
    m = small_model()
    mutate(m)
    path = tmp_path / "m.onnx"
    path.write_bytes(m.SerializeToString())
    with pytest.raises(cls, match=pattern) as e:
        lower_onnx(path)
    if cls is InputFileError:
        _one_line(e.value, path)
    capsys.readouterr()
    assert main(["compile", str(path), "--no-cache", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert not (tmp_path / "out").exists()


def _with_bad_utf8(m, text: bytes) -> bytes:
    data = m.SerializeToString()
    assert data.count(text) == 1
    return data.replace(text, b"\x9e" * len(text))


@pytest.mark.parametrize("where", ["op type", "metadata", "producer"])
def test_text_that_is_not_utf8(tmp_path, where):
    """protobuf returns a proto2 string that is not UTF-8 as bytes (fuzz-found: a TypeError in
    onnx.defs, a UnicodeDecodeError building the checker's skeleton)."""
    m = small_model()
    m.producer_name = "fuzz-producer"
    helper.set_metadata_props(_node(m, "up"), {"namespace": "model.layers.0.mlp"})
    text = {"op type": b"Relu", "metadata": b"model.layers.0.mlp", "producer": b"fuzz-producer"}[where]
    path = tmp_path / "m.onnx"
    path.write_bytes(_with_bad_utf8(m, text))
    if where == "producer":   # not read by anything: the model lowers
        assert lower_onnx(path).nodes
        return
    with pytest.raises(InputFileError, match="is not valid UTF-8 text") as e:
        lower_onnx(path)
    _one_line(e.value, path)


def test_the_valid_base_model_lowers():
    g = lower_onnx_model(small_model())
    assert [n.op for n in g.nodes] == ["embedding", "norm", "matmul", "activation", "matmul", "elementwise",
                                       "softmax"]


def test_caller_model_is_left_as_it_was():
    """Validation sorts and strips a skeleton copy; the caller's ModelProto is not touched."""
    m = small_model()
    nodes = list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(nodes[::-1])
    before = m.SerializeToString()
    lower_onnx_model(m)
    assert m.SerializeToString() == before


def test_shape_error_from_the_ir_is_located_at_its_onnx_node():
    """A shape the IR op refuses (here a matmul whose weight has the wrong width) is a ShapeError,
    a WaferccError, naming the file and the ONNX node it came from."""
    from wafercc.frontend.onnx_lift import Lifter
    from wafercc.frontend.onnx_source import SourceGraph
    src = SourceGraph(small_model(), "m.onnx")
    lifter = Lifter(src, "m")
    lifter.g.add_value("x", ("batch", "seq", 16), DType.F32, ValueKind.ACTIVATION)
    lifter.g.add_value("w", (17, 8), DType.F32, ValueKind.WEIGHT)
    with pytest.raises(ShapeError, match=r"^m\.onnx: node 'up' \(MatMul\): lowered as IR op matmul: ") as e:
        lifter.add_node(_node(src.model, "up"), "matmul", {"x": "x", "w": "w"}, ["o"])
    assert isinstance(e.value, WaferccError) and "\n" not in str(e.value)


# -- native crashes: onnx's checker and onnxruntime ------------------------------------------------
def _tiny_llama_gathernd(batch_dims: int) -> onnx.ModelProto:
    m = onnx.load(TINY_LLAMA)
    n = next(n for n in m.graph.node if n.op_type == "GatherND")   # in the attention mask's subgraph
    del n.attribute[:]
    n.attribute.append(helper.make_attribute("batch_dims", batch_dims))
    return m


@pytest.mark.parametrize("batch_dims, where", [
    (-5, "ONNX checker"),                           # onnx 1.23's GatherND inference segfaults
    (-2**63, "attention mask"),                      # passes onnx's checker; onnxruntime 1.32 aborts
    (7, "ONNX checker: .*GatherND"),                 # an ordinary refusal by strict shape inference
])
def test_hostile_gathernd_attribute_does_not_kill_the_compiler(batch_dims, where):
    with pytest.raises(InputFileError, match=where) as e:
        lower_onnx_model(_tiny_llama_gathernd(batch_dims), where="llama.onnx")
    assert "\n" not in str(e.value) and str(e.value).startswith("llama.onnx: ")


def test_isolated_call_survives_abort_timeout_and_errors():
    big = np.arange(3 << 20, dtype=np.float32).reshape(3, -1)
    assert np.array_equal(isolated.call(lambda: big), big)          # mapped back, not pickled
    assert isolated.call(lambda: {"a": (1, "b")}) == {"a": (1, "b")}
    with pytest.raises(isolated.NativeFailure, match=r"crashed \(SIGABRT\)"):
        isolated.call(os.abort)
    with pytest.raises(isolated.NativeFailure, match="did not finish in 1 s"):
        t = time.monotonic()
        isolated.call(lambda: time.sleep(30), timeout=1)
    assert time.monotonic() - t < 10
    with pytest.raises(isolated.NativeFailure, match="^bad value$"):
        isolated.call(lambda: (_ for _ in ()).throw(ValueError("bad value\nsecond line")))


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="the bound needs /proc and rlimits")
def test_isolated_call_bounds_memory():
    with pytest.raises(isolated.NativeFailure):
        isolated.call(lambda: np.ones(1 << 30, np.float64).sum(), memory=1 << 30)   # 8 GB asked, 1 GB allowed


# -- fuzz ------------------------------------------------------------------------------------------
FUZZ_EXAMPLES = int(os.environ.get("WAFERCC_FUZZ_EXAMPLES", "300"))   # a long run sets more, and randomises
FUZZ = dict(deadline=timedelta(seconds=30), database=None, derandomize="WAFERCC_FUZZ_EXAMPLES" not in os.environ,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                   HealthCheck.data_too_large])


def _lowers_or_one_line(data: bytes, path) -> None:
    path.write_bytes(data)
    try:
        lower_onnx(path)
    except WaferccError as e:
        msg = str(e)
        assert msg.strip() and "\n" not in msg and "Traceback" not in msg, msg


@settings(max_examples=FUZZ_EXAMPLES, **FUZZ)
@given(data=onnx_files(small_model()))
def test_fuzz_small_model_lowers_or_fails_in_one_line(tmp_path, data):
    _lowers_or_one_line(data, tmp_path / "m.onnx")


@settings(max_examples=max(FUZZ_EXAMPLES // 5, 10), **FUZZ)
@given(data=onnx_files(onnx.load(TINY_LLAMA)))
def test_fuzz_exported_llama_lowers_or_fails_in_one_line(tmp_path, data):
    """The exported tiny Llama brings attention, rotary and the mask subgraph run on onnxruntime."""
    _lowers_or_one_line(data, tmp_path / "m.onnx")
