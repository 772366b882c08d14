"""compress keeps its budget, measured: on the rows it chose on, on the rows it held apart
(within 1 point), and on models it has never seen, judged on fresh inputs."""

from __future__ import annotations

import itertools
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from deepx_sim.accuracy import Source
from deepx_sim.accuracy.sources import reference
from deepx_sim.cli import main
from deepx_sim.compress.search import HELD_TOLERANCE, compress
from deepx_sim.compress.train import cnn_template
from deepx_sim.model.builder import GraphBuilder
from deepx_sim.model.memory import stored_sizes
from deepx_sim.model.onnx import load_onnx, save_onnx
from deepx_sim.model.weights import random_weights
from tests.compress.conftest import residual_cnn, small_cnn, with_weights


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPX_SIM_CACHE", str(tmp_path / "cache"))


def low_rank_mlp(sizes: tuple[int, ...], rank: int, noise: float, seed: int = 0) -> nx.DiGraph:
    """An MLP whose hidden weights are rank ``rank`` plus i.i.d. noise of relative size
    ``noise`` (the issue's 650-1000-1000-106 with rank 64 at full size); He scale."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder("lowrank_mlp", (1, sizes[0]))
    arrays = {}
    for i, (n, m) in enumerate(itertools.pairwise(sizes), start=1):
        b.fc(m, name=f"fc{i}")
        if i < len(sizes) - 1:
            b.relu(name=f"relu{i}")
            w = rng.standard_normal((m, rank)) @ rng.standard_normal((rank, n)) / np.sqrt(rank)
            w += noise * rng.standard_normal((m, n))
        else:
            w = rng.standard_normal((m, n))
        arrays[f"fc{i}/weight"] = w * np.sqrt(2.0 / n)
        arrays[f"fc{i}/bias"] = np.zeros(m)
    return with_weights(b.build(), arrays)


def random_cnn(seed: int = 0) -> nx.DiGraph:
    """The digits CNN's shape on 3x12x12 inputs, 8 and 16 channels, with He-initialised
    random weights (random_weights): no training, no redundancy."""
    graph = cnn_template(seed, (1, 3, 12, 12), (8, 16), 64, name="random_cnn")
    random_weights(graph, seed)
    return graph


def _fresh(graph: nx.DiGraph, rows: int, seed: int) -> Source:
    """Inputs compress never saw: N(0, 1), another seed."""
    shape = next(iter(graph.nodes.values()))["layer"].output_shape[1:]
    x = np.random.default_rng(seed).standard_normal((rows, *shape)).astype(np.float32)
    return Source("inputs", x, None, f"fresh N(0, 1) inputs, seed {seed}")


@pytest.mark.parametrize("build", [small_cnn, residual_cnn, lambda _: low_rank_mlp((40, 60, 60, 8), 6, 0.05)])
@pytest.mark.parametrize("budget", [0.02, 0.05, 0.1])
def test_held_apart_loss_never_exceeds_the_budget_by_more_than_a_point(build: object, budget: float) -> None:
    graph = build(np.random.default_rng(0))  # type: ignore[operator]
    outcome = compress(graph, ["pc", "wf", "cs", "ps"], budget)
    assert outcome.chosen_score is not None and outcome.held_score is not None
    assert outcome.chosen_score.loss <= budget + 1e-12 or outcome.backoffs  # chosen within the budget
    # re-scored from scratch on the held-apart rows: the written graph, not the search's copy
    held = reference(graph, outcome.held_apart).score_model(outcome.graph)
    assert held.loss <= budget + HELD_TOLERANCE
    assert held.loss == pytest.approx(outcome.held_score.loss)
    held_rows = {row.tobytes() for row in outcome.held_apart.x}
    assert held_rows.isdisjoint(row.tobytes() for row in outcome.chosen_on.x)
    assert outcome.held_apart.rows + outcome.chosen_on.rows == outcome.source.rows


def test_labelled_data_is_split_and_both_parts_are_scored() -> None:
    graph = small_cnn(np.random.default_rng(0))
    x = np.random.default_rng(5).standard_normal((300, 3, 9, 9)).astype(np.float32)
    y = reference(graph, Source("inputs", x, None, "x")).top1  # labels the model gets right
    y[:30] = (y[:30] + 1) % 5  # and 10 % it gets wrong
    outcome = compress(graph, ["pc", "wf", "cs"], 0.05, Source("labels", x, y, "data.npz"))
    assert outcome.before["chosen"] == pytest.approx(
        float((reference(graph, outcome.chosen_on).top1 == outcome.chosen_on.y).mean()))
    assert outcome.chosen_score is not None and outcome.chosen_score.accuracy is not None
    base = outcome.before["chosen"]
    assert outcome.chosen_score.loss == pytest.approx(base - outcome.chosen_score.accuracy)
    assert outcome.unit == "accuracy loss"


def _unseen_agreement(graph: nx.DiGraph, tmp_path: Path, given: list[str],
                      optimizers: str = "wf,cs") -> tuple[float, float]:
    """compress at 5 % through the CLI; (agreement on fresh inputs, weight bytes ratio)."""
    src, out = tmp_path / "m.onnx", tmp_path / "small.onnx"
    save_onnx(graph, src)
    assert main(["compress", str(src), "-o", str(out), "--optimizers", optimizers,
                 "--max-accuracy-loss", "0.05", *given]) == 0
    after = load_onnx(out)
    fresh = _fresh(graph, 2000, seed=99)
    ratio = stored_sizes(graph).weight_bytes / stored_sizes(after).weight_bytes
    return reference(graph, fresh).score_model(after).agreement, ratio


@pytest.mark.parametrize("how", ["synthetic", "inputs"])
def test_unseen_low_rank_mlp_keeps_95_percent_agreement(tmp_path: Path, how: str) -> None:
    graph = low_rank_mlp((130, 200, 200, 21), rank=16, noise=0.02)
    given = []
    if how == "inputs":
        np.save(tmp_path / "x.npy", _fresh(graph, 600, seed=7).x)
        given = ["--inputs", str(tmp_path / "x.npy")]
    agreement, ratio = _unseen_agreement(graph, tmp_path, given)
    assert agreement >= 0.95
    assert ratio > 2  # it did compress: the hidden layers are nearly rank 16


@pytest.mark.parametrize("how", ["synthetic", "inputs"])
def test_unseen_random_cnn_keeps_95_percent_agreement(tmp_path: Path, how: str) -> None:
    graph = random_cnn()
    given = []
    if how == "inputs":
        np.save(tmp_path / "x.npy", _fresh(graph, 600, seed=7).x)
        given = ["--inputs", str(tmp_path / "x.npy")]
    # random weights have no redundancy: ranks cost fidelity fast, so precision does the work
    agreement, ratio = _unseen_agreement(graph, tmp_path, given, "pc,wf,cs,ps")
    assert agreement >= 0.95
    assert ratio >= 2


@pytest.mark.slow
def test_the_issues_650_1000_1000_106_mlp_keeps_95_percent_agreement(tmp_path: Path) -> None:
    # the issue's case: the estimator chose rank 33 for a hidden layer and kept 37 % agreement
    graph = low_rank_mlp((650, 1000, 1000, 106), rank=64, noise=0.02)
    agreement, ratio = _unseen_agreement(graph, tmp_path, [])
    assert agreement >= 0.95
    assert ratio > 2
