"""Choose a rank per layer to save the most parameters within an accuracy budget.

A multiple-choice knapsack: each layer keeps full rank or takes one option
(a loss, the parameters it saves, its setting); losses add up over layers and
must stay within the budget.  Solved exactly by dynamic programming over the
loss discretised to ``LOSS_STEP`` (rounded up, so the budget is never exceeded).
``compress`` feeds it measured per-layer curves, then measures the choice.
"""

from __future__ import annotations

import math

import networkx as nx

from deepx_sim.accuracy import AccuracyModel, geometric_fractions, rank_ladder, weighted_layers
from deepx_sim.costs import Variant
from deepx_sim.model.layers import Layer

LOSS_STEP = 1e-4

#: One option of a layer: (loss, parameters saved, setting).
Option = tuple[float, int, int]


def knapsack(options: dict[str, list[Option]], max_loss: float) -> dict[str, int]:
    """Layer -> setting for the layers that change, maximising parameters saved
    subject to the sum of losses (each rounded up to ``LOSS_STEP``) <= ``max_loss``."""
    budget = max(0, math.floor(max_loss / LOSS_STEP + 1e-9))
    # best[b] = (params saved, choices) using at most b loss steps
    best: list[tuple[int, dict[str, int]]] = [(0, {})] * (budget + 1)
    for layer, choices in options.items():
        steps_of = [(max(0, math.ceil(loss / LOSS_STEP - 1e-9)), saved, k) for loss, saved, k in choices]
        usable = [(steps, saved, k) for steps, saved, k in steps_of if steps <= budget and saved > 0]
        new = list(best)
        for b in range(budget + 1):
            for steps, saved, k in usable:
                if steps <= b and best[b - steps][0] + saved > new[b][0]:
                    new[b] = (best[b - steps][0] + saved, {**best[b - steps][1], layer: k})
        best = new
    return best[budget][1]


def rank_grid(layer: Layer, points: int = 48) -> list[int]:
    """The rank ladder at ``points`` geometric steps from 1 to the break-even rank, lowest first."""
    assert layer.fc is not None
    be = layer.fc.break_even_rank
    return sorted(rank_ladder(be, min(layer.fc.m, layer.fc.n), geometric_fractions(be, points)))


def choose_ranks(graph: nx.DiGraph, max_accuracy_loss: float,
                 accuracy: AccuracyModel | None = None, grid_points: int = 48) -> dict[str, int]:
    """fc layer -> rank for the factorised layers (others stay whole), minimising
    parameters subject to sum of the accuracy model's losses <= ``max_accuracy_loss``."""
    accuracy = accuracy or AccuracyModel(graph)
    options = {}
    for lay in weighted_layers(graph):
        if lay.fc is not None:
            m, n = lay.fc.m, lay.fc.n
            options[lay.name] = [(accuracy.loss(lay, Variant(rank=k)), m * n - k * (m + n), k)
                                 for k in rank_grid(lay, grid_points)]
    return knapsack(options, max_accuracy_loss)
