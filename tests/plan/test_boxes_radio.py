"""The box of radio states with no next arrival: its open end and the bounds it carries
over from the box with the radio idle (plan/boxes.py), checked against full solves."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from deepx_sim.costs import Conditions
from deepx_sim.errors import InfeasibleError
from deepx_sim.plan import DeepXPlanner
from deepx_sim.plan.boxes import CertifiedBox
from deepx_sim.plan.fastpath import CERTIFIED_LOSS, FastReplanner
from deepx_sim.plan.testing import random_radio_problem

#: random radio problems whose optimum with the radio idle sends to the cloud in some
#: part of the box, so that the promotion a connected radio saves changes the optimum
RADIO_SEEDS = (7, 24, 27)
UPLINKS_MBPS = (0.5, 50.0)


def warmed(seed: int) -> FastReplanner:
    problem = random_radio_problem(seed).with_conditions(Conditions(link="net"))
    return FastReplanner(problem).warm(uplinks_mbps=UPLINKS_MBPS, gaps_s=(), max_solves=20, radio_box=True)


def no_next_box(fast: FastReplanner) -> CertifiedBox:
    (box,) = [b for b in fast.boxes if b.carried_from is not None]
    return box


def optimum(fast: FastReplanner, conditions: Conditions) -> float | None:
    try:
        return DeepXPlanner().plan(fast.problem.with_conditions(conditions)).objective_value
    except InfeasibleError:
        return None


def bound_excess(seed: int) -> tuple[float, int]:
    """Oracle: a full solve at random points of the box of radio states with no next
    arrival; the largest ratio of the box's lower bound there (carried over or solved
    below) to the optimum, and how many points a carried bound was the best for."""
    fast = warmed(seed)
    box = no_next_box(fast)
    rng = np.random.default_rng(seed)
    worst, carried = 0.0, 0
    for _ in range(25):
        x = box.bottom + rng.random(len(box.bottom)) * box.widths()
        below = box.bound_below(x)
        best = optimum(fast, box.at(x))
        if below is None or best is None:
            continue
        carried += any(bound == below[0] for _, bound in box.carried)
        worst = max(worst, below[0] / best)
    return worst, carried


@pytest.mark.parametrize("seed", RADIO_SEEDS)
def test_carried_bounds_never_exceed_the_optimum(seed: int) -> None:
    worst, carried = bound_excess(seed)
    assert carried >= 5
    assert worst <= 1 + 1e-6


def test_a_bound_carried_without_the_promotion_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutation: carrying the idle box's bounds over whole (the promotion a connected
    radio saves not taken off) overstates the optimum, and the oracle sees it."""
    from deepx_sim.plan import fastpath

    built = fastpath.cloud_box

    def whole(*args: object, **kwargs: object) -> CertifiedBox:
        box = built(*args, **kwargs)  # type: ignore[arg-type]
        box.carry_cost = 0.0
        return box

    monkeypatch.setattr(fastpath, "cloud_box", whole)
    assert max(bound_excess(seed)[0] for seed in RADIO_SEEDS) > 1 + CERTIFIED_LOSS


def test_the_box_holds_within_the_loss_where_proven() -> None:
    """Oracle: a full solve at random radio states (connected with a tail left, or
    promoting) with no next arrival; where the warm-up says proven the fast plan is
    within CERTIFIED_LOSS, and some of those points are proven by carried bounds
    alone (the box solved nothing of its own)."""
    proven = by_carried = 0
    for seed in RADIO_SEEDS:
        fast = warmed(seed)
        box = no_next_box(fast)
        own = not box.solved and not box.relaxed
        rng = np.random.default_rng(100 + seed)
        for _ in range(15):
            x = box.bottom + rng.random(len(box.bottom)) * box.widths()
            conditions = box.at(x)
            if rng.random() < 0.3:
                conditions = replace(conditions, radio_state="promoting", tail_left_s=0.0)
            if fast.coverage(conditions) != "proven":
                continue
            best = optimum(fast, conditions)
            if best is None:
                continue
            quick = fast.plan(conditions)
            assert quick.objective_value <= best * (1 + CERTIFIED_LOSS) + 1e-12
            assert quick.objective_value >= best * (1 - 1e-6)
            proven += 1
            by_carried += own
    assert proven >= 15 and by_carried >= 5, (proven, by_carried)


def test_the_box_is_open_where_the_radio_is_idle() -> None:
    """The box holds every tail left > 0 and no idle radio (the idle box holds that, and
    no tail left > 0); at its top end a plan that sends at once is not promoted, as
    with any tail left > 0 (costs.promotes), while the idle box's plan is."""
    fast = warmed(27)
    box = no_next_box(fast)
    idle = box.carried_from
    assert idle is not None
    top = box.at(box.top)
    assert top.radio_state == "connected" and 0 < top.tail_left_s < 1e-300
    idle_conditions = Conditions(link="net")
    assert box.point(idle_conditions) is None and idle.point(idle_conditions) is not None
    tiny = Conditions(link="net", radio_state="connected", tail_left_s=1e-12)
    assert idle.point(tiny) is None and box.point(tiny) is not None
    # a pooled plan that sends at once costs the promotion less at the open end
    model = fast.link.radio  # type: ignore[union-attr]
    at_once = [i for i, f in enumerate(fast.candidates) if f.plan.uses_radio and not f.prefix_busy_s.any()]
    assert at_once
    open_costs, idle_costs = fast._costs(top)[1], fast._costs(idle.at(idle.top))[1]
    for i in at_once:
        assert idle_costs[i] - open_costs[i] == pytest.approx(model.promotion_energy_j, rel=1e-9)
    assert math.isclose(top.tail_left_s, math.ulp(0.0))
