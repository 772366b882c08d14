"""One contract, every planner (as Optuna tests every sampler with one class)."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import pytest

from deepx_sim.costs import Conditions
from deepx_sim.errors import InfeasibleError, PlanError
from deepx_sim.model import load_model
from deepx_sim.plan import (
    Constraints,
    DeepXPlanner,
    Plan,
    Planner,
    Problem,
    get_planner,
    planner_names,
    register_planner,
    unregister_planner,
)
from deepx_sim.plan.testing import CASE_NAMES, SMALL_CASES, PlannerContract, check_planner
from deepx_sim.platform import load_platform


def _contract_class(name: str) -> type:
    return type(f"TestContract_{name.replace('-', '_')}", (PlannerContract,),
                {"make_planner": staticmethod(partial(get_planner, name)),
                 "cases": SMALL_CASES if name == "oracle" else CASE_NAMES})


# the shipped contract (deepx_sim.plan.testing) on every registered planner
for _name in planner_names():
    globals()[f"TestContract_{_name.replace('-', '_')}"] = _contract_class(_name)


def test_a_broken_planner_fails_the_contract() -> None:
    """The contract can fail: a planner that misreports its energy is caught."""

    class Liar(Planner):
        name = "liar"

        def plan(self, problem: Problem) -> Plan:
            plan = get_planner("cpu-only").plan(problem)
            return replace(plan, energy_j=plan.energy_j * 0.5)

    with pytest.raises(AssertionError, match="energy_j .* differs from the cost model"):
        check_planner(Liar(), ["speakerid/tegra_k1/wifi/5s"])


def test_a_registered_planner_is_usable_by_name() -> None:
    register_planner("test-cpu", partial(get_planner, "cpu-only"))
    try:
        assert "test-cpu" in planner_names()
        results = check_planner(partial(get_planner, "test-cpu"))
        assert all(isinstance(r, Plan) for r in results.values())
    finally:
        unregister_planner("test-cpu")
    assert "test-cpu" not in planner_names()


def test_registry_refuses_bad_names_and_builtin_overrides() -> None:
    with pytest.raises(PlanError, match="already registered"):
        register_planner("deepx", DeepXPlanner)
    with pytest.raises(PlanError, match="letters, digits"):
        register_planner("my planner", DeepXPlanner)
    with pytest.raises(PlanError, match="does not take options"):
        get_planner("greedy", solver="cbc")


def test_impossible_deadline_names_the_fastest_plan() -> None:
    problem = Problem(load_model("alexnet"), load_platform("tegra_k1"), Conditions(link="wifi"),
                      Constraints(deadline_s=0.010))
    with pytest.raises(InfeasibleError, match=r"deadline 10 ms cannot be met: the fastest plan "
                                              r"takes [\d.]+ ms \(layers on .*gpu"):
        get_planner("deepx").plan(problem)


def test_impossible_energy_budget_names_the_lowest_energy() -> None:
    problem = Problem(load_model("alexnet"), load_platform("tegra_k1"), Conditions(link="wifi"),
                      Constraints(energy_budget_j=1e-4))
    with pytest.raises(InfeasibleError, match=r"energy budget 0.0001 J cannot be met.*lowest "
                                              r"energy is [\d.]+"):
        get_planner("deepx").plan(problem)


def test_model_too_big_for_a_microcontroller() -> None:
    problem = Problem(load_model("alexnet"), load_platform("cortex_m0"))
    with pytest.raises(InfeasibleError, match="memory cannot be met"):
        get_planner("deepx").plan(problem)


def test_unknown_planner_lists_known() -> None:
    with pytest.raises(PlanError, match="did you mean gpu-only"):
        get_planner("gpu_only")
