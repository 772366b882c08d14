"""The estimate of what a rank costs when it cannot be measured: the err2 loss rule,
the spectral model, the classifier, the break-even rank and the rank ladder.

Runtime Layer Compression replaces an fc layer W (m x n) by U_k V_k, DXTK's
optimisers factorise fc and conv layers.  Each
candidate rank k gets an estimated accuracy loss from its relative
reconstruction error, the share of W's spectral energy that rank k drops:

    err2(k) = sum_{i>k} s_i^2 / sum_i s_i^2          (Eckart-Young: exact for SVD)
    loss(k) = ACCURACY_PER_ERR2 * err2(k)          (hidden layers)
    loss(k) = OUTPUT_ACCURACY_PER_ERR2 * err2(k)   (the classifier: last weighted layer)

``s_i`` are W's real singular values when the graph carries weights (ONNX
import, trained models); otherwise a spectrum model stands in: trained fc
layers have singular values decaying roughly as a power law, s_i = i^-gamma
with gamma = SPECTRUM_DECAY (an estimate).  The two per-err2 constants are
fitted by ``deepx_sim.compress.calibration`` on measured test-accuracy losses
of models trained in-project (``experiments/dxtk_accuracy.py`` reports the fit
and its error; a test fails if they drift).  Losses add up over layers and
the sum must stay within the budget (DeepX: about 5 %).

Precision variants cost accuracy too: 16-bit floats nothing measurable, 8-bit
integer weights a small per-layer loss (PRECISION_LOSS, estimate).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import networkx as nx
import numpy as np

from deepx_sim.model.layers import Layer, break_even_rank, layers_in_order

__all__ = [
    "ACCURACY_PER_ERR2", "OUTPUT_ACCURACY_PER_ERR2", "PRECISION_LOSS", "RANK_FRACTIONS", "SPECTRUM_DECAY",
    "break_even_rank", "candidate_ranks", "classifier_layers", "err2_loss",
    "geometric_fractions", "model_spectrum", "rank_ladder", "tail_energy", "weighted_layers",
]

#: Power-law exponent of the default singular-value model (estimate).
SPECTRUM_DECAY = 0.6
#: Accuracy loss per unit of squared relative reconstruction error of a hidden
#: layer, and of the classifier, fitted on the digits models (calibration.py).
ACCURACY_PER_ERR2 = 0.144
OUTPUT_ACCURACY_PER_ERR2 = 0.727
#: Accuracy loss of a weighted layer run at a given weight precision (estimate).
PRECISION_LOSS = {64: 0.0, 32: 0.0, 16: 0.0, 8: 0.002}
#: Default rank grid as fractions of the break-even rank mn/(m+n).
RANK_FRACTIONS = (0.9, 0.7, 0.5, 0.35, 0.25, 0.15, 0.1, 0.05)


@lru_cache(maxsize=256)
def model_spectrum(rank: int, decay: float) -> np.ndarray:
    return np.arange(1, rank + 1, dtype=float) ** -decay


def tail_energy(singular_values: np.ndarray) -> np.ndarray:
    """err2 for every k = 0..r: share of sum s_i^2 beyond the first k values."""
    sq = np.asarray(singular_values, dtype=float) ** 2
    total = sq.sum()
    if total == 0:
        return np.zeros(len(sq) + 1)
    kept = np.concatenate([[0.0], np.cumsum(sq)])
    return np.clip(1.0 - kept / total, 0.0, 1.0)


def rank_ladder(break_even: float, full: int, fractions: Sequence[float] = RANK_FRACTIONS) -> list[int]:
    """The rank ladder: ranks at ``fractions`` of the break-even rank, each below
    it (else nothing is saved) and below full rank, highest first."""
    ranks = {max(1, int(break_even * f)) for f in fractions}
    return sorted((k for k in ranks if k < break_even and k < full), reverse=True)


def geometric_fractions(break_even: float, points: int) -> tuple[float, ...]:
    """``points`` fractions spaced geometrically from rank 1 up to the break-even rank:
    the fine ladder a search over ranks walks."""
    top = max(1.0, float(np.ceil(break_even)) - 1)
    return tuple(float(r) / break_even for r in np.geomspace(1, top, points))


def candidate_ranks(layer: Layer, fractions: Sequence[float] = RANK_FRACTIONS) -> list[int]:
    """The planner's ranks for an fc layer: the ladder at ``fractions``."""
    if layer.fc is None:
        return []
    return rank_ladder(layer.fc.break_even_rank, min(layer.fc.m, layer.fc.n), fractions)


def err2_loss(err2: float, classifier: bool) -> float:
    """Estimated accuracy loss of a layer whose weights are changed by a squared
    relative reconstruction error ``err2`` (the calibrated linear rule)."""
    return (OUTPUT_ACCURACY_PER_ERR2 if classifier else ACCURACY_PER_ERR2) * err2


def classifier_layers(graph: nx.DiGraph) -> frozenset[str]:
    """The classifier: weighted layers with no weighted layer after them, named by the
    layer they were made from (a factorised classifier is still the classifier)."""
    weighted = {lay.name for lay in weighted_layers(graph)}
    feeds_weighted: dict[str, bool] = {}  # some weighted layer lies after it
    for n in reversed(list(nx.topological_sort(graph))):
        feeds_weighted[n] = any(s in weighted or feeds_weighted[s] for s in graph.successors(n))
    return frozenset(graph.nodes[n]["layer"].source_layer for n in weighted if not feeds_weighted[n])


def weighted_layers(graph: nx.DiGraph) -> list[Layer]:
    return [lay for lay in layers_in_order(graph) if lay.params > 0]
