"""Where offloading pays, and per-request replanning against a static plan.

Part 1 (sweeps/offload_bandwidth_deadline.yaml): VGG-16 on a Snapdragon 400,
over WiFi and LTE, at uplink bandwidths 0.5-50 Mbps and deadlines 250 ms-5 s,
planned by DeepX, cloud-only, GPU-only and CPU-only.  For each link and
deadline it reports the bandwidth from which DeepX sends work to the cloud and
how its energy compares with the best on-device strategy.

Part 2 (sweeps/replan_vs_static_trace.yaml): AlexNet on a Snapdragon 400 over
two real LTE uplink traces with a fluctuating GPU load, planned once (static),
per request from the last 1 s sample (replan), or with the true conditions
(oracle), three seeds each.

Run: ``python experiments/offloading.py [--workers N] [--out DIR]``; writes
``offload.csv``, ``offload.png``, ``replan.csv`` and ``replan.png``, and keeps
each sweep's folder, so a re-run only does what is missing.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from _common import HERE, out_dir, parse_args, run, save_figure, table_text

from deepx_sim.scenario import read_yaml_mapping
from deepx_sim.sweep import expand, run_sweep

SWEEPS = HERE / "sweeps"
LOCAL = ("gpu-only", "cpu-only")


def load(name: str, quick: bool) -> dict:
    data = read_yaml_mapping(SWEEPS / f"{name}.yaml")
    if quick:  # a corner of each grid, short runs: seconds, for the tests
        data["base"] = {**data.get("base", {}), "duration_s": 20 if "bandwidth" in name else 60}
        grid = data["grid"]
        if name == "offload_bandwidth_deadline":
            grid["conditions.bandwidth_mbps"] = [1, 50]
            grid["constraints.deadline_ms"] = [500, 5000]
            grid["policy.planner"] = ["deepx", "cloud-only", "gpu-only"]
        else:
            grid["policy.kind"] = ["static", "replan"]
            grid["conditions.uplink.trace"] = grid["conditions.uplink.trace"][:1]
            data["repetitions"] = 1
    return data


def sweep(name: str, quick: bool, out: Path, workers: int) -> pd.DataFrame:
    data = load(name, quick)
    plan = expand(data, str(SWEEPS / f"{name}.yaml"), SWEEPS)
    table = run_sweep(plan, out / name, workers=workers)
    failed = table[table["status"] != "ok"]
    for _, row in failed.iterrows():
        print(f"  run {row['key']} failed: {row['error']}", file=sys.stderr)
    return table[table["status"] == "ok"]


def offload_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per link and deadline: from which bandwidth DeepX offloads, and its energy
    against the best local strategy that meets the deadline."""
    rows = []
    for (link, deadline), part in table.groupby(["conditions.link", "constraints.deadline_ms"]):
        deepx = part[part["policy.planner"] == "deepx"].sort_values("conditions.bandwidth_mbps")
        offloads = deepx[(deepx["offload_rate"] > 0.5) & (deepx["deadline_miss_rate"] == 0)][
            "conditions.bandwidth_mbps"]
        local = part[part["policy.planner"].isin(LOCAL) & (part["deadline_miss_rate"] == 0)]
        best_local_j = local["energy_mean_j"].min() if len(local) else np.nan
        best_deepx_local = deepx[deepx["offload_rate"] == 0]
        for _, row in deepx.iterrows():
            rows.append({
                "link": link, "deadline_ms": deadline, "bandwidth_mbps": row["conditions.bandwidth_mbps"],
                "deepx_offload_rate": row["offload_rate"], "deepx_energy_j": row["energy_mean_j"],
                "deepx_miss_rate": row["deadline_miss_rate"],
                "best_local_energy_j": best_local_j,
                "deepx_local_energy_j": best_deepx_local["energy_mean_j"].min() if len(best_deepx_local)
                else np.nan,
                "offloads_from_mbps": offloads.min() if len(offloads) else np.nan,
            })
    return pd.DataFrame(rows)


