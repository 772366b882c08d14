"""Per-layer sensitivity curves against brute force (the whole model re-run with the change
made structurally), their cache, and the accuracy model that reads them."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from deepx_sim.accuracy import AccuracyModel, Curve, Source, measure_profile, synthetic
from deepx_sim.accuracy import sensitivity as sens
from deepx_sim.accuracy.sources import reference
from deepx_sim.compress.optimizers import conv_separation, weight_factorization
from deepx_sim.costs import Variant
from deepx_sim.model import load_model
from deepx_sim.model.execute import run
from deepx_sim.model.layers import get_layer
from deepx_sim.model.weights import as_stored
from tests.compress.conftest import residual_cnn, small_cnn, small_mlp

ROWS = 160


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DEEPX_SIM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _changed(graph: nx.DiGraph, layer: str, knob: str, setting: int) -> nx.DiGraph:
    """The model with one layer changed the way compress changes it (structurally)."""
    if knob == "rank":
        return weight_factorization(graph, ranks={layer: setting})[0]
    if knob == "K":
        return conv_separation(graph, ranks={layer: setting})[0]
    new = graph.copy()
    store = graph.graph["weights"].copy()
    store.set(layer, "weight", *as_stored(store.get(layer), setting))
    new.graph["weights"] = store
    return new


@pytest.mark.parametrize("build", [small_mlp, small_cnn, residual_cnn])
def test_each_point_equals_the_whole_model_rerun_with_that_change(build: object) -> None:
    graph = build(np.random.default_rng(0))  # type: ignore[operator]
    source = synthetic(graph, rows=ROWS)
    profile = measure_profile(graph, source)
    ref = reference(graph, source)
    knobs = set()
    for lay in sens.profiled_layers(graph):
        for knob in sens.settings_for(lay):
            curve = profile.curve(lay.name, knob)
            assert curve is not None and curve.loss[-1] == 0.0  # the original closes each curve
            knobs.add(knob)
            for setting, loss, error in zip(curve.settings[:-1], curve.loss[:-1], curve.output_error[:-1],
                                            strict=True):
                score = ref.score_model(_changed(graph, lay.name, knob, int(setting)))
                # float32 sums in another order may flip a near-tie row, no more
                assert abs(loss - score.loss) <= 1 / ROWS + 1e-12
                assert error == pytest.approx(score.output_error, rel=1e-3, abs=1e-6)
    assert knobs >= {"rank", "bits"}


def test_curves_rise_as_the_rank_falls_on_a_low_rank_layer() -> None:
    # fc1 has rank 3 exactly: ranks >= 3 lose nothing, rank 1 loses a lot
    graph = small_mlp(np.random.default_rng(0), rank=3)
    curve = measure_profile(graph, synthetic(graph, rows=ROWS)).curve("fc1", "rank")
    assert curve is not None
    at = dict(zip(curve.settings.tolist(), curve.loss.tolist(), strict=True))
    assert all(at[k] == 0.0 for k in at if k >= 3)
    assert at[1] > 0.2


def test_envelope_and_interpolation_closed_form() -> None:
    curve = Curve("fc", "rank", np.array([1, 2, 4, 8]), np.array([0.5, 0.1, 0.2, 0.0]), np.zeros(4))
    # a noisy dip at rank 2 is lifted to rank 4's loss; never below 0
    assert curve.envelope().tolist() == [0.5, 0.2, 0.2, 0.0]
    assert curve.at(3) == pytest.approx(0.2)
    assert curve.at(6) == pytest.approx(0.1)
    assert curve.at(1) == 0.5


def test_profiles_are_cached_on_disk_and_keyed_by_the_weights(own_cache: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    graph = small_mlp(np.random.default_rng(0))
    source = synthetic(graph, rows=64)
    first = measure_profile(graph, source)

    def fail(*_: object) -> None:
        raise AssertionError("measured again although cached")

    monkeypatch.setattr(sens, "_measure", fail)
    again = measure_profile(graph, source)
    assert all(np.array_equal(again.curves[k].loss, first.curves[k].loss) for k in first.curves)
    other = small_mlp(np.random.default_rng(1))  # other weights: another key, so measured
    with pytest.raises(AssertionError, match="measured again"):
        measure_profile(other, synthetic(other, rows=64))


def test_the_accuracy_model_reads_measured_curves_and_says_so() -> None:
    graph = small_mlp(np.random.default_rng(0))
    model = AccuracyModel(graph)
    profile = model.curves()
    assert profile is not None
    fc1 = get_layer(graph, "fc1")
    curve = profile.curve("fc1", "rank")
    assert curve is not None
    k = int(curve.settings[2])
    assert model.loss(fc1, Variant(rank=k)) == profile.interaction * curve.at(k)
    bits = profile.curve("fc1", "bits")
    assert bits is not None
    assert model.loss(fc1, Variant(bits=8, rank=k)) == pytest.approx(profile.interaction * curve.at(k)
                                                                      + bits.at(8))
    assert model.accuracy_source.startswith("measured: estimated fidelity loss on synthetic inputs")
    x = np.random.default_rng(3).standard_normal((50, 30)).astype(np.float32)
    labelled = AccuracyModel(graph, source=Source("labels", x, np.zeros(50, np.int64), "mine.npz"))
    assert labelled.accuracy_source.startswith("measured: accuracy loss on mine.npz, 50 labelled rows")


def test_past_the_limit_the_weights_spectra_estimate_and_the_reason_is_given() -> None:
    graph = small_mlp(np.random.default_rng(0))
    model = AccuracyModel(graph, max_macs=10.0)
    assert model.curves() is None
    assert model.accuracy_source.startswith("estimate: err2 rule on the weights' singular values")
    assert "above the limit of" in model.accuracy_source
    assert model.spectrum_source(get_layer(graph, "fc1")) == "weights"


def test_zoo_models_without_weights_keep_the_spectral_estimate() -> None:
    model = AccuracyModel(load_model("speakerid"))
    assert model.curves() is None
    assert model.accuracy_source.startswith("estimate: spectral model (no weights")
    assert model.loss(get_layer(model.graph, "fc2"), Variant(rank=50)) > 0


def test_joint_points_are_measured_combinations_and_fix_the_interaction_factor() -> None:
    graph = residual_cnn(np.random.default_rng(0))
    source = synthetic(graph, rows=ROWS)
    profile = measure_profile(graph, source)
    ref = reference(graph, source)
    assert len(profile.joint) >= 1
    rank_curves = {layer: c for (layer, knob), c in profile.curves.items() if knob != "bits"}
    expected_points = []
    for level in sens.JOINT_LEVELS:
        # the combination: every rank layer at its lowest rank within the level, made structurally
        choice = {}
        for layer, curve in rank_curves.items():
            ok = [int(k) for k, loss in zip(curve.settings[:-1], curve.envelope()[:-1], strict=True)
                  if loss <= level]
            if ok:
                choice[layer] = ok[0]
        total = sum(rank_curves[n].at(k) for n, k in choice.items())
        if len(choice) < 2 or total == 0:
            continue
        fc = {n: k for n, k in choice.items() if get_layer(graph, n).fc is not None}
        changed = weight_factorization(graph, ranks=fc)[0] if fc else graph
        conv = {n: k for n, k in choice.items() if n not in fc}
        changed = conv_separation(changed, ranks=conv)[0] if conv else changed
        expected_points.append((total, ref.score_model(changed).loss))
    assert len(expected_points) == len(profile.joint) >= 1
    for (total, measured), (got_total, got_measured) in zip(expected_points, profile.joint, strict=True):
        assert got_total == pytest.approx(total)
        assert abs(got_measured - measured) <= 1 / ROWS + 1e-12
    sums, joint = profile.joint[:, 0], profile.joint[:, 1]
    expected = max(1.0, float(sums @ joint / (sums @ sums)))
    assert profile.interaction == pytest.approx(expected)


def test_a_combination_is_measured_as_the_structurally_changed_model_scores_it() -> None:
    graph = small_cnn(np.random.default_rng(0))
    source = synthetic(graph, rows=ROWS)
    model = AccuracyModel(graph, source=source)
    assert model.curves() is not None
    # the oracle: fc factorised and c1 separated structurally, fc's two factors and c2 at 8 bits
    changed = conv_separation(weight_factorization(graph, ranks={"fc": 4})[0], ranks={"c1": 3})[0]
    store = changed.graph["weights"].copy()
    for name in ("fc_v", "fc_u", "c2"):
        store.set(name, "weight", *as_stored(store.get(name), 8))
    changed.graph["weights"] = store
    substituted = sens.substituted(graph, {"fc": 4, "c1": 3}, {"fc": 8, "c2": 8})
    np.testing.assert_allclose(run(substituted, source.x), run(changed, source.x), rtol=1e-4, atol=1e-5)
    expected = reference(graph, source).score_model(changed).loss
    assert expected > 0  # a change the rows can see
    got = model.combined_loss({"fc": Variant(bits=8, rank=4), "c1": Variant(rank=3),
                               "c2": Variant(bits=8)})
    assert got is not None and abs(got - expected) <= 1 / ROWS + 1e-12
    assert model.combined_loss({"fc": Variant(), "c1": Variant(), "r1": Variant(bits=16)}) == 0.0
    # one layer alone: the curve's own measured point
    curve = model.curves().curve("c2", "K")  # type: ignore[union-attr]
    assert curve is not None
    alone = model.combined_loss({"c2": Variant(rank=int(curve.settings[2]))})
    assert alone is not None and abs(alone - curve.loss[2]) <= 1 / ROWS + 1e-12
    assert AccuracyModel(load_model("speakerid")).combined_loss({"fc2": Variant(rank=50)}) is None
