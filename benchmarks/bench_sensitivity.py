"""Sensitivity profile speed: the 64-1000-1000-10 DNN trained on digits, measured cold and cached.

Target (issue 13): the profile (every fc layer's rank ladder and 16/8-bit
curves, plus the measured rank combinations) in <= 10 s on this machine, then
read back from the cache.  Measured on the two sources compress uses most: the
digits train split (1,257 labelled rows) and the default synthetic inputs.
Each cold run is a fresh process with an empty cache folder, so nothing is
reused (not even an SVD kept in memory); the cached run reads the entry back
from disk in another fresh process.

Run: python benchmarks/bench_sensitivity.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

TARGET_S = 10.0


def one(source: str) -> None:
    """Child process: time one profile and print the seconds and its size."""
    from deepx_sim.accuracy import Source, measure_profile, synthetic
    from deepx_sim.accuracy.sensitivity import profile_macs
    from deepx_sim.compress.train import trained_model

    graph, data = trained_model("speakerid_digits")
    given = (Source("labels", data.x_train, data.y_train, "digits train split") if source == "train"
             else synthetic(graph))
    os.environ["DEEPX_SIM_CACHE"] = sys.argv[sys.argv.index("--cache") + 1]
    start = time.perf_counter()
    profile = measure_profile(graph, given)
    seconds = time.perf_counter() - start
    points = sum(len(c.settings) - 1 for c in profile.curves.values())
    print(seconds, points, profile_macs(graph, given.rows) / 1e9, given.describe(), sep="\t")


def run_child(source: str, folder: str) -> tuple[float, str]:
    out = subprocess.run([sys.executable, __file__, "--one", source, "--cache", folder],
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    seconds, points, gmac, describe = out.split("\t")
    return float(seconds), f"{describe}: {points} points, {float(gmac):.1f} GMAC"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.one)
        return
    from deepx_sim.compress.train import trained_model

    trained_model("speakerid_digits")  # trained once, cached under the user's cache
    print(f"sensitivity profile of speakerid_digits (64-1000-1000-10), {args.repeats} cold repeats, "
          "each in a fresh process with an empty cache")
    for source in ("train", "synthetic"):
        cold = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as folder:
                seconds, what = run_child(source, folder)
                cold.append(seconds)
                warm, _ = run_child(source, folder)
        med = statistics.median(cold)
        print(f"  {what}\n    cold median {med:5.2f} s (max {max(cold):5.2f})  target {TARGET_S:g} s  "
              f"ratio {med / TARGET_S:4.2f}   cached {warm * 1000:6.1f} ms  cold/cached {med / warm:6.0f}x")


if __name__ == "__main__":
    main()
