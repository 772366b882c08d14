"""The shipped policy contract (deepx_sim.sim.testing) on every registered policy."""

from __future__ import annotations

from dataclasses import replace

import pytest

from deepx_sim.errors import ScenarioError
from deepx_sim.plan.problem import Problem
from deepx_sim.sim import (
    Policy,
    StaticPolicy,
    World,
    make_policy,
    policy_names,
    register_policy,
    unregister_policy,
)
from deepx_sim.sim.policies import IDLE, Decision, Observation
from deepx_sim.sim.testing import PolicyContract, check_policy


def _contract_class(name: str) -> type:
    def make(problem: Problem, world: World) -> Policy:
        return make_policy(name, problem, world)

    return type(f"TestContract_{name}", (PolicyContract,), {"make_policy": staticmethod(make)})


for _name in policy_names():
    globals()[f"TestContract_{_name}"] = _contract_class(_name)


class Optimist(StaticPolicy):
    """Predicts half the energy it will spend: the contract must catch it."""

    def decide(self, now_s: float, seen: Observation = IDLE) -> Decision:
        d = super().decide(now_s, seen)
        return replace(d, predicted_energy_j=d.predicted_energy_j / 2)


def test_a_policy_that_mispredicts_fails_the_contract() -> None:
    with pytest.raises(AssertionError, match="predicted_energy_j .* is not the cost model's"):
        check_policy(lambda problem, world: Optimist(problem, world, "cpu-only"))


def test_a_registered_policy_is_made_by_name() -> None:
    register_policy("test-cpu", lambda problem, world, s: StaticPolicy(problem, world, "cpu-only"))
    try:
        assert "test-cpu" in policy_names()
        check_policy(lambda problem, world: make_policy("test-cpu", problem, world))
    finally:
        unregister_policy("test-cpu")
    with pytest.raises(ScenarioError, match="unknown policy 'test-cpu'"):
        make_policy("test-cpu", None, None)  # type: ignore[arg-type]
    with pytest.raises(ScenarioError, match="already registered"):
        register_policy("static", lambda problem, world, s: StaticPolicy(problem, world))
