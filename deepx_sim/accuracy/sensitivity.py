"""Per-layer sensitivity curves measured by running the model on a source's inputs.

For each weighted layer alone (AIMET's per-layer compression search), the loss
of each setting of a knob: the SVD ``rank`` of an fc layer, Tai et al.'s ``K``
of a separable d x d convolution, and the weight precision ``bits`` (16, 8) of
any fc or conv layer.  Ranks are the fine geometric ladder below the
break-even rank plus the planner's candidate ranks.

A setting changes no structure: the rank-k approximation (model/lowrank.py) is
put in place of the layer's weight in a copy of the weight store, and only the
layers after it run again, from the tensors live at that point of one baseline
pass.  An fc layer's rank-k output is computed in factored form,
(x V_k^T)(U_k S_k)^T, which equals x W_k^T at a fraction of the work.

Profiles are cached on disk (deepx_sim/cache.py) by a hash of the weights, the
inputs, the labels and the ladder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
from threadpoolctl import threadpool_limits

from deepx_sim.accuracy.estimate import RANK_FRACTIONS, geometric_fractions, rank_ladder
from deepx_sim.accuracy.sources import Reference, Source, reference
from deepx_sim.cache import array_digest, cached
from deepx_sim.errors import ModelError
from deepx_sim.model.execute import run_layer
from deepx_sim.model.layers import Layer, LayerKind, break_even_rank, get_layer, layers_in_order
from deepx_sim.model.lowrank import recompose_conv, separate_conv, svd_factors
from deepx_sim.model.weights import WeightStore, as_stored, require_weights

#: Points of the geometric rank ladder a curve measures, besides the planner's ranks.
PROFILE_POINTS = 16
#: Weight precisions a curve measures (32 is the original).
PROFILE_BITS = (16, 8)
#: A profile costing more multiply-accumulates than this is not measured: about a
#: minute of numpy on one core of this project's 2-core machine (a stated limit).
MAX_PROFILE_MACS = 6e11
#: Per-layer loss levels at which combinations of ranks are measured (Profile.joint).
JOINT_LEVELS = (0.0025, 0.005, 0.01, 0.02, 0.04)
_VERSION = 2


@dataclass(frozen=True)
class Curve:
    """Measured loss of one layer against one knob's settings (ascending); the
    last point is the original (full rank, 32 bits) at loss 0."""

    layer: str
    knob: str  # "rank", "K" or "bits"
    settings: np.ndarray
    loss: np.ndarray
    output_error: np.ndarray

    def envelope(self) -> np.ndarray:
        """Conservative monotone curve: a setting costs at least what any larger one
        was measured to cost, and never less than 0 (noise can measure a gain)."""
        return np.clip(np.maximum.accumulate(self.loss[::-1])[::-1], 0.0, None)

    def at(self, setting: int) -> float:
        """The envelope at ``setting``, linear between measured settings."""
        return float(np.interp(setting, self.settings, self.envelope()))


@dataclass(frozen=True)
class Profile:
    """A model's measured curves on one source (``source`` says which, ``unit`` in what),
    and ``joint``: (sum of the curves' losses, measured loss) of rank combinations."""

    source: str
    unit: str
    curves: dict[tuple[str, str], Curve]
    macs: float
    joint: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))

    @property
    def interaction(self) -> float:
        """How much more a combination of ranks loses than its layers' losses added up:
        the least-squares factor through the origin over :attr:`joint`, never below 1
        (the sum stays the floor: interactions only add)."""
        sums, measured = self.joint[:, 0], self.joint[:, 1]
        if not len(sums) or not (sums**2).sum():
            return 1.0
        return max(1.0, float((sums * measured).sum() / (sums**2).sum()))

    def curve(self, layer: str, knob: str) -> Curve | None:
        return self.curves.get((layer, knob))

    def layers(self) -> list[str]:
        return sorted({layer for layer, _ in self.curves})


def separable(lay: Layer) -> bool:
    """A conv convolution separation applies to: square d x d (d > 1), ungrouped, undilated."""
    c = lay.conv
    return (
        c is not None
        and lay.kind == LayerKind.CONV
        and c.groups == 1
        and c.dilation == (1, 1)
        and c.kernel[0] == c.kernel[1] > 1
    )


