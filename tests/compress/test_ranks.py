"""Rank choice within an accuracy budget against exhaustive search."""

from __future__ import annotations

import itertools
import math

import pytest

from deepx_sim.accuracy import AccuracyModel
from deepx_sim.compress.ranks import LOSS_STEP, choose_ranks, rank_grid
from deepx_sim.costs import Variant
from deepx_sim.model import load_model
from deepx_sim.model.layers import get_layer


@pytest.mark.parametrize("budget", [0.0, 0.005, 0.02, 0.05, 0.2])
def test_choice_equals_brute_force_on_speakerid(budget: float) -> None:
    graph = load_model("speakerid")
    accuracy = AccuracyModel(graph)
    fcs = [get_layer(graph, n) for n in ("fc1", "fc2", "fc3")]
    grids = [[None, *rank_grid(lay, points=12)] for lay in fcs]

    def steps(lay, k):  # type: ignore[no-untyped-def]
        return 0 if k is None else math.ceil(accuracy.loss(lay, Variant(rank=k)) / LOSS_STEP - 1e-9)

    def saved(lay, k):  # type: ignore[no-untyped-def]
        return 0 if k is None else lay.fc.m * lay.fc.n - k * (lay.fc.m + lay.fc.n)

    best = max(
        sum(saved(lay, k) for lay, k in zip(fcs, combo, strict=True))
        for combo in itertools.product(*grids)
        if sum(steps(lay, k) for lay, k in zip(fcs, combo, strict=True)) * LOSS_STEP <= budget + 1e-12
    )
    chosen = choose_ranks(graph, budget, accuracy, grid_points=12)
    got = sum(saved(get_layer(graph, n), k) for n, k in chosen.items())
    assert got == best
    loss = sum(accuracy.loss(get_layer(graph, n), Variant(rank=k)) for n, k in chosen.items())
    assert loss <= budget + 1e-12
    for name, k in chosen.items():
        fc = get_layer(graph, name).fc
        assert fc is not None and k < fc.break_even_rank  # only ranks that pay
