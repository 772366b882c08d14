"""The replanning fast path: its numbers are the cost model's, its choices near the ILP's."""

from __future__ import annotations

import collections
from dataclasses import replace

import numpy as np
import pytest

from deepx_sim.costs import Conditions
from deepx_sim.errors import InfeasibleError
from deepx_sim.model import load_model
from deepx_sim.plan import Constraints, DeepXPlanner, Problem
from deepx_sim.plan.fastpath import CERTIFIED_LOSS, MIN_DEADLINE_SHARE, MIN_FREE_FRACTION, FastReplanner
from deepx_sim.plan.testing import random_problem
from deepx_sim.platform import load_platform


@pytest.fixture(scope="module")
def fast() -> FastReplanner:
    problem = Problem(load_model("speakerid"), load_platform("tegra_k1"), Conditions(link="lte"),
                      Constraints(deadline_s=0.25))
    return FastReplanner(problem).warm(uplinks_mbps=(0.5, 2.0, 8.0), max_solves=30)


def random_conditions(rng: np.random.Generator) -> Conditions:
    """Random bandwidths, loads and reachability, and a random radio state: idle,
    promoting, or connected with up to 60 ms of tail left (about the local work
    before a cloud layer, so both sides of the promotion rule occur), and a next
    arrival from 10 ms to beyond the LTE tail, or none; half the time our own
    work is queued on the GPU."""
    state = str(rng.choice(["idle", "promoting", "connected"]))
    return Conditions(link="lte", uplink_mbps=float(rng.uniform(0.3, 20)),
                      downlink_mbps=float(rng.uniform(1, 40)), rtt_ms=float(rng.uniform(20, 150)),
                      free_fraction={p: float(rng.uniform(0.2, 1.0)) for p in ("cpu", "gpu", "lpc")},
                      cloud_reachable=bool(rng.random() < 0.8), radio_state=state,  # type: ignore[arg-type]
                      tail_left_s=float(rng.uniform(0, 0.06)) if state == "connected" else 0.0,
                      next_gap_s=None if rng.random() < 0.2 else float(np.exp(rng.uniform(-4.6, 2.7))),
                      queued_s={} if rng.random() < 0.5 else {"gpu": float(rng.uniform(0, 0.2))})


def test_fast_plans_cost_what_the_cost_model_says(fast: FastReplanner) -> None:
    rng = np.random.default_rng(3)
    for _ in range(30):
        plan = fast.plan(random_conditions(rng))
        checked = fast.check(plan)
        assert plan.latency_s == pytest.approx(checked.latency_s, rel=1e-9)
        assert plan.energy_j == pytest.approx(checked.energy_j, rel=1e-9)
        for part, value in checked.energy_breakdown_j.items():
            assert plan.energy_breakdown_j.get(part, 0.0) == pytest.approx(value, rel=1e-9, abs=1e-15)
        if checked.radio is not None:
            assert plan.radio is not None
            for got, want in zip(vars(plan.radio).values(), vars(checked.radio).values(), strict=True):
                assert got == pytest.approx(want, rel=1e-9, abs=1e-15)


def test_fast_path_is_never_better_than_the_ilp_and_rarely_worse(fast: FastReplanner) -> None:
    rng = np.random.default_rng(4)
    losses = []
    for _ in range(20):
        conditions = random_conditions(rng)
        quick = fast.plan(conditions)
        full = DeepXPlanner().plan(fast.problem.with_conditions(conditions))
        assert quick.objective_value >= full.objective_value * (1 - 1e-9)
        losses.append(quick.objective_value / full.objective_value - 1)
    assert np.median(losses) < 0.05


