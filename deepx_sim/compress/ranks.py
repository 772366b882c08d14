"""Choose an SVD rank per fc layer to save the most parameters within an accuracy budget.

A multiple-choice knapsack: each fc layer keeps full rank or takes one rank
from a grid; estimated losses add up over layers (as in the planner) and must
stay within the budget.  Solved exactly by dynamic programming over the loss
discretised to ``LOSS_STEP`` (rounded up, so the budget is never exceeded).
"""

from __future__ import annotations

import math

import networkx as nx

from deepx_sim.accuracy import AccuracyModel, geometric_fractions, rank_ladder, weighted_layers
from deepx_sim.costs import Variant
from deepx_sim.model.layers import Layer

LOSS_STEP = 1e-4


def rank_grid(layer: Layer, points: int = 48) -> list[int]:
    """The rank ladder at ``points`` geometric steps from 1 to the break-even rank, lowest first."""
    assert layer.fc is not None
    be = layer.fc.break_even_rank
    return sorted(rank_ladder(be, min(layer.fc.m, layer.fc.n), geometric_fractions(be, points)))


def choose_ranks(graph: nx.DiGraph, max_accuracy_loss: float,
                 accuracy: AccuracyModel | None = None, grid_points: int = 48) -> dict[str, int]:
    """fc layer -> rank for the factorised layers (others stay whole), minimising
    parameters subject to sum of estimated losses <= ``max_accuracy_loss``."""
    accuracy = accuracy or AccuracyModel(graph)
    budget = math.floor(max_accuracy_loss / LOSS_STEP + 1e-9)
    fcs = [lay for lay in weighted_layers(graph) if lay.fc is not None and rank_grid(lay, grid_points)]
    # best[b] = (params saved, choices) using at most b loss steps
    best: list[tuple[int, dict[str, int]]] = [(0, {})] * (budget + 1)
    for lay in fcs:
        assert lay.fc is not None
        m, n = lay.fc.m, lay.fc.n
        options = []
        for k in rank_grid(lay, grid_points):
            steps = math.ceil(accuracy.loss(lay, Variant(rank=k)) / LOSS_STEP - 1e-9)
            if steps <= budget:
                options.append((steps, m * n - k * (m + n), k))
        new = list(best)
        for b in range(budget + 1):
            for steps, saved, k in options:
                if steps <= b and best[b - steps][0] + saved > new[b][0]:
                    new[b] = (best[b - steps][0] + saved, {**best[b - steps][1], lay.name: k})
        best = new
    return best[budget][1]