def rank_knob(lay: Layer) -> tuple[str, float, int] | None:
    """(knob, break-even, full rank) of a layer whose rank can be lowered, else None."""
    if lay.fc is not None:
        return "rank", lay.fc.break_even_rank, min(lay.fc.m, lay.fc.n)
    c = lay.conv
    if c is not None and separable(lay):
        return "K", break_even_rank(c.c_in * c.kernel[0], c.c_out * c.kernel[1]), \
            min(c.c_in * c.kernel[0], c.c_out * c.kernel[1])
    return None


def settings_for(lay: Layer, points: int = PROFILE_POINTS) -> dict[str, list[int]]:
    """Knob -> settings a profile measures for ``lay`` (lowest first)."""
    out: dict[str, list[int]] = {}
    knob = rank_knob(lay)
    if knob is not None:
        name, be, full = knob
        ranks = set(rank_ladder(be, full, geometric_fractions(be, points))) | set(rank_ladder(be, full,
                                                                                          RANK_FRACTIONS))
        if ranks:
            out[name] = sorted(ranks)
    out["bits"] = sorted(PROFILE_BITS)
    return out


def profiled_layers(graph: nx.DiGraph) -> list[Layer]:
    """The fc and conv layers with weights (not stored sparse) a profile measures."""
    store = require_weights(graph, "measuring accuracy")
    kinds = (LayerKind.FC, LayerKind.CONV, LayerKind.DEPTHWISE_CONV)
    return [lay for lay in layers_in_order(graph)
            if lay.kind in kinds and store.has(lay.name) and not store.storage(lay.name).sparse]


def profile_macs(graph: nx.DiGraph, rows: int, points: int = PROFILE_POINTS) -> float:
    """Multiply-accumulates a profile on ``rows`` inputs costs: per setting, the layer
    and every layer after it, once per row."""
    layers = layers_in_order(graph)
    per_row = [lay.macs / max(1, lay.output_shape[0]) for lay in layers]
    after = np.cumsum(per_row[::-1])[::-1]
    position = {lay.name: i for i, lay in enumerate(layers)}
    runs = sum(len(s) * after[position[lay.name]] for lay in profiled_layers(graph)
               for s in settings_for(lay, points).values())
    return float(runs * rows)


def one_blas_thread() -> threadpool_limits:
    """A context running BLAS/LAPACK on one thread, for SVDs: OpenBLAS's threaded SVD is
    10-25x slower than one thread when the cores are shared (measured 23 s against
    0.9 s for 1000 x 1000 on this project's 2-core machine under load)."""
    return threadpool_limits(1, user_api="blas")


def _svd_full(fn, w: np.ndarray, full: int):  # type: ignore[no-untyped-def]
    with one_blas_thread():
        return fn(w, full)


