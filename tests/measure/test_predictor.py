"""The learned latency correction: its features, including the kernel that ran before a
layer, and that a forest learns a time that depends on that context."""

from __future__ import annotations

import math
from pathlib import Path

import joblib
import numpy as np
import pytest

from deepx_sim.errors import PlatformError
from deepx_sim.measure.predictor import (
    FEATURES,
    OPERATORS,
    context_features,
    features,
    fit_predictor,
    load_predictor,
)
from deepx_sim.model import load_model
from deepx_sim.model.layers import NO_KERNEL_KINDS, Layer, layers_in_order, tensor_bytes

PREVIOUS = [FEATURES.index("log_previous_param_bytes"), FEATURES.index("log_previous_bytes")]
#: a synthetic processor: a batchnorm after a kernel with more than this many weight bytes
#: finds its input evicted from cache and runs SLOWER times slower
EVICTING_BYTES, SLOWER = 256 * 1024, 1.5


def kernel_before(layers: list[Layer], i: int) -> Layer | None:
    """Brute force: the nearest earlier layer that runs a kernel."""
    return next((layers[j] for j in range(i - 1, -1, -1) if layers[j].kind not in NO_KERNEL_KINDS), None)


def test_context_features_carry_the_kernel_before(tmp_path: Path) -> None:
    layers = layers_in_order(load_model("mobilenetv2"))  # with a Flatten between pool and classifier
    rows = context_features(layers)
    assert all(len(row) == len(FEATURES) for row in rows.values())
    skipped = 0
    for i, lay in enumerate(layers):
        before = kernel_before(layers, i)
        skipped += before is not None and before is not layers[i - 1]
        expected = [0.0, 0.0] if before is None else [
            math.log(tensor_bytes(before.params, 32) + 1),
            math.log(tensor_bytes(before.params + before.input_elements + before.output_elements, 32) + 1)]
        assert [rows[lay.name][i] for i in PREVIOUS] == pytest.approx(expected)
        assert rows[lay.name][: -len(PREVIOUS)] == features(lay)[: -len(PREVIOUS)]
    assert skipped >= 1  # a layer without a kernel (the Flatten) was stepped over


def test_operator_tells_relu6_from_relu() -> None:
    acts = [lay for lay in layers_in_order(load_model("mobilenetv2")) if lay.kind.value == "activation"]
    codes = {lay.op_type: features(lay)[FEATURES.index("operator")] for lay in acts}
    assert codes == {"Clip": OPERATORS.index("Clip") + 1}
    relu = next(lay for lay in layers_in_order(load_model("resnet50")) if lay.op_type == "Relu")
    assert features(relu)[FEATURES.index("operator")] == OPERATORS.index("Relu") + 1


def truth_log_ratio(layers: list[Layer], i: int) -> float:
    before = kernel_before(layers, i)
    evicted = before is not None and tensor_bytes(before.params, 32) > EVICTING_BYTES
    return math.log(SLOWER) if layers[i].kind.value == "batchnorm" and evicted else 0.0


def test_forest_learns_a_time_that_depends_on_the_kernel_before() -> None:
    models = [layers_in_order(load_model(name)) for name in ("resnet50", "googlenet", "densenet121",
                                                             "mobilenetv2")]
    kinds, rows, ratios = [], [], []
    for layers in models[:-1]:
        context = context_features(layers)
        for i, lay in enumerate(layers):
            if lay.kind.value == "batchnorm":
                kinds.append("batchnorm")
                rows.append(context[lay.name])
                ratios.append(truth_log_ratio(layers, i))
    assert 0 < sum(r > 0 for r in ratios) < len(ratios)  # both cases are in the training data
    predictor = fit_predictor("vm", kinds, rows, ratios)
    blind = fit_predictor("vm", kinds, [[*r[: PREVIOUS[0]], 0.0, 0.0] for r in rows], ratios)
    errors, blind_errors = [], []
    for layers in models[-1:]:  # a CNN the forest never saw
        factors = predictor.factors(layers)
        context = context_features(layers)
        for i, lay in enumerate(layers):
            if lay.kind.value == "batchnorm":
                truth = math.exp(truth_log_ratio(layers, i))
                errors.append(abs(factors[lay.name] / truth - 1))
                row = [*context[lay.name][: PREVIOUS[0]], 0.0, 0.0]
                blind_errors.append(abs(math.exp(blind.forests["batchnorm"].predict(np.array([row]))[0])
                                        / truth - 1))
    assert np.mean(np.array(errors) <= 0.1) >= 0.9
    assert np.mean(errors) < np.mean(blind_errors)


def test_a_predictor_of_the_old_format_is_refused(tmp_path: Path) -> None:
    old = tmp_path / "old.predictor.joblib"
    joblib.dump({"version": 1, "features": FEATURES[:11], "processor": "vm", "forests": {}, "samples": {}},
                old)
    with pytest.raises(PlatformError, match="version 2 .*re-run deepx-sim calibrate --predictor"):
        load_predictor(str(old))
