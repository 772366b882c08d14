"""Planner speed: full ILP solves (model building included) and the replanning fast path.

Targets (issue 3): median plan time AlexNet on tegra_k1 over wifi with >= 8 ranks
per fc layer <= 100 ms, VGG-16 <= 150 ms, ResNet-50 <= 1 s proven optimal; fast
path <= 2 ms median per replan, with its loss against a full solve.

Run: python benchmarks/bench_planner.py [--repeats 7] [--replans 200]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from deepx_sim.accuracy import candidate_ranks
from deepx_sim.costs import Conditions
from deepx_sim.model import load_model
from deepx_sim.plan import Constraints, DeepXPlanner, Problem
from deepx_sim.plan.fastpath import FastReplanner
from deepx_sim.platform import load_platform

TARGETS_S = {"alexnet": 0.100, "vgg16": 0.150, "resnet50": 1.0}


def full_solves(repeats: int, solver: str) -> None:
    platform = load_platform("tegra_k1")
    print(f"full solve ({solver}), build included, {repeats} repeats; tegra_k1 + cloud over wifi")
    for model, target in TARGETS_S.items():
        graph = load_model(model)
        ranks = [len(candidate_ranks(lay)) for lay in graph.nodes.values()
                 for lay in [lay["layer"]] if lay.fc is not None]
        times, plan = [], None
        for _ in range(repeats):
            problem = Problem(graph, platform, Conditions(link="wifi"))
            start = time.perf_counter()
            plan = DeepXPlanner(solver=solver).plan(problem)
            times.append(time.perf_counter() - start)
        med = statistics.median(times)
        assert plan is not None
        print(f"  {model:<9} median {med * 1000:7.1f} ms  (min {min(times) * 1000:6.1f})  "
              f"target {target * 1000:5.0f} ms  ratio {med / target:4.2f}  status {plan.status}"
              f"  gap {plan.gap}  ranks/fc {min(ranks)}+1")


def fast_path(replans: int) -> None:
    problem = Problem(load_model("alexnet"), load_platform("tegra_k1"), Conditions(link="wifi"),
                      Constraints(deadline_s=0.1))
    start = time.perf_counter()
    fast = FastReplanner(problem).warm()
    warm_s = time.perf_counter() - start
    print(f"\nfast path, alexnet on tegra_k1 over wifi, deadline 100 ms: warm-up {warm_s:.1f} s, "
          f"{fast.full_solves} solves -> {len(fast.candidates)} distinct plans")
    rng = np.random.default_rng(0)
    conditions = [Conditions(link="wifi", uplink_mbps=float(np.exp(rng.uniform(np.log(0.2), np.log(80)))),
                             free_fraction={p: float(rng.uniform(0.2, 1.0))
                                            for p in ("cpu", "gpu", "lpc")},
                             cloud_reachable=bool(rng.random() < 0.9)) for _ in range(replans)]
    times, plans = [], []
    for c in conditions:
        t = time.perf_counter()
        plans.append(fast.plan(c))
        times.append(time.perf_counter() - t)
    full_times, losses, same = [], [], 0
    for c, quick in zip(conditions[:60], plans[:60], strict=True):
        t = time.perf_counter()
        full = DeepXPlanner().plan(problem.with_conditions(c))
        full_times.append(time.perf_counter() - t)
        losses.append(quick.objective_value / full.objective_value - 1)
        same += quick.placements == full.placements
    med = statistics.median(times)
    print(f"  replan median {med * 1000:.3f} ms (p95 {np.percentile(times, 95) * 1000:.3f} ms) "
          f"vs full solve median {statistics.median(full_times) * 1000:.1f} ms in the same run: "
          f"{statistics.median(full_times) / med:.0f}x faster; target 2 ms, ratio {med / 0.002:.2f}")
    print(f"  loss vs full solve over {len(losses)} conditions: mean {np.mean(losses) * 100:.2f} %, "
          f"median {np.median(losses) * 100:.2f} %, max {np.max(losses) * 100:.2f} %, "
          f"identical plan {same}/{len(losses)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--replans", type=int, default=200)
    parser.add_argument("--solver", default="highs", choices=["highs", "cbc"])
    args = parser.parse_args()
    full_solves(args.repeats, args.solver)
    fast_path(args.replans)


if __name__ == "__main__":
    main()
