"""The graph read from an ONNX file is cached by the file's bytes: a second read parses
nothing, a changed file is read afresh, and weights still load (and are checked) on demand."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deepx_sim.errors import ModelError
from deepx_sim.model import get_layer, skeleton
from deepx_sim.model import onnx as onnx_module
from deepx_sim.model.onnx import UnknownOperatorWarning, load_onnx
from deepx_sim.model.spectra import weight_singular_values
from deepx_sim.model.weights import weight_store


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DEEPX_SIM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _fc_model(path: Path, w: np.ndarray, extra_op: str | None = None) -> Path:
    """x (1, n) -> Gemm by w (m, n) [-> extra_op]: one fc layer whose weight is ``w``."""
    n = w.shape[1]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Gemm", ["x", "w"], ["h" if extra_op else "y"], name="fc", transB=1)]
    if extra_op:
        nodes.append(helper.make_node(extra_op, ["h"], ["y"], name="odd"))
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=[numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def _weight(seed: int, shape: tuple[int, int] = (40, 60)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _no_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(path: Path) -> None:
        raise AssertionError(f"{path} was parsed")

    monkeypatch.setattr(onnx_module, "read_model", fail)


def test_a_second_read_parses_nothing_and_finds_the_spectrum_without_loading_the_weight(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = _weight(1)
    path = _fc_model(tmp_path / "m.onnx", w)
    exact = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    first = load_onnx(path)
    np.testing.assert_allclose(weight_singular_values(weight_store(first), "fc"), exact, rtol=1e-9)
    _no_parsing(monkeypatch)
    second = load_onnx(path)
    assert get_layer(second, "fc") == get_layer(first, "fc")
    store = weight_store(second)
    np.testing.assert_array_equal(weight_singular_values(store, "fc"),
                                  weight_singular_values(weight_store(first), "fc"))
    assert store.loaded_count() == 0  # neither the protobuf nor the weight was read


def test_weights_of_a_cached_graph_load_from_the_file_on_demand(tmp_path: Path) -> None:
    w = _weight(2)
    path = _fc_model(tmp_path / "m.onnx", w)
    load_onnx(path)
    store = weight_store(load_onnx(path))
    np.testing.assert_array_equal(store.get("fc"), w)  # (out, in), as the first read gave it


@pytest.mark.parametrize("keep_mtime", [False, True])
def test_a_changed_file_is_never_served_the_old_graph(tmp_path: Path, keep_mtime: bool) -> None:
    path = _fc_model(tmp_path / "m.onnx", _weight(3))
    load_onnx(path)
    stat = path.stat()
    new_w = _weight(4)  # same shape, so the same size: only the bytes differ
    _fc_model(path, new_w)
    assert path.stat().st_size == stat.st_size
    if keep_mtime:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    store = weight_store(load_onnx(path))
    np.testing.assert_array_equal(store.get("fc"), new_w)
    exact = np.linalg.svd(new_w.astype(np.float64), compute_uv=False)
    np.testing.assert_allclose(weight_singular_values(store, "fc"), exact, rtol=1e-9)


def test_a_file_changed_after_its_graph_was_read_is_refused(tmp_path: Path) -> None:
    path = _fc_model(tmp_path / "m.onnx", _weight(5))
    load_onnx(path)
    graph = load_onnx(path)  # from the cache: weights not read yet
    _fc_model(path, _weight(6))
    with pytest.raises(ModelError, match="changed after its graph was read"):
        weight_store(graph).get("fc")


def test_a_nan_weight_is_named_on_every_read(tmp_path: Path) -> None:
    w = _weight(7)
    w[3, 4] = np.nan
    path = _fc_model(tmp_path / "m.onnx", w)
    for _ in range(2):  # the second read comes from the cache
        with pytest.raises(ModelError, match="layer 'fc'.*NaN or infinite"):
            weight_singular_values(weight_store(load_onnx(path)), "fc")


def test_import_warnings_are_given_again_from_the_cache(tmp_path: Path) -> None:
    path = _fc_model(tmp_path / "m.onnx", _weight(8), extra_op="Hardmax")
    for _ in range(2):
        with pytest.warns(UnknownOperatorWarning, match="Hardmax"):
            load_onnx(path)


def test_other_input_shapes_and_a_corrupt_entry_are_read_afresh(tmp_path: Path, private_cache: Path) -> None:
    path = _fc_model(tmp_path / "m.onnx", _weight(9))
    load_onnx(path)
    for entry in (private_cache / skeleton.NAMESPACE).iterdir():
        entry.write_bytes(entry.read_bytes()[:-50])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a corrupt entry is dropped silently, not trusted
        graph = load_onnx(path)
    np.testing.assert_array_equal(weight_store(graph).get("fc"), _weight(9))
    raw = skeleton.bytes_key(path)
    assert skeleton.file_key(raw, None) != skeleton.file_key(raw, {None: (2, 60)})


def test_an_unwritable_cache_warns_once_for_graph_digests_and_spectra(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DEEPX_SIM_CACHE", str(blocker / "cache"))
    w = _weight(10)
    path = _fc_model(tmp_path / "m.onnx", w)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            s = weight_singular_values(weight_store(load_onnx(path)), "fc")
    messages = [str(c.message).split(" (")[0] for c in caught]
    assert messages == [f"cannot write the cache folder {blocker}/cache/onnx"]
    np.testing.assert_allclose(s, np.linalg.svd(w.astype(np.float64), compute_uv=False), rtol=1e-9)
