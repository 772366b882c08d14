"""Where offloading pays, and per-request replanning against a static plan.

Part 1 (sweeps/offload_bandwidth_deadline.yaml): VGG-16 on a Snapdragon 400,
over WiFi and LTE, at uplink bandwidths 0.5-50 Mbps and deadlines 250 ms-5 s,
planned by DeepX, cloud-only, GPU-only and CPU-only, one request every 20 s
(longer than the LTE tail, so each pays promotion and a whole tail).  For each
link and deadline it reports the bandwidth from which DeepX sends work to the
cloud and how its energy compares with the best on-device strategy.

Part 1b (planner only): the same phone over LTE as a function of the request
rate.  A request that finds the radio connected pays no promotion and only
the tail until the next request (the radio rule, deepx_sim/costs.py), so
denser requests make the cloud cheaper.  For each uplink and gap between
requests: DeepX's energy per request, whether it offloads, against the best
on-device plan; and the largest gap at which offloading pays.

Part 2 (sweeps/replan_vs_static_trace.yaml): the flagship scenario (VGG-16 on a
Snapdragon 400, a request every 2 s, 5 s deadline) over two real LTE traces,
planned once (static), per request from the last 1 s sample, the radio state
and our own queue (replan), or with the true conditions (oracle).

Run: ``python experiments/offloading.py [--workers N] [--out DIR]``; writes
``offload.csv``, ``offload.png``, ``rate.csv``, ``rate.png``, ``replan.csv`` and
``replan.png``, and keeps each sweep's folder, so a re-run only does what is
missing.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from _common import HERE, out_dir, parse_args, run, save_figure, table_text

from deepx_sim.costs import Conditions
from deepx_sim.errors import InfeasibleError
from deepx_sim.model import load_model
from deepx_sim.plan import Constraints, DeepXPlanner, Problem
from deepx_sim.platform import load_platform
from deepx_sim.scenario import read_yaml_mapping
from deepx_sim.sweep import expand, run_sweep

SWEEPS = HERE / "sweeps"
LOCAL = ("gpu-only", "cpu-only")
RATE_UPLINKS_MBPS = (2, 5, 10, 20, 50)
RATE_GAPS_S = (0.5, 1, 1.5, 2, 4, 8, 16)


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
            data["base"] = {**data.get("base", {}), "duration_s": 40}
            grid["policy.kind"] = ["static", "replan"]
            data["zip"] = {k: v[:1] for k, v in data["zip"].items()}
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


def rate_table(quick: bool) -> pd.DataFrame:
    """VGG-16 on a Snapdragon 400 over LTE (5 s deadline): DeepX's energy per request
    by uplink and gap between requests, each request finding the radio connected
    (its predecessor's tail) and sharing its own tail with the next one; against
    the best on-device plan (the cloud unreachable) and the radio-unaware plan."""
    problem = Problem(load_model("vgg16"), load_platform("snapdragon_400"), Conditions(link="lte"),
                      Constraints(deadline_s=5.0))
    local_j = DeepXPlanner().plan(problem.with_conditions(Conditions(link="lte", cloud_reachable=False)))
    rows = []
    uplinks = RATE_UPLINKS_MBPS[1::2] if quick else RATE_UPLINKS_MBPS
    gaps = RATE_GAPS_S[::2] if quick else RATE_GAPS_S
    for up in uplinks:
        alone = Conditions(link="lte", uplink_mbps=up)  # radio idle, no next request: the old rule
        for gap in (*gaps, None):
            shared = Conditions(link="lte", uplink_mbps=up, radio_state="connected",
                                tail_left_s=float("inf"), next_gap_s=gap) if gap else alone
            try:
                plan = DeepXPlanner().plan(problem.with_conditions(shared))
            except InfeasibleError:
                continue
            rows.append({"uplink_mbps": up, "gap_s": gap if gap else np.inf,
                         "deepx_energy_j": plan.energy_j, "offloads": plan.uses_radio,
                         "local_energy_j": local_j.energy_j,
                         "saving": 1 - plan.energy_j / local_j.energy_j,
                         "tail_j": plan.radio.tail_j if plan.radio else 0.0})
    return pd.DataFrame(rows)


def break_even(rate: pd.DataFrame) -> pd.DataFrame:
    """Per uplink, the largest gap between requests at which DeepX offloads."""
    paying = rate[rate["offloads"]]
    out = paying.groupby("uplink_mbps")["gap_s"].max().rename("offloads_up_to_gap_s")
    return out.reindex(sorted(rate["uplink_mbps"].unique())).reset_index()


def plot_rate(rate: pd.DataFrame, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    finite = rate[np.isfinite(rate["gap_s"])]
    for up, curve in finite.groupby("uplink_mbps"):
        line, = ax.plot(curve["gap_s"], curve["deepx_energy_j"], "-", label=f"{up:g} Mbps")
        off = curve[curve["offloads"]]
        ax.plot(off["gap_s"], off["deepx_energy_j"], "x", color=line.get_color())
    ax.axhline(rate["local_energy_j"].iloc[0], color="k", ls=":", label="on the phone")
    ax.set_xscale("log")
    ax.set_xlabel("gap between requests (s)")
    ax.set_ylabel("energy per request (J)")
    ax.set_title("VGG-16, Snapdragon 400, LTE: x = offloaded")
    ax.legend(fontsize=7, title="uplink")
    save_figure(fig, path)


def replan_summary(table: pd.DataFrame) -> pd.DataFrame:
    table = table.assign(trace=table["conditions.uplink.trace"].map(lambda p: Path(p).stem))
    out = (table.groupby(["trace", "policy.kind"], sort=True)
           .agg(runs=("seed", "count"), energy_mean_j=("energy_mean_j", "mean"),
                miss_rate=("deadline_miss_rate", "mean"), latency_p95_s=("latency_p95_s", "mean"),
                accuracy_loss=("accuracy_loss_mean", "mean"), offload_rate=("offload_rate", "mean"),
                distinct_plans=("distinct_plans", "mean"))
           .reset_index())
    oracle = out[out["policy.kind"] == "oracle"].set_index("trace")["energy_mean_j"]
    out["vs_oracle"] = out["energy_mean_j"] / out["trace"].map(oracle)
    return out


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

    rate = rate_table(args.quick)
    rate.to_csv(out / "rate.csv", index=False)
    plot_rate(rate, out / "rate.png")
    print("\nPart 1b: VGG-16 on snapdragon_400 over LTE, 5 s deadline, by uplink and gap between "
          "requests\n(gap inf: a lone request, promotion and the whole tail)\n")
    grid = rate.pivot(index="uplink_mbps", columns="gap_s", values="saving")
    print(table_text(grid.reset_index(), "{:+.2f}"))
    print("\nsaving: 1 - DeepX energy / on-device energy (0: DeepX stays on the phone)\n")
    print(table_text(break_even(rate), "{:.3g}"))

    replan = replan_summary(sweep("replan_vs_static_trace", args.quick, out, args.workers))
    replan.to_csv(out / "replan.csv", index=False)
    plot_replan(replan, out / "replan.png")
    print("\nPart 2: the flagship (VGG-16 on snapdragon_400, a request every 2 s) over two LTE traces\n")
    print(table_text(replan, "{:.4g}"))
    print(f"\nwrote {out}/offload.csv, offload.png, rate.csv, rate.png, replan.csv, replan.png")


if __name__ == "__main__":
    sys.exit(run(main))
