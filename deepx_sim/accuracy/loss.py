"""The accuracy loss of (layer, variant) the planner adds up: measured where it can be.

A model with weights is measured: its per-layer curves (sensitivity.py) on a
source (``source``; synthetic inputs when none is given, so a fidelity figure),
measured once, cached on disk, read at the variant's rank and bits.  The
planner adds losses up without running the model, so rank losses are scaled by
the profile's measured interaction factor (what combinations of ranks lost
against their layers' losses added up, never below 1).  That sum is a
conservative bound to choose within, not an estimate of the chosen plan's loss:
:meth:`AccuracyModel.combined_loss` measures a chosen combination on the same
rows, the figure to report for it.  When a
profile would cost more than ``max_macs`` the weights' real singular values go
through the err2 rule instead; a model without weights (the zoo) gets the
spectral model.  :attr:`AccuracyModel.accuracy_source` says which, in words, for
``plan --json``, ``compare`` and the simulation records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from deepx_sim.accuracy.estimate import (
    ACCURACY_PER_ERR2,
    OUTPUT_ACCURACY_PER_ERR2,
    PRECISION_LOSS,
    SPECTRUM_DECAY,
    classifier_layers,
    model_spectrum,
    tail_energy,
    weighted_layers,
)
from deepx_sim.accuracy.sensitivity import (
    MAX_PROFILE_MACS,
    Profile,
    check_measurable,
    measure_profile,
    substituted,
)
from deepx_sim.accuracy.sources import Reference, Source, reference, synthetic, synthetic_rows
from deepx_sim.costs import Variant
from deepx_sim.errors import ModelError
from deepx_sim.model.layers import Layer
from deepx_sim.model.spectra import ESTIMATED, prefetch_spectra, weight_spectrum
from deepx_sim.model.weights import weight_store


@dataclass
class AccuracyModel:
    """Accuracy loss of (layer, variant): measured curves, else the err2 estimate."""

    graph: nx.DiGraph
    decay: float = SPECTRUM_DECAY
    per_err2: float = ACCURACY_PER_ERR2
    output_per_err2: float = OUTPUT_ACCURACY_PER_ERR2
    precision_loss: dict[int, float] = field(default_factory=lambda: dict(PRECISION_LOSS))
    profile: Profile | None = None
    source: Source | None = None
    measure: bool = True
    max_macs: float = MAX_PROFILE_MACS
    _tails: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _estimated: dict[str, float] = field(default_factory=dict, repr=False)  # layer -> err2 error
    _outputs: frozenset[str] | None = field(default=None, repr=False)
    _resolved: bool = field(default=False, repr=False)
    _why: str = field(default="", repr=False)
    _measured_on: Source | None = field(default=None, repr=False)
    _reference: Reference | None = field(default=None, repr=False)
    _combined: dict[tuple[tuple[str, int | None, int], ...], float] = field(default_factory=dict, repr=False)

    def curves(self) -> Profile | None:
        """The measured profile (measured on first use), or None when there is none."""
        if not self._resolved:
            self._resolved = True
            if self.profile is None and self.measure and weight_store(self.graph) is not None:
                try:  # the limit first: a big model's synthetic inputs alone are large
                    rows = self.source.rows if self.source is not None else synthetic_rows(self.graph)
                    check_measurable(self.graph, rows, self.max_macs)
                    source = self.source if self.source is not None else synthetic(self.graph, rows)
                    self.profile = measure_profile(self.graph, source, max_macs=self.max_macs)
                    self._measured_on = source
                except ModelError as exc:  # too slow, or a layer numpy cannot run
                    self._why = str(exc)
        return self.profile

    @property
    def accuracy_source(self) -> str:
        """Where the accuracy figures come from, in words."""
        profile = self.curves()
        if profile is not None:
            return f"measured: {profile.unit} on {profile.source}"
        if weight_store(self.graph) is not None:
            why = self._why or "measurement turned off"
            note = self.spectra_note()
            return f"estimate: err2 rule on the weights' singular values ({why}){'; ' + note if note else ''}"
        return (f"estimate: spectral model (no weights; singular values i^-{self.decay:g}, "
                "loss from the err2 rule fitted on digits)")

    def spectra_note(self) -> str:
        """Which layers' singular values read so far are estimates, and how far their err2
        may be off ("" when none)."""
        if not self._estimated:
            return ""
        names = ", ".join(sorted(self._estimated))
        return (f"singular values of {names} estimated by block Lanczos quadrature, "
                f"err2 within +-{max(self._estimated.values()):g}")

    @property
    def measured(self) -> bool:
        return self.curves() is not None

    def output_layers(self) -> frozenset[str]:
        """The classifier (see :func:`classifier_layers`)."""
        if self._outputs is None:
            self._outputs = classifier_layers(self.graph)
        return self._outputs

    def spectrum_source(self, layer: Layer) -> str:
        store = weight_store(self.graph)
        return "weights" if store is not None and store.has(layer.name) else "model"

    def tail(self, layer: Layer) -> np.ndarray:
        if layer.name not in self._tails:
            assert layer.fc is not None
            store = weight_store(self.graph)
            if store is not None and store.has(layer.name):
                if not self._tails:  # the first: the small layers' spectra side by side on idle cores
                    prefetch_spectra(store, {lay.name: (lay.fc.m, lay.fc.n) for lay in weighted_layers(
                        self.graph) if lay.fc is not None and store.has(lay.name)})
                found = weight_spectrum(store, layer.name)
                if found.method == ESTIMATED:
                    self._estimated[layer.name] = found.err2_error
                s = found.values
            else:
                s = model_spectrum(min(layer.fc.m, layer.fc.n), self.decay)
            self._tails[layer.name] = tail_energy(s)
        return self._tails[layer.name]

    def reconstruction_err2(self, layer: Layer, rank: int | None) -> float:
        if rank is None or layer.fc is None:
            return 0.0
        tail = self.tail(layer)
        return float(tail[min(rank, len(tail) - 1)])

    def measured_loss(self, layer: Layer, variant: Variant) -> float | None:
        """The curves' loss of ``variant`` (rank and bits added), or None if not measured."""
        profile = self.curves()
        if profile is None:
            return None
        rank, bits = profile.curve(layer.name, "rank"), profile.curve(layer.name, "bits")
        if bits is None:
            return None
        loss = bits.at(variant.bits) if variant.bits < 32 else 0.0
        if variant.rank is not None:
            if rank is None:
                return None
            loss += profile.interaction * rank.at(variant.rank)
        return loss

    def loss(self, layer: Layer, variant: Variant) -> float:
        measured = self.measured_loss(layer, variant) if layer.params > 0 else None
        if measured is not None:
            return measured
        per_err2 = self.output_per_err2 if layer.source_layer in self.output_layers() else self.per_err2
        loss = per_err2 * self.reconstruction_err2(layer, variant.rank)
        if layer.params > 0:
            loss += self.precision_loss.get(variant.bits, 0.0)
        return loss

    def combined_loss(self, variants: Mapping[str, Variant]) -> float | None:
        """The loss of running every named layer at its variant at once, measured on the
        source the curves were measured on (in its unit), or None without curves.

        The curves' losses added up (:meth:`loss`, what a planner's linear budget sums)
        misjudge a combination: layers interact, and one interaction factor fitted on a
        few combinations cannot follow every one.  This runs the combination instead
        (cached per combination), as compress does before it accepts one.
        """
        store = weight_store(self.graph)
        if self.curves() is None or self._measured_on is None or store is None:
            return None
        # a layer without weights (an activation on a 16-bit processor) changes nothing here
        key = tuple(sorted((name, v.rank, v.bits) for name, v in variants.items()
                           if (v.rank is not None or v.bits < 32) and store.has(name)))
        if key not in self._combined:
            if not key:
                self._combined[key] = 0.0
            else:
                if self._reference is None:
                    self._reference = reference(self.graph, self._measured_on)
                ranks = {name: rank for name, rank, _ in key if rank is not None}
                bits = {name: b for name, _, b in key if b < 32}
                self._combined[key] = self._reference.score_model(substituted(self.graph, ranks, bits)).loss
        return self._combined[key]
