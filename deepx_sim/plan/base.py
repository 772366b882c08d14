"""The planner contract: one small base class every planner implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

from deepx_sim.plan.problem import Plan, Problem


class Planner(ABC):
    """Turns a Problem into a Plan.

    A planner must place every layer exactly once on an available processor,
    keep the input on the sensor processor, and return the Plan that
    :func:`~deepx_sim.plan.problem.evaluate` computes for its assignment.  It
    raises InfeasibleError (naming the binding constraint) when it finds no
    plan meeting the constraints, or PlanError when it does not apply (e.g.
    gpu-only on a platform without a GPU).  tests/plan/test_contract.py runs
    the same checks against every registered planner.
    """

    name: str = "planner"

    @abstractmethod
    def plan(self, problem: Problem) -> Plan:
        """Decide a plan for ``problem``."""
