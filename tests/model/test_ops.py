"""The operators today's exporters emit for common CNNs, built with onnx.helper (no torch):
global pooling as ReduceMean, channel split and shuffle, shape arithmetic the legacy
exporter leaves in the graph.  None may become an 'other' layer or need --input-shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deepx_sim.model.execute import run
from deepx_sim.model.layers import LayerKind, get_layer, layers_in_order, total
from deepx_sim.model.onnx import load_onnx

ort = pytest.importorskip("onnxruntime")
RNG = np.random.default_rng(0)


def _const(name: str, value: object, dtype: type = np.int64) -> TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _weight(name: str, shape: tuple[int, ...]) -> TensorProto:
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32), name)


def _save(tmp_path: Path, name: str, nodes: list, inits: list, shape: list, opset: int) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = helper.make_model(
        helper.make_graph(nodes, name, [x], [y], initializer=inits),
        opset_imports=[helper.make_opsetid("", opset)],
    )
    model.ir_version = 8  # what the installed onnxruntime reads
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def _no_other(graph: object) -> None:
    others = [lay.name for lay in layers_in_order(graph) if lay.kind == LayerKind.OTHER]  # type: ignore[arg-type]
    assert others == []


def _agrees_with_onnxruntime(path: Path, shape: tuple[int, ...]) -> None:
    graph = load_onnx(path)
    x = RNG.standard_normal(shape).astype(np.float32)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(run(graph, x), expected, rtol=1e-4, atol=1e-5)


def test_dynamo_style_global_average_pool_is_pooling(tmp_path: Path) -> None:
    """torch's dynamo exporter (opset 18+) writes global average pooling as ReduceMean, axes an input."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("ReduceMean", ["r", "axes"], ["gap"], name="avgpool", keepdims=1),
        helper.make_node("Flatten", ["gap"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1),
    ]
    inits = [
        _weight("w", (16, 3, 3, 3)),
        _const("axes", [-1, -2]),
        _weight("fw", (10, 16)),
        _weight("fb", (10,)),
    ]
    path = _save(tmp_path, "gap", nodes, inits, ["batch", 3, 12, 12], opset=18)
    graph = load_onnx(path)
    _no_other(graph)
    pool = get_layer(graph, "avgpool")
    assert pool.kind == LayerKind.POOL and pool.output_shape == (1, 16, 1, 1)
    assert pool.flops == 16 * 12 * 12  # one add per input element
    assert total(graph, "params") == 16 * 3 * 9 + 10 * 16 + 10  # no bias on the conv
    _agrees_with_onnxruntime(path, (2, 3, 12, 12))


def test_shufflenet_channel_split_and_shuffle_are_views(tmp_path: Path) -> None:
    """ShuffleNetV2's unit: Split channels, a branch, Concat, then Reshape-Transpose-Reshape."""
    nodes = [
        helper.make_node("Split", ["x", "halves"], ["a", "b"], name="split", axis=1),
        helper.make_node("Conv", ["b", "w"], ["bc"], name="branch"),
        helper.make_node("Concat", ["a", "bc"], ["cat"], name="concat", axis=1),
        helper.make_node("Reshape", ["cat", "groups"], ["g"], name="group"),
        helper.make_node("Transpose", ["g"], ["t"], name="shuffle", perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", ["t", "back"], ["y"], name="ungroup"),
    ]
    inits = [
        _const("halves", [4, 4]),
        _weight("w", (4, 4, 1, 1)),
        _const("groups", [1, 2, 4, 6, 6]),
        _const("back", [1, 8, 6, 6]),
    ]
    graph = load_onnx(_save(tmp_path, "shuffle", nodes, inits, [1, 8, 6, 6], opset=13))
    _no_other(graph)
    assert get_layer(graph, "split").kind == get_layer(graph, "shuffle").kind == LayerKind.VIEW
    assert get_layer(graph, "split").flops == get_layer(graph, "shuffle").flops == 0
    # each branch reads its own half: 4 channels x 36 pixels, not the split's whole input
    assert graph.edges["split", "branch"]["elements"] == graph.edges["split", "concat"]["elements"] == 4 * 36


def test_legacy_exporter_shape_arithmetic_is_folded_without_input_shape(tmp_path: Path) -> None:
    """The legacy exporter computes Slice ends and Reshape/Expand targets from Shape nodes."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "one"], ["c"], axis=0),
        helper.make_node("Div", ["c", "two"], ["half"]),
        helper.make_node("Unsqueeze", ["half", "zero"], ["end"]),
        helper.make_node("Slice", ["x", "zero", "end", "one1"], ["sl"], name="slice"),
        helper.make_node("Shape", ["sl"], ["s2"]),
        helper.make_node(
            "ConstantOfShape", ["rank"], ["ones"], value=numpy_helper.from_array(np.array([1], np.int64))
        ),
        helper.make_node("Mul", ["ones", "s2"], ["target"]),
        helper.make_node("Expand", ["bias", "target"], ["grid"], name="expand"),
        helper.make_node("Add", ["sl", "grid"], ["biased"], name="add"),
        helper.make_node("Shape", ["biased"], ["s3"]),
        helper.make_node("Gather", ["s3", "zero0"], ["b"], axis=0),
        helper.make_node("Unsqueeze", ["b", "zero"], ["b1"]),
        helper.make_node("Concat", ["b1", "minus1"], ["flat_shape"], axis=0),
        helper.make_node("Reshape", ["biased", "flat_shape"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fw"], ["y"], name="fc", transB=1),
    ]
    inits = [
        _const("one", 1),
        _const("two", 2),
        _const("zero", [0]),
        _const("one1", [1]),
        _const("zero0", 0),
        _const("rank", [4]),
        _const("minus1", [-1]),
        _weight("bias", (1, 4, 1, 1)),
        _weight("fw", (5, 64)),
    ]
    path = _save(tmp_path, "legacy", nodes, inits, [1, 8, 4, 4], opset=13)
    graph = load_onnx(path)
    _no_other(graph)
    assert get_layer(graph, "slice").output_shape == (1, 4, 4, 4)
    assert [lay.kind for lay in layers_in_order(graph)] == [
        LayerKind.INPUT,
        LayerKind.VIEW,
        LayerKind.ADD,
        LayerKind.FLATTEN,
        LayerKind.FC,
    ]
    _agrees_with_onnxruntime(path, (1, 8, 4, 4))
