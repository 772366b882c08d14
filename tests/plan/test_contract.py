"""One contract, every planner (as Optuna tests every sampler with one class)."""

from __future__ import annotations

import pytest

from deepx_sim.costs import Conditions
from deepx_sim.errors import InfeasibleError, PlanError
from deepx_sim.model import load_model
from deepx_sim.model.layers import LayerKind
from deepx_sim.plan import Constraints, Problem, get_planner, planner_names
from deepx_sim.plan.problem import RADIO, transfers_of
from deepx_sim.platform import load_platform

PLANNERS = [n for n in planner_names() if n != "oracle"]
CASES = [("speakerid", "tegra_k1", "wifi"), ("alexnet", "snapdragon_800", "lte"),
         ("mobilenetv2", "snapdragon_8_gen_3", "wifi")]


def recompute(problem: Problem, plan) -> tuple[float, float]:
    """Latency and energy summed independently from the cost model's pieces."""
    costs = problem.costs
    lat = en = 0.0
    for p in plan.placements:
        c = costs.layer_cost(p.layer, p.processor, p.variant)
        lat, en = lat + c.latency_s, en + c.energy_j
    where = {p.layer: p.processor for p in plan.placements}
    radio = False
    for _, src, dst, size in transfers_of(problem, where):
        t = costs.transfer_cost(size, src, dst)
        lat, en = lat + t.latency_s, en + t.energy_j
        radio |= t.route in ("uplink", "downlink")
    if radio:
        promo_s, burst_j = costs.radio_burst()
        lat, en = lat + promo_s, en + burst_j
    return lat, en


@pytest.mark.parametrize("planner", PLANNERS)
@pytest.mark.parametrize(("model", "platform", "link"), CASES)
def test_planner_contract(planner: str, model: str, platform: str, link: str) -> None:
    problem = Problem(load_model(model), load_platform(platform), Conditions(link=link),
                      Constraints(deadline_s=5.0))
    try:
        plan = get_planner(planner).plan(problem)
    except (InfeasibleError, PlanError) as exc:
        assert str(exc)  # a planner that does not apply says why
        return
    names = [lay.name for lay in problem.layers]
    assert [p.layer for p in plan.placements] == names  # every layer once, in order
    assert all(p.processor in problem.processors for p in plan.placements)
    inputs = [p for p in plan.placements if problem.graph.nodes[p.layer]["layer"].kind
              == LayerKind.INPUT]
    assert all(p.processor == problem.sensor for p in inputs)
    lat, en = recompute(problem, plan)
    assert plan.latency_s == pytest.approx(lat, rel=1e-9)
    assert plan.energy_j == pytest.approx(en, rel=1e-9)
    assert sum(plan.energy_breakdown_j.values()) == pytest.approx(plan.energy_j, rel=1e-12)
    if plan.status in ("feasible", "optimal"):
        for proc, used in plan.memory_bytes.items():
            assert used <= problem.platform.processor(proc).usable_memory_bytes
        assert plan.latency_s <= problem.constraints.deadline_s * (1 + 1e-9)
        assert plan.accuracy_loss <= problem.constraints.max_accuracy_loss + 1e-9
    if plan.uses_radio:
        assert plan.energy_breakdown_j[RADIO] > 0


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
