"""Sensitivity profile speed: the 64-1000-1000-10 DNN trained on digits, measured cold and cached.

Target (issue 13): the profile (every fc layer's rank ladder and 16/8-bit
curves) in <= 10 s on this machine, then read back from the cache.  Measured on
the two sources compress uses most: the digits train split (1,257 labelled
rows) and the default synthetic inputs.  Each cold run uses a fresh cache
folder, so nothing is reused; the cached run reads from disk (a new process would do the same).

Run: python benchmarks/bench_sensitivity.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from deepx_sim.accuracy import Source, measure_profile, synthetic
from deepx_sim.accuracy.sensitivity import profile_macs
from deepx_sim.compress.train import trained_model

TARGET_S = 10.0


def timed(source: Source, graph: object, repeats: int) -> None:
    cold = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as folder:
            os.environ["DEEPX_SIM_CACHE"] = folder
            start = time.perf_counter()
            profile = measure_profile(graph, source)  # type: ignore[arg-type]
            cold.append(time.perf_counter() - start)
            start = time.perf_counter()
            measure_profile(graph, source)  # type: ignore[arg-type]
            warm = time.perf_counter() - start
    med = statistics.median(cold)
    points = sum(len(c.settings) - 1 for c in profile.curves.values())
    print(f"  {source.describe():<70} {points} points, {profile_macs(graph, source.rows) / 1e9:5.1f} GMAC"  # type: ignore[arg-type]
          f"\n    cold median {med:5.2f} s (min {min(cold):5.2f})  target {TARGET_S:g} s  ratio "
          f"{med / TARGET_S:4.2f}   cached {warm * 1000:6.1f} ms  cold/cached {med / warm:6.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    graph, data = trained_model("speakerid_digits")  # trained once, cached under the user's cache
    print(f"sensitivity profile of speakerid_digits (64-1000-1000-10), {args.repeats} cold repeats")
    timed(Source("labels", data.x_train, data.y_train, "digits train split"), graph, args.repeats)
    timed(synthetic(graph), graph, args.repeats)


if __name__ == "__main__":
    main()