@pytest.mark.slow
def test_warm_up_proves_the_load_box_on_the_device_alone() -> None:
    """Oracle: a full solve.  AlexNet on tegra_k1 with a 100 ms deadline (the
    deadline binds under load, where plans differ by a few per cent): under any
    loads on the device alone, outside the cells the warm-up reports unproven,
    the best pooled plan is within CERTIFIED_LOSS."""
    problem = Problem(load_model("alexnet"), load_platform("tegra_k1"), Conditions(link="wifi"),
                      Constraints(deadline_s=0.1))
    fast = FastReplanner(problem).warm(uplinks_mbps=(), gaps_s=())
    rng = np.random.default_rng(5)
    checked = 0
    for _ in range(60):
        free = {p: float(rng.uniform(MIN_FREE_FRACTION, 0.5)) for p in fast.local}  # where the deadline binds
        if any(all(easy.free_fraction.get(p, 1.0) >= f >= hard.free_fraction.get(p, 1.0)
                   for p, f in free.items()) and not hard.queued_s for easy, hard in fast.unproven_cells):
            continue
        conditions = Conditions(link="wifi", free_fraction=free, cloud_reachable=False)
        try:
            full = DeepXPlanner().plan(problem.with_conditions(conditions))
        except InfeasibleError:
            continue
        assert fast.plan(conditions).objective_value <= full.objective_value * (1 + CERTIFIED_LOSS)
        checked += 1
    assert checked >= 30


def test_pool_grows_with_every_full_solve(fast: FastReplanner) -> None:
    """A plan the pool lacks (here the cpu-only plan) joins it and is then chosen
    where it is best: when nothing else meets a deadline only it can meet."""
    from deepx_sim.plan import get_planner

    cpu = get_planner("cpu-only").plan(fast.problem)
    size = fast.pool_size
    fast.add(cpu)
    fast.add(cpu)  # already there: no duplicate
    assert fast.pool_size == size + 1
    assert fast.candidates[-1].plan is cpu


def test_unreachable_cloud_never_gets_a_cloud_plan(fast: FastReplanner) -> None:
    plan = fast.plan(Conditions(link="lte", cloud_reachable=False))
    assert "cloud" not in plan.processors_used


def test_accuracy_uses_real_singular_values_when_weights_exist() -> None:
    from deepx_sim.accuracy import OUTPUT_ACCURACY_PER_ERR2, AccuracyModel
    from deepx_sim.costs import Variant
    from deepx_sim.model.builder import GraphBuilder
    from deepx_sim.model.weights import WeightStore

    b = GraphBuilder("w", (1, 4))
    b.fc(3, name="fc")
    g = b.build()
    # W = U diag(3, 2, 1) V^T: dropping to rank 1 loses (4 + 1) / (9 + 4 + 1) of the energy
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    v, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    store = WeightStore()
    store.set("fc", "weight", u @ np.diag([3.0, 2.0, 1.0]) @ v[:, :3].T)
    g.graph["weights"] = store
    model = AccuracyModel(g, measure=False)  # the err2 rule (measured curves: test_accuracy_sensitivity)
    layer = g.nodes["fc"]["layer"]
    assert model.spectrum_source(layer) == "weights"
    # its only layer is the classifier
    assert model.loss(layer, Variant(rank=1)) == pytest.approx(OUTPUT_ACCURACY_PER_ERR2 * 5 / 14)
    assert model.loss(layer, Variant(rank=3)) == pytest.approx(0.0, abs=1e-12)


def test_warm_up_covers_radio_states() -> None:
    """Over LTE a lone VGG-16 request stays on the phone (promotion and a 12.3 J
    tail), while one of a stream 0.5 s apart at 20 Mbps goes to the cloud: the
    pool must hold both optima, as a full solve finds them."""
    problem = Problem(load_model("vgg16"), load_platform("snapdragon_400"), Conditions(link="lte"),
                      Constraints(deadline_s=5.0))
    fast = FastReplanner(problem).warm(uplinks_mbps=(2.0, 20.0), vary=(), gaps_s=(0.5,))
    for conditions in (Conditions(link="lte", uplink_mbps=20.0),
                       Conditions(link="lte", uplink_mbps=20.0, radio_state="connected",
                                  tail_left_s=10.0, next_gap_s=0.5)):
        best = fast.choose(conditions)
        assert best is not None
        full = DeepXPlanner().plan(problem.with_conditions(conditions))
        assert best[0].uses_radio == full.uses_radio
        assert best[2] == pytest.approx(full.energy_j, rel=1e-6)  # (ties: ranks on the cloud)
    assert {f.plan.uses_radio for f in fast.candidates} == {True, False}


