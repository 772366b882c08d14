"""Choose an SVD rank per fc layer to save the most parameters within an accuracy budget.

A multiple-choice knapsack: each fc layer keeps full rank or takes one rank
from a grid; estimated losses add up over layers (as in the planner) and must
stay within the budget.  Solved exactly by dynamic programming over the loss
discretised to ``LOSS_STEP`` (rounded up, so the budget is never exceeded).
"""

from __future__ import annotations

import math

import networkx as nx
import numpy as np

from deepx_sim.costs import Variant
from deepx_sim.model.layers import Layer
from deepx_sim.plan.variants import AccuracyModel, weighted_layers

LOSS_STEP = 1e-4


def rank_grid(layer: Layer, points: int = 48) -> list[int]:
    """Ranks below the break-even rank mn/(m+n), spaced geometrically from 1."""
    assert layer.fc is not None
    top = min(math.ceil(layer.fc.break_even_rank) - 1, layer.fc.m, layer.fc.n)
    if top < 1:
        return []
    return sorted({round(float(r)) for r in np.geomspace(1, top, points)})


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
