"""Planners: the DeepX ILP, baselines and a brute-force oracle, behind one interface
and one registry (:func:`register_planner` adds your own)."""

from __future__ import annotations

from deepx_sim.plan.base import Planner
from deepx_sim.plan.baselines import BASELINES
from deepx_sim.plan.ilp import DeepXPlanner
from deepx_sim.plan.oracle import BruteForcePlanner
from deepx_sim.plan.problem import Constraints, Placement, Plan, Problem, evaluate
from deepx_sim.plan.registry import (
    PLANNERS,
    get_planner,
    planner_names,
    register_planner,
    unregister_planner,
)

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
    "register_planner",
    "unregister_planner",
]

PLANNERS.add_builtin("deepx", DeepXPlanner)
for _name, _factory in BASELINES.items():
    PLANNERS.add_builtin(_name, _factory)
PLANNERS.add_builtin("oracle", BruteForcePlanner)
