"""Fit a processor's cost-model parameters to measured profiles, and say how wrong it is.

The cost model (:mod:`deepx_sim.costs`) times a layer as the roofline
``max(FLOPs / (peak x efficiency[kind] x gemm x planes), bytes / (bandwidth x
memory_efficiency x planes)) + launch overhead``, where ``gemm`` says how far a
convolution's matrix products fall short for being small and ``planes`` how far
a kernel that runs one channel plane at a time does (both
:func:`deepx_sim.platform.loop_share`; 1 for other layers).  Peak and bandwidth
stay as the hardware file gives them; the fit chooses, for one processor:

- ``efficiency`` per layer kind (each kind with at least ``min_layers`` measured layers),
- ``memory_efficiency`` (one for every kind),
- ``launch_overhead_ms`` (per layer),
- ``gemm_half_size`` (rows, depth and columns at which a product runs at half speed;
  fitted when convolutions are), and
- ``plane_half_size`` of the kinds in ``PLANE_KINDS`` that are fitted,

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
import tempfile
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np

from deepx_sim.costs import FREE_KINDS, FULL, CostModel
from deepx_sim.errors import CostError, ProfileError
from deepx_sim.measure.nets import is_net_name, write_net
from deepx_sim.measure.predictor import (
    MIN_SAMPLES,
    LatencyPredictor,
    context_features,
    fit_predictor,
    producers_of,
)
from deepx_sim.model.layers import Layer, LayerKind, layers_in_order
from deepx_sim.model.profiles import load_profile, read_profile_meta
from deepx_sim.platform import Efficiency, Platform, Processor, loop_share

MIN_LAYERS_PER_KIND = 3
#: weight of log(efficiency / estimate) against a log-latency residual
PRIOR_WEIGHT = 0.1
#: the lowest efficiency a hardware file accepts (the bound of platform.Efficiency)
EFFICIENCY_FLOOR = next(m.ge for m in typing.get_args(Efficiency)[1].metadata if hasattr(m, "ge"))
OVERHEAD_BOUNDS_S = (1e-8, 1e-2)
#: a fitted half size at its lower bound has no effect, and is written as 0
HALF_SIZE_BOUNDS = (1e-4, 1e4)
#: kinds whose onnxruntime CPU kernels loop over the channels, one plane at a time (a
#: BatchNorm of 400 channels of 5 x 5 took 9.5 us here, one of 152 of 14 x 14, three times
#: the bytes, 9 us); element-wise kernels run one flat loop
PLANE_KINDS = ("batchnorm", "depthwise_conv", "pool")


@dataclass
class Measured:
    """One profiled model: its layers' roofline terms and measured group times."""

    name: str
    source: str
    graph: nx.DiGraph
    layers: list[Layer]
    compute_s: np.ndarray  # FLOPs / peak: compute time at efficiency 1
    memory_s: np.ndarray  # bytes / bandwidth: memory time at memory efficiency 1
    gemm_dims: np.ndarray  # per layer: its matrix products' (rows, depth, columns); NaN: none
    plane: np.ndarray  # per layer: output positions per channel; NaN: none
    groups: list[np.ndarray]  # indices into layers, one array per measured kernel
    measured_s: np.ndarray  # per group
    end_to_end_s: float
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def kinds(self) -> list[str]:
        return [lay.kind.value for lay in self.layers]


def _model_of(path: Path, meta: dict[str, str]) -> nx.DiGraph:
    from deepx_sim.model import load_model
    from deepx_sim.model.onnx import parse_input_shape

    model = meta.get("model")
    if not model:
        raise ProfileError(f"{path}: no '# model: NAME' line above the header; profiles written by "
                           f"deepx-sim profile name their model")
    if model.lower().endswith(".onnx") and not Path(model).is_absolute() and not Path(model).is_file():
        model = str(path.parent / model)
    shapes = dict(parse_input_shape(v) for v in meta.get("input_shape", "").split())
    if is_net_name(model):
        with tempfile.TemporaryDirectory(prefix="deepx_calibrate_") as tmp:
            return load_model(write_net(model, tmp), shapes)
    return load_model(model, shapes)


