"""DXTK's memory table (Figure 6, Table 3) for its five models.

For SpeakerID, Ambient, AlexNet, AgeNet and GenderNet (the zoo's shapes of
DXTK's models) it lists the model memory:

- original: 64-bit weights plus training-time gradient buffers of the same size;
- 32-bit: precision scaling, gradients still kept;
- cleaned: parameter cleaning drops the gradients (32-bit weights only);
- wf: cleaned, then weight factorisation of every fc layer at the ranks that
  save the most parameters within a 5 % estimated accuracy loss (the
  planner's estimator; these zoo models carry no weights, so it uses the
  spectrum model and the figure is an estimate).

Sparse factorisation and convolution separation need real weights; their
measured columns are produced on the in-project trained models by
``experiments/dxtk_accuracy.py``.  Figures are printed beside the papers'.

Run: ``python experiments/dxtk_memory.py [--out DIR]``; writes ``memory.csv``
and ``memory.png``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import pandas as pd
from _common import out_dir, parse_args, run, save_figure, table_text

from deepx_sim.accuracy import AccuracyModel
from deepx_sim.compress.ranks import choose_ranks
from deepx_sim.costs import Variant
from deepx_sim.model import load_model
from deepx_sim.model.layers import get_layer
from deepx_sim.model.memory import MIB, footprints, model_bytes

MODELS = ("speakerid", "ambient", "alexnet", "agenet", "gendernet")
# DXTK (Lane et al. 2016) Figure 6: original and fully optimised footprints (MiB;
# see FACTS.md for why these "MB" are MiB); Table 3: size at the estimator
# threshold (MB = 1e6 B) and its accuracy loss.
PAPER = {
    "speakerid": {"paper_original_mib": 26.9, "paper_optimised_mib": 0.4,
                  "paper_table3_before_mb": 28.0, "paper_table3_after_mb": 2.0, "paper_table3_loss": 0.032},
    "alexnet": {"paper_original_mib": 930.3, "paper_optimised_mib": 31.9,
                "paper_table3_before_mb": 233.0, "paper_table3_after_mb": 57.0, "paper_table3_loss": 0.049},
}


def memory_row(model: str, budget: float) -> dict[str, object]:
    graph = load_model(model)
    fp = footprints(graph, bits=32)
    accuracy = AccuracyModel(graph)
    ranks = choose_ranks(graph, budget, accuracy)
    saved = 0
    loss = 0.0
    for name, k in ranks.items():
        fc = get_layer(graph, name).fc
        assert fc is not None
        saved += fc.m * fc.n - k * (fc.m + fc.n)
        loss += accuracy.loss(get_layer(graph, name), Variant(rank=k))
    wf_bytes = model_bytes(fp.params - saved, 32, with_gradients=False)
    row: dict[str, object] = {
        "model": model, "params": fp.params,
        "original_mib": fp.original_bytes / MIB, "fp32_mib": fp.scaled_bytes / MIB,
        "cleaned_mib": fp.cleaned_bytes / MIB, "wf_mib": wf_bytes / MIB,
        "wf_estimated_loss": loss, "original_over_wf": fp.original_bytes / wf_bytes,
        "wf_ranks": ", ".join(f"{n}:{k}" for n, k in ranks.items()),
    }
    row.update(PAPER.get(model, {}))
    return row


def plot(table: pd.DataFrame, path: str) -> None:
    import matplotlib.pyplot as plt

    steps = ["original_mib", "fp32_mib", "cleaned_mib", "wf_mib"]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(steps)
    for i, step in enumerate(steps):
        ax.bar([j + i * width for j in range(len(table))], table[step], width=width,
               label=step.removesuffix("_mib"))
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(table))], table["model"])
    ax.set_yscale("log")
    ax.set_ylabel("model memory (MiB)")
    ax.legend()
    save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    out = out_dir(args, "dxtk_memory")
    table = pd.DataFrame([memory_row(m, 0.05) for m in MODELS])
    table.to_csv(out / "memory.csv", index=False)
    plot(table, str(out / "memory.png"))
    cols = ["model", "params", "original_mib", "fp32_mib", "cleaned_mib", "wf_mib", "wf_estimated_loss",
            "original_over_wf", "paper_original_mib", "paper_optimised_mib"]
    print("DXTK memory steps (MiB), weight factorisation within a 5 % estimated accuracy loss\n")
    print(table_text(table[cols]))
    print("\nwf ranks chosen:")
    for _, row in table.iterrows():
        print(f"  {row['model']}: {row['wf_ranks']}")
    print("\nPaper figures: Figure 6 original and fully optimised (all five techniques, MiB).")
    print(f"wrote {out / 'memory.csv'} and {out / 'memory.png'}")


if __name__ == "__main__":
    sys.exit(run(main))
