"""The replanning fast path: its numbers are the cost model's, its choices near the ILP's."""

from __future__ import annotations

import numpy as np
import pytest

from deepx_sim.costs import Conditions
from deepx_sim.model import load_model
from deepx_sim.plan import Constraints, DeepXPlanner, Problem
from deepx_sim.plan.fastpath import FastReplanner
from deepx_sim.platform import load_platform


@pytest.fixture(scope="module")
def fast() -> FastReplanner:
    problem = Problem(load_model("speakerid"), load_platform("tegra_k1"), Conditions(link="lte"),
                      Constraints(deadline_s=0.25))
    return FastReplanner(problem).warm(uplinks_mbps=(0.5, 2.0, 8.0), free_fractions=(1.0, 0.3))


def random_conditions(rng: np.random.Generator) -> Conditions:
    return Conditions(link="lte", uplink_mbps=float(rng.uniform(0.3, 20)),
                      downlink_mbps=float(rng.uniform(1, 40)), rtt_ms=float(rng.uniform(20, 150)),
                      free_fraction={p: float(rng.uniform(0.2, 1.0)) for p in ("cpu", "gpu", "lpc")},
                      cloud_reachable=bool(rng.random() < 0.8))


def test_fast_plans_cost_what_the_cost_model_says(fast: FastReplanner) -> None:
    rng = np.random.default_rng(3)
    for _ in range(30):
        plan = fast.plan(random_conditions(rng))
        checked = fast.check(plan)
        assert plan.latency_s == pytest.approx(checked.latency_s, rel=1e-9)
        assert plan.energy_j == pytest.approx(checked.energy_j, rel=1e-9)
        for part, value in checked.energy_breakdown_j.items():
            assert plan.energy_breakdown_j.get(part, 0.0) == pytest.approx(value, rel=1e-9, abs=1e-15)


def test_fast_path_is_never_better_than_the_ilp_and_rarely_worse(fast: FastReplanner) -> None:
    rng = np.random.default_rng(4)
    losses = []
    for _ in range(20):
        conditions = random_conditions(rng)
        quick = fast.plan(conditions)
        full = DeepXPlanner().plan(fast.problem.with_conditions(conditions))
        assert quick.objective_value >= full.objective_value * (1 - 1e-9)
        losses.append(quick.objective_value / full.objective_value - 1)
    assert np.median(losses) < 0.05


def test_unreachable_cloud_never_gets_a_cloud_plan(fast: FastReplanner) -> None:
    plan = fast.plan(Conditions(link="lte", cloud_reachable=False))
    assert "cloud" not in plan.processors_used


def test_accuracy_uses_real_singular_values_when_weights_exist() -> None:
    from deepx_sim.accuracy import OUTPUT_ACCURACY_PER_ERR2, AccuracyModel
    from deepx_sim.costs import Variant
    from deepx_sim.model.builder import GraphBuilder
    from deepx_sim.model.weights import WeightStore

    b = GraphBuilder("w", (1, 4))
    b.fc(3, name="fc")
    g = b.build()
    # W = U diag(3, 2, 1) V^T: dropping to rank 1 loses (4 + 1) / (9 + 4 + 1) of the energy
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    v, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    store = WeightStore()
    store.set("fc", "weight", u @ np.diag([3.0, 2.0, 1.0]) @ v[:, :3].T)
    g.graph["weights"] = store
    model = AccuracyModel(g)
    layer = g.nodes["fc"]["layer"]
    assert model.spectrum_source(layer) == "weights"
    # its only layer is the classifier
    assert model.loss(layer, Variant(rank=1)) == pytest.approx(OUTPUT_ACCURACY_PER_ERR2 * 5 / 14)
    assert model.loss(layer, Variant(rank=3)) == pytest.approx(0.0, abs=1e-12)
