"""Cost model against measurement on this machine's CPU: before and after calibration.

1. Profile, with onnxruntime on one thread, the zoo, CNNs sampled at random from
   the blocks CNNs are built of (nn-Meter's recipe: calibrate on sampled kernels),
   and held-out CNNs of SqueezeNet, DenseNet, MobileNet v1 and RegNetX shapes
   written with onnx.helper.  Every model is profiled in ``--rounds`` rounds, one
   model after another in a new order each round, so a busy spell on the shared
   machine hits one round of many models, not all of one (the same layer's time
   drifts by 15-20 % within minutes here); per layer the median over rounds counts.
2. Calibrate vm_datasheet's processor on the zoo alone, on the zoo plus the first
   half of the sampled CNNs and on the zoo plus all of them, each with the learned
   per-kind correction, and report the leave-one-model-out errors.
3. Predict the held-out CNNs through the cost model (datasheet estimates,
   calibrated roofline, roofline with the learned correction) and compare with
   the measurement, per layer and end to end.  Targets (issue 14): end to end
   within +-10 % for >= 90 % of held-out CNNs, per layer within +-20 % for >= 80 %.

Writes profiles/, the calibrated platforms, layers.csv, models.csv, summary.csv
and figures into experiments/out/cost_calibration/ (or --out).
Run: python experiments/cost_calibration.py [--rounds 5] [--repeats 8] [--quick]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from _common import out_dir, run, save_figure, table_text

from deepx_sim.calibration import ErrorSummary, calibrate, load_measured, write_calibrated
from deepx_sim.costs import CostModel
from deepx_sim.errors import DeepxError
from deepx_sim.measure.nets import HELDOUT
from deepx_sim.measure.profiling import merge_rounds, profile_model
from deepx_sim.model import model_names
from deepx_sim.platform import Platform, load_platform

PLATFORM, PROCESSOR = "vm_datasheet", "vm"
#: CNNs sampled for calibration; the first half is also calibrated on alone, to show whether
#: more sampled shapes (nn-Meter's remedy for kinds the zoo lacks) still lower the error
SAMPLED = 32
TARGET_MODEL, TARGET_LAYER = (0.10, 0.90), (0.20, 0.80)  # (error bound, share that must meet it)
#: left out of the zoo set: the issue calibrates on CNNs and DNNs, and the writer cannot yet
#: export their embedding Gather for onnxruntime
TRANSFORMERS = ("bert_base", "vit_b16")
RESOLVED_S = 10e-6  # the profiler's 1 us steps are at most a tenth of such a layer


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None,
                        help="output folder (default experiments/out/cost_calibration)")
    parser.add_argument("--quick", action="store_true", help="a few small models, one round (for the tests)")
    parser.add_argument("--rounds", type=int, default=5, help="profiling rounds per model (default 5)")
    parser.add_argument("--repeats", type=int, default=8, help="timed runs per round (default 8)")
    parser.add_argument("--profiles", default=None,
                        help="calibrate on the profiles an earlier run wrote into this folder instead of "
                             "profiling again (to re-analyse one measurement)")
    return parser.parse_args(argv)


def model_sets(quick: bool) -> dict[str, list[str]]:
    if quick:
        return {"zoo": ["agenet", "gendernet", "mobilenetv2"], "sampled": ["sampled:0", "sampled:1"],
                "heldout": ["heldout:squeezenet1_1", "heldout:mobilenet_v1_0.5"]}
    return {"zoo": [m for m in model_names() if m not in TRANSFORMERS],
            "sampled": [f"sampled:{s}" for s in range(SAMPLED)],
            "heldout": [f"heldout:{n}" for n in HELDOUT]}


def profile_all(sets: dict[str, list[str]], folder: Path, rounds: int, repeats: int) -> dict[str, Path]:
    """Profile every model ``rounds`` times, each round in a new (seeded) order so that no
    set is always measured at the same point of a round; write the merged profiles."""
    folder.mkdir(parents=True, exist_ok=True)
    models = [m for names in sets.values() for m in names]
    taken: dict[str, list] = {m: [] for m in models}
    for r in range(rounds):
        for m in np.random.default_rng(r).permutation(models):
            taken[str(m)].append(profile_model(str(m), processor=PROCESSOR, repeats=repeats))
            last = taken[str(m)][-1]
            print(f"round {r + 1}/{rounds} {m}: {last.end_to_end_s * 1000:.2f} ms "
                  f"(share of a core {last.meta['cpu_share']})", file=sys.stderr, flush=True)
    return {m: merge_rounds(p).save(folder / f"{m.replace(':', '_')}.csv") for m, p in taken.items()}


def saved_profiles(sets: dict[str, list[str]], folder: Path) -> dict[str, Path]:
    """The profiles an earlier run wrote, by model; a DeepxError names a missing one."""
    paths = {m: folder / f"{m.replace(':', '_')}.csv" for names in sets.values() for m in names}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise DeepxError(f"--profiles {folder}: no profile {missing[0]} ({len(missing)} missing); "
                         f"profile first (run without --profiles)")
    return paths


def predictions(paths: list[Path], platforms: dict[str, Platform]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Measured and predicted (through the cost model) time of every kernel and model."""
    layer_rows, model_rows = [], []
    reference = next(iter(platforms.values()))
    for path in paths:
        m = load_measured(path, reference, PROCESSOR)
        busy = {}
        for label, platform in platforms.items():
            costs = CostModel(m.graph, platform)
            busy[label] = np.array([costs.layer_cost(lay.name, PROCESSOR).busy_s for lay in m.layers])
        for g, measured in zip(m.groups, m.measured_s, strict=True):
            row = {"model": m.name, "layers": "+".join(m.layers[i].name for i in g),
                   "kind": m.kinds[g[0]], "measured_s": measured}
            layer_rows.append({**row, **{label: b[g].sum() for label, b in busy.items()}})
        model_rows.append({"model": m.name, "measured_s": m.end_to_end_s,
                           **{label: b.sum() for label, b in busy.items()}})
    return pd.DataFrame(layer_rows), pd.DataFrame(model_rows)


