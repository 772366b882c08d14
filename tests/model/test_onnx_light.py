"""The light ONNX reader: the same model as onnx.load, large weights left in the file
and read back from their place, and onnx.load where it does not apply."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deepx_sim.model.onnx import load_onnx
from deepx_sim.model.onnx_light import LARGE_BYTES, load_light
from deepx_sim.model.weights import weight_store


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPX_SIM_CACHE", str(tmp_path / "cache"))


def _model(path: Path, external: bool = False) -> dict[str, np.ndarray]:
    """x (1, 300) -> MatMul w1 (300 x 200, float32) -> Add b1 -> Reshape by an int64 constant;
    plus unread float16 and int64 tensors (training state) large enough to be left in the file."""
    rng = np.random.default_rng(0)
    arrays = {"w1": rng.standard_normal((300, 200)).astype(np.float32),
              "b1": rng.standard_normal(200).astype(np.float32),
              "shape": np.array([1, 200], np.int64),
              "training_state/m1": rng.standard_normal((100, 60)).astype(np.float16),
              "training_state/steps": np.arange(3000, dtype=np.int64)}
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 300])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc"),
             helper.make_node("Add", ["h", "b1"], ["hb"], name="bias"),
             helper.make_node("Reshape", ["hb", "shape"], ["y"], name="reshape")]
    inits = [numpy_helper.from_array(a, name) for name, a in arrays.items()]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], initializer=inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    onnx.save_model(model, str(path), save_as_external_data=external, size_threshold=0)
    return arrays


def test_the_light_model_is_onnx_load_without_the_large_payloads(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    arrays = _model(path)
    full = onnx.load(str(path))
    light, extents = load_light(path)
    large = {name for name, a in arrays.items() if a.nbytes > LARGE_BYTES}
    assert set(extents) == large == {"w1", "training_state/m1", "training_state/steps"}
    assert list(light.graph.node) == list(full.graph.node)
    for mine, theirs in zip(light.graph.initializer, full.graph.initializer, strict=True):
        if mine.name in large:
            assert not mine.raw_data and list(mine.dims) == list(theirs.dims)
            read = extents[mine.name].read(path)
            assert read.dtype == arrays[mine.name].dtype
            np.testing.assert_array_equal(read, numpy_helper.to_array(theirs))
        else:
            assert mine == theirs


@pytest.mark.parametrize("external", [False, True])
def test_imported_weights_equal_the_files_values(tmp_path: Path, external: bool) -> None:
    path = tmp_path / "m.onnx"
    arrays = _model(path, external)  # external data: onnx.load's path
    for _ in range(2):  # fresh, then from the graph cache
        store = weight_store(load_onnx(path))
        np.testing.assert_array_equal(store.get("fc"), arrays["w1"].T)
        np.testing.assert_array_equal(store.get("fc", "bias"), arrays["b1"])
        np.testing.assert_array_equal(store.training_state["m1"], arrays["training_state/m1"])
        np.testing.assert_array_equal(store.training_state["steps"], arrays["training_state/steps"])
