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
a ReLU of the same shape) and number of inputs (a Concat copies each).

Saved with joblib (a pickle: load only files you made) beside the calibrated
platform YAML, which names it in ``processors[i].calibration.predictor``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from deepx_sim.errors import PlatformError
from deepx_sim.model.layers import NO_KERNEL_KINDS, Layer, tensor_bytes

FORMAT_VERSION = 2
FEATURES = ("log_flops", "log_input_bytes", "log_output_bytes", "log_param_bytes", "log_intensity",
            "kernel", "stride", "log_c_in", "log_c_out", "log_groups", "log_out_hw", "inputs", "operator",
            "log_previous_param_bytes", "log_previous_bytes")
MIN_SAMPLES = 20  # a forest on fewer layers memorises them
#: operators that share a layer kind but not a kernel; 0 for any other
OPERATORS = ("Relu", "Clip", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu",
             "Selu", "Softplus", "Gelu", "Erf", "Add", "Sub", "Mul", "Div", "Sum", "MaxPool", "AveragePool",
             "GlobalAveragePool", "GlobalMaxPool")


def context_features(layers: Sequence[Layer]) -> dict[str, list[float]]:
    """Features of every layer of a model, ``layers`` in execution order: its own
    (:func:`features`) and those of the kernel that ran just before it."""
    out: dict[str, list[float]] = {}
    previous: Layer | None = None
    for layer in layers:
        out[layer.name] = features(layer, previous)
        if layer.kind not in NO_KERNEL_KINDS:
            previous = layer
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

    def factors(self, layers: Sequence[Layer]) -> dict[str, float]:
        """Multiplier on the roofline busy time of each layer, ``layers`` being a model's in
        execution order (1 for a kind without a forest); one forest call per kind, since a
        call costs milliseconds whatever its size."""
        out = dict.fromkeys((lay.name for lay in layers), 1.0)
        rows = context_features(layers)
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
