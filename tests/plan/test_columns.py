"""Column generation over identical instances (plan/columns.py) and the local search
(plan/improve.py), against enumeration and brute force."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pulp
import pytest

from deepx_sim.model.layers import LayerKind
from deepx_sim.model.profiled import load_profiled, synthetic_profiled
from deepx_sim.plan import Constraints, DeepXPlanner, Problem, ilp
from deepx_sim.plan.columns import column_generation, in_scope
from deepx_sim.plan.improve import _Search, improve
from deepx_sim.plan.problem import Placement, evaluate

LATENCY = Constraints(objective="latency", deadline_s=1e4)


def _problem(tmp_path: Path, seed: int, nodes: int, accelerators: int, colocated: int = 0) -> Problem:
    data = synthetic_profiled(nodes, accelerators, seed=seed, memory_slack=1.0 + seed % 3 * 0.25,
                              colocated_pairs=colocated)
    path = tmp_path / f"g{seed}.json"
    path.write_text(json.dumps(data))
    model = load_profiled(path)
    return Problem(model.graph, model.platform, constraints=LATENCY, profile=model.profile)


def _on(problem: Problem, where: dict[str, str]) -> dict[str, Placement]:
    return {lay.name: Placement(lay.name, where.get(lay.name, problem.sensor),
                                problem.variants(lay, where.get(lay.name, problem.sensor))[0])
            for lay in problem.layers}


def _enumerated_master_s(problem: Problem) -> float:
    """The master LP over every column (each set of layers that fits one instance), each
    priced by evaluate as the only set off the sensor: the bound column generation
    converges to, computed without it."""
    instances = in_scope(problem)
    assert instances is not None
    units = [lay.name for lay in problem.layers if lay.kind != LayerKind.INPUT]
    home = evaluate(problem, _on(problem, {}), "all-on-sensor")
    lp = pulp.LpProblem("master", pulp.LpMinimize)
    cover: dict[str, list[pulp.LpVariable]] = {u: [] for u in units}
    terms, count = [], []
    for size in range(1, len(units) + 1):
        for chosen in itertools.combinations(units, size):
            alone = evaluate(problem, _on(problem, dict.fromkeys(chosen, instances[0])), "one-set")
            if alone.status != "feasible":
                continue
            y = lp.add_variable(f"y{len(count)}", 0)
            terms.append((alone.objective_value - home.objective_value) * y)
            count.append(y)
            for u in chosen:
                cover[u].append(y)
    lp += pulp.lpSum(terms)
    for ys in cover.values():
        lp += pulp.lpSum(ys) <= 1
    lp += pulp.lpSum(count) <= len(instances)
    lp.solve(pulp.HiGHS(msg=False))
    return home.objective_value + pulp.value(lp.objective)


@pytest.mark.parametrize("pricers", [1, 2])
@pytest.mark.parametrize("seed", range(6))
def test_the_bound_converges_to_the_enumerated_master(tmp_path: Path, seed: int, pricers: int,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """With one pricing program per step, or two at once (smoothed and own duals)."""
    from deepx_sim.plan import columns

    monkeypatch.setattr(columns, "_threads", lambda: pricers)
    problem = _problem(tmp_path, seed, nodes=7, accelerators=2 + seed % 2)
    result = column_generation(problem, [], time_limit_s=60, gap=0.0)
    assert result is not None and result.converged
    # (to the pricing program's relative gap, 1e-4)
    assert result.bound == pytest.approx(_enumerated_master_s(problem), rel=1e-3)
    # (both sides come from solvers whose tolerances are about 1e-9 of these values)
    assert result.bound <= _enumerated_master_s(problem) * (1 + 1e-7)


@pytest.mark.parametrize("pricers", [1, 2])
@pytest.mark.parametrize("seed", range(8))
def test_the_bound_never_exceeds_the_optimum(tmp_path: Path, seed: int, pricers: int,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Against the compact program solved to optimality (no time limit, so no columns),
    colocation included; one pricing program per step or two at once."""
    from deepx_sim.plan import columns

    monkeypatch.setattr(columns, "_threads", lambda: pricers)
    problem = _problem(tmp_path, seed, nodes=8, accelerators=2 + seed % 3, colocated=seed % 2)
    optimum = DeepXPlanner(gap=1e-9, time_limit_s=None).plan(problem)
    assert optimum.status == "optimal"
    result = column_generation(problem, [], time_limit_s=60, gap=0.0)
    assert result is not None
    assert result.bound <= optimum.objective_value * (1 + 1e-7)
    if result.plan is not None:
        assert result.plan.status == "feasible"
        assert result.plan.objective_value >= optimum.objective_value * (1 - 1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_the_planner_with_columns_finds_the_optimum(tmp_path: Path, seed: int) -> None:
    problem = _problem(tmp_path, seed, nodes=10, accelerators=3, colocated=seed % 2)
    optimum = DeepXPlanner(gap=1e-9, time_limit_s=None).plan(problem)
    plan = DeepXPlanner(gap=1e-6, time_limit_s=30).plan(problem)
    assert plan.status == "optimal" and plan.gap is not None and plan.gap <= 1.5e-6
    assert plan.objective_value == pytest.approx(optimum.objective_value, rel=1e-5)


@pytest.mark.parametrize(("nodes", "accelerators"), [(60, 3), (120, 4)])
def test_optimal_only_when_the_gap_is_proven_within_the_tolerance(tmp_path: Path, nodes: int,
                                                                   accelerators: int) -> None:
    """A 1 % tolerance and a limit too short to close it: the status follows the gap."""
    problem = _problem(tmp_path, nodes, nodes=nodes, accelerators=accelerators)
    planner = DeepXPlanner(gap=0.01, time_limit_s=2)
    plan = planner.plan(problem)
    assert plan.gap is not None
    assert (plan.status == "optimal") == (plan.gap <= 0.01 + ilp.GAP_ROUNDING)
    assert planner._within(0.01) and not planner._within(0.0101)
    assert DeepXPlanner()._within(1.4e-6) and not DeepXPlanner()._within(2e-6)


def test_out_of_scope_problems_get_no_columns() -> None:
    from deepx_sim.plan.testing import random_problem

    assert in_scope(random_problem(0)) is None
    assert column_generation(random_problem(0), [], time_limit_s=1) is None


@pytest.mark.parametrize("seed", range(4))
def test_local_search_tracks_the_plan_cost_exactly(tmp_path: Path, seed: int) -> None:
    """After random moves the search's running latency equals evaluate's."""
    problem = _problem(tmp_path, seed, nodes=30, accelerators=3)
    start = DeepXPlanner._heuristic_start(problem)
    assert start is not None
    search = _Search(problem, start)
    rng = np.random.default_rng(seed)
    for _ in range(200):
        unit = search.units[rng.integers(len(search.units))]
        search.try_move(dict.fromkeys(unit, problem.processors[rng.integers(len(problem.processors))]))
    placed = {n: Placement(n, p, search.variant[n]) for n, p in search.where.items()}
    plan = evaluate(problem, placed, "search")
    assert plan.status == "feasible"
    assert search.latency_s == pytest.approx(plan.latency_s, rel=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_local_search_never_worsens_a_plan(tmp_path: Path, seed: int) -> None:
    problem = _problem(tmp_path, seed, nodes=40, accelerators=3)
    from deepx_sim.plan.baselines import GreedyPlanner

    start = GreedyPlanner().plan(problem)
    better = improve(problem, start)
    assert better.status == "feasible" or start.status != "feasible"
    assert better.objective_value <= start.objective_value


def test_columns_run_where_the_instances_hold_every_layer(tmp_path: Path) -> None:
    """The planner's rule (ilp._partition_bound): memory for every layer on the instances
    (slack 1) means a partition question, for column generation; slack 1.5 sends a third
    of the layers to the CPU, for the compact program."""
    from deepx_sim.plan.ilp import _partition_bound

    for slack, expected in ((1.0, True), (1.5, False)):
        data = synthetic_profiled(30, 3, seed=1, memory_slack=slack)
        path = tmp_path / f"s{slack}.json"
        path.write_text(json.dumps(data))
        model = load_profiled(path)
        problem = Problem(model.graph, model.platform, constraints=LATENCY, profile=model.profile)
        assert _partition_bound(problem) is expected


@pytest.mark.parametrize("seed", range(4))
def test_a_stopped_pricing_keeps_the_bound_valid(tmp_path: Path, seed: int,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Pricing solves cut short (their dual bound, not their optimum) and central duals
    from the first pricing on: the bound stays below the compact program's optimum."""
    from deepx_sim.plan import columns

    monkeypatch.setattr(columns, "PRICING_LIMIT_S", 0.0)
    monkeypatch.setattr(columns, "CENTRAL_AFTER", 0)
    problem = _problem(tmp_path, 40 + seed, nodes=9, accelerators=2 + seed % 2, colocated=seed % 2)
    optimum = DeepXPlanner(gap=1e-9, time_limit_s=None).plan(problem)
    result = column_generation(problem, [], time_limit_s=5, gap=0.0)
    assert result is not None
    assert result.bound <= optimum.objective_value * (1 + 1e-7)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_stopped_solver_plan_is_polished_to_a_local_optimum(tmp_path: Path, seed: int) -> None:
    """The branch and bound stopped by its limit hands over an incumbent that local search
    can often improve; the planner polishes it, so the search finds nothing more, and the
    gap is the polished plan's against the solver's bound."""
    data = synthetic_profiled(200, 4, seed=seed, memory_slack=1.5)
    path = tmp_path / "g.json"
    path.write_text(json.dumps(data))
    model = load_profiled(path)
    problem = Problem(model.graph, model.platform, constraints=LATENCY, profile=model.profile)
    plan = DeepXPlanner(time_limit_s=3.0).plan(problem)
    assert plan.status == "feasible" and plan.gap is not None and plan.gap > 0.01  # stopped, not proven
    assert improve(problem, plan).objective_value == plan.objective_value
