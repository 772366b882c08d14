"""Oracle: under constant conditions one request costs what the planner predicted."""

from __future__ import annotations

import numpy as np
import pytest

from deepx_sim.costs import Conditions
from deepx_sim.errors import PlanError
from deepx_sim.model import load_model, model_names
from deepx_sim.plan import Problem, planner_names
from deepx_sim.plan.problem import evaluate, placements
from deepx_sim.platform import load_platform
from deepx_sim.sim import Simulation, StaticPolicy, World
from tests.plan.conftest import random_dag, random_platform

REL = 1e-9


def simulate_once(problem: Problem, planner: str) -> tuple[object, object]:
    world = World.nominal(problem)
    policy = StaticPolicy(problem, world, planner)
    result = Simulation(problem, world, policy, [0.0]).run()
    return policy.decide(0.0).compiled.plan, result.records.iloc[0]


def assert_matches(plan: object, row: object) -> None:
    assert row.latency_s == pytest.approx(plan.latency_s, rel=REL, abs=1e-15)
    assert row.energy_j == pytest.approx(plan.energy_j, rel=REL, abs=1e-15)
    for key, value in plan.energy_breakdown_j.items():
        column = "energy_radio_j" if key == "radio" else f"energy_{key}_j"
        simulated = getattr(row, column, 0.0)  # remote processors: the radio pays
        assert simulated == pytest.approx(value, rel=REL, abs=1e-15), key


@pytest.mark.parametrize("model", model_names())
@pytest.mark.parametrize("planner", [p for p in planner_names() if p != "oracle"])
def test_every_planner_and_zoo_model_on_tegra_k1(model: str, planner: str) -> None:
    problem = Problem(load_model(model), load_platform("tegra_k1"), Conditions(link="wifi"))
    try:
        plan, row = simulate_once(problem, planner)
    except PlanError as exc:  # a planner that does not apply here (e.g. npu-only)
        pytest.skip(str(exc))
    assert_matches(plan, row)


@pytest.mark.parametrize(("platform", "link"), [("snapdragon_8_gen_3", "lte"), ("snapdragon_400", "3g"),
                                                 ("snapdragon_400", "wifi")])
@pytest.mark.parametrize("planner", ["deepx", "cloud-only", "neurosurgeon", "dads", "npu-only"])
def test_other_platforms_and_radios(platform: str, link: str, planner: str) -> None:
    for model in ("alexnet", "resnet50"):
        problem = Problem(load_model(model), load_platform(platform), Conditions(link=link))
        try:
            plan, row = simulate_once(problem, planner)
        except PlanError as exc:
            pytest.skip(str(exc))
        assert_matches(plan, row)


def test_brute_force_oracle_on_a_small_zoo_model() -> None:
    problem = Problem(load_model("speakerid"), load_platform("tegra_k1"), Conditions(link="wifi"),
                      rank_fractions=())
    plan, row = simulate_once(problem, "oracle")
    assert_matches(plan, row)


@pytest.mark.parametrize("seed", range(12))
def test_random_dags_with_optimal_and_cloud_heavy_plans(seed: int) -> None:
    rng = np.random.default_rng(seed)
    problem = Problem(random_dag(rng, 7), random_platform(rng), rank_fractions=())
    for planner in ("oracle", "cloud-only", "dads"):
        try:
            plan, row = simulate_once(problem, planner)
        except PlanError:
            continue
        assert_matches(plan, row)


def _random_assignment(problem: Problem, rng: np.random.Generator, contiguous: bool) -> dict[str, str]:
    """Random processors; with ``contiguous`` the cloud takes a suffix of the
    execution order, so radio use is one unbroken stretch."""
    local = [p.name for p in problem.platform.local_processors]
    layers = problem.layers
    split = int(rng.integers(1, len(layers) + 1))
    where = {}
    for i, lay in enumerate(layers):
        if lay.kind == "input":
            where[lay.name] = problem.sensor
        elif contiguous:
            where[lay.name] = "cloud" if i >= split else local[int(rng.integers(len(local)))]
        else:
            where[lay.name] = problem.processors[int(rng.integers(len(problem.processors)))]
    return where


def _simulate_assignment(problem: Problem, where: dict[str, str]) -> tuple[object, object, object]:
    plan = evaluate(problem, placements(problem, where), "random")
    world = World.nominal(problem)
    policy = StaticPolicy(problem, world, "cpu-only")
    policy.plan = plan
    row = Simulation(problem, world, policy, [0.0]).run().records.iloc[0]
    return plan, row, policy.compiled(plan)


@pytest.mark.parametrize("seed", range(12))
def test_random_assignments_match_evaluate(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    problem = Problem(random_dag(rng, 7), random_platform(rng), rank_fractions=())
    plan, row, _ = _simulate_assignment(problem, _random_assignment(problem, rng, contiguous=True))
    assert_matches(plan, row)


@pytest.mark.parametrize("seed", range(12))
def test_radio_gaps_cost_tail_power_beyond_the_prediction(seed: int) -> None:
    """The planner's execution model charges no radio power while on-device work
    runs between two radio uses; the simulator charges the tail state's power
    then.  The difference is exactly tail power x those gaps."""
    rng = np.random.default_rng(200 + seed)
    problem = Problem(random_dag(rng, 7), random_platform(rng), rank_fractions=())
    plan, row, compiled = _simulate_assignment(problem, _random_assignment(problem, rng, contiguous=False))
    radio_kinds = ("uplink", "downlink", "cloud")
    steps = compiled.steps
    radio_at = [i for i, s in enumerate(steps) if s.kind in radio_kinds]
    between = steps[radio_at[0]:radio_at[-1]] if radio_at else ()
    gap_s = sum(s.work_s + s.fixed_s for s in between if s.kind not in radio_kinds)
    link = problem.costs.link
    first_stage = link.radio.tail[0] if link else None
    if first_stage is not None and gap_s > 0:
        assert gap_s < first_stage.duration_ms / 1000  # the closed form below assumes it
    extra_j = first_stage.power_mw / 1000 * gap_s if first_stage is not None else 0.0
    assert row.latency_s == pytest.approx(plan.latency_s, rel=REL)
    assert row.energy_j == pytest.approx(plan.energy_j + extra_j, rel=REL)
