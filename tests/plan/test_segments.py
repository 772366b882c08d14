"""The segment heuristic (plan/segments.py) against brute force over its own family."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from deepx_sim.model.layers import LayerKind, colocation
from deepx_sim.model.profiled import load_profiled, synthetic_profiled
from deepx_sim.plan import Constraints, DeepXPlanner, Problem
from deepx_sim.plan.problem import Placement, evaluate, interchangeable
from deepx_sim.plan.segments import segment_plan

LATENCY = Constraints(objective="latency", deadline_s=1e4)


def _problem(tmp_path: Path, seed: int, nodes: int, accelerators: int, chain: bool) -> Problem:
    data = synthetic_profiled(nodes, accelerators, seed=seed, memory_slack=1.0 + seed % 3 * 0.25,
                              colocated_pairs=seed % 2)
    if chain:
        data["edges"] = [e for e in data["edges"] if e["destId"] == e["sourceId"] + 1]
    path = tmp_path / f"g{seed}.json"
    path.write_text(json.dumps(data))
    model = load_profiled(path)
    return Problem(model.graph, model.platform, constraints=LATENCY, profile=model.profile)


def _family_best_s(problem: Problem) -> float | None:
    """Brute force over the family: every cut of the order into blocks, each block on the
    sensor or on the next unused instance, inputs on the sensor."""
    members = max(interchangeable(problem), key=len)
    order = [lay for lay in problem.layers if lay.kind != LayerKind.INPUT]
    classes = list(colocation(problem.graph).values())
    best = None
    for cuts in itertools.product((False, True), repeat=len(order) - 1):
        bounds = [0, *(i + 1 for i, cut in enumerate(cuts) if cut), len(order)]
        blocks = list(itertools.pairwise(bounds))
        for kinds in itertools.product((0, 1), repeat=len(blocks)):
            if sum(kinds) > len(members):
                continue
            used, sensor = 0, problem.sensor
            where = {lay.name: Placement(lay.name, sensor, problem.variants(lay, sensor)[0])
                     for lay in problem.layers}
            for (a, b), kind in zip(blocks, kinds, strict=True):
                device = members[used] if kind else problem.sensor
                used += kind
                for lay in order[a:b]:
                    where[lay.name] = Placement(lay.name, device, problem.variants(lay, device)[0])
            if any(len({where[m].processor for m in group}) > 1 for group in classes):
                continue  # evaluate does not check colocation
            plan = evaluate(problem, where, "bf")
            if plan.status == "feasible" and (best is None or plan.latency_s < best):
                best = plan.latency_s
    return best


@pytest.mark.parametrize("seed", range(8))
def test_segments_is_optimal_in_its_family_on_chains(tmp_path: Path, seed: int) -> None:
    problem = _problem(tmp_path, seed, nodes=7, accelerators=2 + seed % 2, chain=True)
    best = _family_best_s(problem)
    plan = segment_plan(problem)
    if best is None:
        assert plan is None
        return
    assert plan is not None and plan.status == "feasible"
    assert plan.latency_s == pytest.approx(best, rel=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_segments_plans_are_feasible_and_never_beat_the_optimum(tmp_path: Path, seed: int) -> None:
    """With skip edges the block costs are approximate: the plan is still costed exactly,
    fits memory and keeps colocation, and is no better than the ILP's proven optimum."""
    problem = _problem(tmp_path, seed, nodes=7, accelerators=2 + seed % 2, chain=False)
    plan = segment_plan(problem)
    optimum = DeepXPlanner(gap=1e-6, warm_start=False).plan(problem)
    assert optimum.status == "optimal"
    if plan is not None:
        assert plan.status == "feasible"
        assert plan.latency_s >= optimum.latency_s * (1 - 1e-9)


def test_segments_beats_greedy_on_a_shipped_graph() -> None:
    """ResNet-50's profiled graph (data/profiled_graphs): cuts chosen ahead beat the
    greedy's layer-by-layer choice (a regression check of the heuristic's purpose)."""
    from deepx_sim.plan.baselines import GreedyPlanner

    path = Path(__file__).resolve().parents[2] / "data" / "profiled_graphs" / "resnet50_inference.json"
    model = load_profiled(path)
    problem = Problem(model.graph, model.platform, constraints=LATENCY, profile=model.profile)
    plan = segment_plan(problem)
    assert plan is not None and plan.status == "feasible"
    assert plan.latency_s < GreedyPlanner().plan(problem).latency_s


def test_no_interchangeable_instances_means_no_segment_plan() -> None:
    from deepx_sim.plan.testing import random_problem

    assert segment_plan(random_problem(0)) is None
