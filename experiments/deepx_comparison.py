"""DeepX against cloud-only, GPU-only and CPU-only, beside the papers' ratios.

For AlexNet and SpeakerID on tegra_k1 and snapdragon_800, plan each model with
DeepX (decomposition + layer compression within a 5 % accuracy budget, 5 s
deadline) and with each fixed strategy, and divide the strategy's device energy
per inference by DeepX's: the papers' "DeepX improves energy by N x".  Two
extra columns say where the gap to the papers comes from:

- ``dad_only_ratio``: the same ratio when DeepX may not compress (accuracy
  budget 0), i.e. what decomposition alone gives;
- for cloud-only, the share of its energy spent on the radio's fixed costs
  (promotion and tail) rather than on moving bits.

Run: ``python experiments/deepx_comparison.py [--out DIR]``; writes
``comparison.csv`` and ``comparison.png``.  See experiments/README.md.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import replace

import pandas as pd
from _common import out_dir, parse_args, run, save_figure, table_text

from deepx_sim.costs import Conditions
from deepx_sim.model import load_model
from deepx_sim.plan import Constraints, Problem, get_planner
from deepx_sim.platform import load_platform

# DeepX demo paper (Lane et al., deepx-demo-embedded), energy improvement of
# DeepX over each strategy; Snapdragon 800 has no GPU-only figure there.
PAPER_RATIOS: dict[tuple[str, str, str], float] = {
    ("alexnet", "tegra_k1", "cloud-only"): 22.1,
    ("alexnet", "tegra_k1", "gpu-only"): 1.8,
    ("alexnet", "tegra_k1", "cpu-only"): 13.2,
    ("speakerid", "tegra_k1", "cloud-only"): 29.7,
    ("speakerid", "tegra_k1", "gpu-only"): 1.4,
    ("speakerid", "tegra_k1", "cpu-only"): 7.8,
    ("alexnet", "snapdragon_800", "cloud-only"): 11.2,
    ("alexnet", "snapdragon_800", "cpu-only"): 2.1,
    ("speakerid", "snapdragon_800", "cloud-only"): 8.9,
    ("speakerid", "snapdragon_800", "cpu-only"): 8.1,
}
MODELS = ("alexnet", "speakerid")
PLATFORMS = ("tegra_k1", "snapdragon_800")
STRATEGIES = ("cloud-only", "gpu-only", "cpu-only")


def compare(model: str, platform_name: str, link: str) -> list[dict[str, object]]:
    graph = load_model(model)
    platform = load_platform(platform_name)
    problem = Problem(graph, platform, Conditions(link=link),
                      Constraints(deadline_s=5.0, max_accuracy_loss=0.05))
    dad_only = replace(problem, constraints=replace(problem.constraints, max_accuracy_loss=0.0))
    radio = platform.link(link).radio
    deepx = get_planner("deepx").plan(problem)
    deepx_dad = get_planner("deepx").plan(dad_only)
    rows = []
    for strategy in STRATEGIES:
        plan = get_planner(strategy).plan(problem)
        fixed_radio_j = radio.promotion_energy_j + radio.tail_energy_j if plan.uses_radio else 0.0
        rows.append({
            "model": model, "platform": platform_name, "link": link, "strategy": strategy,
            "deepx_energy_mj": deepx.energy_j * 1e3,
            "deepx_processors": "+".join(deepx.processors_used),
            "deepx_accuracy_loss": deepx.accuracy_loss,
            "strategy_energy_mj": plan.energy_j * 1e3,
            "ratio": plan.energy_j / deepx.energy_j,
            "paper_ratio": PAPER_RATIOS.get((model, platform_name, strategy), float("nan")),
            "dad_only_ratio": plan.energy_j / deepx_dad.energy_j,
            "radio_fixed_share": fixed_radio_j / plan.energy_j if plan.energy_j else 0.0,
        })
    return rows


def plot(table: pd.DataFrame, path: str) -> None:
    import matplotlib.pyplot as plt

    table = table[table["link"] == "wifi"]
    fig, axes = plt.subplots(1, len(PLATFORMS), figsize=(10, 4), sharey=True)
    for ax, platform in zip(axes, PLATFORMS, strict=True):
        part = table[table["platform"] == platform]
        labels = [f"{m}\n{s}" for m, s in zip(part["model"], part["strategy"], strict=True)]
        x = range(len(part))
        ax.bar([i - 0.2 for i in x], part["ratio"], width=0.4, label="deepx_sim")
        ax.bar([i + 0.2 for i in x], part["paper_ratio"].fillna(0), width=0.4, label="paper")
        ax.set_xticks(list(x), labels, rotation=60, fontsize=7)
        ax.set_yscale("log")
        ax.set_title(platform)
    axes[0].set_ylabel("energy of strategy / energy of DeepX")
    axes[0].legend()
    save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    out = out_dir(args, "deepx_comparison")
    links = ("wifi",) if args.quick else ("wifi", "lte")
    models = MODELS[1:] if args.quick else MODELS
    rows = [row for model in models for platform in PLATFORMS for link in links
            for row in compare(model, platform, link)]
    table = pd.DataFrame(rows)
    table.to_csv(out / "comparison.csv", index=False)
    plot(table, str(out / "comparison.png"))
    shown = table[["model", "platform", "link", "strategy", "deepx_energy_mj", "strategy_energy_mj",
                   "ratio", "paper_ratio", "dad_only_ratio", "radio_fixed_share"]]
    print("Energy per inference: DeepX vs fixed strategies (5 s deadline, 5 % accuracy budget)\n")
    print(table_text(shown))
    print("\nratio = strategy energy / DeepX energy; paper_ratio from the DeepX demo paper;"
          "\ndad_only_ratio = the same with compression off; radio_fixed_share = share of the"
          "\ncloud plan's energy spent on radio promotion and tail.  Why ours differ: experiments/README.md")
    print(f"\nwrote {out / 'comparison.csv'} and {out / 'comparison.png'}")


if __name__ == "__main__":
    sys.exit(run(main))
