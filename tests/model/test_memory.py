"""Peak activation memory against a brute-force liveness count."""

from __future__ import annotations

import networkx as nx
import numpy as np

from deepx_sim.model.builder import GraphBuilder
from deepx_sim.model.layers import layers_in_order
from deepx_sim.model.memory import peak_activation_bytes


def brute_force_peak(graph: nx.DiGraph, bits: int = 32) -> int:
    """At step t, a tensor is live if produced at or before t and still needed at or after t."""
    layers = layers_in_order(graph)
    n = len(layers)
    peak = 0
    for t in range(n):
        live = 0
        for lay in layers:
            consumers = [graph.nodes[s]["layer"].order for s in graph.successors(lay.name)]
            end = max(consumers) if consumers else n
            if lay.order <= t <= end:
                live += lay.output_bytes(bits)
        peak = max(peak, live)
    return peak


def random_dag(seed: int) -> nx.DiGraph:
    rng = np.random.default_rng(seed)
    b = GraphBuilder(f"rand{seed}", (1, 8))
    names = [b.last]
    for i in range(10):
        if len(names) > 2 and rng.random() < 0.3:
            picks = list(rng.choice(len(names), size=2, replace=False))
            a, c = names[picks[0]], names[picks[1]]
            width = b.shape(a)[1]
            if b.shape(c)[1] != width:
                c = b.fc(width, name=f"adapt{i}", inputs=c)
            names.append(b.add([a, c], name=f"add{i}"))
        else:
            src = names[int(rng.integers(len(names)))]
            names.append(b.fc(int(rng.integers(2, 64)), name=f"fc{i}", inputs=src))
    return b.build()


def test_peak_matches_brute_force_on_random_dags() -> None:
    for seed in range(30):
        g = random_dag(seed)
        assert peak_activation_bytes(g) == brute_force_peak(g), seed


def test_chain_peak_is_largest_adjacent_pair() -> None:
    b = GraphBuilder("chain", (1, 10))
    b.fc(100)
    b.fc(5)
    # input (10) + fc1 (100) live together (110 floats), then fc1 + fc2 (105)
    assert peak_activation_bytes(b.build()) == (100 + 10) * 4