def device_alone(rng: np.random.Generator, problem: Problem) -> Conditions:
    """The cloud unreachable and, at random, loads on each local processor (free
    fractions down to MIN_FREE_FRACTION) or our own queue on each (leaving down to
    MIN_DEADLINE_SHARE of the deadline): the boxes the warm-up proves."""
    local = [p.name for p in problem.platform.local_processors]
    if rng.random() < 0.5:
        return Conditions(link="net", cloud_reachable=False,
                          free_fraction={p: float(rng.uniform(MIN_FREE_FRACTION, 1.0)) for p in local})
    most_s = (1 - MIN_DEADLINE_SHARE) * problem.constraints.deadline_s
    return Conditions(link="net", cloud_reachable=False,
                      queued_s={p: float(rng.uniform(0.0, most_s)) for p in local})


def binding_problem(seed: int) -> Problem | None:
    """A small random problem whose deadline is 2.5 times the latency of its unloaded
    energy-optimal plan on the device alone, so that loads and queues force other
    plans (None if nothing runs on the device alone)."""
    problem = random_problem(seed)
    alone = problem.with_conditions(Conditions(link="net", cloud_reachable=False))
    try:
        best = DeepXPlanner().plan(alone.with_constraints(replace(problem.constraints, deadline_s=10.0)))
    except InfeasibleError:
        return None
    return problem.with_constraints(replace(problem.constraints, deadline_s=2.5 * best.latency_s))


def test_proven_cells_hold_within_the_loss_and_unproven_ones_solve_in_full() -> None:
    """Oracle: a full solve, on small random problems where loads and queues change the
    optimum, with warm-ups of a few solves, so that some cells stay unproven.  Where
    the warm-up says proven the fast plan is within CERTIFIED_LOSS of the optimum
    (a proof run with a 50 % tolerance breaks this); where it says unproven the
    replan is a full solve (counted as a fallback) and optimal; where nothing is
    feasible the fast path finds nothing either."""
    seen = {"proven": 0, "unproven": 0}
    for seed in range(12):
        problem = binding_problem(seed)
        if problem is None:
            continue
        fast = FastReplanner(problem).warm(uplinks_mbps=(1.0,), gaps_s=(), max_solves=4 + 4 * (seed % 4))
        rng = np.random.default_rng(seed)
        for _ in range(15):
            conditions = device_alone(rng, problem)
            try:
                full = DeepXPlanner().plan(problem.with_conditions(conditions))
            except InfeasibleError:
                full = None
            where, before = fast.coverage(conditions), fast.fallbacks
            assert where in seen
            try:
                quick = fast.plan(conditions)
            except InfeasibleError:
                quick = None
            assert (quick is None) == (full is None)
            if full is None or quick is None:
                continue
            seen[where] += 1
            assert fast.fallbacks == before + (where == "unproven")
            loss = quick.objective_value / full.objective_value - 1
            assert -1e-6 <= loss <= (CERTIFIED_LOSS if where == "proven" else 1e-6) + 1e-9
    assert seen["proven"] >= 30 and seen["unproven"] >= 10, seen


def test_a_spent_budget_proves_nothing_and_replans_on_the_device_alone_solve_in_full() -> None:
    problem = random_problem(3)
    fast = FastReplanner(problem).warm(budget_s=0.0)
    assert fast.full_solves == 0 and fast.pool_size == 0 and fast.proven_share == 0.0 and fast.budget_spent
    loaded = Conditions(link="net", cloud_reachable=False, free_fraction={"p0": 0.5})
    assert fast.coverage(loaded) == "unproven"
    assert fast.choose(loaded) is None  # the caller solves in full
    assert fast.fallbacks == 1
    plan = fast.plan(loaded)
    assert fast.fallbacks == 2 and fast.full_solves == 1
    assert plan.objective_value == pytest.approx(
        DeepXPlanner().plan(problem.with_conditions(loaded)).objective_value, rel=1e-6)
    # the cloud reachable is in the cloud box: proof tried, nothing solved
    assert fast.coverage(Conditions(link="net", free_fraction={"p0": 0.5})) == "unproven"
    # our queue with the cloud reachable, load and queue together, or a load beyond the box:
    # no proof was tried
    for unchecked in (Conditions(link="net", queued_s={"p1": 1e-4}),
                      Conditions(link="net", cloud_reachable=False, free_fraction={"p0": 0.5},
                                 queued_s={"p1": 1e-4}),
                      Conditions(link="net", cloud_reachable=False,
                                 free_fraction={"p0": MIN_FREE_FRACTION / 2})):
        assert fast.coverage(unchecked) == "unchecked"