def load_measured(path: str | Path, platform: Platform, processor: str) -> Measured:
    """Read a profile written by ``deepx-sim profile`` for calibrating ``processor``.

    Raises ProfileError for unknown layers or processors, rows of another
    processor, times that are not > 0, or a missing model line.
    """
    path = Path(path)
    meta = read_profile_meta(path)
    graph = _model_of(path, meta)
    entries = load_profile(path, graph, platform, zero_latency_ok=False)  # a fit of log times
    proc = platform.processor(processor)
    others = sorted({p for _, p in entries} - {processor})
    if others:
        raise ProfileError(f"{path}: rows name processor(s) {others}; this calibration fits "
                           f"--processor {processor!r}")
    layers = [lay for lay in layers_in_order(graph) if lay.kind != LayerKind.INPUT]
    index = {lay.name: i for i, lay in enumerate(layers)}
    costs = CostModel(graph, platform)
    compute, memory = np.array([costs.peak_work_s(lay, proc, FULL) for lay in layers]).reshape(-1, 2).T
    dims = np.array([lay.gemm_dims or (np.nan,) * 3 for lay in layers], dtype=float).reshape(-1, 3)
    plane = np.array([lay.plane_size or np.nan for lay in layers], dtype=float)
    grouped: dict[str, list[str]] = {}
    for (name, _), entry in entries.items():
        grouped.setdefault(entry.group or name, []).append(name)
    # a kernel of free layers only (a Flatten) costs 0 by definition: it counts in the end-to-end time only
    kept = [names for names in grouped.values()
            if any(n in index and layers[index[n]].kind not in FREE_KINDS for n in names)]
    groups = [np.array([index[n] for n in names if n in index]) for names in kept]
    measured = np.array([sum(entries[(n, processor)].latency_s for n in names) for names in kept])
    e2e = float(meta.get("end_to_end_s") or measured.sum())
    return Measured(str(graph.graph.get("name")), str(path), graph, layers, compute, memory, dims, plane,
                    groups, measured, e2e, meta)


def loop_factors(gemm_dims: np.ndarray, gemm_half: Sequence[float], plane: np.ndarray,
                 plane_half: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per layer, the share of its compute efficiency its matrix products keep, and the
    share of both efficiencies its channel planes keep (:func:`loop_share`; 1 where NaN
    says it has none, or the half size is 0).  ``plane_half`` is per layer."""
    gemm = np.ones(len(gemm_dims))
    products = ~np.isnan(gemm_dims[:, 0])
    if any(gemm_half):
        gemm[products] = loop_share(gemm_dims[products], gemm_half)
    planes = np.ones(len(plane))
    looped = ~np.isnan(plane) & (plane_half > 0)
    planes[looped] = loop_share(plane[looped, None], plane_half[looped, None])
    return gemm, planes


def roofline_s(compute_s: np.ndarray, memory_s: np.ndarray, efficiency: np.ndarray, memory_efficiency: float,
               overhead_s: float, shares: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The cost model's layer time (:meth:`CostModel.analytic_busy_s`) over many layers at
    once, from their times at efficiency 1 and the :func:`loop_factors` ``shares``."""
    gemm, planes = shares
    return np.maximum(compute_s / (efficiency * gemm * planes), memory_s / (memory_efficiency * planes)) \
        + overhead_s


# ------------------------------------------------------------------ the model

@dataclass(frozen=True)
class Params:
    """The fitted (or estimated) numbers of one processor."""

    efficiency: dict[str, float]
    memory_efficiency: float
    launch_overhead_s: float
    gemm_half_size: tuple[float, float, float] = (0.0, 0.0, 0.0)  # rows, depth, columns
    plane_half_size: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, proc: Processor) -> Params:
        return cls(dict(proc.efficiency), proc.memory_efficiency, proc.launch_overhead_s,
                   proc.gemm_half_size.as_tuple(), dict(proc.plane_half_size))

    def efficiency_for(self, kind: str) -> float:
        return self.efficiency.get(kind, self.efficiency["default"])

    def layer_s(self, m: Measured) -> np.ndarray:
        """Predicted busy seconds of every layer of ``m`` (free layers: 0)."""
        shares = loop_factors(m.gemm_dims, self.gemm_half_size, m.plane,
                              np.array([self.plane_half_size.get(k, 0.0) for k in m.kinds]))
        busy = roofline_s(m.compute_s, m.memory_s, np.array([self.efficiency_for(k) for k in m.kinds]),
                          self.memory_efficiency, self.launch_overhead_s, shares)
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


