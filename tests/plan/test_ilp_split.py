"""Copies through the sensor's memory priced as two halves (ilp._Builder._split_transfers)
against brute force and against the per-edge flows they replace."""

from __future__ import annotations

import json
from pathlib import Path

import pulp
import pytest

from deepx_sim.costs import Conditions
from deepx_sim.model import load_model
from deepx_sim.model.profiled import load_profiled, synthetic_profiled
from deepx_sim.plan import Constraints, DeepXPlanner, Problem
from deepx_sim.plan.ilp import HIGHS_OPTIONS, _BatchHiGHS, _Builder
from deepx_sim.plan.oracle import BruteForcePlanner
from deepx_sim.platform import load_platform

LATENCY = Constraints(objective="latency", deadline_s=1e4)


def _problem(tmp_path: Path, seed: int, nodes: int, accelerators: int, *, chain: bool = False,
             colocated: int = 0) -> Problem:
    data = synthetic_profiled(nodes, accelerators, seed=seed, memory_slack=1.0 + seed % 3 * 0.25,
                              colocated_pairs=colocated)
    if chain:  # every producer with one consumer
        data["edges"] = [e for e in data["edges"] if e["destId"] == e["sourceId"] + 1]
    path = tmp_path / f"g{seed}.json"
    path.write_text(json.dumps(data))
    model = load_profiled(path)
    return Problem(model.graph, model.platform, constraints=LATENCY, profile=model.profile)


def _relaxation(planner: DeepXPlanner, problem: Problem) -> float:
    model = planner.build(problem)
    for var in model.prob.variables():
        var.cat = pulp.LpContinuous
    model.prob.solve(_BatchHiGHS(msg=False, **HIGHS_OPTIONS))
    assert pulp.LpStatus[model.prob.status] == "Optimal"
    return float(pulp.value(model.prob.objective))


# time_limit_s=None: the compact program alone (column generation needs a limit)
SPLIT = DeepXPlanner(time_limit_s=None, gap=1e-9)
FLOWS = DeepXPlanner(time_limit_s=None, gap=1e-9, split_copies=False)


@pytest.mark.parametrize("seed", range(8))
def test_split_and_flows_find_the_brute_force_optimum(tmp_path: Path, seed: int) -> None:
    problem = _problem(tmp_path, seed, 7, 2, colocated=seed % 2)
    best = BruteForcePlanner().plan(problem)
    for planner in (SPLIT, FLOWS):
        plan = planner.plan(problem)
        assert plan.status == "optimal"
        assert plan.latency_s == pytest.approx(best.latency_s, rel=1e-7)


@pytest.mark.parametrize("seed", range(4))
def test_on_chains_the_relaxations_are_equal(tmp_path: Path, seed: int) -> None:
    """With one consumer per producer and a copy's cost out(p) + in(q), the flows' best
    fractional transport pays exactly the two halves' shortfalls."""
    problem = _problem(tmp_path, seed, 30, 3, chain=True)
    assert _relaxation(SPLIT, problem) == pytest.approx(_relaxation(FLOWS, problem), rel=1e-7)


def test_split_program_is_a_fraction_of_the_flows(tmp_path: Path) -> None:
    problem = _problem(tmp_path, 0, 120, 6)
    split, flows = (len(p.build(problem).prob.variables()) for p in (SPLIT, FLOWS))
    assert split * 2 < flows


def test_split_only_where_copies_add_up(tmp_path: Path) -> None:
    profiled = _problem(tmp_path, 1, 10, 2)
    assert _Builder(profiled)._copy_rates() is not None
    assert _Builder(profiled, split_copies=False)._copy_rates() is None
    # a remote processor (radio, round trips) or copies straight between processors: flows
    zoo = Problem(load_model("alexnet"), load_platform("tegra_k1"), Conditions(link="wifi"))
    assert _Builder(zoo)._copy_rates() is None
    assert not load_platform("tegra_k1").copies_via_sensor