def test_proven_and_unproven_cells_tile_each_box() -> None:
    """Every cell the warm-up looked at ends proven (its share of the box counted) or
    unproven (kept): the two shares add up to the whole box; ``max_solves`` holds."""
    for seed, max_solves in ((0, 3), (5, 4), (7, None)):
        problem = binding_problem(seed)
        assert problem is not None
        fast = FastReplanner(problem).warm(gaps_s=(), max_solves=max_solves, radio_box=seed == 7)
        assert fast.full_solves <= (max_solves or fast.full_solves)
        assert [box.kind for box in fast.boxes] == ["load", "queue"] + ["cloud"] * (3 if seed == 7 else 1)
        assert fast.budget_spent == (max_solves is not None)  # (3 or 4 solves do not finish)
        for box in fast.boxes:
            wide = box.widths() > 0  # (an axis held fixed has no width)
            volume = float(np.prod(box.widths()[wide]))
            unproven = sum(float(np.prod((hi - lo)[wide])) for lo, hi in box.unproven) / volume
            assert box.proven_share + unproven == pytest.approx(1.0, abs=1e-12)


def cloud_conditions(rng: np.random.Generator, fast: FastReplanner, radio: bool) -> Conditions:
    """At random inside the cloud box: loads on each local processor, uplink and
    downlink over the box's range; with ``radio`` a random radio state (idle,
    promoting, connected with up to a tail left) and next arrival (none, or up to
    two tails; none for a radio whose cost is monotone only without, as the box), else
    idle with no next arrival."""
    from deepx_sim.plan.boxes import radio_monotone

    link = fast.link
    assert link is not None
    lo, hi = min(UPLINKS_MBPS), max(UPLINKS_MBPS)
    scale = link.downlink_mbps / link.uplink_mbps
    state = str(rng.choice(["idle", "promoting", "connected"])) if radio else "idle"
    tail_s = link.radio.tail_s
    gaps = radio and radio_monotone(link.radio)
    return Conditions(link=link.name, free_fraction={p: float(rng.uniform(MIN_FREE_FRACTION, 1.0))
                                                     for p in fast.local},
                      uplink_mbps=float(np.exp(rng.uniform(np.log(lo), np.log(hi)))),
                      downlink_mbps=scale * float(np.exp(rng.uniform(np.log(lo), np.log(hi)))),
                      radio_state=state,  # type: ignore[arg-type]
                      tail_left_s=float(rng.uniform(0, tail_s)) if state == "connected" else 0.0,
                      next_gap_s=float(rng.uniform(1e-3, 2 * tail_s)) if gaps and rng.random() < 0.7
                      else None)


UPLINKS_MBPS = (0.5, 50.0)


def proven_losses(radio: bool, seeds: range, max_solves: int = 25,
                  states: collections.Counter[str] | None = None) -> tuple[list[float], int]:
    """Oracle: a full solve at random conditions inside the cloud box of small random
    problems where the cloud often pays; the losses of the fast plan where the
    warm-up says proven, and how many unproven points solved in full (optimal)."""
    from deepx_sim.plan.testing import random_radio_problem

    losses, unproven = [], 0
    for seed in seeds:
        problem = random_radio_problem(seed)
        problem = problem.with_conditions(Conditions(link="net"))
        fast = FastReplanner(problem).warm(uplinks_mbps=UPLINKS_MBPS, gaps_s=(), max_solves=max_solves,
                                           radio_box=radio)
        rng = np.random.default_rng(seed)
        for _ in range(12):
            conditions = cloud_conditions(rng, fast, radio)
            where = fast.coverage(conditions)
            assert where != "unchecked"
            try:
                full = DeepXPlanner().plan(problem.with_conditions(conditions))
            except InfeasibleError:
                continue
            quick = fast.plan(conditions)
            loss = quick.objective_value / full.objective_value - 1
            if where == "proven":
                losses.append(loss)
                if states is not None:
                    states[f"{conditions.radio_state}, gap {conditions.next_gap_s is not None}"] += 1
            else:
                unproven += 1
                assert abs(loss) <= 1e-6
    return losses, unproven


