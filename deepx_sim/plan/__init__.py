"""Planners: the DeepX ILP, baselines and a brute-force oracle, behind one interface."""

from __future__ import annotations

from deepx_sim.errors import PlanError, closest_names
from deepx_sim.plan.base import Planner
from deepx_sim.plan.baselines import BASELINES
from deepx_sim.plan.ilp import DeepXPlanner
from deepx_sim.plan.oracle import BruteForcePlanner
from deepx_sim.plan.problem import Constraints, Placement, Plan, Problem, evaluate

__all__ = [
    "BruteForcePlanner",
    "Constraints",
    "DeepXPlanner",
    "Placement",
    "Plan",
    "Planner",
    "Problem",
    "evaluate",
    "get_planner",
    "planner_names",
]


def planner_names() -> list[str]:
    return ["deepx", *BASELINES, "oracle"]


def get_planner(name: str, **options: object) -> Planner:
    """A planner by name; ``options`` go to DeepXPlanner (solver, time_limit_s, gap)."""
    if name == "deepx":
        return DeepXPlanner(**options)  # type: ignore[arg-type]
    if name == "oracle":
        return BruteForcePlanner()
    if name in BASELINES:
        return BASELINES[name]
    raise PlanError(f"unknown planner {name!r}: {closest_names(name, planner_names())}")
