"""What a variant costs in accuracy.

- ``sources``: where a measured figure comes from (labelled data, unlabelled
  inputs, synthetic inputs) and in which unit it is read;
- ``sensitivity``: per-layer curves measured by running the model, cached;
- ``loss``: :class:`AccuracyModel`, the loss of (layer, variant) the planner adds
  up, from measured curves where the model has weights;
- ``estimate``: the err2 rule and spectral model for what cannot be measured,
  the classifier, the break-even rank and the rank ladder.
"""

from deepx_sim.accuracy.estimate import (
    ACCURACY_PER_ERR2,
    OUTPUT_ACCURACY_PER_ERR2,
    PRECISION_LOSS,
    RANK_FRACTIONS,
    SPECTRUM_DECAY,
    break_even_rank,
    candidate_ranks,
    classifier_layers,
    err2_loss,
    geometric_fractions,
    rank_ladder,
    tail_energy,
    weighted_layers,
)
from deepx_sim.accuracy.loss import AccuracyModel
from deepx_sim.accuracy.sensitivity import Curve, Profile, measure_profile, separable
from deepx_sim.accuracy.sources import Reference, Score, Source, load_inputs, load_labelled, synthetic

__all__ = [
    "ACCURACY_PER_ERR2", "OUTPUT_ACCURACY_PER_ERR2", "PRECISION_LOSS", "RANK_FRACTIONS", "SPECTRUM_DECAY",
    "AccuracyModel", "Curve", "Profile", "Reference", "Score", "Source", "break_even_rank",
    "candidate_ranks", "classifier_layers", "err2_loss", "geometric_fractions",
    "load_inputs", "load_labelled", "measure_profile", "rank_ladder", "separable", "synthetic",
    "tail_energy", "weighted_layers",
]
