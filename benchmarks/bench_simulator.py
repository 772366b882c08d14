"""Simulator speed, as ratios measured in the same run.

Targets (issues 4 and 15):
1. event throughput >= 0.5 x bare SimPy doing the same resource acquisitions
   and timeouts (same arrival times, same number of cycles per request), with
   every step run event by event (fast_forward off);
2. 10,000 AlexNet requests, replan-per-request (radio state, observed gap),
   tegra_k1 over a real LTE trace: >= 5,000 simulated requests per second of
   wall time on one core, event by event (fast_forward off).  The simulator
   can also work out the steps of a request that runs alone without the event
   loop (fast_forward, the default; the records are identical,
   tests/sim/test_engine.py): that rate is printed too.

Run: python benchmarks/bench_simulator.py [--requests 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import simpy

from deepx_sim.costs import Conditions
from deepx_sim.model import load_model
from deepx_sim.plan import Problem
from deepx_sim.platform import load_platform
from deepx_sim.scenario import build_simulation, load_scenario
from deepx_sim.sim import Simulation, StaticPolicy, World

SCENARIO = Path(__file__).parents[1] / "scenarios" / "alexnet_tegra_lte_trace.yaml"


def bare_simpy(arrivals: list[float], cycles: list[list[tuple[int, float]]], n_resources: int) -> float:
    """Wall seconds for bare SimPy: each request acquires resources, times out and
    releases, as many times (and for as long) as in the simulation."""
    start = time.perf_counter()
    env = simpy.Environment()
    resources = [simpy.Resource(env, capacity=1) for _ in range(n_resources)]

    def request(plan: list[tuple[int, float]]):  # type: ignore[no-untyped-def]
        for res_index, duration in plan:
            res = resources[res_index]
            claim = res.request()
            yield claim
            yield env.timeout(duration)
            res.release(claim)

    def source():  # type: ignore[no-untyped-def]
        for t, plan in zip(arrivals, cycles, strict=True):
            if t > env.now:
                yield env.timeout(t - env.now)
            env.process(request(plan))

    env.process(source())
    env.run()
    return time.perf_counter() - start


def event_throughput(requests: int, repeats: int) -> None:
    problem = Problem(load_model("alexnet"), load_platform("tegra_k1"), Conditions(link="wifi"))
    world = World.nominal(problem)
    policy = StaticPolicy(problem, world, "deepx")
    steps = policy.decide(0).compiled.steps
    local = [p.name for p in problem.platform.local_processors]
    plan_cycles = [(local.index(s.processor), s.work_s + s.fixed_s) for s in steps
                   if s.kind in ("compute", "copy")]
    service_s = sum(d for _, d in plan_cycles)
    arrivals = [i * service_s * 1.25 for i in range(requests)]
    ours, bare, events = [], [], 0
    for _ in range(repeats):
        sim = Simulation(problem, world, policy, arrivals, fast_forward=False)
        t0 = time.perf_counter()
        result = sim.run()
        ours.append(time.perf_counter() - t0)
        events = result.events["simpy_events"]
        bare.append(bare_simpy(arrivals, [plan_cycles] * requests, len(local)))
    ours_s, bare_s = statistics.median(ours), statistics.median(bare)
    bare_events = requests * len(plan_cycles) * 2 + (requests - 1)
    print(f"1. event throughput: AlexNet deepx plan on tegra_k1 ({len(plan_cycles)} processor steps "
          f"per request), {requests:,} requests, median of {repeats}")
    print(f"   simulator (records and summary included): {events:,} events in {ours_s:.3f} s = "
          f"{events / ours_s:,.0f} events/s")
    print(f"   bare SimPy, same acquisitions/timeouts:   {bare_events:,} events in {bare_s:.3f} s = "
          f"{bare_events / bare_s:,.0f} events/s")
    ratio = (events / ours_s) / (bare_events / bare_s)
    print(f"   ratio {ratio:.2f} (target >= 0.50): {'PASS' if ratio >= 0.5 else 'FAIL'}\n")


def replan_rate(requests: int, repeats: int) -> None:
    scenario, base = load_scenario(SCENARIO)
    interval_s = scenario.workload.interval_s or 1.0
    scenario = scenario.model_copy(update={"duration_s": requests * interval_s})
    rates: dict[bool, list[float]] = {True: [], False: []}
    cpu_rates: list[float] = []  # event by event, per second of this process's CPU time
    builds, result = [], None
    for _ in range(repeats):
        for fast_forward in (True, False):
            t0 = time.perf_counter()
            sim = build_simulation(scenario, base, str(SCENARIO))
            sim.fast_forward = fast_forward
            t1, c1 = time.perf_counter(), time.process_time()
            result = sim.run()
            t2, c2 = time.perf_counter(), time.process_time()
            builds.append(t1 - t0)
            rates[fast_forward].append(len(result.records) / (t2 - t1))
            if not fast_forward:
                cpu_rates.append(len(result.records) / (c2 - c1))
    assert result is not None
    rate, slow, build_s = (statistics.median(rates[True]), statistics.median(rates[False]),
                           statistics.median(builds))
    n = len(result.records)
    print(f"2. {n:,} AlexNet requests, replan per request (deepx fast path, radio state and observed "
          f"gap), tegra_k1, LTE trace {SCENARIO.name}, median of {repeats}")
    print(f"   simulation: {rate:,.0f} requests/s of wall time (target >= 5,000): "
          f"{'PASS' if rate >= 5000 else 'FAIL'}; event by event {slow:,.0f} requests/s "
          f"(target >= 5,000: {'PASS' if slow >= 5000 else 'FAIL'}; per CPU second "
          f"{statistics.median(cpu_rates):,.0f}, which a busy machine does not dilute)")
    print(f"   one-time set-up (loading; warming the fast-path pool, {result.summary['planner_full_solves']}"
          f" ILP solves in all): {build_s:.2f} s; counting it, {n / (n / rate + build_s):,.0f} requests/s")
    s = result.summary
    print(f"   distinct plans {s['distinct_plans']}, p95 latency {s['latency_p95_s'] * 1000:.1f} ms, "
          f"misses {s['deadline_miss_rate']:.2%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    event_throughput(args.requests, args.repeats)
    replan_rate(args.requests, args.repeats)


if __name__ == "__main__":
    main()