@dataclass
class _Stack:
    """Every layer of every model in flat arrays, so one residual evaluation is a few
    numpy calls however many models there are.  The parameters ``theta`` are the logs of
    the fitted kinds' efficiencies, the memory efficiency, the launch overhead, with
    ``fit_gemm`` the three matrix half sizes, and the half sizes of ``plane_kinds``."""

    kinds: list[str]
    kind_of: np.ndarray  # per layer: index into kinds, -1 where the efficiency stays fixed
    fixed_eff: np.ndarray
    compute_s: np.ndarray
    memory_s: np.ndarray
    gemm_dims: np.ndarray
    plane: np.ndarray
    paid: np.ndarray  # 1 for a layer that runs a kernel, 0 for a free one
    group_of: np.ndarray  # per layer: its measured group, -1 if it is in none
    model_of: np.ndarray
    measured_s: np.ndarray  # per group
    end_to_end_s: np.ndarray  # per model
    model_weight: np.ndarray  # sqrt(groups of the model): as heavy as all its layers
    prior: Params
    fit_gemm: bool
    plane_kinds: list[str]  # the kinds whose plane half size is fitted
    plane_kind_of: np.ndarray  # per layer: index into plane_kinds, -1 where it stays the prior's
    fixed_plane_half: np.ndarray  # per layer: the prior's plane half size

    @classmethod
    def of(cls, models: Sequence[Measured], kinds: list[str], prior: Params) -> _Stack:
        kind_of, fixed, group_of, model_of, offset = [], [], [], [], 0
        for j, m in enumerate(models):
            member = np.full(len(m.layers), -1)
            for k, g in enumerate(m.groups):
                member[g] = offset + k
            offset += len(m.groups)
            group_of.append(member)
            model_of.append(np.full(len(m.layers), j))
            kind_of += [kinds.index(k) if k in kinds else -1 for k in m.kinds]
            fixed += [prior.efficiency_for(k) for k in m.kinds]
        cat = np.concatenate
        every = [k for m in models for k in m.kinds]
        planes = [k for k in PLANE_KINDS if k in kinds]
        return cls(kinds, np.array(kind_of), np.array(fixed), cat([m.compute_s for m in models]),
                   cat([m.memory_s for m in models]), cat([m.gemm_dims for m in models]),
                   cat([m.plane for m in models]),
                   cat([[0.0 if lay.kind in FREE_KINDS else 1.0 for lay in m.layers] for m in models]),
                   cat(group_of), cat(model_of), cat([m.measured_s for m in models]),
                   np.array([m.end_to_end_s for m in models]),
                   np.sqrt([len(m.groups) for m in models]), prior, LayerKind.CONV.value in kinds, planes,
                   np.array([planes.index(k) if k in planes else -1 for k in every]),
                   np.array([prior.plane_half_size.get(k, 0.0) for k in every]))

    def _halves(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The matrix half sizes and, per layer, its plane half size."""
        at = len(self.kinds) + 2
        gemm = np.exp(theta[at:at + 3]) if self.fit_gemm else np.array(self.prior.gemm_half_size)
        fitted = np.append(np.exp(theta[at + 3 * self.fit_gemm:]), 0.0)  # [-1]: a kind not fitted
        return gemm, np.where(self.plane_kind_of >= 0, fitted[self.plane_kind_of], self.fixed_plane_half)

    def params(self, theta: np.ndarray) -> Params:
        n = len(self.kinds)
        efficiency = {**self.prior.efficiency,
                      **{k: math.exp(t) for k, t in zip(self.kinds, theta, strict=False)}}
        at = n + 2 + 3 * self.fit_gemm

        def snapped(log_half: float) -> float:
            return math.exp(log_half) if math.exp(log_half) > 2 * HALF_SIZE_BOUNDS[0] else 0.0

        gemm = tuple(snapped(t) for t in theta[n + 2:at]) if self.fit_gemm else self.prior.gemm_half_size
        plane = {**self.prior.plane_half_size, **{k: snapped(t) for k, t in zip(self.plane_kinds, theta[at:],
                                                                               strict=True)}}
        return Params(efficiency, math.exp(theta[n]), math.exp(theta[n + 1]), gemm, plane)  # type: ignore[arg-type]

    def residuals(self, theta: np.ndarray, prior_theta: np.ndarray) -> np.ndarray:
        n = len(self.kinds)
        gemm_half, plane_half = self._halves(theta)
        eff = np.where(self.kind_of >= 0, np.exp(theta[:n])[self.kind_of], self.fixed_eff)
        layer_s = self.paid * roofline_s(self.compute_s, self.memory_s, eff, math.exp(theta[n]),
                                         math.exp(theta[n + 1]),
                                         loop_factors(self.gemm_dims, gemm_half, self.plane, plane_half))
        inside = self.group_of >= 0
        groups = np.bincount(self.group_of[inside], layer_s[inside], minlength=len(self.measured_s))
        models = np.bincount(self.model_of, layer_s, minlength=len(self.end_to_end_s))
        return np.concatenate([
            np.log(np.maximum(groups, 1e-12) / self.measured_s),
            self.model_weight * np.log(np.maximum(models, 1e-12) / self.end_to_end_s),
            PRIOR_WEIGHT * (theta[:n] - prior_theta)])


def fit_params(models: Sequence[Measured], prior: Params, min_layers: int = MIN_LAYERS_PER_KIND,
               strict: bool = True) -> tuple[Params, list[str]]:
    """Least-squares fit of the kinds' efficiencies, memory efficiency, overhead and the
    half sizes of the fitted kinds' loops (convolutions' matrix products, PLANE_KINDS)."""
    from scipy.optimize import least_squares

    if not models:
        raise CostError("no profiles to calibrate on")
    kinds = kinds_to_fit(models, min_layers, strict)
    stack = _Stack.of(models, kinds, prior)
    prior_theta = np.log([prior.efficiency_for(k) for k in kinds])
    overhead = math.log(min(max(prior.launch_overhead_s, 1e-6), 1e-3))
    halves = [*(prior.gemm_half_size if stack.fit_gemm else ()),
              *(prior.plane_half_size.get(k, 0.0) for k in stack.plane_kinds)]
    log_half = np.log(np.clip([h or 10.0 for h in halves], *HALF_SIZE_BOUNDS))
    half_low, half_high = np.log(HALF_SIZE_BOUNDS)
    fitted = len(kinds) + 1  # the kinds' and the memory efficiency
    low = [math.log(EFFICIENCY_FLOOR)] * fitted + [math.log(OVERHEAD_BOUNDS_S[0])] + [half_low] * len(halves)
    high = [0.0] * fitted + [math.log(OVERHEAD_BOUNDS_S[1])] + [half_high] * len(halves)
    # the roofline's max() is flat in a kind's efficiency while the kind is memory-bound,
    # so start also from everything compute-bound and from the middle
    starts = [np.clip([*prior_theta, math.log(prior.memory_efficiency), overhead, *log_half], low, high)]
    for eff, mem in ((0.3, 0.3), (0.01, 1.0)):
        starts.append(np.array([math.log(eff)] * len(kinds) + [math.log(mem), overhead, *log_half]))
    best = min((least_squares(stack.residuals, x0, bounds=(low, high), method="trf", args=(prior_theta,),
                              ftol=1e-12, xtol=1e-12, gtol=1e-12, max_nfev=500)
                for x0 in starts), key=lambda result: result.cost)
    return stack.params(best.x), kinds


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
    factors = predictor.factors(m.layers, producers_of(m.graph))
    return params.layer_s(m) * np.array([factors[lay.name] for lay in m.layers])


def train_predictor(models: Sequence[Measured], params: Params, processor: str,
                    min_samples: int = MIN_SAMPLES, seed: int = 0) -> LatencyPredictor:
    """Forests on log(measured / fitted roofline) of layers measured alone (not fused)."""
    kinds, rows, ratios = [], [], []
    for m in models:
        predicted = params.layer_s(m)
        features = context_features(m.layers, producers_of(m.graph))
        for g, measured in zip(m.groups, m.measured_s, strict=True):
            if len(g) == 1 and predicted[g[0]] > 0:
                kinds.append(m.layers[g[0]].kind.value)
                rows.append(features[m.layers[g[0]].name])
                ratios.append(math.log(measured / predicted[g[0]]))
    return fit_predictor(processor, kinds, rows, ratios, min_samples, seed)


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


# ------------------------------------------------------------------ the whole calibration

@dataclass
class CalibrationResult:
    processor: str
    prior: Params
    params: Params
    kinds: list[str]  # the kinds whose efficiency was fitted
    counts: dict[str, int]  # measured layers per kind
    predictor: LatencyPredictor | None
    cv_groups: list[GroupRow]
    cv_models: list[ModelRow]
    models: list[Measured]
    provenance: dict[str, object]

    @property
    def errors(self) -> dict[str, ErrorSummary]:
        return summaries(self.cv_groups, self.cv_models)


def _same_setting(models: Sequence[Measured]) -> dict[str, str]:
    """The profiles' common measurement setting; CostError if they mix settings."""
    setting = {}
    for key in ("threads", "optimization", "clock", "cpu_model", "host", "onnxruntime"):
        values = sorted({m.meta.get(key, "") for m in models})
        if len(values) > 1 and key in ("threads", "optimization", "clock"):
            raise CostError(f"the profiles mix {key} {values}; calibrate on profiles measured one way "
                            f"({', '.join(f'{m.source}: {m.meta.get(key)!r}' for m in models[:4])} ...)")
        setting[key] = " | ".join(v for v in values if v) or "unknown"
    return setting


