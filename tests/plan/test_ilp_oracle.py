"""The ILP against brute force and against the minimum cut."""

from __future__ import annotations

import contextlib

import pytest

from deepx_sim.errors import InfeasibleError
from deepx_sim.plan import BruteForcePlanner, Constraints, DeepXPlanner, Problem
from deepx_sim.plan.baselines import DADSPlanner
from tests.plan.conftest import (
    random_attention_problem,
    random_platform,
    random_problem,
    random_radio_problem,
)


def _ilp_matching_brute_force(problem):  # type: ignore[no-untyped-def]
    """The ILP's plan after checking its objective equals brute force's (None when both find
    the problem infeasible)."""
    try:
        oracle = BruteForcePlanner().plan(problem)
    except InfeasibleError:
        with pytest.raises(InfeasibleError):
            DeepXPlanner().plan(problem)
        return None
    ilp = DeepXPlanner().plan(problem)
    assert ilp.objective_value == pytest.approx(oracle.objective_value, rel=1e-6, abs=1e-12)
    return ilp


@pytest.mark.parametrize("seed", range(120))
def test_ilp_equals_brute_force_on_random_dags(seed: int) -> None:
    objective = ["energy", "latency", "weighted"][seed % 3]
    ilp = _ilp_matching_brute_force(random_problem(seed, objective=objective))
    assert ilp is None or ilp.status == "optimal"


@pytest.mark.parametrize("seed", range(60))
def test_ilp_equals_brute_force_in_every_radio_state(seed: int) -> None:
    """The radio rule in the ILP (promotion from idle or an expiring tail; the tail
    for the part the next request will not share) against brute force, which
    applies the rule's own functions to every assignment."""
    _ilp_matching_brute_force(random_radio_problem(seed))


@pytest.mark.parametrize("seed", range(40))
def test_ilp_equals_min_cut_on_two_processor_latency_problems(seed: int) -> None:
    import numpy as np

    base = random_problem(1000 + seed)
    platform = random_platform(np.random.default_rng(seed), n_local=1)
    problem = Problem(base.graph, platform, base.conditions,
                      Constraints(deadline_s=100.0, objective="latency"), rank_fractions=())
    dads = DADSPlanner().plan(problem)
    ilp = DeepXPlanner().plan(problem)
    assert ilp.latency_s == pytest.approx(dads.latency_s, rel=1e-7)


def test_cbc_and_highs_agree() -> None:
    problem = random_problem(7)
    try:
        highs = DeepXPlanner(solver="highs").plan(problem)
    except InfeasibleError:
        pytest.skip("instance infeasible")
    cbc = DeepXPlanner(solver="cbc").plan(problem)
    assert cbc.objective_value == pytest.approx(highs.objective_value, rel=1e-6)


@pytest.mark.parametrize("seed", range(8))
def test_ilp_equals_brute_force_on_attention_blocks(seed: int) -> None:
    """Attention's branches: a four-way fan-out (q, k, v and the residual), products of
    two activations and views between them, after fusion."""
    _ilp_matching_brute_force(random_attention_problem(seed))


@pytest.mark.parametrize("seed", range(30))
def test_presolve_and_fanout_rows_keep_the_optimum(seed: int) -> None:
    """Dropping dominated options and paying fan-out transfers per destination give the
    objective of the per-edge flow program with every option."""
    problem = random_problem(2000 + seed, objective=["energy", "latency", "weighted"][seed % 3])
    try:
        fast = DeepXPlanner().plan(problem)
    except InfeasibleError:
        fast = None
    per_edge = DeepXPlanner(presolve=False, fanout=10**9)
    if fast is None:
        with pytest.raises(InfeasibleError):
            per_edge.plan(problem)
        return
    full = per_edge.plan(problem)
    assert fast.objective_value == pytest.approx(full.objective_value, rel=1e-6, abs=1e-12)


def test_presolve_drops_only_options_an_optimum_can_avoid() -> None:
    """On AlexNet on tegra_k1 some options are dominated, and the plan is unchanged."""
    from deepx_sim.costs import Conditions
    from deepx_sim.model import load_model
    from deepx_sim.plan.ilp import _Builder
    from deepx_sim.platform import load_platform

    problem = Problem(load_model("alexnet"), load_platform("tegra_k1"), Conditions(link="wifi"))
    kept, every = _Builder(problem, presolve=True), _Builder(problem, presolve=False)
    kept.placement()
    every.placement()
    assert len(kept.x) < len(every.x)
    with_presolve, without = DeepXPlanner().plan(problem), DeepXPlanner(presolve=False).plan(problem)
    assert with_presolve.objective_value == pytest.approx(without.objective_value, rel=1e-6)


@pytest.mark.parametrize("seed", range(10))
def test_a_starting_plan_changes_the_time_not_the_optimum(seed: int) -> None:
    """The previous plan (optimal under other conditions) or a baseline's, as a start."""
    from dataclasses import replace

    from deepx_sim.plan import get_planner

    problem = random_problem(3000 + seed)
    try:
        cold = DeepXPlanner().plan(problem)
    except InfeasibleError:
        pytest.skip("instance infeasible")
    other = problem.with_conditions(replace(problem.conditions, uplink_mbps=0.5))
    starts = [get_planner("greedy").plan(problem)]
    with contextlib.suppress(InfeasibleError):
        starts.append(DeepXPlanner().plan(other))
    for start in starts:
        warm = DeepXPlanner().plan(problem, start=start)
        assert warm.objective_value == pytest.approx(cold.objective_value, rel=1e-6, abs=1e-12)
