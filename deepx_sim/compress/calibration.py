"""The reconstruction-error -> accuracy-loss estimator, calibrated on measurements.

The planner's RLC needs the accuracy cost of a rank before running it.  The
estimator is linear in the squared relative reconstruction error of each
changed layer, with one constant for hidden layers and one for the
classifier (the last weighted layer, far more sensitive), summed over layers:

    loss ~= ACCURACY_PER_ERR2 * sum_hidden err2_l + OUTPUT_ACCURACY_PER_ERR2 * err2_out
            (+ a fixed loss per 8-bit layer)

``calibration_points`` measures real pairs (sum of err2, test-accuracy loss)
on the in-project trained models (single-layer and whole-model
factorisations at a ladder of ranks), and ``fit`` finds the constant by least
squares through the origin.  The constants in ``accuracy.py`` are the
ones fitted here (see ``experiments/dxtk_accuracy.py`` for the report).
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

from deepx_sim.accuracy import PRECISION_LOSS, classifier_layers, err2_loss
from deepx_sim.accuracy.sensitivity import one_blas_thread
from deepx_sim.compress.optimizers import (
    Report,
    conv_separation,
    precision_scaling,
    weight_factorization,
)
from deepx_sim.model.execute import accuracy
from deepx_sim.model.layers import LayerKind, layers_in_order
from deepx_sim.model.weights import require_weights


def estimate_loss(graph: nx.DiGraph, reports: list[Report]) -> float:
    """Estimated accuracy loss of the changes in ``reports`` (the planner's rule)."""
    classifier = classifier_layers(graph)
    loss = 0.0
    for report in reports:
        for change in report.changes:
            if change.optimizer == "ps":
                loss += PRECISION_LOSS.get(int(change.setting.split("-")[0]), 0.0)
            else:
                loss += err2_loss(change.rel_error ** 2, change.layer in classifier)
    return loss


def _weighted(graph: nx.DiGraph, kind: LayerKind) -> list[str]:
    store = require_weights(graph, "calibration")
    return [lay.name for lay in layers_in_order(graph) if lay.kind == kind and store.has(lay.name)]


@dataclass(frozen=True)
class Point:
    model: str
    optimizer: str
    setting: str
    err2_hidden: float
    err2_output: float
    measured_loss: float


def calibration_points(models: dict[str, tuple[nx.DiGraph, np.ndarray, np.ndarray]],
                       fractions: tuple[float, ...] = (0.9, 0.7, 0.5, 0.35, 0.25, 0.15, 0.1)) -> list[Point]:
    """(sum err2, measured loss) for wf on each dense layer and cs on each conv
    layer alone, and for all of them at once, at each ``fraction`` of the
    break-even rank; precision scaling at 16 and 8 bits."""
    with one_blas_thread():
        return _points(models, fractions)


def _points(models: dict[str, tuple[nx.DiGraph, np.ndarray, np.ndarray]],
            fractions: tuple[float, ...]) -> list[Point]:
    points: list[Point] = []
    for model, (graph, x, y) in models.items():
        base = accuracy(graph, x, y)
        output = classifier_layers(graph)
        dense = _weighted(graph, LayerKind.FC)
        convs = _weighted(graph, LayerKind.CONV)
        for fraction in fractions:
            groups = [("wf", [name]) for name in dense] + [("cs", [name]) for name in convs]
            groups += [("wf", dense)] + ([("cs", convs)] if convs else [])
            for optimizer, layers in groups:
                apply = weight_factorization if optimizer == "wf" else conv_separation
                trial, report = apply(graph, fraction=fraction, layers=layers)
                if not report.changes:
                    continue
                hidden = sum(c.rel_error ** 2 for c in report.changes if c.layer not in output)
                out = sum(c.rel_error ** 2 for c in report.changes if c.layer in output)
                points.append(Point(model, optimizer, f"{'+'.join(layers)} x{fraction:g}",
                                    hidden, out, base - accuracy(trial, x, y)))
        for bits in (16, 8):
            trial, report = precision_scaling(graph, bits)
            points.append(Point(model, "ps", f"{bits}-bit", report.err2_total(), 0.0,
                                base - accuracy(trial, x, y)))
    return points


def fit(points: list[Point]) -> tuple[float, float]:
    """(hidden, output) constants: least squares through the origin on the wf/cs points."""
    use = [p for p in points if p.optimizer != "ps"]
    features = np.array([[p.err2_hidden, p.err2_output] for p in use])
    loss = np.array([p.measured_loss for p in use])
    coef, *_ = np.linalg.lstsq(features, loss, rcond=None)
    return float(max(coef[0], 0.0)), float(max(coef[1], 0.0))


def prediction_errors(points: list[Point], hidden_per_err2: float, output_per_err2: float) -> np.ndarray:
    """Estimated minus measured loss for each wf/cs point."""
    return np.array([hidden_per_err2 * p.err2_hidden + output_per_err2 * p.err2_output - p.measured_loss
                     for p in points if p.optimizer != "ps"])
