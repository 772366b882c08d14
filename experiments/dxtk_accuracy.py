"""DXTK's optimisers on real weights: accuracy against memory (Table 3's shape).

Trains (or loads from the cache) two models on scikit-learn's digits: a
SpeakerID-shaped DNN (64-1000-1000-10) and a small CNN.  Then:

1. each optimiser alone at a range of settings: test accuracy, weight memory,
   multiply-adds and the reconstruction error;
2. the full pipeline (cleaning, factorisation, separation, precision) at
   accuracy budgets of 1-10 %, settings chosen on a validation split and
   accuracy reported on the held-out test split, beside DXTK's Table 3;
3. the calibration of the planner's reconstruction-error -> accuracy-loss
   estimator: fitted constants and the estimator's error on these points.

Run: ``python experiments/dxtk_accuracy.py [--out DIR]``; writes
``optimisers.csv``, ``budgets.csv``, ``calibration.csv`` and
``accuracy_memory.png``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import networkx as nx
import numpy as np
import pandas as pd
from _common import out_dir, parse_args, run, save_figure, table_text

from deepx_sim.accuracy import ACCURACY_PER_ERR2, OUTPUT_ACCURACY_PER_ERR2, Source
from deepx_sim.compress.calibration import calibration_points, fit, prediction_errors
from deepx_sim.compress.optimizers import (
    conv_separation,
    parameter_cleaning,
    precision_scaling,
    sparse_factorization,
    weight_factorization,
)
from deepx_sim.compress.search import compress
from deepx_sim.compress.train import trained_model
from deepx_sim.model.execute import accuracy
from deepx_sim.model.layers import LayerKind, layers_in_order, total
from deepx_sim.model.memory import stored_sizes


def memory_bytes(graph: nx.DiGraph) -> int:
    return stored_sizes(graph).memory_bytes

# DXTK Table 3 (Lane et al. 2016): size before -> after at the estimator threshold, accuracy loss
PAPER_TABLE3 = {"SpeakerID (DNN)": (28.0, 2.0, 0.032), "AlexNet (CNN)": (233.0, 57.0, 0.049)}


def sweep_optimisers(name: str, net: nx.DiGraph, x: np.ndarray, y: np.ndarray, quick: bool) -> list[dict]:
    base_acc = accuracy(net, x, y)
    clean, _ = parameter_cleaning(net)
    rows = [
        {
            "model": name,
            "optimiser": "original",
            "setting": "64-bit + training state",
            "accuracy": base_acc,
            "memory_bytes": memory_bytes(precision_scaling(net, 64)[0]),
            "macs": total(net, "macs"),
            "err2": 0.0,
        }
    ]
    rows.append(
        {
            "model": name,
            "optimiser": "pc",
            "setting": "cleaned, 32-bit",
            "accuracy": accuracy(clean, x, y),
            "memory_bytes": memory_bytes(clean),
            "macs": total(clean, "macs"),
            "err2": 0.0,
        }
    )
    fractions = (0.5, 0.2) if quick else (0.9, 0.5, 0.35, 0.2, 0.1, 0.05)
    trials = [("wf", f"x{f:g} break-even", *weight_factorization(clean, fraction=f)) for f in fractions]
    if any(lay.kind == LayerKind.CONV for lay in layers_in_order(clean)):
        trials += [("cs", f"x{f:g} break-even", *conv_separation(clean, fraction=f)) for f in fractions]
    sf_settings = ((0.2, 8),) if quick else ((0.3, 16), (0.2, 8), (0.1, 4))
    trials += [("sf", f"{a:g} atoms, {s} nnz", *sparse_factorization(clean, a, s)) for a, s in sf_settings]
    trials += [("ps", f"{b}-bit", *precision_scaling(clean, b)) for b in (16, 8)]
    for optimiser, setting, trial, report in trials:
        sparsity = [c.detail["sparsity"] for c in report.changes if "sparsity" in c.detail]
        rows.append(
            {
                "model": name,
                "optimiser": optimiser,
                "setting": setting,
                "accuracy": accuracy(trial, x, y),
                "memory_bytes": memory_bytes(trial),
                "macs": total(trial, "macs"),
                "err2": report.err2_total(),
                "sparsity": float(np.mean(sparsity)) if sparsity else np.nan,
            }
        )
    for row in rows:
        row["accuracy_loss"] = base_acc - row["accuracy"]
    return rows


def budgets(name: str, net: nx.DiGraph, data: object, quick: bool) -> list[dict]:
    x_val, y_val = data.x_train, data.y_train  # type: ignore[attr-defined]
    x_test, y_test = data.x_test, data.y_test  # type: ignore[attr-defined]
    rows = []
    for budget in (0.05,) if quick else (0.01, 0.03, 0.05, 0.1):
        train = Source("labels", x_val, y_val, "train split")
        outcome = compress(net, ["pc", "wf", "cs", "ps"], budget, train)
        rows.append(
            {
                "model": name,
                "budget": budget,
                "memory_before_bytes": memory_bytes(net),
                "memory_after_bytes": memory_bytes(outcome.graph),
                "reduction": memory_bytes(net) / memory_bytes(outcome.graph),
                "test_accuracy_before": accuracy(net, x_test, y_test),
                "test_accuracy_after": accuracy(outcome.graph, x_test, y_test),
                "test_loss": accuracy(net, x_test, y_test) - accuracy(outcome.graph, x_test, y_test),
                "estimated_loss": outcome.chosen_score.loss if outcome.chosen_score else None,
            }
        )
    return rows


def plot(table: pd.DataFrame, path: str) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, table["model"].nunique(), figsize=(11, 4), squeeze=False)
    for ax, (model, part) in zip(axes[0], table.groupby("model"), strict=True):
        for optimiser, group in part.groupby("optimiser"):
            ax.plot(group["memory_bytes"] / 1024, group["accuracy"] * 100, "o-", label=optimiser)
        ax.set_xscale("log")
        ax.set_xlabel("model memory (KiB)")
        ax.set_title(model)
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][0].legend()
    save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    out = out_dir(args, "dxtk_accuracy")
    models = {name: trained_model(name) for name in ("speakerid_digits", "cnn_digits")}
    rows = [
        r
        for name, (net, d) in models.items()
        for r in sweep_optimisers(name, net, d.x_test, d.y_test, args.quick)
    ]
    table = pd.DataFrame(rows)
    table.to_csv(out / "optimisers.csv", index=False)
    plot(table, str(out / "accuracy_memory.png"))
    print("1. Each optimiser alone (test split; memory includes training state where kept)\n")
    print(
        table_text(
            table[
                [
                    "model",
                    "optimiser",
                    "setting",
                    "accuracy",
                    "accuracy_loss",
                    "memory_bytes",
                    "macs",
                    "err2",
                    "sparsity",
                ]
            ],
            "{:.4g}",
        )
    )

    budget_table = pd.DataFrame(
        [r for name, (net, d) in models.items() for r in budgets(name, net, d, args.quick)]
    )
    budget_table.to_csv(out / "budgets.csv", index=False)
    print("\n2. The pipeline within an accuracy budget (chosen on the train split, scored on test)\n")
    print(table_text(budget_table, "{:.4g}"))
    print(
        "\nDXTK Table 3: "
        + "; ".join(
            f"{k} {a:g} MB -> {b:g} MB at {loss:.1%} loss" for k, (a, b, loss) in PAPER_TABLE3.items()
        )
    )

    points = calibration_points({n: (net, d.x_test, d.y_test) for n, (net, d) in models.items()})
    hidden, output = fit(points)
    errors = prediction_errors(points, ACCURACY_PER_ERR2, OUTPUT_ACCURACY_PER_ERR2)
    pd.DataFrame([p.__dict__ for p in points]).to_csv(out / "calibration.csv", index=False)
    small = np.array([p.measured_loss <= 0.1 for p in points if p.optimizer != "ps"])
    print(
        f"\n3. Estimator calibration on {len(errors)} measured points: fitted per-err2 constants "
        f"hidden {hidden:.3f}, classifier {output:.3f} (shipped {ACCURACY_PER_ERR2}, "
        f"{OUTPUT_ACCURACY_PER_ERR2})"
    )
    print(
        f"   |estimated - measured| loss: mean {np.abs(errors).mean():.3f}, median "
        f"{np.median(np.abs(errors)):.3f}, max {np.abs(errors).max():.3f}; where the measured loss is "
        f"<= 10 %: mean {np.abs(errors[small]).mean():.3f} over {small.sum()} points"
    )
    print(f"\nwrote {out}/optimisers.csv, budgets.csv, calibration.csv, accuracy_memory.png")


if __name__ == "__main__":
    sys.exit(run(main))