def calibrate(paths: Sequence[str | Path], platform: Platform, processor: str,
              min_layers: int = MIN_LAYERS_PER_KIND, predictor: bool = False,
              seed: int = 0) -> CalibrationResult:
    """Fit ``processor`` of ``platform`` to the profiles at ``paths`` and cross-validate.

    Raises ProfileError for a bad profile, CostError for too few layers of a
    kind, mixed measurement settings or fewer than two models.
    """
    proc = platform.processor(processor)
    if proc.is_remote:
        raise CostError(f"processor {processor!r} is a cloud processor; calibrate a local one")
    if min_layers < 1:
        raise CostError(f"--min-layers must be >= 1, got {min_layers}")
    models = [load_measured(p, platform, processor) for p in paths]
    setting = _same_setting(models)
    prior = Params.of(proc)
    params, kinds = fit_params(models, prior, min_layers, strict=True)
    learned = train_predictor(models, params, processor, seed=seed) if predictor else None
    cv_groups, cv_models = cross_validate(models, prior, min_layers, predictor, seed)
    when = sorted(t for m in models for t in m.meta.get("measured_at", "").split(" / ") if t)
    shares = [float(x) for m in models for x in m.meta.get("cpu_share", "").split(" / ") if x]
    # each round's 1-minute load average when it started: how busy the shared machine was
    loads = [float(x.split()[0]) for m in models for x in m.meta.get("load_average_before", "").split(" / ")
             if x.strip() and x.split()[0].replace(".", "", 1).isdigit()]
    provenance: dict[str, object] = {
        "measured_at": f"{when[0]} .. {when[-1]}" if when else "unknown",
        "method": (f"deepx-sim calibrate: least squares on log latency of "
                   f"{sum(len(m.groups) for m in models)} measured kernels of {len(models)} models "
                   f"(efficiency per layer kind, memory efficiency, launch overhead, half sizes of "
                   f"convolutions' matrix products and of {', '.join(PLANE_KINDS)} planes)"
                   + ("; learned per-kind correction (random forests on the layer's shape, the bytes the "
                      "kernel before it moved, how long ago its inputs were written)" if predictor else "")),
        "host": setting["host"], "cpu_model": setting["cpu_model"],
        "profiler": (f"onnxruntime {setting['onnxruntime']}, {setting['threads']} thread(s), graph "
                     f"optimisation {setting['optimization']}; {setting['clock']}"),
        "cpu_share": f"{min(shares):.2f} .. {max(shares):.2f}" if shares else "unknown",
        "load_average": (f"{min(loads):.2f} .. {max(loads):.2f} (median {float(np.median(loads)):.2f}; "
                         f"1-minute, when each profiling round started)") if loads else "unknown",
        "steal": _steal_text(models),
        "statistic": " | ".join(sorted({m.meta.get("statistic", "q50: the median of the runs' times")
                                        for m in models})),
        "energy": " | ".join(sorted({m.meta.get("energy", "") for m in models} - {""})) or "unknown",
        "profiles": [f"{m.name}: {m.source}" for m in models],
        "fitted_kinds": {k: kind_counts(models)[k] for k in kinds},
    }
    result = CalibrationResult(processor, prior, params, kinds, kind_counts(models), learned,
                               cv_groups, cv_models, models, provenance)
    provenance["leave_one_model_out"] = {k: v.text() for k, v in result.errors.items()}
    return result


