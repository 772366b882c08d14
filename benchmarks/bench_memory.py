"""Peak memory of long simulations, measured in one run (issue 16).

Each measurement runs in its own process, so each peak RSS is its own:

1. the shipped AlexNet/LTE-trace scenario (replan per request, a Mahimahi
   uplink, a random-walk GPU load) at 100 requests, 10,000 and 100,000
   requests: peak RSS, and the bytes each extra request costs;
2. inputs that used to allocate gigabytes up front: a run asking for 10^12
   requests (refused with the limit stated) and a Mahimahi trace with a
   31-year gap read at 1 ms bins (read as 3 segments), each against the
   100-request baseline.

Run: python benchmarks/bench_memory.py [--requests 100000]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "alexnet_tegra_lte_trace.yaml"
MIB = 1024 * 1024


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def child_simulation(requests: int) -> None:
    from deepx_sim.scenario import build_simulation, load_scenario

    scenario, base = load_scenario(SCENARIO)
    interval_s = scenario.workload.interval_s or 1.0
    scenario = scenario.model_copy(update={"duration_s": requests * interval_s})
    started = time.perf_counter()
    result = build_simulation(scenario, base, str(SCENARIO)).run()
    print(len(result.records), peak_rss_bytes(), time.perf_counter() - started)


def child_refusal(kind: str) -> None:
    from deepx_sim.errors import DeepxError
    from deepx_sim.scenario import build_simulation, load_scenario

    with tempfile.TemporaryDirectory() as folder:
        data = yaml.safe_load(SCENARIO.read_text())
        if kind == "requests":
            data.update(duration_s=1e9, workload={"arrivals": "periodic", "interval_s": 1e-3},
                        conditions={"link": "lte", "bandwidth_mbps": 5})
        else:
            gap = Path(folder) / "gap.up"
            gap.write_text(f"0\n{10**12}\n")  # two packets 31 years apart
            data.update(duration_s=10, conditions={"link": "lte", "downlink": {"constant": 10},
                                                   "uplink": {"trace": str(gap), "bin_s": 0.001}})
        path = Path(folder) / "s.yaml"
        path.write_text(yaml.safe_dump(data))
        started = time.perf_counter()
        try:
            scenario, base = load_scenario(path)
            sim = build_simulation(scenario, base, str(path))
            outcome = f"built: uplink trace of {len(sim.world.uplink_mbps.values)} segments"
        except DeepxError as exc:
            outcome = f"refused: {str(exc).split(': ', 2)[-1]}"
        print(peak_rss_bytes(), time.perf_counter() - started, outcome, sep="\t")


def run_child(*args: str) -> str:
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                          check=True)
    return done.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        child_simulation(int(rest[0])) if kind == "sim" else child_refusal(kind)
        return
    print(f"1. peak RSS of {SCENARIO.name} (replan per request, LTE trace, GPU load), one process each")
    rows = []
    for n in sorted({100, 10_000, args.requests}):
        count, rss, wall_s = run_child("sim", str(n)).split()
        rows.append((int(count), int(rss)))
        print(f"   {int(count):>9,} requests: peak {int(rss) / MIB:8.1f} MiB, {float(wall_s):6.1f} s")
    (n0, rss0), (n1, rss1) = rows[0], rows[-1]
    per_request = (rss1 - rss0) / (n1 - n0)
    print(f"   {n1:,} requests need {rss1 / rss0:.2f}x the 100-request peak; "
          f"{per_request:,.0f} bytes per extra request")
    print("\n2. inputs that used to allocate gigabytes up front (peak vs the 100-request run)")
    cases = (("requests", "10^12 periodic requests"), ("trace", "Mahimahi, 31-year gap, 1 ms bins"))
    for kind, label in cases:
        rss, wall_s, outcome = run_child(kind).split("\t")
        print(f"   {label}: {outcome}")
        print(f"      peak {int(rss) / MIB:.1f} MiB ({int(rss) / rss0:.2f}x), {float(wall_s) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
