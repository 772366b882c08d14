"""The ONNX importer on models built here with onnx.helper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deepx_sim.errors import ModelError
from deepx_sim.model import LayerKind, get_layer, load_model, total
from deepx_sim.model.builder import GraphBuilder
from deepx_sim.model.onnx import UnknownOperatorWarning, load_onnx, parse_input_shape

RNG = np.random.default_rng(0)


def _init(name: str, shape: tuple[int, ...]) -> TensorProto:
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32), name)


def save(tmp_path: Path, nodes: list, inits: list, inputs: list, outputs: list,
         opset: int = 13, name: str = "m") -> Path:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def small_cnn(tmp_path: Path, batch: int | str = 1) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 32, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Flatten", ["p1"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w2", "b2"], ["y"], name="fc", transB=1),
    ]
    inits = [_init("w1", (16, 3, 3, 3)), _init("b1", (16,)), _init("w2", (10, 16 * 16 * 16)),
             _init("b2", (10,))]
    return save(tmp_path, nodes, inits, [x], [y], name="cnn")


def test_chain_matches_the_builder(tmp_path: Path) -> None:
    g = load_onnx(small_cnn(tmp_path))
    b = GraphBuilder("ref", (1, 3, 32, 32))
    b.conv(16, 3, padding=1)
    b.relu()
    b.pool(2, 2)
    b.flatten()
    b.fc(10)
    ref = b.build()
    for key in ("params", "macs", "flops"):
        assert total(g, key) == total(ref, key), key
    fc = get_layer(g, "fc")
    assert fc.kind == LayerKind.FC and (fc.fc.m, fc.fc.n) == (10, 4096)
    assert [get_layer(g, n).kind for n in ("conv1", "relu1", "pool1", "flatten")] == [
        LayerKind.CONV, LayerKind.ACTIVATION, LayerKind.POOL, LayerKind.FLATTEN]


def test_weights_are_lazy_and_fc_weights_are_m_by_n(tmp_path: Path) -> None:
    # MatMul stores B as (n, m); Gemm transB=1 stores (m, n): both come out (m, n)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w_mm = RNG.standard_normal((6, 4)).astype(np.float32)
    w_gemm = RNG.standard_normal((3, 4)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "wa"], ["h"], name="mm"),
             helper.make_node("Gemm", ["h", "wb"], ["y"], name="gemm", transB=1)]
    inits = [numpy_helper.from_array(w_mm, "wa"), numpy_helper.from_array(w_gemm, "wb")]
    g = load_onnx(save(tmp_path, nodes, inits, [x], [y], name="fcs"))
    store = g.graph["weights"]
    assert store.loaded_count() == 0
    assert np.array_equal(store.get("mm"), w_mm.T)
    assert store.loaded_count() == 1
    assert np.array_equal(store.get("gemm"), w_gemm)
    assert (get_layer(g, "mm").fc.m, get_layer(g, "mm").fc.n) == (4, 6)
    assert not get_layer(g, "mm").fc.bias


def test_branchy_model_keeps_its_dag(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], name="branch_a", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "wb"], ["b"], name="branch_b"),
        helper.make_node("Add", ["a", "b"], ["s"], name="sum"),
        helper.make_node("Concat", ["s", "x"], ["y"], name="cat", axis=1),
    ]
    inits = [_init("wa", (8, 8, 3, 3)), _init("wb", (8, 8, 1, 1))]
    g = load_onnx(save(tmp_path, nodes, inits, [x], [y], name="branchy"))
    assert set(g.predecessors("sum")) == {"branch_a", "branch_b"}
    assert set(g.predecessors("cat")) == {"sum", "x"}
    assert set(g.successors("x")) == {"branch_a", "branch_b", "cat"}
    assert get_layer(g, "cat").output_shape == (1, 16, 16, 16)
    assert get_layer(g, "sum").flops == 8 * 16 * 16
    assert g.edges["x", "cat"]["size_bytes"] == 8 * 16 * 16 * 4


def test_depthwise_conv_is_recognised(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 10, 10])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="dw", group=8, pads=[1, 1, 1, 1])]
    g = load_onnx(save(tmp_path, nodes, [_init("w", (8, 1, 3, 3))], [x], [y], name="dw"))
    assert get_layer(g, "dw").kind == LayerKind.DEPTHWISE_CONV
    assert get_layer(g, "dw").macs == 8 * 10 * 10 * 9


def test_unknown_operators_warn_and_cost_by_output(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Transpose", ["x"], ["t"], name="tr", perm=[0, 2, 1]),
             helper.make_node("Hardmax", ["t"], ["y"], name="neg")]
    with pytest.warns(UnknownOperatorWarning, match=r"'other'.*: Hardmax x1$"):
        g = load_onnx(save(tmp_path, nodes, [], [x], [y], name="odd"))
    assert get_layer(g, "neg").kind == LayerKind.OTHER
    assert get_layer(g, "neg").flops == 20  # one operation per output element
    assert get_layer(g, "tr").kind == LayerKind.VIEW and get_layer(g, "tr").flops == 0


def test_symbolic_batch_is_batch_one_and_other_dynamic_dims_ask_for_input_shape(tmp_path: Path) -> None:
    g = load_onnx(small_cnn(tmp_path, batch="N"))
    assert get_layer(g, "fc").output_shape == (1, 10)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "H", 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    path = save(tmp_path, [helper.make_node("Relu", ["x"], ["y"], name="r")], [], [x], [y], name="dyn")
    with pytest.raises(ModelError, match=r"dynamic dimensions.*--input-shape x=1x3x1x32"):
        load_onnx(path)
    g = load_model(small_cnn(tmp_path, batch="N"), {None: (2, 3, 32, 32)})
    assert get_layer(g, "fc").output_shape == (2, 10)
    assert get_layer(g, "fc").macs == 2 * 10 * 4096


def test_misleading_cases_get_messages_that_name_the_cause(tmp_path: Path) -> None:
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match="the file is empty"):
        load_onnx(empty)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    out_of_order = [helper.make_node("Relu", ["a"], ["y"], name="second"),
                    helper.make_node("Relu", ["x"], ["a"], name="first")]
    with pytest.raises(ModelError, match=r"node 'second' \(Relu\) reads 'a' before node 'first'"):
        load_onnx(save(tmp_path, out_of_order, [], [x], [y], name="order"))
    x4 = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    pool = [helper.make_node("MaxPool", ["x"], ["y"], name="pool")]
    with pytest.raises(ModelError, match="pool.*kernel_shape|kernel_shape.*pool"):
        load_onnx(save(tmp_path, pool, [], [x4], [y], name="pool"))
    gemm = [helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=1)]
    with pytest.raises(ModelError, match=r"node 'fc' \(Gemm\).*last dimension 4 does not match"):
        load_onnx(save(tmp_path, gemm, [_init("w", (3, 5))], [x], [y], name="gemm"))


def test_bad_files_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such ONNX file"):
        load_onnx(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01not a model")
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        load_onnx(junk)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    old = save(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], [], [x], [y], opset=6,
               name="old")
    with pytest.raises(ModelError, match="opset 7 or later"):
        load_onnx(old)
    with pytest.raises(ModelError, match="names \\['nope'\\]"):
        load_onnx(small_cnn(tmp_path), {"nope": (1, 3, 32, 32)})


def test_parse_input_shape() -> None:
    assert parse_input_shape("x=1x3x224x224") == ("x", (1, 3, 224, 224))
    assert parse_input_shape("2x8") == (None, (2, 8))
    with pytest.raises(ModelError, match="positive"):
        parse_input_shape("x=1xAx3")
    with pytest.raises(ModelError, match="> 0"):
        parse_input_shape("1x0")


def _save_graph(path: Path, nodes: list[onnx.NodeProto], out_shape: tuple[int, ...] | None = (1, 4),
                initializers: tuple[onnx.TensorProto, ...] = ()) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None if out_shape is None else list(out_shape))
    graph = helper.make_graph(nodes, "g", [x], [y], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("my.domain", 1)])
    onnx.save(model, path)
    return path


def test_a_dangling_input_is_named(tmp_path: Path) -> None:
    path = _save_graph(tmp_path / "d.onnx", [helper.make_node("Relu", ["x"], ["h"], name="r1"),
                                             helper.make_node("Add", ["h", "ghost"], ["y"], name="add1")])
    with pytest.raises(ModelError, match=r"node 'add1' \(Add\) reads 'ghost', which is no input"):
        load_onnx(path)


def test_a_cycle_names_both_nodes(tmp_path: Path) -> None:
    nodes = [helper.make_node("Relu", ["z"], ["h"], name="r1"),
             helper.make_node("Relu", ["h"], ["z"], name="r2"),
             helper.make_node("Relu", ["h"], ["y"], name="r3")]
    with pytest.raises(ModelError, match=r"node 'r1' \(Relu\) reads 'z' before node 'r2' produces it"):
        load_onnx(_save_graph(tmp_path / "c.onnx", nodes))


def test_an_unknown_operator_stays_other_with_a_warning_naming_it(tmp_path: Path) -> None:
    nodes = [helper.make_node("Relu", ["x"], ["h"], name="r1"),
             helper.make_node("MyCustomOp", ["h"], ["y"], name="custom1", domain="my.domain")]
    with pytest.warns(UnknownOperatorWarning, match="MyCustomOp x1"):
        graph = load_onnx(_save_graph(tmp_path / "u.onnx", nodes))
    assert get_layer(graph, "custom1").kind == LayerKind.OTHER


def test_a_shape_that_cannot_be_inferred_names_the_node(tmp_path: Path) -> None:
    nodes = [helper.make_node("MyCustomOp", ["x"], ["h"], name="custom1", domain="my.domain"),
             helper.make_node("Relu", ["h"], ["y"], name="r2")]
    with pytest.raises(ModelError, match=r"node 'custom1' \(MyCustomOp\): shape inference gave no static"):
        load_onnx(_save_graph(tmp_path / "s.onnx", nodes, out_shape=None))