def _steal_text(models: Sequence[Measured]) -> str:
    """The hypervisor's steal time over the profiles' rounds, as the calibration records it."""
    steal = [float(x) for m in models for x in m.meta.get("steal_share", "").split(" / ")
             if x.strip().replace(".", "", 1).isdigit()]
    if not steal:
        return "not recorded (profiles from before steal time was read)"
    return (f"median {float(np.median(steal)):.2%}, max {max(steal):.2%} of the machine's CPU time "
            f"(/proc/stat) during a profiling round")


def _significant(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def write_calibrated(result: CalibrationResult, platform: Platform, out: str | Path) -> Path:
    """Write ``platform`` with the calibrated processor as YAML at ``out`` (and the
    predictor beside it); returns the path.  The file loads with load_platform."""
    import yaml

    from deepx_sim.platform import load_platform

    out = Path(out)
    if out.suffix not in (".yaml", ".yml"):
        raise CostError(f"-o {out}: a platform is written as .yaml, got {out.suffix!r}")
    raw = yaml.safe_load(Path(platform.path).read_text()) if platform.path else platform.model_dump()
    raw.pop("path", None)
    entry = next((p for p in raw.get("processors", []) if p.get("name") == result.processor), None)
    if entry is None:
        raise CostError(f"processor {result.processor!r} is not in {platform.path}'s own processors list")
    remote = raw.get("remote")
    if remote and not (out.parent / "remote" / f"{remote}.yaml").is_file():
        # out of reach of the output's folder: copy the remote processors and links in
        raw.pop("remote")
        local = {p.get("name") for p in raw["processors"]}
        raw["processors"] += [p.model_dump(mode="json", exclude_none=True) for p in platform.processors
                              if p.name not in local]
        raw["links"] = [lk.model_dump(mode="json") for lk in platform.links]
    params = result.params
    calibration = {"calibrated_at": _now(), **result.provenance}
    if result.predictor is not None:
        calibration["predictor"] = result.predictor.save(out.with_name(f"{out.stem}.predictor.joblib")).name
    entry.update(
        efficiency={k: _significant(v) for k, v in sorted(params.efficiency.items())},
        memory_efficiency=_significant(params.memory_efficiency),
        launch_overhead_ms=_significant(params.launch_overhead_s * 1000),
        gemm_half_size=dict(zip(("rows", "depth", "columns"), map(_significant, params.gemm_half_size),
                                strict=True)),
        plane_half_size={k: _significant(v) for k, v in sorted(params.plane_half_size.items())},
        calibration=calibration)
    if out.stem.replace("-", "_").replace("_", "a").isalnum():
        raw["name"] = out.stem
    raw["description"] = f"{raw.get('description', '')}; {result.processor} calibrated on measured profiles"
    source = Path(platform.path).name or "the input platform"
    header = (f"# Calibrated by deepx-sim calibrate from measured profiles: processor {result.processor}'s\n"
              f"# efficiency, memory_efficiency, launch_overhead_ms, gemm_half_size and plane_half_size are\n"
              f"# fitted (see its calibration block for how and when); every other number is from\n"
              f"# {source}.\n")
    try:
        out.write_text(header + yaml.safe_dump(raw, sort_keys=False, width=110))
    except OSError as exc:
        raise CostError(f"-o {out}: cannot write: {exc.strerror}") from None
    load_platform(out)
    return out


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
