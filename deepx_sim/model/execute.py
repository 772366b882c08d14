"""Run a layer graph with its weights in numpy: the project's accuracy reference.

One function per layer kind (dispatch on :class:`LayerKind`, activations and
element-wise ops on ``op_type``), in float32, on a batch of any size: shapes
after the batch axis come from the graph, whose shapes hold batch 1.
Intermediate tensors are freed once their last consumer has run.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import networkx as nx
import numpy as np

from deepx_sim.errors import ModelError
from deepx_sim.model.layers import Layer, LayerKind, layers_in_order
from deepx_sim.model.weights import WeightStore, require_weights


def im2col(
    x: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pads: tuple[int, int, int, int],
    dilation: tuple[int, int],
    out_hw: tuple[int, int],
    fill: float = 0.0,
) -> np.ndarray:
    """(B, C, H, W) -> (B, C, kh, kw, OH, OW) windows, channel-major like conv weights."""
    b, c, h, w = x.shape
    oh, ow = out_hw
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    # pad enough at the end for every window the output size asks for (ceil mode)
    need_h = max(0, (oh - 1) * sh + (kh - 1) * dh + 1 - (h + pads[0]))
    need_w = max(0, (ow - 1) * sw + (kw - 1) * dw + 1 - (w + pads[1]))
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], need_h), (pads[1], need_w)), constant_values=fill)
    cols = np.empty((b, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i * dh : i * dh + sh * oh : sh, j * dw : j * dw + sw * ow : sw]
    return cols


def conv2d(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    stride: tuple[int, int],
    pads: tuple[int, int, int, int],
    out_hw: tuple[int, int],
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
) -> np.ndarray:
    """Grouped 2-D convolution (cross-correlation, as ONNX and every framework)."""
    n, c_per_group, kh, kw = weight.shape
    b = x.shape[0]
    cols = im2col(x, (kh, kw), stride, pads, dilation, out_hw)
    cols = cols.reshape(b, groups, c_per_group * kh * kw, out_hw[0] * out_hw[1])
    kernels = weight.reshape(groups, n // groups, c_per_group * kh * kw)
    y = np.einsum("gnk,bgkp->bgnp", kernels, cols, optimize=True).reshape(b, n, *out_hw)
    return y if bias is None else y + bias.reshape(1, n, 1, 1)


def _pool(x: np.ndarray, lay: Layer) -> np.ndarray:
    spec = lay.pool
    assert spec is not None
    if spec.global_pool:
        axes = tuple(lay.attr("axes", range(2, x.ndim)))
        reduce = {"max": np.max, "sum": np.sum}.get(spec.mode, np.mean)
        return reduce(x, axis=axes, keepdims=bool(lay.attr("keepdims", 1)))
    out_hw = (lay.output_shape[2], lay.output_shape[3])
    if spec.mode == "max":
        cols = im2col(x, spec.kernel, spec.stride, spec.pads, (1, 1), out_hw, fill=-np.inf)
        return cols.max(axis=(2, 3))
    sums = im2col(x, spec.kernel, spec.stride, spec.pads, (1, 1), out_hw).sum(axis=(2, 3))
    if spec.count_include_pad:
        return sums / (spec.kernel[0] * spec.kernel[1])
    ones = np.ones((1, 1, *x.shape[2:]), dtype=x.dtype)
    counts = im2col(ones, spec.kernel, spec.stride, spec.pads, (1, 1), out_hw).sum(axis=(2, 3))
    return sums / counts


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _erf(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return erf(x).astype(x.dtype)


#: Activations by ONNX op type: (input, layer) -> output.
ACTIVATIONS: dict[str, Callable[[np.ndarray, Layer], np.ndarray]] = {
    "Relu": lambda x, _: np.maximum(x, 0),
    "Relu6": lambda x, _: np.clip(x, 0, 6),
    "Clip": lambda x, lay: np.clip(x, lay.attr("min", -np.inf), lay.attr("max", np.inf)),
    "LeakyRelu": lambda x, lay: np.where(x >= 0, x, x * lay.attr("alpha", 0.01)),
    "Sigmoid": lambda x, _: 1 / (1 + np.exp(-x)),
    "Tanh": lambda x, _: np.tanh(x),
    "HardSigmoid": lambda x, lay: np.clip(lay.attr("alpha", 0.2) * x + lay.attr("beta", 0.5), 0, 1),
    "HardSwish": lambda x, _: x * np.clip(x / 6 + 0.5, 0, 1),
    "Elu": lambda x, lay: np.where(x >= 0, x, lay.attr("alpha", 1.0) * (np.exp(x) - 1)),
    "Softplus": lambda x, _: np.logaddexp(0, x),
    "Softsign": lambda x, _: x / (1 + np.abs(x)),
    "Erf": lambda x, _: _erf(x),
    "Gelu": lambda x, _: 0.5 * x * (1 + _erf(x / np.sqrt(2))),
    "Sqrt": lambda x, _: np.sqrt(x),
    "Exp": lambda x, _: np.exp(x),
    "Log": lambda x, _: np.log(x),
    "Reciprocal": lambda x, _: 1 / x,
    "Neg": lambda x, _: -x,
    "Abs": lambda x, _: np.abs(x),
}

_ELEMENTWISE: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "Add": np.add,
    "Sum": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "Div": np.divide,
}


def _run_layer(lay: Layer, inputs: list[np.ndarray], store: WeightStore) -> np.ndarray:
    kind, x = lay.kind, (inputs[0] if inputs else None)
    assert x is not None
    if kind in (LayerKind.CONV, LayerKind.DEPTHWISE_CONV):
        c = lay.conv
        assert c is not None
        bias = store.get(lay.name, "bias") if c.bias else None
        return conv2d(
            x,
            store.get(lay.name),
            bias,
            c.stride,
            c.pads,
            (lay.output_shape[2], lay.output_shape[3]),
            c.dilation,
            c.groups,
        )
    if kind == LayerKind.FC:
        y = x @ store.get(lay.name).T
        return y + store.get(lay.name, "bias") if store.has(lay.name, "bias") else y
    if kind == LayerKind.POOL:
        return _pool(x, lay)
    if kind == LayerKind.MATMUL:
        return np.matmul(x, inputs[1])
    if kind == LayerKind.EMBEDDING:
        return np.take(store.get(lay.name), x.astype(np.int64), axis=int(lay.attr("axis", 0)))
    if kind == LayerKind.LAYERNORM:
        axis = int(lay.attr("axis", -1))
        axes = tuple(range(axis % x.ndim, x.ndim))
        centred = x - x.mean(axis=axes, keepdims=True)
        normal = centred / np.sqrt((centred**2).mean(axis=axes, keepdims=True) + lay.attr("epsilon", 1e-5))
        out = normal * store.get(lay.name, "scale")
        return out + store.get(lay.name, "bias") if store.has(lay.name, "bias") else out
    if kind == LayerKind.ACTIVATION:
        if lay.op_type not in ACTIVATIONS:
            raise ModelError(
                f"layer {lay.name!r}: activation {lay.op_type!r} cannot be executed; "
                f"known: {', '.join(sorted(ACTIVATIONS))}"
            )
        return ACTIVATIONS[lay.op_type](x, lay).astype(np.float32)
    if kind == LayerKind.BATCHNORM:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        scale = store.get(lay.name, "scale") / np.sqrt(store.get(lay.name, "var") + lay.attr("epsilon", 1e-5))
        shift = store.get(lay.name, "bias") - store.get(lay.name, "mean") * scale
        return x * scale.reshape(shape) + shift.reshape(shape)
    if kind == LayerKind.LRN:
        size, alpha = int(lay.attr("size", 5)), lay.attr("alpha", 1e-4)
        sq = np.pad(x * x, ((0, 0), ((size - 1) // 2, size // 2)) + ((0, 0),) * (x.ndim - 2))
        window = sum(sq[:, i : i + x.shape[1]] for i in range(size))
        return x / (lay.attr("bias", 1.0) + alpha / size * window) ** lay.attr("beta", 0.75)
    if kind == LayerKind.ADD:
        return _elementwise(lay, inputs, store)
    if kind == LayerKind.CONCAT:
        return np.concatenate(inputs, axis=concat_axis(lay))
    if kind == LayerKind.FLATTEN:
        rest = lay.output_shape[1:]
        return (
            x.reshape(x.shape[0], *rest)
            if x.size == x.shape[0] * math.prod(rest)
            else x.reshape(lay.output_shape)
        )
    if kind == LayerKind.DROPOUT:
        return x
    if kind == LayerKind.VIEW:
        return _view(lay, x)
    if kind == LayerKind.SOFTMAX:
        y = _softmax(x, int(lay.attr("axis", -1)))
        return np.log(y) if lay.op_type == "LogSoftmax" else y
    raise ModelError(f"layer {lay.name!r} ({lay.op_type}, kind {kind}) cannot be executed in numpy")


def _view(lay: Layer, x: np.ndarray) -> np.ndarray:
    """Transpose, Slice, Expand and float Cast: data movement, batch axis first and kept."""
    if lay.op_type == "Transpose":
        perm = lay.attr("perm") or tuple(reversed(range(x.ndim)))
        return np.transpose(x, perm)
    if lay.op_type == "Slice":
        index = [slice(None)] * x.ndim
        axes = lay.attr("axes") or tuple(range(len(lay.attr("starts", ()))))
        steps = lay.attr("steps") or (1,) * len(axes)
        for axis, start, end, step in zip(axes, lay.attr("starts"), lay.attr("ends"), steps, strict=True):
            index[axis] = slice(start, end, step)
        return x[tuple(index)]
    if lay.op_type == "Expand":
        return np.broadcast_to(x, (x.shape[0], *lay.output_shape[1:])).copy()
    if lay.op_type == "Cast" and lay.attr("to", 1) == 1:  # to float32
        return x
    if lay.op_type == "Gather" and lay.attr("indices") is not None:
        return np.take(x, np.asarray(lay.attr("indices")), axis=int(lay.attr("axis", 0)))
    raise ModelError(f"layer {lay.name!r} ({lay.op_type}) cannot be executed in numpy")


def _elementwise(lay: Layer, inputs: list[np.ndarray], store: WeightStore) -> np.ndarray:
    if lay.op_type not in _ELEMENTWISE:
        raise ModelError(f"layer {lay.name!r}: element-wise {lay.op_type!r} cannot be executed")
    operands = list(inputs)
    if store.has(lay.name, "constant"):  # x op constant, the constant first where it was
        const = store.get(lay.name, "constant")
        operands.insert(int(lay.attr("constant_position", 1)), const)
    result = operands[0]
    for operand in operands[1:]:
        result = _ELEMENTWISE[lay.op_type](result, operand)
    return result


def concat_axis(lay: Layer) -> int:
    """The axis a concat joins on: where its output differs from its first input."""
    if lay.attr("axis") is not None:
        return int(lay.attr("axis"))
    first = lay.input_shapes[0]
    diff = [i for i, (a, b) in enumerate(zip(first, lay.output_shape, strict=True)) if a != b]
    return diff[0] if diff else 1


def run_layer(graph: nx.DiGraph, lay: Layer, values: dict[str, np.ndarray], store: WeightStore) -> np.ndarray:
    """``lay``'s output from its inputs' outputs in ``values`` (layer name -> array): the
    step :func:`run` repeats, public for partial re-runs (accuracy measurement)."""
    preds = list(graph.predecessors(lay.name))
    args = [values[p] for p in preds]
    if len(preds) == 1 and len(lay.input_shapes) > 1:  # x op x reads one tensor twice
        args = args * len(lay.input_shapes)
    return _run_layer(lay, args, store)


def run(graph: nx.DiGraph, x: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
    """Outputs of the graph's last layer for inputs ``x`` (one array for a
    one-input model, else {input layer: array}); batch size free."""
    store = require_weights(graph, "running the model")
    layers = layers_in_order(graph)
    feeds = x if isinstance(x, dict) else {lay.name: x for lay in layers if lay.kind == LayerKind.INPUT}
    consumers = {lay.name: graph.out_degree(lay.name) for lay in layers}
    values: dict[str, np.ndarray] = {}
    for lay in layers:
        if lay.kind == LayerKind.INPUT:
            if lay.name not in feeds:
                raise ModelError(f"model {graph.graph.get('name')!r}: no array given for input {lay.name!r}")
            out = np.asarray(feeds[lay.name], dtype=np.float32)
            if out.shape[1:] != lay.output_shape[1:]:
                raise ModelError(
                    f"model {graph.graph.get('name')!r} takes input {lay.name!r} of shape "
                    f"(batch, {', '.join(map(str, lay.output_shape[1:]))}), got {out.shape}"
                )
        else:
            out = run_layer(graph, lay, values, store)
            for p in graph.predecessors(lay.name):
                consumers[p] -= 1
                if consumers[p] == 0:
                    del values[p]
        values[lay.name] = out
    return values[layers[-1].name]


def predict(graph: nx.DiGraph, x: np.ndarray, batch: int = 512) -> np.ndarray:
    """Top-1 class per row of ``x``."""
    return np.concatenate(
        [
            run(graph, x[i : i + batch]).reshape(len(x[i : i + batch]), -1).argmax(axis=1)
            for i in range(0, len(x), batch)
        ]
    )


def accuracy(graph: nx.DiGraph, x: np.ndarray, y: np.ndarray) -> float:
    return float((predict(graph, x) == np.asarray(y)).mean())
