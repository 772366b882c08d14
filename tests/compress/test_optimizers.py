"""DXTK optimisers: closed forms, onnxruntime agreement, costs seen by the planner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepx_sim.compress.network import Network, Op, conv, conv2d, dense
from deepx_sim.compress.onnx_io import load_network, save_onnx
from deepx_sim.compress.optimizers import (
    conv_separation,
    parameter_cleaning,
    precision_scaling,
    recompose_conv,
    sparse_factorization,
    weight_factorization,
)
from deepx_sim.errors import ModelError
from deepx_sim.model.layers import total

ort = pytest.importorskip("onnxruntime")


def run_onnx(net: Network, x: np.ndarray, tmp_path: Path, name: str = "m.onnx") -> np.ndarray:
    path = save_onnx(net, tmp_path / name)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x.astype(np.float32)})[0]


def small_mlp(rng: np.random.Generator, rank: int | None = None) -> Network:
    w1 = rng.standard_normal((40, 30)).astype(np.float32)
    if rank is not None:  # an exactly rank-r matrix
        w1 = (rng.standard_normal((40, rank)) @ rng.standard_normal((rank, 30))).astype(np.float32)
    return Network(
        "mlp",
        (30,),
        [
            dense("fc1", w1, rng.standard_normal(40).astype(np.float32)),
            Op("r1", "relu"),
            Op("d1", "dropout"),
            dense(
                "fc2",
                rng.standard_normal((10, 40)).astype(np.float32),
                rng.standard_normal(10).astype(np.float32),
            ),
        ],
        training_state={"fc1/grad": np.ones((40, 30), np.float32)},
    )


def small_cnn(rng: np.random.Generator) -> Network:
    return Network(
        "cnn",
        (3, 9, 9),
        [
            conv(
                "c1",
                rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
                rng.standard_normal(8).astype(np.float32),
                stride=1,
                pad=1,
            ),
            Op("r1", "relu"),
            conv(
                "c2",
                rng.standard_normal((6, 8, 3, 3)).astype(np.float32),
                rng.standard_normal(6).astype(np.float32),
                stride=2,
                pad=1,
            ),
            Op("p", "maxpool", kernel=(2, 2), stride=(2, 2)),
            Op("f", "flatten"),
            dense("fc", rng.standard_normal((5, 24)).astype(np.float32), np.zeros(5, np.float32)),
            Op("s", "softmax"),
        ],
    )


def test_numpy_and_onnxruntime_agree_and_onnx_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for net in (small_mlp(rng), small_cnn(rng)):
        x = rng.standard_normal((7, *net.input_shape)).astype(np.float32)
        expected = net.forward(x)
        np.testing.assert_allclose(run_onnx(net, x, tmp_path), expected, rtol=1e-4, atol=1e-4)
        again = load_network(tmp_path / "m.onnx")
        np.testing.assert_allclose(again.forward(x), expected, rtol=1e-5, atol=1e-5)
        assert again.summary() == net.summary()  # training state survives as unread initialisers


def test_conv2d_matches_a_direct_loop() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 6, 5))
    w = rng.standard_normal((4, 3, 3, 2))
    y = conv2d(x, w, None, (2, 1), (1, 0))
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
    for b in range(2):
        for n in range(4):
            for i in range(y.shape[2]):
                for j in range(y.shape[3]):
                    assert y[b, n, i, j] == pytest.approx(
                        (xp[b, :, 2 * i : 2 * i + 3, j : j + 2] * w[n]).sum()
                    )


def test_lossless_settings_match_to_float_tolerance_in_onnxruntime(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    mlp = small_mlp(rng, rank=4)
    x = rng.standard_normal((16, 30)).astype(np.float32)
    original = run_onnx(mlp, x, tmp_path, "a.onnx")
    factored, report = weight_factorization(mlp, ranks={"fc1": 4})  # W has rank 4 exactly
    assert report.changes[0].rel_error < 1e-5 and factored.params() < mlp.params()
    cleaned, _ = parameter_cleaning(factored)
    scaled, _ = precision_scaling(cleaned, 32)
    np.testing.assert_allclose(run_onnx(scaled, x, tmp_path, "b.onnx"), original, rtol=1e-4, atol=1e-3)
    cnn = small_cnn(rng)
    xc = rng.standard_normal((4, 3, 9, 9)).astype(np.float32)
    full, _ = conv_separation(cnn, ranks={"c1": 9, "c2": 18})  # K = min(C d, N d): exact
    np.testing.assert_allclose(
        run_onnx(full, xc, tmp_path, "c.onnx"), run_onnx(cnn, xc, tmp_path, "d.onnx"), rtol=1e-4, atol=1e-5
    )


def test_lossy_weight_factorisation_deviation_equals_eckart_young(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    w = rng.standard_normal((20, 50)).astype(np.float32)
    b = rng.standard_normal(20).astype(np.float32)
    net = Network("one", (50,), [dense("fc", w, b)])
    factored, report = weight_factorization(net, ranks={"fc": 6})
    s = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    predicted = np.sqrt((s[6:] ** 2).sum() / (s**2).sum())  # closed form for rank-6 SVD
    assert report.changes[0].rel_error == pytest.approx(predicted, rel=1e-4)
    eye = np.eye(50, dtype=np.float32)  # unit inputs read out the weight columns
    measured = np.linalg.norm(run_onnx(factored, eye, tmp_path) - run_onnx(net, eye, tmp_path, "o.onnx"))
    assert measured / np.linalg.norm(w) == pytest.approx(predicted, rel=1e-3)
    assert report.changes[0].params_after == 6 * (20 + 50) + 20


def test_lossy_conv_separation_computes_the_recomposed_kernel(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    cnn = small_cnn(rng)
    sep, report = conv_separation(cnn, ranks={"c2": 3})
    ops = {op.name: op for op in sep.ops}
    w_approx = recompose_conv(ops["c2_v"].weight, ops["c2_h"].weight)
    w = {op.name: op for op in cnn.ops}["c2"].weight
    assert report.changes[0].rel_error == pytest.approx(
        np.linalg.norm(w - w_approx) / np.linalg.norm(w), rel=1e-5
    )
    x = rng.standard_normal((3, 8, 9, 9)).astype(np.float32)
    one = Network("c", (8, 9, 9), [conv("c2", w, None, stride=2, pad=1)])
    sep_one, _ = conv_separation(one, ranks={"c2": 3})
    expected = conv2d(x, w_approx, None, (2, 2), (1, 1))
    np.testing.assert_allclose(run_onnx(sep_one, x, tmp_path), expected, rtol=1e-4, atol=1e-4)
    assert report.changes[0].params_after == 3 * 8 * 3 + 6 * 3 * 3 + 6


def test_sparse_factorisation_reports_sparsity_and_runs(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    w = (rng.standard_normal((60, 12)) @ rng.standard_normal((12, 80))).astype(np.float32)
    net = Network("sf", (80,), [dense("fc", w, np.zeros(60, np.float32))])
    out, report = sparse_factorization(net, atoms_fraction=0.25, nonzeros=4)
    change = report.changes[0]
    ops = {op.name: op for op in out.ops}
    codes, dictionary = ops["fc_a"].weight, ops["fc_b"].weight
    assert np.count_nonzero(codes, axis=0).max() <= 4
    assert change.detail["nnz"] == np.count_nonzero(codes) < 80 * 15 / 2  # DXTK's criterion
    assert change.rel_error == pytest.approx(
        np.linalg.norm(w - dictionary @ codes) / np.linalg.norm(w), rel=1e-5
    )
    assert ops["fc_a"].weight_bytes() == change.detail["nnz"] * 4 * 2  # value + index per nonzero
    x = rng.standard_normal((5, 80)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(out, x, tmp_path), out.forward(x), rtol=1e-4, atol=1e-3)


def test_precision_scaling_bytes_and_int8_runs_in_onnxruntime(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    net = small_cnn(rng)
    sizes = {bits: precision_scaling(net, bits)[0].weight_bytes() for bits in (64, 32, 16, 8)}
    weights = sum(op.weight.size for op in net.weighted_ops())
    assert sizes[64] - sizes[32] == weights * 4 and sizes[32] - sizes[16] == weights * 2
    q8, report = precision_scaling(net, 8)
    assert max(c.rel_error for c in report.changes) < 0.01  # per-channel int8 of Gaussian weights
    x = rng.standard_normal((4, 3, 9, 9)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(q8, x, tmp_path), q8.forward(x), rtol=1e-4, atol=1e-5)
    half, _ = precision_scaling(net, 16)
    np.testing.assert_allclose(run_onnx(half, x, tmp_path, "h.onnx"), half.forward(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ModelError, match="bits must be one of"):
        precision_scaling(net, 4)


def test_cleaning_drops_training_state_and_dropout_only() -> None:
    net = small_mlp(np.random.default_rng(7))
    cleaned, _report = parameter_cleaning(net)
    assert cleaned.training_state == {} and all(op.kind != "dropout" for op in cleaned.ops)
    assert net.memory_bytes() - cleaned.memory_bytes() == 40 * 30 * 4
    x = np.random.default_rng(0).standard_normal((3, 30)).astype(np.float32)
    np.testing.assert_array_equal(cleaned.forward(x), net.forward(x))


def test_layer_graph_costs_follow_the_optimisers() -> None:
    rng = np.random.default_rng(8)
    net = small_cnn(rng)
    sep, _ = conv_separation(net, ranks={"c2": 3})
    both, _ = weight_factorization(sep, ranks={"fc": 2})
    for candidate in (net, sep, both):
        graph = candidate.to_layer_graph()
        assert total(graph, "macs") == candidate.macs()
        assert total(graph, "params") == candidate.params()
    assert both.to_layer_graph().graph["weights"].has("fc_u")
