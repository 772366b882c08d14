"""Models trained in-project on real data, and the calibrated accuracy estimator."""

from __future__ import annotations

import numpy as np
import pytest

from deepx_sim.accuracy import ACCURACY_PER_ERR2, OUTPUT_ACCURACY_PER_ERR2
from deepx_sim.compress.calibration import calibration_points, fit, prediction_errors
from deepx_sim.compress.train import trained_model
from deepx_sim.model.execute import accuracy
from deepx_sim.model.layers import layers_in_order
from deepx_sim.model.memory import stored_sizes

#: Stated tolerances of the estimator on the digits models (see experiments/dxtk_accuracy.py).
MAX_MEAN_ABS_ERROR = 0.09  # mean |estimated - measured| accuracy loss over the calibration points
MAX_CONSTANT_DRIFT = 0.25  # relative change of a refitted constant against the shipped one


@pytest.fixture(scope="module")
def nets() -> dict[str, tuple]:
    out = {}
    for name in ("speakerid_digits", "cnn_digits"):
        net, data = trained_model(name)
        out[name] = (net, data.x_test, data.y_test)
    return out


def test_trained_models_reach_published_digits_accuracy(nets: dict[str, tuple]) -> None:
    # scikit-learn's own digits examples reach about 0.97 with an SVM; a 2-layer MLP should too
    for net, x, y in nets.values():
        assert accuracy(net, x, y) >= 0.96
    speakerid = nets["speakerid_digits"][0]
    store = speakerid.graph["weights"]
    assert [store.get(lay.name).shape for lay in layers_in_order(speakerid) if store.has(lay.name)] == [
        (1000, 64), (1000, 1000), (10, 1000)]
    sizes = stored_sizes(speakerid)
    assert sizes.training_state_bytes == 5 * sizes.weight_bytes  # float32 gradients, float64 Adam moments


@pytest.mark.slow
def test_the_estimator_has_not_drifted(nets: dict[str, tuple]) -> None:
    points = calibration_points(nets)
    hidden, output = fit(points)
    assert hidden == pytest.approx(ACCURACY_PER_ERR2, rel=MAX_CONSTANT_DRIFT)
    assert output == pytest.approx(OUTPUT_ACCURACY_PER_ERR2, rel=MAX_CONSTANT_DRIFT)
    errors = prediction_errors(points, ACCURACY_PER_ERR2, OUTPUT_ACCURACY_PER_ERR2)
    assert np.abs(errors).mean() <= MAX_MEAN_ABS_ERROR
    # precision scaling to 16 bits is measured lossless on both models
    assert all(abs(p.measured_loss) < 0.005 for p in points if p.setting == "16-bit")
