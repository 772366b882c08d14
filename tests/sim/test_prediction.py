"""Oracle: under constant conditions one request costs what the planner predicted."""

from __future__ import annotations

import numpy as np
import pytest

from deepx_sim.costs import Conditions
from deepx_sim.errors import PlanError
from deepx_sim.model import load_model, model_names
from deepx_sim.plan import Constraints, Problem, planner_names
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


TRANSFORMERS = {"bert_base", "vit_b16"}  # 285 layers each: slow
#: Known disagreement, left open: greedy puts BERT's 94 MB word embedding alone on the cloud and
#: the simulator charges the radio 6.6e-5 J (of 1.49 J) more than the plan, about the connected
#: radio's power over the remote lookup's 97 us.  Strict: the day it agrees, this mark must go.
KNOWN_GAPS = {("greedy", "bert_base")}


@pytest.mark.parametrize("model", [pytest.param(m, marks=[pytest.mark.slow] if m in TRANSFORMERS else [])
                                   for m in model_names()])
@pytest.mark.parametrize("planner", [p for p in planner_names() if p != "oracle"])
def test_every_planner_and_zoo_model_on_tegra_k1(model: str, planner: str, request: pytest.FixtureRequest
                                                 ) -> None:
    if (planner, model) in KNOWN_GAPS:
        request.applymarker(pytest.mark.xfail(strict=True, reason="a remote wait's radio charge: KNOWN_GAPS"))
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


# ------------------------------------------------------------------ the radio rule over many requests
def _periodic_run(problem: Problem, plan: object, gap_s: float, n: int) -> object:
    """``n`` requests ``gap_s`` apart under constant conditions, all running ``plan``,
    with a static policy that expects that gap."""
    world = World.nominal(problem)
    policy = StaticPolicy(problem, world, "cpu-only", expected_gap_s=gap_s)
    policy.plan = plan
    return Simulation(problem, world, policy, [i * gap_s for i in range(n)]).run().records


def _cloud_plan(problem: Problem, rng: np.random.Generator, contiguous: bool) -> object | None:
    for _ in range(20):
        plan = evaluate(problem, placements(problem, _random_assignment(problem, rng, contiguous)), "random")
        if plan.uses_radio:
            return plan
    return None


@pytest.mark.parametrize("seed", range(16))
def test_periodic_requests_cost_exactly_what_the_radio_rule_predicts(seed: int) -> None:
    """Requests that come within a tail of each other: the first pays the
    promotion, none of the others does, and each pays the tail only until the
    next one's first radio use.  Every record equals its prediction (made for
    the radio state the request found and the observed gap); the last one, with
    no successor, pays the whole tail, as the rule says of a request without one."""
    rng = np.random.default_rng(300 + seed)
    problem = Problem(random_dag(rng, 7), random_platform(rng), rank_fractions=())
    plan = _cloud_plan(problem, rng, contiguous=seed % 2 == 0)
    assert plan is not None and plan.radio is not None
    tail_s = problem.costs.link.radio.tail_s
    local_s = plan.latency_s - plan.radio.span_s - plan.radio.promotion_s
    if local_s + plan.radio.span_s > 0.9 * tail_s:  # needs requests that do not overlap yet share a tail
        pytest.skip("the plan outlasts its radio's tail")
    gap_s = plan.latency_s + float(rng.uniform(0.05, 0.9)) * (tail_s - plan.latency_s)
    records = _periodic_run(problem, plan, gap_s, 6)
    assert list(records.radio_state) == ["idle"] + ["connected"] * 5
    assert records.radio_promotion_j.iloc[1:].eq(0).all()
    body = records.iloc[:-1]
    assert body.latency_s.to_numpy() == pytest.approx(body.predicted_latency_s.to_numpy(), rel=REL)
    assert body.energy_j.to_numpy() == pytest.approx(body.predicted_energy_j.to_numpy(), rel=REL)
    last = records.iloc[-1]
    alone = evaluate(problem.with_conditions(Conditions(radio_state="connected", tail_left_s=np.inf)),
                     plan.assignment, "last")
    assert last.energy_j == pytest.approx(alone.energy_j + _gaps_tail_j(problem, plan), rel=REL)


def _gaps_tail_j(problem: Problem, plan: object) -> float:
    """Tail power over on-device work between two radio uses of one request: the
    simulator charges it, the rule (for a request with no successor) does not."""
    from deepx_sim.sim.policies import compile_plan

    steps = compile_plan(problem, plan).steps
    radio_kinds = ("uplink", "downlink", "cloud")
    at = [i for i, s in enumerate(steps) if s.kind in radio_kinds]
    gap_s = sum(s.work_s + s.fixed_s for s in steps[at[0]:at[-1]] if s.kind not in radio_kinds)
    return problem.costs.link.radio.tail[0].power_mw / 1000 * gap_s


@pytest.mark.parametrize(("link", "interval_s"), [("lte", 0.5), ("lte", 2.0), ("wifi", 0.3), ("3g", 1.0)])
def test_replanned_requests_cost_their_predictions(link: str, interval_s: float) -> None:
    """Replanning with the fast path (radio state and observed gap per request):
    under constant conditions every request but the last costs what was predicted."""
    from deepx_sim.sim import ReplanPolicy

    problem = Problem(load_model("alexnet"), load_platform("snapdragon_400"), Conditions(link=link),
                      Constraints(deadline_s=1.5))
    world = World.nominal(problem)
    policy = ReplanPolicy(problem, world, "deepx", expected_gap_s=interval_s)
    records = Simulation(problem, world, policy, [i * interval_s for i in range(12)]).run().records
    body = records.iloc[:-1]
    assert body.latency_s.to_numpy() == pytest.approx(body.predicted_latency_s.to_numpy(), rel=REL)
    assert body.energy_j.to_numpy() == pytest.approx(body.predicted_energy_j.to_numpy(), rel=REL)
