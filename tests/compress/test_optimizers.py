"""DXTK optimisers on layer graphs: closed forms, onnxruntime agreement, costs seen by the planner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepx_sim.compress.optimizers import (
    conv_separation,
    parameter_cleaning,
    precision_scaling,
    recompose_conv,
    sparse_factorization,
    weight_factorization,
)
from deepx_sim.errors import ModelError
from deepx_sim.model.builder import GraphBuilder
from deepx_sim.model.execute import conv2d, run
from deepx_sim.model.layers import LayerKind, get_layer, layers_in_order, total
from deepx_sim.model.memory import stored_sizes
from deepx_sim.model.onnx import load_onnx
from tests.compress.conftest import residual_cnn, run_onnx, small_cnn, small_mlp, with_weights

ort = pytest.importorskip("onnxruntime")


def test_numpy_and_onnxruntime_agree_and_onnx_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for graph in (small_mlp(rng), small_cnn(rng), residual_cnn(rng)):
        shape = get_layer(graph, "input").output_shape[1:]
        x = rng.standard_normal((7, *shape)).astype(np.float32)
        expected = run(graph, x)
        np.testing.assert_allclose(run_onnx(graph, x, tmp_path / "m.onnx"), expected, rtol=1e-4, atol=1e-4)
        again = load_onnx(tmp_path / "m.onnx")
        np.testing.assert_allclose(run(again, x), expected, rtol=1e-5, atol=1e-5)
        assert stored_sizes(again) == stored_sizes(graph)  # training state survives as unread initialisers


def test_conv2d_matches_a_direct_loop() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 6, 5))
    w = rng.standard_normal((6, 2, 3, 2))  # two groups of 2 input channels
    y = conv2d(x, w, None, (2, 1), (1, 0, 1, 0), (3, 4), groups=2)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
    for b in range(2):
        for n in range(6):
            g = n // 3  # output channels 0-2 read inputs 0-1, 3-5 read 2-3
            for i in range(y.shape[2]):
                for j in range(y.shape[3]):
                    window = xp[b, 2 * g : 2 * g + 2, 2 * i : 2 * i + 3, j : j + 2]
                    assert y[b, n, i, j] == pytest.approx((window * w[n]).sum())


def test_lossless_settings_match_to_float_tolerance_in_onnxruntime(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    mlp = small_mlp(rng, rank=4)
    x = rng.standard_normal((16, 30)).astype(np.float32)
    original = run_onnx(mlp, x, tmp_path / "a.onnx")
    factored, report = weight_factorization(mlp, ranks={"fc1": 4})  # W has rank 4 exactly
    assert report.changes[0].rel_error < 1e-5 and total(factored, "params") < total(mlp, "params")
    cleaned, _ = parameter_cleaning(factored)
    scaled, _ = precision_scaling(cleaned, 32)
    np.testing.assert_allclose(run_onnx(scaled, x, tmp_path / "b.onnx"), original, rtol=1e-4, atol=1e-3)
    cnn = small_cnn(rng)
    xc = rng.standard_normal((4, 3, 9, 9)).astype(np.float32)
    full, _ = conv_separation(cnn, ranks={"c1": 9, "c2": 18})  # K = min(C d, N d): exact
    np.testing.assert_allclose(
        run_onnx(full, xc, tmp_path / "c.onnx"), run_onnx(cnn, xc, tmp_path / "d.onnx"), rtol=1e-4, atol=1e-5
    )


def test_lossy_weight_factorisation_deviation_equals_eckart_young(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    w = rng.standard_normal((20, 50)).astype(np.float32)
    b = GraphBuilder("one", (1, 50))
    b.fc(20, name="fc")
    net = with_weights(b.build(), {"fc/weight": w, "fc/bias": rng.standard_normal(20)})
    factored, report = weight_factorization(net, ranks={"fc": 6})
    s = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    predicted = np.sqrt((s[6:] ** 2).sum() / (s**2).sum())  # closed form for rank-6 SVD
    assert report.changes[0].rel_error == pytest.approx(predicted, rel=1e-4)
    eye = np.eye(50, dtype=np.float32)  # unit inputs read out the weight columns
    measured = np.linalg.norm(
        run_onnx(factored, eye, tmp_path / "f.onnx") - run_onnx(net, eye, tmp_path / "o.onnx")
    )
    assert measured / np.linalg.norm(w) == pytest.approx(predicted, rel=1e-3)
    assert report.changes[0].params_after == 6 * (20 + 50) + 20 == total(factored, "params")


def test_lossy_conv_separation_computes_the_recomposed_kernel(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    cnn = small_cnn(rng)
    sep, report = conv_separation(cnn, ranks={"c2": 3})
    store = sep.graph["weights"]
    w_approx = recompose_conv(store.get("c2_v"), store.get("c2_h"))
    w = cnn.graph["weights"].get("c2")
    assert report.changes[0].rel_error == pytest.approx(
        np.linalg.norm(w - w_approx) / np.linalg.norm(w), rel=1e-5
    )
    b = GraphBuilder("c", (1, 8, 9, 9))
    b.conv(6, 3, stride=2, padding=1, bias=False, name="c2")
    one = with_weights(b.build(), {"c2/weight": w})
    sep_one, _ = conv_separation(one, ranks={"c2": 3})
    x = rng.standard_normal((3, 8, 9, 9)).astype(np.float32)
    expected = conv2d(x, w_approx, None, (2, 2), (1, 1, 1, 1), (5, 5))
    np.testing.assert_allclose(run_onnx(sep_one, x, tmp_path / "s.onnx"), expected, rtol=1e-4, atol=1e-4)
    assert report.changes[0].params_after == 3 * 8 * 3 + 6 * 3 * 3 + 6


def test_sparse_factorisation_reports_sparsity_and_runs(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    w = (rng.standard_normal((60, 12)) @ rng.standard_normal((12, 80))).astype(np.float32)
    b = GraphBuilder("sf", (1, 80))
    b.fc(60, name="fc")
    net = with_weights(b.build(), {"fc/weight": w, "fc/bias": np.zeros(60)})
    out, report = sparse_factorization(net, atoms_fraction=0.25, nonzeros=4)
    change = report.changes[0]
    store = out.graph["weights"]
    codes, dictionary = store.get("fc_a"), store.get("fc_b")
    assert np.count_nonzero(codes, axis=0).max() <= 4
    assert change.detail["nnz"] == np.count_nonzero(codes) < 80 * 15 / 2  # DXTK's criterion
    assert change.rel_error == pytest.approx(
        np.linalg.norm(w - dictionary @ codes) / np.linalg.norm(w), rel=1e-5
    )
    sizes = stored_sizes(out)
    assert (
        sizes.weight_bytes == change.detail["nnz"] * 4 * 2 + 60 * 15 * 4 + 60 * 4
    )  # value + index per nonzero
    assert sizes.macs == change.detail["nnz"] + 60 * 15
    x = rng.standard_normal((5, 80)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(out, x, tmp_path / "sf.onnx"), run(out, x), rtol=1e-4, atol=1e-3)
    assert stored_sizes(load_onnx(tmp_path / "sf.onnx")) == sizes  # sparsity survives the file


def test_precision_scaling_bytes_and_int8_runs_in_onnxruntime(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    net = small_cnn(rng)
    sizes = {bits: stored_sizes(precision_scaling(net, bits)[0]).weight_bytes for bits in (64, 32, 16, 8)}
    weights = sum(lay.weight_params for lay in layers_in_order(net))
    assert sizes[64] - sizes[32] == weights * 4 and sizes[32] - sizes[16] == weights * 2
    q8, report = precision_scaling(net, 8)
    assert max(c.rel_error for c in report.changes) < 0.01  # per-channel int8 of Gaussian weights
    x = rng.standard_normal((4, 3, 9, 9)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(q8, x, tmp_path / "q.onnx"), run(q8, x), rtol=1e-4, atol=1e-5)
    again = load_onnx(tmp_path / "q.onnx")
    assert again.graph["weights"].storage("c1").bits == 8 and stored_sizes(again) == stored_sizes(q8)
    half, _ = precision_scaling(net, 16)
    np.testing.assert_allclose(run_onnx(half, x, tmp_path / "h.onnx"), run(half, x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ModelError, match="bits must be one of"):
        precision_scaling(net, 4)


def test_cleaning_drops_training_state_and_dropout_only() -> None:
    net = small_mlp(np.random.default_rng(7))
    cleaned, _report = parameter_cleaning(net)
    assert cleaned.graph["weights"].training_state == {}
    assert all(lay.kind != LayerKind.DROPOUT for lay in layers_in_order(cleaned))
    assert stored_sizes(net).memory_bytes - stored_sizes(cleaned).memory_bytes == 40 * 30 * 4
    x = np.random.default_rng(0).standard_normal((3, 30)).astype(np.float32)
    np.testing.assert_array_equal(run(cleaned, x), run(net, x))
    assert net.graph["weights"].training_state  # the input graph is left as it was


def test_optimisers_act_on_a_dag_and_layer_costs_follow_closed_forms(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    net = residual_cnn(rng)
    sep, _ = conv_separation(net, ranks={"branch": 4})
    both, _ = weight_factorization(sep, ranks={"fc1": 2})
    # branch: 6 -> 6, 3x3, 8x8 output: 4 x 6 x 3 then 6 x 4 x 3 multiply-adds per output pixel
    assert total(sep, "macs") - total(net, "macs") == 64 * (4 * 6 * 3 + 6 * 4 * 3) - 64 * 6 * 6 * 9
    assert total(both, "params") - total(sep, "params") == 2 * (6 + 12) - 12 * 6
    assert set(both.predecessors("residual")) == {"bn", "stem_relu"}
    x = rng.standard_normal((5, 4, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(both, x, tmp_path / "dag.onnx"), run(both, x), rtol=1e-4, atol=1e-4)
    with pytest.raises(ModelError, match="has no fc layer 'nope'"):
        weight_factorization(net, ranks={"nope": 2})
