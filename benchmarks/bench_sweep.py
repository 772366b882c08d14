"""Sweep speed: the same 200 short scenarios with 1 and with 2 worker processes.

Target (issue 5): 2 workers >= 1.7x faster than 1.  Both runs start from an
empty folder and go through the same code path (``run_sweep``); workers=1 runs
in-process, so the ratio also pays for process start-up and pickling.

The machine's own ceiling is measured in the same run: a pure-Python CPU loop
split over 1 and 2 processes.  On a shared 2-core machine it is often well
below 2x, and no sweep can beat it; the efficiency line divides the two.

Run: python benchmarks/bench_sweep.py [--runs 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from deepx_sim.sweep import expand, run_sweep


def _spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def machine_ceiling(chunks: int = 8, n: int = 2_000_000) -> float:
    """Speed-up of 2 processes over 1 on work with no communication at all."""
    start = time.perf_counter()
    for _ in range(chunks):
        _spin(n)
    serial = time.perf_counter() - start
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_spin, [10, 10]))  # start both workers first
        start = time.perf_counter()
        list(pool.map(_spin, [n] * chunks))
        parallel = time.perf_counter() - start
    return serial / parallel


def sweep_of(n_runs: int) -> dict:
    deadlines = [250, 500, 1000, 5000]
    planners = ["deepx", "cloud-only", "gpu-only", "cpu-only", "greedy"]
    reps = max(1, n_runs // (len(deadlines) * len(planners)))
    return {
        "name": "bench",
        "base": {"model": "alexnet", "platform": "tegra_k1", "seed": 1, "duration_s": 30,
                 "conditions": {"link": "wifi",
                                "uplink": {"markov": {"good": 20, "bad": 1, "mean_good_s": 10,
                                                      "mean_bad_s": 5}}},
                 "workload": {"arrivals": "poisson", "rate_per_s": 10},
                 "policy": {"kind": "static"}},
        "grid": {"constraints.deadline_ms": deadlines, "policy.planner": planners},
        "repetitions": reps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sweep = expand(sweep_of(args.runs), "bench", Path(tmp))
        warm = expand({**sweep_of(20), "repetitions": 1, "name": "warm"}, "warm", Path(tmp))
        run_sweep(warm, Path(tmp) / "warm", workers=1)  # imports and caches, so neither run pays them
        times = {}
        ceilings = [machine_ceiling()]
        for workers in (1, 2):
            start = time.perf_counter()
            table = run_sweep(sweep, Path(tmp) / f"w{workers}", workers=workers)
            times[workers] = time.perf_counter() - start
            ok = int((table.status == "ok").sum())
            print(f"workers={workers}: {len(sweep.runs)} runs ({ok} ok) in {times[workers]:.2f} s "
                  f"= {times[workers] / len(sweep.runs) * 1000:.0f} ms per run")
        ceilings.append(machine_ceiling())
    speedup = times[1] / times[2]
    ceiling = sum(ceilings) / len(ceilings)
    print(f"speed-up with 2 workers: {speedup:.2f}x (target >= 1.7): {'PASS' if speedup >= 1.7 else 'FAIL'}")
    print(f"this machine's 2-process ceiling right now: {ceiling:.2f}x (pure CPU loop, before and after: "
          f"{ceilings[0]:.2f}x, {ceilings[1]:.2f}x); sweep efficiency {speedup / ceiling:.0%} of it")


if __name__ == "__main__":
    main()
