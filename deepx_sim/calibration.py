"""Fit a processor's cost-model parameters to measured profiles, and say how wrong it is.

The cost model (:mod:`deepx_sim.costs`) times a layer as the roofline
``max(FLOPs / (peak x efficiency[kind]), bytes / (bandwidth x memory_efficiency))
+ launch overhead``.  Peak and bandwidth stay as the hardware file gives them;
the fit chooses, for one processor:

- ``efficiency`` per layer kind (each kind with at least ``min_layers`` measured layers),
- ``memory_efficiency`` (one for every kind), and
- ``launch_overhead_ms`` (per layer),

by least squares on log latency, so every layer counts by its relative error
whatever its size.  Each model's end-to-end time enters too, weighted as much as
all of its layers together, since the planner adds layers up.  A weak pull
(``PRIOR_WEIGHT``) towards the hardware file's estimates keeps an efficiency the
data cannot pin down (a kind that is always memory-bound) where it was.

Layers that onnxruntime fused into one kernel are measured as a group; the fit
compares the group's summed prediction with its measured time.

Error is reported by leaving one model out: fit on the others, predict it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np

from deepx_sim.costs import FREE_KINDS, FULL, CostModel
from deepx_sim.errors import CostError, ProfileError
from deepx_sim.measure.predictor import MIN_SAMPLES, LatencyPredictor, fit_predictor
from deepx_sim.model.layers import Layer, LayerKind, layers_in_order
from deepx_sim.model.profiles import load_profile, read_profile_meta
from deepx_sim.platform import Platform, Processor

MIN_LAYERS_PER_KIND = 3
#: weight of log(efficiency / estimate) against a log-latency residual
PRIOR_WEIGHT = 0.1
EFFICIENCY_FLOOR = 1e-4
OVERHEAD_BOUNDS_S = (1e-8, 1e-2)


@dataclass
class Measured:
    """One profiled model: its layers' roofline terms and measured group times."""

    name: str
    source: str
    layers: list[Layer]
    compute_s: np.ndarray  # FLOPs / peak: compute time at efficiency 1
    memory_s: np.ndarray  # bytes / bandwidth: memory time at memory efficiency 1
    groups: list[np.ndarray]  # indices into layers, one array per measured kernel
    measured_s: np.ndarray  # per group
    end_to_end_s: float
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def kinds(self) -> list[str]:
        return [lay.kind.value for lay in self.layers]


def _model_of(path: Path, meta: dict[str, str]) -> nx.DiGraph:
    from deepx_sim.model import load_model
    from deepx_sim.model.onnx_import import parse_input_shape

    model = meta.get("model")
    if not model:
        raise ProfileError(f"{path}: no '# model: NAME' line above the header; profiles written by "
                           f"deepx-sim profile name their model")
    if model.lower().endswith(".onnx") and not Path(model).is_absolute() and not Path(model).is_file():
        model = str(path.parent / model)
    shapes = dict(parse_input_shape(v) for v in meta.get("input_shape", "").split())
    return load_model(model, shapes)


def load_measured(path: str | Path, platform: Platform, processor: str) -> Measured:
    """Read a profile written by ``deepx-sim profile`` for calibrating ``processor``.

    Raises ProfileError for unknown layers or processors, rows of another
    processor, times that are not > 0, or a missing model line.
    """
    path = Path(path)
    meta = read_profile_meta(path)
    graph = _model_of(path, meta)
    entries = load_profile(path, graph, platform)
    proc = platform.processor(processor)
    others = sorted({p for _, p in entries} - {processor})
    if others:
        raise ProfileError(f"{path}: rows name processor(s) {others}; this calibration fits "
                           f"--processor {processor!r}")
    layers = [lay for lay in layers_in_order(graph) if lay.kind != LayerKind.INPUT]
    index = {lay.name: i for i, lay in enumerate(layers)}
    costs = CostModel(graph, platform)
    compute, memory = [], []
    for lay in layers:
        _, c, m = costs.analytic_busy_s(lay, proc, FULL)
        compute.append(c * proc.efficiency_for(lay.kind))
        memory.append(m * proc.memory_efficiency)
    grouped: dict[str, list[str]] = {}
    for (name, _), entry in entries.items():
        grouped.setdefault(entry.group or name, []).append(name)
    # a kernel of free layers only (a Flatten) costs 0 by definition: it counts in the end-to-end time only
    kept = [names for names in grouped.values()
            if any(n in index and layers[index[n]].kind not in FREE_KINDS for n in names)]
    groups = [np.array([index[n] for n in names if n in index]) for names in kept]
    measured = np.array([sum(entries[(n, processor)].latency_s for n in names) for names in kept])
    e2e = float(meta.get("end_to_end_s") or measured.sum())
    return Measured(str(graph.graph.get("name")), str(path), layers, np.array(compute), np.array(memory),
                    groups, measured, e2e, meta)


