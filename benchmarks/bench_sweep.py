"""Sweep speed: the same 200 short scenarios with 1 and with 2 worker processes.

Target (issue 5): 2 workers >= 1.7x faster than 1.  Both runs start from an
empty folder and go through the same code path (``run_sweep``); workers=1 runs
in-process, so the ratio also pays for process start-up and pickling.

The machine's own ceiling is measured in the same run: a pure-Python CPU loop
split over 1 and 2 processes.  On a shared 2-core machine it is often well
below 2x, and no sweep can beat it; the efficiency line divides the two.

Memory (issue 16: a 1,000-run sweep must finish in bounded memory): the
parent's peak resident set (getrusage high-water mark) in a fresh process that
only runs a 2-worker sweep (so no simulation runs in it), for N/5 and N runs;
bounded means the peak hardly grows from one to the other.

Run: python benchmarks/bench_sweep.py [--runs 200] [--memory-only]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
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


def peak_rss_mib(who: int) -> float:
    """Peak resident set of this process (RUSAGE_SELF) or of its largest finished child."""
    peak = resource.getrusage(who).ru_maxrss
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)  # bytes on macOS, KiB on Linux


def current_rss_mib() -> float:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:  # no /proc: the peak so far is the best we have
        return peak_rss_mib(resource.RUSAGE_SELF)


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


def parent_memory(n_runs: int) -> dict[str, float]:
    """In this (fresh) process: a 2-worker sweep of ``n_runs``; the parent's memory."""
    with tempfile.TemporaryDirectory() as tmp:
        sweep = expand(sweep_of(n_runs), "bench", Path(tmp))
        before = current_rss_mib()
        start = time.perf_counter()
        table = run_sweep(sweep, Path(tmp) / "out", workers=2)
        return {"runs": len(table), "ok": int((table.status == "ok").sum()), "before_mib": before,
                "peak_mib": peak_rss_mib(resource.RUSAGE_SELF), "wall_s": time.perf_counter() - start,
                "worker_peak_mib": peak_rss_mib(resource.RUSAGE_CHILDREN)}


def report_memory(n_runs: int) -> None:
    results = []
    for n in (max(20, n_runs // 5), n_runs):
        done = subprocess.run([sys.executable, __file__, "--parent-memory", str(n)], check=True,
                              capture_output=True, text=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    for r in results:
        print(f"parent memory, 2 workers, {r['runs']} runs ({r['ok']} ok, {r['wall_s']:.0f} s): peak "
              f"{r['peak_mib']:.0f} MiB ({r['before_mib']:.0f} MiB before the sweep, "
              f"+{r['peak_mib'] - r['before_mib']:.0f} MiB); "
              f"largest worker peak {r['worker_peak_mib']:.0f} MiB")
    small, big = results
    print(f"parent peak growth from {small['runs']} to {big['runs']} runs: "
          f"{big['peak_mib'] - small['peak_mib']:+.0f} MiB "
          f"({big['peak_mib'] / small['peak_mib']:.2f}x for {big['runs'] / small['runs']:.0f}x the runs)")


def measure_speed(n_runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sweep = expand(sweep_of(n_runs), "bench", Path(tmp))
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



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--memory-only", action="store_true", help="skip the speed comparison")
    parser.add_argument("--parent-memory", type=int, help=argparse.SUPPRESS)  # the measuring child
    args = parser.parse_args()
    if args.parent_memory:
        print(json.dumps(parent_memory(args.parent_memory)))
        return
    if not args.memory_only:
        measure_speed(args.runs)
    report_memory(args.runs)

if __name__ == "__main__":
    main()
