"""Random small problems for the planner oracle tests."""

from __future__ import annotations

import networkx as nx
import numpy as np

from deepx_sim.costs import Conditions
from deepx_sim.model.builder import GraphBuilder
from deepx_sim.plan.problem import Constraints, Problem
from deepx_sim.platform import Platform


def random_platform(rng: np.random.Generator, with_cloud: bool = True,
                    n_local: int = 2) -> Platform:
    procs = []
    for i in range(n_local):
        procs.append({
            "name": f"p{i}", "kind": "cpu" if i == 0 else "gpu",
            "peak_gflops": {"fp32": float(rng.uniform(0.5, 50))},
            "efficiency": {"default": float(rng.uniform(0.2, 1.0))},
            "memory_bandwidth_gbps": float(rng.uniform(1, 20)),
            "usable_memory_mib": 1024, "active_power_w": float(rng.uniform(0.1, 5)),
            "launch_overhead_ms": float(rng.uniform(0, 0.1)),
        })
    links = []
    if with_cloud:
        procs.append({"name": "cloud", "kind": "cloud", "peak_gflops": {"fp32": 5000.0},
                      "efficiency": {"default": 0.5}, "memory_bandwidth_gbps": 900,
                      "usable_memory_mib": 40000, "active_power_w": 300})
        links.append({"name": "net", "remote": "cloud", "uplink_mbps": float(rng.uniform(1, 50)),
                      "downlink_mbps": float(rng.uniform(5, 100)),
                      "rtt_ms": float(rng.uniform(5, 80)),
                      "radio": ["wifi", "lte", "3g"][int(rng.integers(3))]})
    return Platform.model_validate({"name": "rand", "shared_memory_gbps": float(rng.uniform(1, 20)),
                                    "processors": procs, "links": links})


def random_dag(rng: np.random.Generator, n_layers: int) -> nx.DiGraph:
    """A DAG of fc, activation and add layers (input included in n_layers)."""
    b = GraphBuilder("rand", (1, int(rng.integers(16, 2000))))
    names = [b.last]
    while len(names) < n_layers:
        roll = rng.random()
        src = names[int(rng.integers(len(names)))]
        if roll < 0.5:
            names.append(b.fc(int(rng.integers(8, 1500)), inputs=src))
        elif roll < 0.75 or len(names) < 3:
            names.append(b.relu(inputs=src))
        else:
            other = names[int(rng.integers(len(names)))]
            if other == src or b.shape(other) != b.shape(src):
                names.append(b.relu(inputs=src))
            else:
                names.append(b.add([src, other]))
    return b.build()


def random_problem(seed: int, objective: str = "energy") -> Problem:
    rng = np.random.default_rng(seed)
    graph = random_dag(rng, int(rng.integers(4, 9)))
    platform = random_platform(rng)
    deadline = float(rng.choice([0.002, 0.01, 0.05, 0.5, 5.0]))
    constraints = Constraints(deadline_s=deadline, max_accuracy_loss=float(rng.choice([0.0, 0.02, 0.05])),
                              objective=objective)  # type: ignore[arg-type]
    return Problem(graph, platform, Conditions(link="net"), constraints,
                   rank_fractions=(0.6, 0.2))  # full rank + 2 ranks = 3 candidates