# ------------------------------------------------------------------ the model

@dataclass(frozen=True)
class Params:
    """The fitted (or estimated) numbers of one processor."""

    efficiency: dict[str, float]
    memory_efficiency: float
    launch_overhead_s: float

    @classmethod
    def of(cls, proc: Processor) -> Params:
        return cls(dict(proc.efficiency), proc.memory_efficiency, proc.launch_overhead_s)

    def efficiency_for(self, kind: str) -> float:
        return self.efficiency.get(kind, self.efficiency["default"])

    def layer_s(self, m: Measured) -> np.ndarray:
        """Predicted busy seconds of every layer of ``m`` (free layers: 0)."""
        eff = np.array([self.efficiency_for(k) for k in m.kinds])
        busy = np.maximum(m.compute_s / eff, m.memory_s / self.memory_efficiency) + self.launch_overhead_s
        free = np.array([lay.kind in FREE_KINDS for lay in m.layers])
        return np.where(free, 0.0, busy)


def group_s(m: Measured, layer_s: np.ndarray) -> np.ndarray:
    return np.array([layer_s[g].sum() for g in m.groups])


def kind_counts(models: Sequence[Measured]) -> dict[str, int]:
    """Measured layers per kind (free kinds, which cost nothing by definition, left out)."""
    counts: dict[str, int] = {}
    for m in models:
        for g in m.groups:
            for i in g:
                if m.layers[i].kind not in FREE_KINDS:
                    counts[m.kinds[i]] = counts.get(m.kinds[i], 0) + 1
    return counts


def kinds_to_fit(models: Sequence[Measured], min_layers: int, strict: bool) -> list[str]:
    """Kinds with enough layers; with ``strict``, a kind with too few is a CostError."""
    counts = kind_counts(models)
    few = {k: n for k, n in counts.items() if n < min_layers}
    if few and strict:
        listing = ", ".join(f"{k} ({n})" for k, n in sorted(few.items()))
        raise CostError(f"too few measured layers to fit the efficiency of {listing}; each kind needs at "
                        f"least {min_layers} (profile more models with such layers, or lower --min-layers)")
    return sorted(k for k, n in counts.items() if n >= min_layers)


def fit_params(models: Sequence[Measured], prior: Params, min_layers: int = MIN_LAYERS_PER_KIND,
               strict: bool = True) -> tuple[Params, list[str]]:
    """Least-squares fit of the kinds' efficiencies, memory efficiency and overhead."""
    from scipy.optimize import least_squares

    if not models:
        raise CostError("no profiles to calibrate on")
    kinds = kinds_to_fit(models, min_layers, strict)
    start = [math.log(prior.efficiency_for(k)) for k in kinds]
    start += [math.log(prior.memory_efficiency), math.log(min(max(prior.launch_overhead_s, 1e-6), 1e-3))]
    low = [math.log(EFFICIENCY_FLOOR)] * (len(kinds) + 1) + [math.log(OVERHEAD_BOUNDS_S[0])]
    high = [0.0] * (len(kinds) + 1) + [math.log(OVERHEAD_BOUNDS_S[1])]

    def params(theta: np.ndarray) -> Params:
        eff = {**prior.efficiency, **{k: math.exp(t) for k, t in zip(kinds, theta, strict=False)}}
        return Params(eff, math.exp(theta[len(kinds)]), math.exp(theta[len(kinds) + 1]))

    def residuals(theta: np.ndarray) -> np.ndarray:
        p = params(theta)
        parts = []
        for m in models:
            layer_s = p.layer_s(m)
            predicted = np.maximum(group_s(m, layer_s), 1e-12)
            parts.append(np.log(predicted) - np.log(m.measured_s))
            parts.append([math.sqrt(len(m.groups)) * (math.log(max(layer_s.sum(), 1e-12))
                                                      - math.log(m.end_to_end_s))])
        parts.append(PRIOR_WEIGHT * (theta[: len(kinds)] - np.array(start[: len(kinds)])))
        return np.concatenate([np.asarray(x, dtype=float) for x in parts])

    best = None
    for x0 in (np.clip(start, low, high), np.array([math.log(0.3)] * (len(kinds) + 1) + [start[-1]])):
        result = least_squares(residuals, x0, bounds=(low, high), method="trf")
        if best is None or result.cost < best.cost:
            best = result
    assert best is not None
    return params(best.x), kinds


# ------------------------------------------------------------------ errors

