"""Profiling speed and cost: how long `deepx-sim profile alexnet` takes, and what the
per-node profiler and the CPU-clock sampler add to a run.

Target (issue 14): profiling AlexNet (export with random weights, 3 warm-up and
20 timed runs, mapping, writing) takes <= 30 s on this machine.  Printed in the
same run: the wall time of each step, the machine's share of a core for us, and
the on-CPU time of a plain onnxruntime run against a profiled one.

Run: python benchmarks/bench_profiling.py [--model alexnet] [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from deepx_sim.measure.profiling import DEFAULT_REPEATS, model_as_onnx, profile_model

TARGET_S = 30.0


def plain_cpu_s(onnx_path: Path, repeats: int) -> float:
    """Median on-CPU time of an unprofiled single-thread run: the profiler's baseline."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    feeds = {i.name: np.random.default_rng(0).standard_normal(i.shape).astype(np.float32)
             for i in session.get_inputs()}
    for _ in range(3):
        session.run(None, feeds)
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        session.run(None, feeds)
        times.append(time.thread_time() - start)
    return statistics.median(times)


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
    with tempfile.TemporaryDirectory() as tmp:
        tick = time.perf_counter()
        _, path = model_as_onnx(args.model, Path(tmp))
        export_s = time.perf_counter() - tick
        baseline_s = plain_cpu_s(path, args.repeats)
    print(f"profile {args.model}: {total_s:.2f} s for {args.repeats} timed runs "
          f"(target <= {TARGET_S:.0f} s: ratio {total_s / TARGET_S:.2f}, "
          f"{'meets' if total_s <= TARGET_S else 'misses'})")
    for (msg, at), (_, nxt) in zip(steps, [*steps[1:], ("end", total_s)], strict=True):
        print(f"  {msg}: {nxt - at:.2f} s")
    print(f"  of which exporting with random weights alone: {export_s:.2f} s")
    print(f"this process had {float(profile.meta['cpu_share']):.0%} of a core "
          f"(load average {profile.meta['load_average_before']})")
    added = profile.end_to_end_s / baseline_s - 1
    print(f"on-CPU time per run: profiled {profile.end_to_end_s * 1000:.2f} ms, plain "
          f"{baseline_s * 1000:.2f} ms: profiler and sampler add {added:+.1%}")
    print(f"energy: {profile.meta['energy']}")


if __name__ == "__main__":
    main()
