"""The policy contract, shipped so that you can run it on your own policy.

Every registered policy passes these checks (tests/sim/test_policy_contract.py
runs them on each).  To hold your policy to the same contract under pytest::

    from deepx_sim.sim.testing import PolicyContract

    class TestMyPolicy(PolicyContract):
        @staticmethod
        def make_policy(problem, world):
            return MyPolicy(problem, world)

Outside pytest, :func:`check_policy` runs the same checks and raises
AssertionError naming the case and the broken rule.

The contract: a decision's plan passes the planner contract for the problem;
its predicted latency and energy are what the cost model (with the radio
rule) gives for that plan under the decision's conditions, whatever radio
state the request finds; a fallback never needs the cloud; the same world
gives the same decisions; a whole run completes with one record per request;
and under constant conditions a lone request costs exactly what the policy
predicted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import cache

import numpy as np

from deepx_sim.costs import Conditions
from deepx_sim.plan.problem import Constraints, Problem, evaluate
from deepx_sim.plan.testing import check_plan
from deepx_sim.sim.conditions import Outages, StepTrace
from deepx_sim.sim.engine import Simulation
from deepx_sim.sim.policies import Decision, Observation, Policy, World

PolicyMaker = Callable[[Problem, World], Policy]
REL = 1e-9
#: (model, platform, link, deadline_s) of the cases every policy is checked on.
CASES = {"speakerid/tegra_k1/wifi": ("speakerid", "tegra_k1", "wifi", 0.25),
         "speakerid/tegra_k1/lte": ("speakerid", "tegra_k1", "lte", 5.0)}


@cache
def contract_problem(case: str) -> Problem:
    from deepx_sim.model import load_model
    from deepx_sim.platform import load_platform

    model, platform, link, deadline = CASES[case]
    return Problem(load_model(model), load_platform(platform), Conditions(link=link),
                   Constraints(deadline_s=deadline), rank_fractions=(0.5,))


def varying_world(problem: Problem, seed: int = 0) -> World:
    """A world whose uplink steps every 2 s (0.5-20 Mbps), with one outage and a loaded GPU."""
    nominal = World.nominal(problem)
    rng = np.random.default_rng(seed)
    up = StepTrace(tuple(2.0 * i for i in range(20)), tuple(float(v) for v in rng.uniform(0.5, 20, 20)))
    gpu = StepTrace((0.0, 10.0), (0.3, 1.0))
    return replace(nominal, uplink_mbps=up, outages=Outages(((15.0, 18.0),)), free_fraction={"gpu": gpu})


def _fail(case: str, rule: str) -> AssertionError:
    return AssertionError(f"{case}: {rule}")


def check_decision(problem: Problem, decision: Decision, case: str) -> None:
    """The decision's plan obeys the planner contract and its predictions are the
    cost model's under the decision's conditions."""
    plan = decision.compiled.plan
    planned = problem.with_conditions(decision.conditions)
    if not decision.note:  # a noted decision may be a relaxed (fastest) plan under other constraints
        check_plan(planned, evaluate(planned, plan.assignment, plan.planner), case)
    costed = evaluate(planned, plan.assignment, "check")
    if not np.isclose(decision.predicted_latency_s, costed.latency_s, rtol=REL, atol=1e-15):
        raise _fail(case, f"predicted_latency_s {decision.predicted_latency_s!r} is not the cost "
                    f"model's {costed.latency_s!r} under the decision's conditions")
    if not np.isclose(decision.predicted_energy_j, costed.energy_j, rtol=REL, atol=1e-15):
        raise _fail(case, f"predicted_energy_j {decision.predicted_energy_j!r} is not the cost "
                    f"model's {costed.energy_j!r} under the decision's conditions")


def check_policy(make: PolicyMaker, cases: Iterable[str] = tuple(CASES)) -> None:
    """Run every contract check on policies made by ``make(problem, world)``."""
    for case in cases:
        problem = contract_problem(case)
        check_lone_request_costs_the_prediction(make, problem, case)
        check_varying_world(make, problem, case)


def check_lone_request_costs_the_prediction(make: PolicyMaker, problem: Problem, case: str) -> None:
    world = World.nominal(problem)
    policy = make(problem, world)
    result = Simulation(problem, world, policy, [0.0]).run()
    row = result.records.iloc[0]
    decision = policy.decide(0.0)
    check_decision(problem, decision, case)
    if row.plan_id != decision.compiled.plan_id:
        raise _fail(case, "the same world gave a different decision on a second call")
    for column, predicted in (("latency_s", decision.predicted_latency_s),
                              ("energy_j", decision.predicted_energy_j)):
        if not np.isclose(row[column], predicted, rtol=REL, atol=1e-15):
            raise _fail(case, f"under constant conditions a lone request's {column} is "
                        f"{row[column]!r}, but the policy predicted {predicted!r}")


def check_varying_world(make: PolicyMaker, problem: Problem, case: str) -> None:
    world = varying_world(problem)
    arrivals = [0.5 * i for i in range(60)]
    policy = make(problem, world)
    seen = [Observation(), Observation("connected", 5.0, 0.5, 0.5), Observation("promoting", 0.0, 0.5),
            Observation("connected", 0.001, 2.0, 20.0)]
    for t, found in zip((0.0, 11.0, 16.0, 25.0), seen, strict=True):
        check_decision(problem, policy.decide(t, found), f"{case} at t={t} finding {found}")
        fallback = policy.fallback(t)
        remote = {p.name for p in problem.platform.processors if p.is_remote}
        if remote & set(fallback.compiled.plan.processors_used):
            raise _fail(case, f"the fallback at t={t} uses the cloud")
    first = Simulation(problem, world, make(problem, world), arrivals).run().records
    again = Simulation(problem, world, make(problem, world), arrivals).run().records
    if len(first) != len(arrivals):
        raise _fail(case, f"{len(arrivals)} requests gave {len(first)} records")
    if list(first.plan_id) != list(again.plan_id):
        raise _fail(case, "the same world and arrivals gave different plans in two runs")


class PolicyContract:
    """Subclass as ``TestSomething`` and define ``make_policy(problem, world)``;
    pytest then runs every contract check on every case."""

    cases: tuple[str, ...] = tuple(CASES)

    @staticmethod
    def make_policy(problem: Problem, world: World) -> Policy:
        raise NotImplementedError("define make_policy(problem, world) returning your policy")

    def pytest_generate_tests(self, metafunc) -> None:  # type: ignore[no-untyped-def]
        if "policy_case" in metafunc.fixturenames:
            metafunc.parametrize("policy_case", self.cases)

    def test_lone_request_costs_the_prediction(self, policy_case: str) -> None:
        check_lone_request_costs_the_prediction(self.make_policy, contract_problem(policy_case),
                                                policy_case)

    def test_varying_world(self, policy_case: str) -> None:
        check_varying_world(self.make_policy, contract_problem(policy_case), policy_case)