@dataclass(frozen=True)
class ErrorSummary:
    """Relative errors of predictions against measurements."""

    count: int
    mape: float  # mean absolute percentage error, in percent
    within_10: float  # share of predictions within +-10 %, 0..1
    within_20: float

    @classmethod
    def of(cls, measured: np.ndarray, predicted: np.ndarray) -> ErrorSummary:
        measured, predicted = np.asarray(measured, float), np.asarray(predicted, float)
        if measured.size == 0:
            return cls(0, float("nan"), float("nan"), float("nan"))
        rel = np.abs(predicted - measured) / measured
        return cls(int(measured.size), float(100 * rel.mean()), float((rel <= 0.10).mean()),
                   float((rel <= 0.20).mean()))

    def text(self) -> str:
        return (f"MAPE {self.mape:5.1f} %, within +-10 %: {100 * self.within_10:5.1f} %, "
                f"within +-20 %: {100 * self.within_20:5.1f} % (n={self.count})")


# ------------------------------------------------------------------ predictions

@dataclass(frozen=True)
class GroupRow:
    """One measured kernel (a layer, or layers fused into one) and its predictions."""

    model: str
    layers: str
    kind: str  # the kind of its heaviest layer
    measured_s: float
    before_s: float  # the hardware file's estimates
    calibrated_s: float  # fitted roofline
    learned_s: float | None  # fitted roofline x learned factor (None: no predictor)


@dataclass(frozen=True)
class ModelRow:
    model: str
    measured_s: float
    before_s: float
    calibrated_s: float
    learned_s: float | None


def learned_layer_s(m: Measured, params: Params, predictor: LatencyPredictor | None) -> np.ndarray | None:
    if predictor is None:
        return None
    factors = predictor.factors(m.layers)
    return params.layer_s(m) * np.array([factors[lay.name] for lay in m.layers])


def train_predictor(models: Sequence[Measured], params: Params, processor: str,
                    min_samples: int = MIN_SAMPLES, seed: int = 0) -> LatencyPredictor:
    """Forests on log(measured / fitted roofline) of layers measured alone (not fused)."""
    layers, ratios = [], []
    for m in models:
        predicted = params.layer_s(m)
        for g, measured in zip(m.groups, m.measured_s, strict=True):
            if len(g) == 1 and predicted[g[0]] > 0:
                layers.append(m.layers[g[0]])
                ratios.append(math.log(measured / predicted[g[0]]))
    return fit_predictor(processor, layers, ratios, min_samples, seed)


def predict_rows(models: Sequence[Measured], prior: Params, params: Params,
                 predictor: LatencyPredictor | None) -> tuple[list[GroupRow], list[ModelRow]]:
    group_rows, model_rows = [], []
    for m in models:
        before, fitted = prior.layer_s(m), params.layer_s(m)
        learned = learned_layer_s(m, params, predictor)
        weight = m.compute_s + m.memory_s
        for g, measured in zip(m.groups, m.measured_s, strict=True):
            heaviest = g[int(np.argmax(weight[g]))]
            group_rows.append(GroupRow(
                m.name, "+".join(m.layers[i].name for i in g), m.kinds[heaviest], float(measured),
                float(before[g].sum()), float(fitted[g].sum()),
                None if learned is None else float(learned[g].sum())))
        model_rows.append(ModelRow(m.name, m.end_to_end_s, float(before.sum()), float(fitted.sum()),
                                   None if learned is None else float(learned.sum())))
    return group_rows, model_rows


def cross_validate(models: Sequence[Measured], prior: Params, min_layers: int = MIN_LAYERS_PER_KIND,
                   predictor: bool = False, seed: int = 0) -> tuple[list[GroupRow], list[ModelRow]]:
    """Leave one model out: fit on the others (kinds they lack keep their estimate), predict it."""
    names = sorted({m.name for m in models})
    if len(names) < 2:
        raise CostError(f"cross-validation leaves one model out: it needs profiles of at least 2 models, "
                        f"got {names}")
    group_rows: list[GroupRow] = []
    model_rows: list[ModelRow] = []
    for name in names:
        train = [m for m in models if m.name != name]
        params, _ = fit_params(train, prior, min_layers, strict=False)
        learned = train_predictor(train, params, "cv", seed=seed) if predictor else None
        g, r = predict_rows([m for m in models if m.name == name], prior, params, learned)
        group_rows += g
        model_rows += r
    return group_rows, model_rows


def summaries(group_rows: Sequence[GroupRow], model_rows: Sequence[ModelRow]) -> dict[str, ErrorSummary]:
    """Error of every prediction, per layer (measured kernel) and per model (end to end)."""
    out = {}
    for level, rows in (("layer", group_rows), ("model", model_rows)):
        measured = np.array([r.measured_s for r in rows])
        for what in ("before", "calibrated", "learned"):
            values = [getattr(r, f"{what}_s") for r in rows]
            if values and all(v is not None for v in values):
                out[f"{level}/{what}"] = ErrorSummary.of(measured, np.array(values))
    return out
