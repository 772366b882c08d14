"""The pooled bound and plan (plan/pooled.py) against enumeration and brute force."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from deepx_sim.model.layers import Layer, LayerKind
from deepx_sim.model.profiled import load_profiled, synthetic_profiled
from deepx_sim.plan import BruteForcePlanner, Constraints, Problem
from deepx_sim.plan.columns import in_scope
from deepx_sim.plan.pooled import pooled_bound, pooled_plan
from deepx_sim.plan.problem import Placement, evaluate

LATENCY = Constraints(objective="latency", deadline_s=1e4)


def _problem(tmp_path: Path, seed: int, nodes: int, accelerators: int, *, slack: float,
             skips: bool = True, colocated: int = 0) -> Problem:
    data = synthetic_profiled(nodes, accelerators, seed=seed, memory_slack=slack, colocated_pairs=colocated)
    if not skips:
        data["edges"] = [e for e in data["edges"] if e["destId"] == e["sourceId"] + 1]
    path = tmp_path / f"g{seed}.json"
    path.write_text(json.dumps(data))
    model = load_profiled(path)
    return Problem(model.graph, model.platform, constraints=LATENCY, profile=model.profile)


def _pooled_enumeration(problem: Problem) -> float:
    """The pooled relaxation solved by enumeration: every set of layers whose parameters fit
    the instances' total memory, all run on one instance (so no copy between instances),
    costed by evaluate with its memory status ignored."""
    instances = in_scope(problem)
    assert instances is not None
    costs, first = problem.costs, instances[0]
    pooled_bytes = len(instances) * problem.platform.processor(first).usable_memory_bytes
    units = [lay for lay in problem.layers if lay.kind != LayerKind.INPUT]
    best = float("inf")
    for size in range(len(units) + 1):
        for chosen in itertools.combinations(units, size):
            params = sum(costs.layer_cost(lay.name, first, problem.variants(lay, first)[0]).param_bytes
                         for lay in chosen)
            if params > pooled_bytes or any(_fits_no_instance(problem, lay) for lay in chosen):
                continue
            names = {lay.name for lay in chosen}
            where = {lay.name: first if lay.name in names else problem.sensor for lay in problem.layers}
            plan = evaluate(problem, {lay.name: Placement(lay.name, where[lay.name],
                                                          problem.variants(lay, where[lay.name])[0])
                                      for lay in problem.layers}, "pooled-set")
            best = min(best, plan.objective_value)
    return best


def _fits_no_instance(problem: Problem, layer: Layer) -> bool:
    instances = in_scope(problem)
    assert instances is not None
    cost = problem.costs.layer_cost(layer.name, instances[0], problem.variants(layer, instances[0])[0])
    return cost.param_bytes > problem.platform.processor(instances[0]).usable_memory_bytes


@pytest.mark.parametrize("seed", range(6))
def test_bound_is_the_pooled_optimum_on_chains(tmp_path: Path, seed: int) -> None:
    # a chain: the window sees every edge, so the DP solves the pooled relaxation exactly
    # (memory binds here: the pooled memory is 1/1.5 of the layers' plus k largest layers)
    problem = _problem(tmp_path, seed, 9, 2 + seed % 2, slack=1.5 + seed % 2, skips=False)
    assert pooled_bound(problem) == pytest.approx(_pooled_enumeration(problem), rel=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_bound_is_the_pooled_optimum_with_skips_inside_the_window(tmp_path: Path, seed: int) -> None:
    # skip edges reach at most 8 layers back: a window of 8 sees them all (the pooled memory
    # holds every layer here, so the 256 states need no memory dimension)
    problem = _problem(tmp_path, seed, 9, 2 + seed % 2, slack=1.0)
    assert pooled_bound(problem, window=8) == pytest.approx(_pooled_enumeration(problem), rel=1e-5)


@pytest.mark.parametrize("seed", range(8))
def test_bound_below_and_plan_above_the_optimum(tmp_path: Path, seed: int) -> None:
    problem = _problem(tmp_path, seed, 7, 2 + seed % 2, slack=1.0 + seed % 3 * 0.25, colocated=seed % 2)
    optimum = BruteForcePlanner().plan(problem).objective_value
    bound, plan = pooled_bound(problem), pooled_plan(problem)
    assert bound is not None and bound <= optimum * (1 + 1e-9)
    assert (plan is None) == bool(seed % 2)  # no plan with colocation
    if plan is not None:
        assert plan.status == "feasible"
        assert plan.objective_value >= optimum * (1 - 1e-9)


def test_a_layer_no_instance_holds_is_left_out(tmp_path: Path) -> None:
    # larger than one instance's memory, smaller than the pooled memory, and much faster on
    # an instance: the pooled set must not take it (no plan can)
    data = synthetic_profiled(8, 3, seed=4, memory_slack=1.0)
    data["edges"] = [e for e in data["edges"] if e["destId"] == e["sourceId"] + 1]
    big = data["nodes"][3]
    big.update(size=data["maxSizePerFPGA"] * 1.5, cpuLatency=50.0, fpgaLatency=1.0)
    path = tmp_path / "big.json"
    path.write_text(json.dumps(data))
    model = load_profiled(path)
    problem = Problem(model.graph, model.platform, constraints=LATENCY, profile=model.profile)
    assert pooled_bound(problem) == pytest.approx(_pooled_enumeration(problem), rel=1e-5)
    plan = pooled_plan(problem)
    assert plan is not None and plan.status == "feasible"


def test_plan_is_built_where_memory_binds(tmp_path: Path) -> None:
    problem = _problem(tmp_path, 5, 60, 4, slack=1.5)
    bound, plan = pooled_bound(problem), pooled_plan(problem)
    assert bound is not None and plan is not None
    assert plan.status == "feasible"
    assert bound <= plan.objective_value
    used = {pl.processor for pl in plan.placements}
    assert problem.sensor in used and len(used) > 2  # memory forces layers onto the sensor


def test_out_of_scope_is_none() -> None:
    from deepx_sim.plan.testing import random_problem

    assert pooled_bound(random_problem(0)) is None and pooled_plan(random_problem(0)) is None
