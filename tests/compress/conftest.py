"""Small models with real weights for the optimiser and compress tests."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np

from deepx_sim.model.builder import GraphBuilder
from deepx_sim.model.onnx import save_onnx
from deepx_sim.model.weights import WeightStore


def with_weights(
    graph: nx.DiGraph, arrays: dict[str, np.ndarray], training_state: dict[str, np.ndarray] | None = None
) -> nx.DiGraph:
    """``graph`` with ``{"layer/role": array}`` in a new weight store."""
    store = WeightStore()
    for key, array in arrays.items():
        layer, role = key.split("/")
        store.set(layer, role, np.asarray(array, dtype=np.float32))
    store.training_state = dict(training_state or {})
    graph.graph["weights"] = store
    return graph


def mlp(rng: np.random.Generator, name: str, widths: tuple[int, int, int], rank: int | None = None,
        dropout: bool = False, training_state: bool = False) -> nx.DiGraph:
    """inputs -> hidden (relu[, dropout]) -> outputs; the hidden weight of exact ``rank`` when given."""
    n, hidden, out = widths
    w1 = rng.standard_normal((hidden, n))
    if rank is not None:
        w1 = rng.standard_normal((hidden, rank)) @ rng.standard_normal((rank, n))
    b = GraphBuilder(name, (1, n))
    b.fc(hidden, name="fc1")
    b.relu(name="r1")
    if dropout:
        b.dropout(name="d1")
    b.fc(out, name="fc2")
    arrays = {"fc1/weight": w1, "fc1/bias": rng.standard_normal(hidden),
              "fc2/weight": rng.standard_normal((out, hidden)), "fc2/bias": rng.standard_normal(out)}
    state = {"fc1/grad": np.ones((hidden, n), np.float32)} if training_state else None
    return with_weights(b.build(), arrays, state)


def small_mlp(rng: np.random.Generator, rank: int | None = None) -> nx.DiGraph:
    """30 -> 40 (relu, dropout) -> 10 with training state; fc1 of exact ``rank`` when given."""
    return mlp(rng, "mlp", (30, 40, 10), rank, dropout=True, training_state=True)


def wide_low_rank_mlp(rng: np.random.Generator) -> nx.DiGraph:
    """120 -> 200 -> 10 with a rank-8 hidden weight: sparse codes pay on it (nnz < n k / 2)."""
    return mlp(rng, "wide", (120, 200, 10), rank=8)


def small_cnn(rng: np.random.Generator) -> nx.DiGraph:
    """3x9x9 -> conv 8 (pad 1) -> relu -> conv 6 (stride 2, pad 1) -> maxpool 2 -> fc 5 -> softmax."""
    b = GraphBuilder("cnn", (1, 3, 9, 9))
    b.conv(8, 3, padding=1, name="c1")
    b.relu(name="r1")
    b.conv(6, 3, stride=2, padding=1, name="c2")
    b.pool(2, 2, name="p")
    b.flatten(name="f")
    b.fc(5, name="fc")
    b.softmax(name="s")
    return with_weights(
        b.build(),
        {
            "c1/weight": rng.standard_normal((8, 3, 3, 3)),
            "c1/bias": rng.standard_normal(8),
            "c2/weight": rng.standard_normal((6, 8, 3, 3)),
            "c2/bias": rng.standard_normal(6),
            "fc/weight": rng.standard_normal((5, 24)),
            "fc/bias": np.zeros(5),
        },
    )


def residual_cnn(rng: np.random.Generator) -> nx.DiGraph:
    """A DAG: a residual block (conv, batchnorm, add), global pooling, two fc layers."""
    b = GraphBuilder("resnet_like", (1, 4, 8, 8))
    b.conv(6, 3, padding=1, name="stem")
    b.relu(name="stem_relu")
    b.conv(6, 3, padding=1, name="branch", inputs="stem_relu")
    b.batchnorm(name="bn")
    b.add(["bn", "stem_relu"], name="residual")
    b.global_pool("avg", name="gap", inputs="residual")
    b.flatten(name="flat")
    b.fc(12, name="fc1")
    b.relu(name="r")
    b.fc(3, name="fc2")
    arrays = {
        "stem/weight": rng.standard_normal((6, 4, 3, 3)),
        "stem/bias": rng.standard_normal(6),
        "branch/weight": rng.standard_normal((6, 6, 3, 3)),
        "branch/bias": rng.standard_normal(6),
        "bn/scale": rng.uniform(0.5, 1.5, 6),
        "bn/bias": rng.standard_normal(6),
        "bn/mean": rng.standard_normal(6),
        "bn/var": rng.uniform(0.5, 2, 6),
        "fc1/weight": rng.standard_normal((12, 6)),
        "fc1/bias": rng.standard_normal(12),
        "fc2/weight": rng.standard_normal((3, 12)),
        "fc2/bias": rng.standard_normal(3),
    }
    return with_weights(b.build(), arrays)


def run_onnx(graph: nx.DiGraph, x: np.ndarray, path: Path) -> np.ndarray:
    import onnxruntime as ort

    save_onnx(graph, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})[0]