@pytest.mark.parametrize("radio", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_cloud_box_holds_within_the_loss_where_proven(radio: bool) -> None:
    """Oracle: a full solve.  With the cloud reachable (loads, uplink, downlink, and with
    ``radio`` the radio state and next arrival), where the warm-up says proven the
    fast plan is within CERTIFIED_LOSS of the optimum."""
    states: collections.Counter[str] = collections.Counter()
    losses, _ = proven_losses(radio, range(8), states=states)
    assert len(losses) >= 20
    if radio:  # the proofs reach beyond the idle radio
        assert states["connected, gap False"] + states["promoting, gap False"] >= 5, states
    assert max(losses) <= CERTIFIED_LOSS + 1e-9
    assert min(losses) >= -1e-6


def test_a_broken_certificate_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutation: a warm-up whose proofs accept any gap short of 10 times (cells, and points
    of unproven cells, called proven too early) leaves plans out of the pool, and the
    oracle then finds a loss beyond CERTIFIED_LOSS where it says proven."""
    from deepx_sim.plan import fastpath

    monkeypatch.setattr(fastpath, "CERTIFIED_LOSS", 10.0)
    losses, _ = proven_losses(False, range(8))
    assert max(losses) > CERTIFIED_LOSS


def test_a_full_solve_proves_the_conditions_above_it() -> None:
    """A replan's full solve leaves its bound in the boxes (FastReplanner.learn): with no
    warm-up solve, a request at a heavier load than a solved one is then proven from it
    (oracle: a full solve there, within CERTIFIED_LOSS), one at a lighter load is not."""
    problem = random_problem(3)
    fast = FastReplanner(problem).warm(budget_s=0.0)
    solved = Conditions(link="net", cloud_reachable=False, free_fraction={"p0": 0.5})
    heavier = Conditions(link="net", cloud_reachable=False, free_fraction={"p0": 0.45})
    lighter = Conditions(link="net", cloud_reachable=False, free_fraction={"p0": 0.6})
    assert {fast.coverage(c) for c in (solved, heavier, lighter)} == {"unproven"}
    fast.plan(solved)  # a fallback: a full solve
    assert fast.coverage(solved) == "proven" and fast.coverage(lighter) == "unproven"
    assert fast.coverage(heavier) == "proven"  # (here the load does not move the optimum)
    full = DeepXPlanner().plan(problem.with_conditions(heavier))
    solves = fast.full_solves
    assert fast.plan(heavier).objective_value <= full.objective_value * (1 + CERTIFIED_LOSS)
    assert fast.full_solves == solves  # from the pool


def test_a_warm_up_that_always_reaches_the_cloud_skips_the_device_boxes() -> None:
    """warm(device_alone=False) proves only the cloud box (replans on the device alone are
    then unchecked) with fewer solves; the replan policy asks for it in a world without
    outages, where no request finds the cloud unreachable."""
    from deepx_sim.sim.conditions import Outages
    from deepx_sim.sim.policies import ReplanPolicy, World

    problem = binding_problem(0)
    assert problem is not None
    both = FastReplanner(problem).warm(gaps_s=())
    cloud = FastReplanner(problem).warm(gaps_s=(), device_alone=False)
    assert [box.kind for box in both.boxes] == ["load", "queue", "cloud"]
    assert [box.kind for box in cloud.boxes] == ["cloud"] and cloud.full_solves < both.full_solves
    assert cloud.coverage(Conditions(link="net", cloud_reachable=False)) == "unchecked"
    world = World.nominal(problem)
    for outages, kinds in ((Outages(), {"cloud"}), (Outages(((1.0, 2.0),)), {"load", "queue", "cloud"})):
        policy = ReplanPolicy(problem, replace(world, outages=outages), "deepx")
        assert policy.fast is not None
        assert {box.kind for box in policy.fast.boxes} <= kinds
        assert ("queue" in {box.kind for box in policy.fast.boxes}) == bool(outages.intervals)
