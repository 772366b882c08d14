"""Profiling speed and cost: how long `deepx-sim profile alexnet` takes, and what the
instruments (per-node profiler, CPU-clock sampler) add to a run.

Target (issue 14): profiling AlexNet (export with random weights, 3 warm-up, 20
profiled and 20 plain runs, the probe, mapping) takes <= 30 s on this machine.
Printed in the same run: the time of each step, our share of a core, the
hypervisor's steal time, a profiled run's on-CPU time against a plain one's, and
the noise floor: the model profiled a second time, right after, and the share of
layers within +-20 % (and +-10 %) of the first profile (no per-layer prediction can
be held to better than that).

Run: python benchmarks/bench_profiling.py [--model alexnet] [--repeats 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from deepx_sim.measure.profiling import DEFAULT_REPEATS, profile_model

TARGET_S = 30.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="alexnet")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    args = parser.parse_args()
    steps: list[tuple[str, float]] = []
    start = time.perf_counter()
    profile = profile_model(args.model, repeats=args.repeats,
                            progress=lambda msg: steps.append((msg, time.perf_counter() - start)))
    total_s = time.perf_counter() - start
    meta = profile.meta
    print(f"profile {args.model}: {total_s:.2f} s for {args.repeats} profiled + {args.repeats} plain runs "
          f"(target <= {TARGET_S:.0f} s: ratio {total_s / TARGET_S:.2f}, "
          f"{'meets' if total_s <= TARGET_S else 'misses'})")
    for (msg, at), (_, nxt) in zip(steps, [*steps[1:], ("end", total_s)], strict=True):
        print(f"  {msg}: {nxt - at:.2f} s")
    print(f"this process had {float(meta['cpu_share']):.0%} of a core (load average "
          f"{meta['load_average_before']})")
    profiled, plain = float(meta["profiled_run_s"]), profile.end_to_end_s
    print(f"on-CPU time per run: profiled {profiled * 1000:.2f} ms, plain {plain * 1000:.2f} ms: the "
          f"instruments add {profiled / plain - 1:+.1%} (rows scaled by {meta['row_scale']}); the "
          f"profiler adds {float(meta['profiler_per_kernel_s']) * 1e6:.1f} us inside each kernel")
    print(f"energy: {meta['energy']}; steal time {meta['steal_share']} of the machine's CPU time")
    again = profile_model(args.model, repeats=args.repeats)  # not part of the timed profiling
    ratios = np.array([again.entries[k].latency_s / e.latency_s for k, e in profile.entries.items()])
    print(f"noise floor: a second profile, {float(again.meta['profiling_s']):.1f} s later, has "
          f"{np.mean(np.abs(ratios - 1) <= 0.2):.0%} of {len(ratios)} layers within +-20 % of the first "
          f"({np.mean(np.abs(ratios - 1) <= 0.1):.0%} within +-10 %), end to end "
          f"{again.end_to_end_s / profile.end_to_end_s - 1:+.1%} "
          f"(load average {again.meta['load_average_before']})")


if __name__ == "__main__":
    main()