def plot_offload(summary: pd.DataFrame, path: Path) -> None:
    import matplotlib.pyplot as plt

    links = sorted(summary["link"].unique())
    fig, axes = plt.subplots(1, len(links), figsize=(5 * len(links), 4), sharey=True, squeeze=False)
    for ax, link in zip(axes[0], links, strict=True):
        part = summary[summary["link"] == link]
        for deadline, curve in part.groupby("deadline_ms"):
            met = curve[curve["deepx_miss_rate"] == 0]
            line, = ax.plot(curve["bandwidth_mbps"], curve["deepx_energy_j"], "-", alpha=0.4)
            ax.plot(met["bandwidth_mbps"], met["deepx_energy_j"], "o", color=line.get_color(),
                    label=f"{deadline:g} ms")
            off = curve[curve["deepx_offload_rate"] > 0.5]
            ax.plot(off["bandwidth_mbps"], off["deepx_energy_j"], "x", color="k")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("uplink bandwidth (Mbps)")
        ax.set_title(f"DeepX on {link}: o deadline met, x offloaded")
    axes[0][0].set_ylabel("energy per request (J)")
    axes[0][0].legend(title="deadline", fontsize=8)
    save_figure(fig, path)


def replan_summary(table: pd.DataFrame) -> pd.DataFrame:
    table = table.assign(trace=table["conditions.uplink.trace"].map(lambda p: Path(p).stem))
    return (table.groupby(["trace", "policy.kind"], sort=False)
            .agg(runs=("seed", "count"), energy_mean_j=("energy_mean_j", "mean"),
                 miss_rate=("deadline_miss_rate", "mean"), latency_p95_s=("latency_p95_s", "mean"),
                 accuracy_loss=("accuracy_loss_mean", "mean"), offload_rate=("offload_rate", "mean"),
                 distinct_plans=("distinct_plans", "mean"))
            .reset_index())


def plot_replan(summary: pd.DataFrame, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for (trace, kind), row in summary.set_index(["trace", "policy.kind"]).iterrows():
        ax.scatter(row["miss_rate"] * 100, row["energy_mean_j"] * 1000,
                   marker={"static": "s", "replan": "o", "oracle": "*"}.get(kind, "."), s=60,
                   label=f"{trace} {kind}")
    ax.set_xlabel("deadline misses (%)")
    ax.set_ylabel("energy per request (mJ)")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    out = out_dir(args, "offloading")

    offload = offload_summary(sweep("offload_bandwidth_deadline", args.quick, out, args.workers))
    offload.to_csv(out / "offload.csv", index=False)
    plot_offload(offload, out / "offload.png")
    print("Part 1: VGG-16 on snapdragon_400, DeepX (static plan) by link, deadline and uplink\n")
    compact = (offload.groupby(["link", "deadline_ms"])
               .agg(offloads_from_mbps=("offloads_from_mbps", "first"),
                    best_local_energy_j=("best_local_energy_j", "first"),
                    deepx_local_energy_j=("deepx_local_energy_j", "first"),
                    deepx_energy_at_top_mbps_j=("deepx_energy_j", "last"),
                    misses_at_lowest_mbps=("deepx_miss_rate", "first"))
               .reset_index())
    print(table_text(compact, "{:.3g}"))
    print("\n(every bandwidth: offload.csv)")
    print("offloads_from_mbps: lowest bandwidth at which DeepX sends the request to the cloud and"
          "\nmeets the deadline (nan: never);"
          "\nbest_local_energy_j: cheapest of GPU-only/CPU-only that meets the deadline (nan: none);"
          "\ndeepx_local_energy_j: DeepX staying on the phone (below 5 s it then misses the deadline)")

    replan = replan_summary(sweep("replan_vs_static_trace", args.quick, out, args.workers))
    replan.to_csv(out / "replan.csv", index=False)
    plot_replan(replan, out / "replan.png")
    print("\nPart 2: AlexNet on snapdragon_400 over real LTE uplink traces, GPU load varying\n")
    print(table_text(replan, "{:.4g}"))
    print(f"\nwrote {out}/offload.csv, offload.png, replan.csv, replan.png")


if __name__ == "__main__":
    sys.exit(run(main))