def summarise(frame: pd.DataFrame, level: str, labels: list[str]) -> list[dict[str, object]]:
    rows = []
    for label in labels:
        e = ErrorSummary.of(frame["measured_s"].to_numpy(), frame[label].to_numpy())
        rows.append({"level": level, "prediction": label, "n": e.count, "mape_pct": e.mape,
                     "within_10": e.within_10, "within_20": e.within_20})
    return rows


def per_kind(layers: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """Held-out layers per kind: how many, the median measured time, and per prediction the
    share within +-20 % and the median relative error (positive: predicted too slow)."""
    rows = []
    for kind, frame in layers.groupby("kind"):
        row: dict[str, object] = {"kind": kind, "n": len(frame),
                                  "median_us": frame["measured_s"].median() * 1e6}
        for label in labels:
            rel = frame[label] / frame["measured_s"] - 1
            row[f"{label} within_20"] = float((rel.abs() <= 0.2).mean())
            row[f"{label} bias"] = float(rel.median())
        rows.append(row)
    return pd.DataFrame(rows)


def figures(layers: pd.DataFrame, models: pd.DataFrame, labels: list[str], out: Path) -> None:
    import matplotlib.pyplot as plt

    for frame, name, unit in ((layers, "layers", 1e6), (models, "models", 1e3)):
        fig, axes = plt.subplots(1, len(labels), figsize=(4.2 * len(labels), 4), sharex=True, sharey=True)
        low = min(frame["measured_s"].min(), *(frame[lb].min() for lb in labels)) * unit
        high = max(frame["measured_s"].max(), *(frame[lb].max() for lb in labels)) * unit
        for ax, label in zip(np.atleast_1d(axes), labels, strict=True):
            e = ErrorSummary.of(frame["measured_s"].to_numpy(), frame[label].to_numpy())
            ax.scatter(frame["measured_s"] * unit, frame[label] * unit, s=8 if name == "layers" else 30,
                       alpha=0.5)
            line = np.array([low, high])
            ax.plot(line, line, "k-", lw=0.8)
            for k, style in ((0.1, ":"), (0.2, "--")):
                ax.plot(line, line * (1 + k), "k" + style, lw=0.6)
                ax.plot(line, line * (1 - k), "k" + style, lw=0.6)
            ax.set(xscale="log", yscale="log", title=f"{label}: MAPE {e.mape:.1f} %, "
                   f"{e.within_10:.0%} in 10 %, {e.within_20:.0%} in 20 %",
                   xlabel=f"measured ({'us' if unit == 1e6 else 'ms'})")
            ax.title.set_fontsize(8)
        np.atleast_1d(axes)[0].set_ylabel(f"predicted ({'us' if unit == 1e6 else 'ms'})")
        fig.suptitle(f"held-out CNNs, per {name[:-1]}: predicted against measured on this CPU", fontsize=9)
        save_figure(fig, out / f"heldout_{name}.png")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    out = out_dir(argparse.Namespace(out=args.out), "cost_calibration")
    rounds = 1 if args.quick else args.rounds
    sets = model_sets(args.quick)
    if args.profiles:
        paths = saved_profiles(sets, Path(args.profiles))
    else:
        paths = profile_all(sets, out / "profiles", rounds, 3 if args.quick else args.repeats)
    datasheet = load_platform(PLATFORM)
    platforms: dict[str, Platform] = {"before": datasheet}
    summary: list[dict[str, object]] = []
    half = sets["sampled"][: len(sets["sampled"]) // 2]
    trainings = [("zoo", sets["zoo"]), (f"zoo+{len(half)} sampled", sets["zoo"] + half),
                 ("zoo+sampled", sets["zoo"] + sets["sampled"])]
    for name, training in trainings[::2] if args.quick else trainings:  # --quick: too few for halves
        result = calibrate([paths[m] for m in training], datasheet, PROCESSOR, predictor=True,
                           min_layers=2 if args.quick else 3)
        yaml_path = out / f"vm_{name.replace('+', '_').replace(' ', '_')}.yaml"
        written = load_platform(write_calibrated(result, datasheet, yaml_path))
        platforms[f"{name} roofline"] = _without_predictor(written)
        platforms[f"{name} learned"] = written
        for key, e in result.errors.items():
            level, what = key.split("/")
            summary.append({"level": f"cv {level}", "prediction": f"{name} {what}", "n": e.count,
                            "mape_pct": e.mape, "within_10": e.within_10, "within_20": e.within_20})
    layers, models = predictions([paths[m] for m in sets["heldout"]], platforms)
    labels = list(platforms)
    summary += summarise(layers, "held-out layer", labels) + summarise(models, "held-out model", labels)
    # onnxruntime reports kernel times in whole microseconds: a 3 us layer cannot be told to +-20 %
    resolved = layers[layers["measured_s"] >= RESOLVED_S]
    summary += summarise(resolved, f"held-out layer >= {RESOLVED_S * 1e6:.0f} us", labels)
    table = pd.DataFrame(summary)
    kinds = per_kind(layers, labels)
    kinds.to_csv(out / "kinds.csv", index=False)
    layers.to_csv(out / "layers.csv", index=False)
    models.to_csv(out / "models.csv", index=False)
    table.to_csv(out / "summary.csv", index=False)
    figures(layers, models, ["before", "zoo+sampled roofline", "zoo+sampled learned"], out)
    print(table_text(table))
    print(table_text(kinds))
    report_targets(table, paths)


def _without_predictor(platform: Platform) -> Platform:
    """The calibrated platform with its fitted roofline alone (no learned correction)."""
    data = platform.model_dump()
    for p in data["processors"]:
        if p["name"] == PROCESSOR and p.get("calibration"):
            p["calibration"]["predictor"] = ""
    return Platform.model_validate(data)


def report_targets(table: pd.DataFrame, paths: dict[str, Path]) -> None:
    from deepx_sim.model.profiles import read_profile_meta

    for level, (bound, share) in (("held-out model", TARGET_MODEL), ("held-out layer", TARGET_LAYER),
                                  ("cv model", TARGET_MODEL), ("cv layer", TARGET_LAYER)):
        column = f"within_{int(bound * 100)}"
        for _, row in table[table["level"] == level].iterrows():
            if row["prediction"].endswith("learned"):
                verdict = "meets" if row[column] >= share else "misses"
                print(f"target {level} within +-{bound:.0%} for >= {share:.0%}: {row['prediction']} "
                      f"{row[column]:.0%} -> {verdict}")
    shares = [float(x) for p in paths.values() for x in read_profile_meta(p)["cpu_share"].split(" / ")]
    print(f"noise: this process had {min(shares):.0%} .. {max(shares):.0%} of a core while profiling "
          f"(median {np.median(shares):.0%}); times are on-CPU, the rest went to other processes")


if __name__ == "__main__":
    raise SystemExit(run(main))
