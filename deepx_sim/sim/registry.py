"""Simulation policies by name: the built-in ones and any a user registers.

``register_policy("mine", factory)`` makes ``factory(problem, world, settings)``
available as ``policy.kind: mine`` in scenario files and sweeps.  As for
planners (:mod:`deepx_sim.plan.registry`), registration must happen in every
process that simulates: call it in your script, or name the registering
module in ``DEEPX_SIM_PLUGINS``, or expose the factory as an entry point in
the ``deepx_sim.policies`` group.  ``deepx_sim.sim.testing`` holds the
contract checks a policy should pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from deepx_sim.costs import Conditions
from deepx_sim.errors import ScenarioError
from deepx_sim.plan.problem import Problem
from deepx_sim.plan.registry import Registry
from deepx_sim.sim.policies import (
    DEFAULT_EWMA_ALPHA,
    DEFAULT_SAMPLE_INTERVAL_S,
    Estimator,
    EstimatorKind,
    OraclePolicy,
    Policy,
    ReplanPolicy,
    StaticPolicy,
    World,
)

ENTRY_POINT_GROUP = "deepx_sim.policies"


@dataclass(frozen=True)
class PolicySettings:
    """Everything a scenario says about its policy; a factory uses what it needs."""

    planner: str = "deepx"
    estimator: EstimatorKind = "last"
    sample_interval_s: float = DEFAULT_SAMPLE_INTERVAL_S
    ewma_alpha: float = DEFAULT_EWMA_ALPHA
    plan_at: Conditions | None = None  # static plans: the conditions to plan under
    radio_aware: bool = True  # plan with the radio state found and the gap expected next
    expected_gap_s: float | None = None  # the workload's mean gap between arrivals, if known
    full_solve_every: int = 0  # replan with deepx: a full solve joins the pool every N requests
    see_queue: bool = False  # plan with our own earlier requests' work still ahead

    def make_estimator(self, world: World) -> Estimator:
        return Estimator(world, self.estimator, self.sample_interval_s, self.ewma_alpha)

    @property
    def options(self) -> dict[str, Any]:
        """The keyword options every built-in policy takes."""
        return {"radio_aware": self.radio_aware, "expected_gap_s": self.expected_gap_s,
                "see_queue": self.see_queue}


PolicyFactory = Callable[[Problem, World, PolicySettings], Policy]

POLICIES: Registry[PolicyFactory] = Registry("policy", ENTRY_POINT_GROUP, ScenarioError)
POLICIES.add_builtin("static", lambda problem, world, s: StaticPolicy(problem, world, s.planner, s.plan_at,
                                                                      **s.options))
POLICIES.add_builtin("replan", lambda problem, world, s: ReplanPolicy(
    problem, world, s.planner, s.make_estimator(world), s.full_solve_every, **s.options))
POLICIES.add_builtin("oracle", lambda problem, world, s: OraclePolicy(problem, world, s.planner, **s.options))


def register_policy(name: str, factory: PolicyFactory, *, replace: bool = False) -> None:
    """Make ``factory(problem, world, settings) -> Policy`` available as ``policy.kind: name``."""
    POLICIES.register(name, factory, replace=replace)


def unregister_policy(name: str) -> None:
    """Remove a user policy (built-ins stay)."""
    POLICIES.unregister(name)


def policy_names() -> list[str]:
    return POLICIES.names()


def make_policy(name: str, problem: Problem, world: World,
                settings: PolicySettings | None = None) -> Policy:
    """A new policy of kind ``name`` for one run."""
    policy = POLICIES.factory(name)(problem, world, settings or PolicySettings())
    if not isinstance(policy, Policy):
        raise ScenarioError(f"policy {name!r}: its factory returned {type(policy).__name__}, "
                            f"not a deepx_sim.sim.Policy")
    return policy
