"""The engine against closed forms: queueing, load, piecewise transfers, faults."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from deepx_sim.costs import Conditions
from deepx_sim.model import load_model
from deepx_sim.plan import Problem
from deepx_sim.plan.problem import Constraints, evaluate
from deepx_sim.platform import RADIO_PRESETS, load_platform
from deepx_sim.sim import (
    Estimator,
    OraclePolicy,
    Outages,
    ReplanPolicy,
    Simulation,
    StaticPolicy,
    StepTrace,
    World,
)
from deepx_sim.sim.conditions import arrival_times


def problem_for(model: str = "speakerid", platform: str = "tegra_k1", link: str = "wifi",
                **constraints: float) -> Problem:
    return Problem(load_model(model), load_platform(platform), Conditions(link=link),
                   Constraints(**constraints))


def test_single_server_queue_matches_md1_mean_wait() -> None:
    """cpu-only requests queue on one CPU: deterministic service D, Poisson arrivals
    at rate lambda; Pollaczek-Khinchine gives mean wait lambda D^2 / (2 (1 - rho))."""
    problem = problem_for(link="wifi")
    world = World.nominal(problem)
    policy = StaticPolicy(problem, world, "cpu-only")
    service_s = policy.decide(0).compiled.plan.latency_s
    rho = 0.6
    rate = rho / service_s
    arrivals = arrival_times("poisson", 40_000 / rate, np.random.default_rng(11), rate_per_s=rate)
    records = Simulation(problem, world, policy, arrivals).run().records
    expected = rate * service_s**2 / (2 * (1 - rho))
    # 40k customers: the batch-means standard error of the mean wait is about 2 % here
    assert records.wait_s.mean() == pytest.approx(expected, rel=0.08)
    assert records.latency_s.to_numpy() == pytest.approx(records.wait_s.to_numpy() + service_s, rel=1e-9)


def test_background_load_stretches_work_like_the_cost_model() -> None:
    problem = problem_for(model="alexnet")
    world = replace(World.nominal(problem), free_fraction={"gpu": StepTrace.constant(0.4)})
    policy = StaticPolicy(problem, world, "gpu-only")
    row = Simulation(problem, world, policy, [0.0]).run().records.iloc[0]
    plan = policy.decide(0).compiled.plan
    loaded = evaluate(problem.with_conditions(Conditions(link="wifi", free_fraction={"gpu": 0.4})),
                      plan.assignment, "check")
    assert row.latency_s == pytest.approx(loaded.latency_s, rel=1e-9)
    assert row.energy_j == pytest.approx(plan.energy_j, rel=1e-9)  # load stretches time, not our work


def test_transfer_over_a_bandwidth_step_matches_the_closed_form() -> None:
    problem = problem_for(link="wifi")
    nominal = World.nominal(problem)
    policy = StaticPolicy(problem, nominal, "cloud-only")
    steps = policy.decide(0).compiled.steps
    up = next(s for s in steps if s.kind == "uplink")
    cloud = next(s for s in steps if s.kind == "cloud")
    radio = RADIO_PRESETS["wifi"]
    # 10 Mbps until half the input is sent, then 1 Mbps
    step_at = radio.promotion_s + 0.5 * up.megabits / 10
    world = replace(nominal, uplink_mbps=StepTrace((0.0, step_at), (10.0, 1.0)))
    row = Simulation(problem, world, policy, [0.0]).run().records.iloc[0]
    up_bits_s = 0.5 * up.megabits / 10 + 0.5 * up.megabits / 1
    half_rtt = nominal.rtt_ms / 2000
    down = next(s for s in steps if s.kind == "downlink")
    down_s = down.megabits / nominal.downlink_mbps.value_at(0) + half_rtt
    expected_latency = radio.promotion_s + up_bits_s + half_rtt + cloud.work_s + down_s
    assert row.latency_s == pytest.approx(expected_latency, rel=1e-9)
    up_j = (radio.a_up_mw_per_mbps * up.megabits + radio.base_mw * (up_bits_s + half_rtt)) / 1000
    down_j = radio.transfer_energy_j(down_s, down_megabits=down.megabits)
    assert row.radio_transfer_j == pytest.approx(up_j + down_j, rel=1e-9)


def test_energy_breakdowns_add_up() -> None:
    problem = problem_for(model="vgg16", platform="snapdragon_400", link="wifi")
    world = replace(World.nominal(problem), uplink_mbps=StepTrace((0.0, 30.0), (0.5, 20.0)),
                    free_fraction={"gpu": StepTrace((0.0, 10.0, 20.0), (1.0, 0.3, 0.8))})
    policy = ReplanPolicy(problem, world, "deepx", Estimator(world, "ewma"))
    arrivals = arrival_times("poisson", 60, np.random.default_rng(2), rate_per_s=0.5)
    result = Simulation(problem, world, policy, arrivals).run()
    r = result.records
    parts = [c for c in r.columns if c.startswith("energy_") and c.endswith("_j") and c != "energy_j"]
    assert r.energy_radio_j.sum() > 0 and r[["energy_cpu_j", "energy_gpu_j"]].to_numpy().sum() > 0
    assert r.energy_j.to_numpy() == pytest.approx(r[parts].sum(axis=1).to_numpy(), rel=1e-12)
    radio = r.radio_promotion_j + r.radio_transfer_j + r.radio_tail_j
    assert r.energy_radio_j.to_numpy() == pytest.approx(radio.to_numpy(), rel=1e-12)
    idle = sum(v for k, v in result.run_energy_j.items() if k.endswith("_idle_j"))
    assert result.summary["run_energy_j"] == pytest.approx(r.energy_j.sum() + idle, rel=1e-12)


def test_cloud_lost_mid_request_falls_back_on_the_device() -> None:
    problem = problem_for(link="wifi")
    nominal = World.nominal(problem)
    world = replace(nominal, outages=Outages(((0.05, 60.0),)))
    policy = StaticPolicy(problem, world, "cloud-only")
    records = Simulation(problem, world, policy, [0.0, 10.0, 70.0]).run().records
    assert len(records) == 3  # nothing dropped
    first, second, third = records.itertuples()
    assert first.fallback and second.fallback and not third.fallback
    assert first.fallback_plan_id != first.plan_id
    on_device = policy.fallback(0.0).compiled.plan
    assert "cloud" not in on_device.processors_used
    # the first request loses 0.05 s to the failed upload, then runs the device plan
    assert first.latency_s == pytest.approx(0.05 + on_device.latency_s, rel=1e-9)
    assert second.latency_s == pytest.approx(on_device.latency_s, rel=1e-9)  # fails at once


def test_a_miss_is_recorded_with_its_reason() -> None:
    problem = problem_for(model="alexnet", link="wifi", deadline_s=0.002)
    world = World.nominal(problem)
    policy = StaticPolicy(problem, world, "cpu-only")
    records = Simulation(problem, world, policy, [0.0, 0.0]).run().records
    assert not records.deadline_met.any()
    assert "no plan meets the deadline" in records.miss_reason[0]


def test_replanning_follows_the_bandwidth_and_beats_a_static_plan() -> None:
    """VGG-16 on a Snapdragon 400 over WiFi: offloading pays at 50 Mbps, not at
    0.5 Mbps.  Replanning switches with the trace; a static plan cannot."""
    problem = problem_for(model="vgg16", platform="snapdragon_400", link="wifi")
    world = replace(World.nominal(problem), uplink_mbps=StepTrace((0.0, 100.0), (0.5, 50.0)))
    arrivals = [float(t) for t in range(5, 200, 10)]
    static = Simulation(problem, world, StaticPolicy(problem, world, "deepx"), arrivals).run()
    replan = Simulation(problem, world, ReplanPolicy(problem, world, "deepx",
                                                     Estimator(world, "last")), arrivals).run()
    oracle = Simulation(problem, world, OraclePolicy(problem, world, "deepx"), arrivals).run()
    r = replan.records
    slow, fast = r[r.arrival_s < 100], r[r.arrival_s >= 101]
    assert "cloud" not in slow.processors_used.iloc[0] and "cloud" in fast.processors_used.iloc[-1]
    # the static (cloud) plan takes ~10 s per request at 0.5 Mbps; replanning stays on time
    s = static.records
    assert not s[s.arrival_s < 100].deadline_met.any()
    assert r.deadline_met.all() and oracle.records.deadline_met.all()
    fast_static = s[s.arrival_s >= 101]
    assert fast.energy_j.to_numpy() == pytest.approx(fast_static.energy_j.to_numpy(), rel=1e-9)
    assert oracle.summary["energy_mean_j"] <= replan.summary["energy_mean_j"] * (1 + 1e-9)


def test_infeasible_requests_run_the_fastest_plan_and_say_so() -> None:
    problem = problem_for(model="alexnet", link="wifi", deadline_s=0.001)
    world = World.nominal(problem)
    policy = ReplanPolicy(problem, world, "greedy", Estimator(world, "current"))
    row = Simulation(problem, world, policy, [0.0]).run().records.iloc[0]
    assert "ran the fastest plan" in row.note and not row.deadline_met


def test_replan_overhead_is_charged_on_the_sensor_processor() -> None:
    problem = problem_for(link="wifi")
    world = World.nominal(problem)
    policy = ReplanPolicy(problem, world, "cpu-only", Estimator(world, "current"))
    base = Simulation(problem, world, policy, [0.0]).run().records.iloc[0]
    charged = Simulation(problem, world, policy, [0.0], replan_overhead_s=0.01).run().records.iloc[0]
    cpu_w = problem.platform.processor("cpu").active_power_w
    assert charged.latency_s == pytest.approx(base.latency_s + 0.01, rel=1e-9)
    assert charged.energy_j == pytest.approx(base.energy_j + cpu_w * 0.01, rel=1e-9)
    assert charged.replan_time_s == 0.01


def test_estimators() -> None:
    world = replace(World.nominal(problem_for()), uplink_mbps=StepTrace((0.0, 2.5, 3.5), (10.0, 2.0, 6.0)))
    last = Estimator(world, "last", sample_interval_s=1.0)
    assert last.estimate(2.9).uplink_mbps == 10.0  # sampled at t = 2
    assert last.estimate(3.0).uplink_mbps == 2.0
    ewma = Estimator(world, "ewma", sample_interval_s=1.0, alpha=0.5)
    # samples at 0, 1, 2, 3, 4: 10, 10, 10, 2, 6
    assert ewma.estimate(4.2).uplink_mbps == pytest.approx(0.5 * 6 + 0.5 * (0.5 * 2 + 0.5 * 10))
    assert Estimator(world, "current").estimate(2.6).uplink_mbps == 2.0


def test_arrival_timestamps_that_go_back_in_time_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import yaml

    from deepx_sim.errors import ScenarioError
    from deepx_sim.scenario import load_scenario
    from deepx_sim.sim.conditions import read_timestamps

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"model": "speakerid", "platform": "tegra_k1", "workload": {
        "arrivals": "trace", "timestamps_s": [0.0, 2.0, 1.5]}}))
    with pytest.raises(ScenarioError, match=r"s\.yaml: workload\.timestamps_s must not decrease, got 1\.5 "
                                            r"after 2\.0 at \[2\]"):
        load_scenario(path)
    stamps = tmp_path / "arrivals.csv"
    stamps.write_text("time_s\n0\n3\n2.5\n")
    with pytest.raises(ScenarioError, match=r"arrivals\.csv:4: time_s must not decrease, got 2\.5 after 3"):
        read_timestamps(stamps)


def _example(name: str, duration_s: float = 60.0) -> Simulation:
    """An example scenario for ``duration_s``, or "contention": AlexNet over LTE
    with a request every 20 ms for 3 s."""
    from pathlib import Path

    from deepx_sim.scenario import build_simulation, load_scenario

    folder = Path(__file__).parents[2] / "scenarios"
    file = "alexnet_tegra_lte_trace" if name == "contention" else name
    scenario, base = load_scenario(folder / f"{file}.yaml")
    update: dict[str, object] = {"duration_s": duration_s}
    if name == "contention":
        update["workload"] = scenario.workload.model_copy(update={"interval_s": 0.02})
        update["duration_s"] = 3.0
    return build_simulation(scenario.model_copy(update=update), base, name)


@pytest.mark.parametrize("name", ["alexnet_tegra_lte_trace", "vgg16_sd400_wifi_markov",
                                  "vgg16_sd400_wifi_outages", "contention"])
def test_fast_forward_gives_the_same_records_as_event_by_event(name: str) -> None:
    """Requests that run alone are worked out without the event loop; the records
    (times, energy, radio charges) must be identical to the event-by-event run,
    with outages, loads, tails and queueing (contention: requests every 20 ms)."""
    runs = []
    for fast_forward in (True, False):
        sim = _example(name)
        sim.fast_forward = fast_forward
        result = sim.run()
        runs.append(result)
    fast, slow = runs
    assert fast.records.equals(slow.records)
    assert fast.run_energy_j == slow.run_energy_j
    assert fast.events["simpy_events"] == slow.events["simpy_events"]
    assert slow.events["steps_alone"] == 0
    if name != "contention":
        assert fast.events["steps_alone"] > 0


def test_replanning_pool_grows_with_fallbacks_and_periodic_solves() -> None:
    """Plans from full solves join the fast path's pool: the on-device fallback
    when the cloud is lost, and a full solve every ``full_solve_every`` requests."""
    problem = problem_for(model="speakerid", link="wifi", deadline_s=0.25)
    world = replace(World.nominal(problem), outages=Outages(((3.0, 6.0),)))
    policy = ReplanPolicy(problem, world, "deepx", full_solve_every=4)
    pool = policy.fast.pool_size
    solves = policy.full_solves
    records = Simulation(problem, world, policy, [0.5 * i for i in range(16)]).run().records
    assert policy.full_solves >= solves + 16 // 4
    fallback_ids = set(records.fallback_plan_id) - {""}
    pooled_ids = {policy.compiled(f.plan).plan_id for f in policy.fast.candidates}
    assert fallback_ids <= pooled_ids
    assert policy.fast.pool_size >= pool


class _SimpyLock:
    """The reference for the engine's lock: SimPy's own capacity-1 resource."""

    def __init__(self, env: object) -> None:
        import simpy

        self.resource = simpy.Resource(env, capacity=1)  # type: ignore[arg-type]
        self.held: list[object] = []

    def acquire(self) -> object:
        claim = self.resource.request()
        self.held.append(claim)
        return claim

    def release(self) -> None:
        claim = next(c for c in self.held if c.triggered)  # type: ignore[attr-defined]
        self.held.remove(claim)
        self.resource.release(claim)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["vgg16_sd400_wifi_outages", "contention"])
def test_engine_lock_gives_the_same_records_as_simpy_resources(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's own processor/radio lock against ``simpy.Resource``, event by
    event, with outages, queueing behind other requests (contention: requests
    every 20 ms) and fallbacks: identical records and run energy."""
    from deepx_sim.sim import engine

    runs = []
    for lock in (engine._Lock, _SimpyLock):
        monkeypatch.setattr(engine, "_Lock", lock)
        sim = _example(name, duration_s=600.0)
        sim.fast_forward = False
        runs.append(sim.run())
    ours, reference = runs
    if name == "contention":
        assert reference.records["wait_s"].gt(0).any()  # the queues were exercised
    else:
        assert reference.records["fallback"].any()  # the cloud was lost mid-request
    assert ours.records.equals(reference.records)
    assert ours.run_energy_j == reference.run_energy_j


def test_replan_in_an_unproven_cell_solves_in_full_and_says_so() -> None:
    """During an outage under load, a fast path whose warm-up proved nothing (its budget
    spent at once) falls back to a full solve: the decision's plan is the ILP's optimum
    there and its note names the fallback; with the cloud reachable, outside any box
    (the warm-up given no uplinks to certify), it does not."""
    from deepx_sim.plan import DeepXPlanner
    from deepx_sim.plan.fastpath import FastReplanner

    problem = problem_for(deadline_s=0.25)
    world = replace(World.nominal(problem), outages=Outages(((1.0, 2.0),)),
                    free_fraction={"gpu": StepTrace((0.0,), (0.5,))})
    policy = ReplanPolicy(problem, world, "deepx", Estimator(world, "current"))
    policy.fast = FastReplanner(problem).warm(uplinks_mbps=(), budget_s=0.0)
    decision = policy.decide(1.5)
    assert "unproven" in decision.note and policy.fast.fallbacks == 1
    full = DeepXPlanner().plan(problem.with_conditions(decision.conditions))
    assert decision.compiled.plan.placements == full.placements
    assert "unproven" not in policy.decide(3.0).note
