"""The learned latency correction: its features, including the kernel that ran before a
layer, and that a forest learns a time that depends on that context."""

from __future__ import annotations

import math
from pathlib import Path

import joblib
import networkx as nx
import numpy as np
import pytest

from deepx_sim.errors import PlatformError
from deepx_sim.measure.nets import write_net
from deepx_sim.measure.predictor import (
    FEATURES,
    OPERATORS,
    context_features,
    features,
    fit_predictor,
    load_predictor,
    producers_of,
)
from deepx_sim.model import load_model
from deepx_sim.model.layers import NO_KERNEL_KINDS, Layer, layers_in_order, tensor_bytes

PREVIOUS = [FEATURES.index("log_previous_param_bytes"), FEATURES.index("log_previous_bytes")]
REUSE, FRESH = FEATURES.index("log_reuse_bytes"), FEATURES.index("fresh_share")
#: a second synthetic processor: its cache keeps what was written up to this many bytes of traffic ago
CACHE_BYTES = 4 * 2**20
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
        assert rows[lay.name][: PREVIOUS[0]] == features(lay)[: PREVIOUS[0]]
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
    with pytest.raises(PlatformError, match="version 3 .*re-run deepx-sim calibrate --predictor"):
        load_predictor(str(old))


def kernel_writers(graph: nx.DiGraph, name: str) -> set[str]:
    """Brute force: the kernels whose outputs reach ``name`` through layers without one."""
    found: set[str] = set()
    for p in graph.predecessors(name):
        layer = graph.nodes[p]["layer"]
        found |= kernel_writers(graph, p) if layer.kind in NO_KERNEL_KINDS else {p}
    return found


def moved(layer: Layer) -> int:
    return tensor_bytes(layer.params + layer.input_elements + layer.output_elements, 32)


@pytest.mark.parametrize("model", ["heldout:squeezenet1_1", "mobilenetv2"])
def test_reuse_distance_and_fresh_share_by_brute_force(model: str, tmp_path: Path) -> None:
    graph = load_model(write_net(model, tmp_path) if ":" in model else model)
    layers = layers_in_order(graph)
    rows = context_features(layers, producers_of(graph))
    kernels = [lay for lay in layers if lay.kind not in NO_KERNEL_KINDS]
    at = {lay.name: i for i, lay in enumerate(kernels)}
    concats = 0
    for i, lay in enumerate(kernels):
        writers = kernel_writers(graph, lay.name)
        oldest = min((at[w] for w in writers), default=-1)
        reuse = sum(moved(k) for k in kernels[oldest + 1 : i])
        size = {w: tensor_bytes(graph.nodes[w]["layer"].output_elements, 32) for w in writers}
        fresh = sum(b for w, b in size.items() if at[w] == i - 1) / max(sum(size.values()), 1)
        assert rows[lay.name][REUSE] == pytest.approx(math.log(reuse + 1))
        assert rows[lay.name][FRESH] == pytest.approx(fresh)
        concats += lay.kind.value == "concat" and 0 < fresh < 1
    # SqueezeNet's Concats read one input just written and one written earlier
    assert concats == (8 if model.startswith("heldout") else 0)


def test_forest_learns_a_time_that_depends_on_how_long_ago_the_input_was_written(tmp_path: Path) -> None:
    """A synthetic processor: a Concat whose oldest input was written more than CACHE_BYTES
    of traffic ago runs SLOWER times slower.  With the producer features the forest recovers
    that on a CNN it never saw; without them (the kernel before only) it cannot."""
    def truth(row: list[float]) -> float:
        return math.log(SLOWER) if row[REUSE] > math.log(CACHE_BYTES) else 0.0

    def rows_of(model: str) -> dict[str, list[float]]:
        graph = load_model(write_net(model, tmp_path) if ":" in model else model)
        rows = context_features(layers_in_order(graph), producers_of(graph))
        return {n: r for n, r in rows.items() if graph.nodes[n]["layer"].kind.value == "concat"}

    train = [r for m in ("googlenet", "densenet121", "heldout:squeezenet1_0") for r in rows_of(m).values()]
    assert 0 < sum(truth(r) > 0 for r in train) < len(train)  # both cases are in the training data
    ratios = [truth(r) for r in train]
    seen = fit_predictor("vm", ["concat"] * len(train), train, ratios)
    blind = fit_predictor("vm", ["concat"] * len(train), [r[:REUSE] for r in train], ratios)
    test = list(rows_of("heldout:densenet_6_12").values())
    errors = np.array([abs(math.exp(seen.forests["concat"].predict(np.array([r]))[0] - truth(r)) - 1)
                       for r in test])
    blind_errors = [abs(math.exp(blind.forests["concat"].predict(np.array([r[:REUSE]]))[0] - truth(r)) - 1)
                    for r in test]
    # a split can only fall between training values: test rows inside the gap around the
    # threshold may go either way, every other one must come out right (within the bagging's
    # spread: a bootstrap sample can miss the training rows nearest the threshold)
    below = max(r[REUSE] for r in train if r[REUSE] <= math.log(CACHE_BYTES))
    above = min(r[REUSE] for r in train if r[REUSE] > math.log(CACHE_BYTES))
    clear = np.array([not below < r[REUSE] < above for r in test])
    assert clear.mean() >= 0.8 and (errors[clear] <= 0.1).all()
    assert errors.mean() < np.mean(blind_errors)