def factors(lay: Layer, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every rank component of ``lay``'s weight ``w``, strongest first (cached on disk):
    fc (V (r x n), U S (m x r)); separable conv Tai's (vertical, horizontal) filters."""
    knob = rank_knob(lay)
    assert knob is not None
    fn = svd_factors if knob[0] == "rank" else separate_conv
    arrays = cached("lowrank", key_of(_VERSION, knob[0], w),
                    lambda: dict(zip(("a", "b"), _svd_full(fn, w, knob[2]), strict=True)))
    return arrays["a"], arrays["b"]


def low_rank(knob: str, first: np.ndarray, second: np.ndarray, k: int) -> np.ndarray:
    """The rank-``k`` weight from :func:`factors`' arrays (optimal in Frobenius norm)."""
    if knob == "rank":
        return second[:, :k] @ first[:k]
    return recompose_conv(first[:k], second[:, :k])


def component_norms(knob: str, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The singular values behind :func:`factors`' components."""
    if knob == "rank":
        return np.linalg.norm(second, axis=0)
    return np.linalg.norm(first.reshape(len(first), -1), axis=1) * np.linalg.norm(
        second.transpose(1, 0, 2, 3).reshape(second.shape[1], -1), axis=1)


def _variants(graph: nx.DiGraph, lay: Layer, knob: str, settings: list[int], values: dict[str, np.ndarray],
              store: WeightStore) -> Iterator[np.ndarray]:
    """``lay``'s output at each setting of ``knob``, computed from the live ``values``."""
    w = store.get(lay.name)
    if knob == "rank":
        v, us = factors(lay, w)
        x = values[next(iter(graph.predecessors(lay.name)))]
        bias = store.get(lay.name, "bias") if store.has(lay.name, "bias") else None
        for k in settings:
            y = (x @ v[:k].T) @ us[:, :k].T
            yield y if bias is None else y + bias
        return
    if knob == "K":
        vertical, horizontal = factors(lay, w)
    for setting in settings:
        changed = store.copy()
        if knob == "K":
            changed.set(lay.name, "weight", low_rank(knob, vertical, horizontal, setting))
        else:
            changed.set(lay.name, "weight", *as_stored(w, setting))
        yield run_layer(graph, lay, values, changed)


def run_tail(graph: nx.DiGraph, layers: list[Layer], start: int, values: dict[str, np.ndarray],
             store: WeightStore) -> np.ndarray:
    """The last layer's output when ``layers[start:]`` run from the live ``values``."""
    position = {lay.name: i for i, lay in enumerate(layers)}
    live = dict(values)
    left = {name: sum(1 for s in graph.successors(name) if position[s] >= start) for name in live}
    for lay in layers[start:]:
        out = run_layer(graph, lay, live, store)
        for p in graph.predecessors(lay.name):
            left[p] -= 1
            if left[p] == 0:
                del live[p]
        live[lay.name], left[lay.name] = out, graph.out_degree(lay.name)
    return live[layers[-1].name]


def _measure(graph: nx.DiGraph, ref: Reference, points: int) -> dict[str, np.ndarray]:
    """One baseline pass; at each profiled layer, every setting re-runs the rest."""
    store = require_weights(graph, "measuring accuracy")
    layers = layers_in_order(graph)
    wanted = {lay.name for lay in profiled_layers(graph)}
    live: dict[str, np.ndarray] = {}
    left: dict[str, int] = {}
    arrays: dict[str, np.ndarray] = {}
    names: list[str] = []
    for i, lay in enumerate(layers):
        out = ref.source.x if lay.kind == LayerKind.INPUT else run_layer(graph, lay, live, store)
        if lay.name in wanted:
            for knob, settings in settings_for(lay, points).items():
                scores = []
                for changed in _variants(graph, lay, knob, settings, live, store):
                    final = changed if i == len(layers) - 1 else run_tail(
                        graph, layers, i + 1, {**live, lay.name: changed}, store)
                    scores.append(ref.score(final))
                j = len(names)
                names.append(f"{lay.name}\t{knob}")
                full = 32 if knob == "bits" else (rank_knob(lay) or ("", 0, 0))[2]
                arrays[f"s{j}"] = np.array([*settings, full], dtype=np.int64)
                arrays[f"l{j}"] = np.array([s.loss for s in scores] + [0.0])
                arrays[f"e{j}"] = np.array([s.output_error for s in scores] + [0.0])
        for p in graph.predecessors(lay.name):
            left[p] -= 1
            if left[p] == 0:
                del live[p]
        live[lay.name], left[lay.name] = out, graph.out_degree(lay.name)
    arrays["names"] = np.array(names, dtype=str)
    arrays["joint"] = _joint(graph, ref, arrays)
    return arrays


def substituted(graph: nx.DiGraph, choice: dict[str, int], bits: dict[str, int] | None = None) -> nx.DiGraph:
    """``graph`` with each chosen layer's weight replaced by its rank-k version and stored at
    ``bits`` where given (a factorised layer's two factors each, as the factorised graph
    stores them): what the changed graph computes, without changing the structure."""
    new = graph.copy()
    store = require_weights(graph, "measuring accuracy").copy()
    bits = bits or {}
    for name, k in choice.items():
        lay = get_layer(graph, name)
        knob = rank_knob(lay)
        assert knob is not None
        first, second = factors(lay, store.get(name))
        first, second = first[:k], second[:, :k]
        if bits.get(name, 32) < 32:
            first, second = dequantised(first, bits[name]), dequantised(second, bits[name])
        store.set(name, "weight", low_rank(knob[0], first, second, k))
    for name, b in bits.items():
        if b < 32 and name not in choice:
            store.set(name, "weight", *as_stored(store.get(name), b))
    new.graph["weights"] = store
    return new


def dequantised(values: np.ndarray, bits: int) -> np.ndarray:
    """``values`` as computation sees them once stored at ``bits`` (float32)."""
    stored, storage = as_stored(values, bits)
    if storage.scale is None:
        return stored.astype(np.float32)
    return stored.astype(np.float32) * storage.scale.reshape((-1,) + (1,) * (values.ndim - 1))


def _joint(graph: nx.DiGraph, ref: Reference, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """(sum of curve losses, measured loss) for combinations of every rank layer at the
    lowest rank whose curve loss stays within each of JOINT_LEVELS."""
    curves = [(str(name).split("\t")[0], j) for j, name in enumerate(arrays["names"])
              if not str(name).endswith("\tbits")]
    points = []
    for level in JOINT_LEVELS:
        choice, total = {}, 0.0
        for layer, j in curves:
            curve = Curve(layer, "", arrays[f"s{j}"], arrays[f"l{j}"], arrays[f"e{j}"])
            within = [(k, loss) for k, loss in zip(curve.settings[:-1], curve.envelope()[:-1], strict=True)
                      if loss <= level]
            if within:
                choice[layer], loss = int(within[0][0]), within[0][1]
                total += float(loss)
        if len(choice) >= 2 and total > 0:  # an interaction needs two changed layers
            points.append((total, ref.score_model(substituted(graph, choice)).loss))
    return np.array(points, dtype=float).reshape(-1, 2)


def key_of(*parts: object) -> str:
    """A cache key for ``parts``: arrays by :func:`array_digest`, anything else by ``repr``."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update((array_digest(part) if isinstance(part, np.ndarray) else repr(part)).encode())
        h.update(b"\0")
    return h.hexdigest()


def _weights_key(graph: nx.DiGraph) -> list[object]:
    """What a profile depends on in the model: layer specs and every stored array."""
    store = require_weights(graph, "measuring accuracy")
    parts: list[object] = []
    for lay in layers_in_order(graph):
        parts.append(repr((lay.name, lay.kind, lay.input_shapes, lay.output_shape, lay.conv, lay.fc,
                           lay.pool, lay.op_type, lay.attrs)))
        for role in store.roles(lay.name):
            parts.extend([role, store.get(lay.name, role)])
    return parts


def check_measurable(graph: nx.DiGraph, rows: int, max_macs: float = MAX_PROFILE_MACS,
                     points: int = PROFILE_POINTS) -> float:
    """A profile's multiply-accumulates on ``rows`` rows; ModelError past ``max_macs``."""
    macs = profile_macs(graph, rows, points)
    if macs > max_macs:
        raise ModelError(
            f"model {graph.graph.get('name')!r}: measuring its sensitivity on {rows} rows would take "
            f"{macs / 1e9:,.0f} G multiply-accumulates, above the limit of {max_macs / 1e9:,.0f} G")
    return macs


def measure_profile(graph: nx.DiGraph, source: Source, points: int = PROFILE_POINTS,
                    max_macs: float = MAX_PROFILE_MACS) -> Profile:
    """The model's per-layer curves on ``source`` (cached).  Raises ModelError when the
    profile would cost more than ``max_macs`` multiply-accumulates."""
    macs = check_measurable(graph, source.rows, max_macs, points)
    key = [_VERSION, points, PROFILE_BITS, RANK_FRACTIONS, source.kind, source.x,
           source.y if source.y is not None else "no labels", *_weights_key(graph)]
    arrays = cached("sensitivity", key_of(*key), lambda: _measure(graph, reference(graph, source), points))
    curves = {}
    for j, name in enumerate(str(n) for n in arrays["names"]):
        layer, knob = name.split("\t")
        curves[(layer, knob)] = Curve(layer, knob, arrays[f"s{j}"], arrays[f"l{j}"], arrays[f"e{j}"])
    return Profile(source.describe(), source.unit, curves, macs, arrays["joint"])
