"""A learned per-kind latency correction, in the manner of nn-Meter (Zhang et al.,
MobiSys 2021): a random forest per layer kind on shape features.

It does not replace the roofline; it corrects it.  Per kind, a forest predicts
``log(measured / roofline)`` from the layer's FLOPs, bytes, kernel, stride,
channels and groups, so the roofline carries the scale (and extrapolates to
larger layers) while the forest learns how far each shape falls from it.  A
kind with fewer than ``min_samples`` measured layers gets no forest (factor 1).

Shape alone does not decide a memory-bound kernel's time: the same BatchNorm
shape ran up to 1.4x apart in different CNNs here (the median over shapes seen
in three or more; experiments/README.md).  Its input was written by the
kernel before it, and how much of it is still in cache depends on how much that
kernel moved (a convolution streaming a megabyte of weights evicts it).  So the
features also carry the previous kernel's parameter bytes and its whole working
set, in execution order, and the layer's operator (ReLU6 is a Clip, slower than
a ReLU of the same shape) and number of inputs (a Concat copies each).  With the
graph's producer links (:func:`producers_of`) they also say how long ago each
input was written: ``log_reuse_bytes``, the bytes every kernel moved between the
producer of the oldest input and this layer (its reuse distance; 0 when the kernel
just before wrote it), and ``fresh_share``, the share of the input bytes the kernel
just before wrote (a SqueezeNet Concat reads one input just written and one
written two kernels earlier; a DenseNet Concat mostly old features).

Saved with joblib (a pickle: load only files you made) beside the calibrated
platform YAML, which names it in ``processors[i].calibration.predictor``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from deepx_sim.errors import PlatformError
from deepx_sim.model.layers import NO_KERNEL_KINDS, Layer, get_layer, tensor_bytes

FORMAT_VERSION = 3
FEATURES = ("log_flops", "log_input_bytes", "log_output_bytes", "log_param_bytes", "log_intensity",
            "kernel", "stride", "log_c_in", "log_c_out", "log_groups", "log_out_hw", "inputs", "operator",
            "log_previous_param_bytes", "log_previous_bytes", "log_reuse_bytes", "fresh_share")
MIN_SAMPLES = 20  # a forest on fewer layers memorises them
#: operators that share a layer kind but not a kernel; 0 for any other
OPERATORS = ("Relu", "Clip", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu",
             "Selu", "Softplus", "Gelu", "Erf", "Add", "Sub", "Mul", "Div", "Sum", "MaxPool", "AveragePool",
             "GlobalAveragePool", "GlobalMaxPool")


def producers_of(graph: nx.DiGraph) -> dict[str, tuple[str, ...]]:
    """Per layer, the layers whose kernels wrote its inputs: its graph predecessors, each
    followed back through layers without a kernel (a Flatten passes its input on)."""
    def writers(name: str) -> tuple[str, ...]:
        if get_layer(graph, name).kind not in NO_KERNEL_KINDS or not graph.in_degree(name):
            return (name,)
        return tuple(w for p in graph.predecessors(name) for w in writers(p))

    return {n: tuple(w for p in graph.predecessors(n) for w in writers(p)) for n in graph.nodes}


def _moved_bytes(layer: Layer) -> int:
    """Bytes a kernel reads and writes: inputs, output and parameters (float32)."""
    return tensor_bytes(layer.params + layer.input_elements + layer.output_elements, 32)


def context_features(layers: Sequence[Layer],
                     producers: Mapping[str, Sequence[str]] | None = None) -> dict[str, list[float]]:
    """Features of every layer of a model, ``layers`` in execution order: its own
    (:func:`features`), those of the kernel that ran just before it and, given the
    graph's ``producers`` (:func:`producers_of`; None: each layer reads what the kernel
    just before wrote), how long ago its inputs were written."""
    out: dict[str, list[float]] = {}
    previous: Layer | None = None
    moved_before = [0]  # [j]: bytes moved by the first j kernels
    written: dict[str, tuple[int, int]] = {}  # kernel -> (its position, its output bytes)
    for layer in layers:
        reuse, fresh = 0, 1.0
        if producers is not None and layer.kind not in NO_KERNEL_KINDS:
            sources = {written[w] for w in producers.get(layer.name, ()) if w in written}
            oldest = min((at for at, _ in sources), default=-1)  # -1: a model input, there before the run
            reuse = moved_before[-1] - moved_before[oldest + 1]
            just = sum(size for at, size in sources if at == len(moved_before) - 2)
            fresh = just / max(sum(size for _, size in sources), 1)
        out[layer.name] = [*features(layer, previous), math.log(reuse + 1), fresh]
        if layer.kind not in NO_KERNEL_KINDS:
            previous = layer
            written[layer.name] = (len(moved_before) - 1, tensor_bytes(layer.output_elements, 32))
            moved_before.append(moved_before[-1] + _moved_bytes(layer))
    return out


def features(layer: Layer, previous: Layer | None = None) -> list[float]:
    """The shape features of ``layer`` (float32 activations and weights), and the
    bytes moved by ``previous``, the kernel that ran just before it (None: the first)."""
    flops = max(layer.flops, 1)
    bytes_in = tensor_bytes(layer.input_elements, 32)
    bytes_out = tensor_bytes(layer.output_elements, 32)
    params = tensor_bytes(layer.params, 32)
    spec = layer.conv
    kernel = spec.kernel[0] if spec else (layer.pool.kernel[0] if layer.pool else 0)
    stride = spec.stride[0] if spec else (layer.pool.stride[0] if layer.pool else 0)
    c_in = spec.c_in if spec else (layer.fc.n if layer.fc else _channels(layer.input_shapes))
    c_out = spec.c_out if spec else (layer.fc.m if layer.fc else _channels((layer.output_shape,)))
    out_hw = math.prod(layer.output_shape[2:]) if len(layer.output_shape) > 2 else 1
    operator = OPERATORS.index(layer.op_type) + 1 if layer.op_type in OPERATORS else 0
    before = (0, 0) if previous is None else (
        tensor_bytes(previous.params, 32),
        tensor_bytes(previous.params + previous.input_elements + previous.output_elements, 32))
    log = math.log
    return [log(flops), log(bytes_in + 1), log(bytes_out + 1), log(params + 1),
            log(flops / (bytes_in + bytes_out + params + 1)), float(kernel), float(stride),
            log(c_in + 1), log(c_out + 1), log(spec.groups if spec else 1), log(out_hw),
            float(len(layer.input_shapes)), float(operator), log(before[0] + 1), log(before[1] + 1)]


def _channels(shapes: tuple[tuple[int, ...], ...]) -> int:
    return shapes[0][1] if shapes and len(shapes[0]) > 1 else 1


@dataclass
class LatencyPredictor:
    """Per-kind forests predicting log(measured / roofline)."""

    processor: str
    forests: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)

    def factors(self, layers: Sequence[Layer],
                producers: Mapping[str, Sequence[str]] | None = None) -> dict[str, float]:
        """Multiplier on the roofline busy time of each layer, ``layers`` being a model's in
        execution order and ``producers`` its graph's links (:func:`producers_of`); 1 for a
        kind without a forest.  One forest call per kind: a call costs milliseconds."""
        out = dict.fromkeys((lay.name for lay in layers), 1.0)
        rows = context_features(layers, producers)
        by_kind: dict[str, list[Layer]] = {}
        for lay in layers:
            if lay.kind.value in self.forests:
                by_kind.setdefault(lay.kind.value, []).append(lay)
        for kind, group in by_kind.items():
            predicted = self.forests[kind].predict(np.array([rows[lay.name] for lay in group]))
            out.update(zip((lay.name for lay in group), np.exp(predicted).tolist(), strict=True))
        return out

    def save(self, path: str | Path) -> Path:
        import joblib

        path = Path(path)
        joblib.dump({"version": FORMAT_VERSION, "features": FEATURES, "processor": self.processor,
                     "forests": self.forests, "samples": self.samples}, path, compress=3)
        return path


def fit_predictor(processor: str, kinds: list[str], rows: list[list[float]], log_ratios: list[float],
                  min_samples: int = MIN_SAMPLES, seed: int = 0) -> LatencyPredictor:
    """Fit one forest per kind with at least ``min_samples`` layers; ``rows`` are the
    layers' :func:`context_features`, ``kinds`` their kinds."""
    from sklearn.ensemble import RandomForestRegressor

    predictor = LatencyPredictor(processor)
    by_kind: dict[str, list[int]] = {}
    for i, kind in enumerate(kinds):
        by_kind.setdefault(kind, []).append(i)
    for kind, members in sorted(by_kind.items()):
        if len(members) < min_samples:
            continue
        x = np.array([rows[i] for i in members])
        y = np.array([log_ratios[i] for i in members])
        # 50 trees of depth <= 10: as accurate on held-out CNNs as 100 deep trees or gradient
        # boosting in our comparison, at half a megabyte and a second of training
        forest = RandomForestRegressor(n_estimators=50, max_depth=10, min_samples_leaf=3,
                                       random_state=seed, n_jobs=1)
        predictor.forests[kind] = forest.fit(x, y)
        predictor.samples[kind] = len(members)
    return predictor


@lru_cache(maxsize=16)
def load_predictor(path: str) -> LatencyPredictor:
    """Read a predictor file; PlatformError if it is missing or not one of ours."""
    import joblib

    file = Path(path)
    if not file.is_file():
        raise PlatformError(f"{file}: latency predictor named by the platform file does not exist")
    try:
        data = joblib.load(file)
    except Exception as exc:  # unpickling raises many types
        raise PlatformError(f"{file}: not a readable latency predictor ({exc})") from None
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION or \
            tuple(data.get("features", ())) != FEATURES:
        raise PlatformError(f"{file}: latency predictor format must be version {FORMAT_VERSION} with "
                            f"features {', '.join(FEATURES)}; re-run deepx-sim calibrate --predictor")
    return LatencyPredictor(data["processor"], data["forests"], data["samples"])
