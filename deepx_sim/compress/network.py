"""A model with real weights that the DXTK optimisers rewrite and that really runs.

A :class:`Network` is a chain of operations (dense, conv, relu, max-pool,
flatten, dropout, softmax) with numpy weights.  It runs on numpy (the
reference for accuracy), converts to and from ONNX (``onnx.checker``-valid,
runnable by onnxruntime), and to the project's layer graph so the planner and
simulator see its FLOPs, bytes and memory.

Weights may be stored at 64, 32 or 16-bit float or 8-bit integer with one
scale per output channel; computation is float32 (weights are dequantised on
load, as onnxruntime does with ``DequantizeLinear``).  A dense layer may carry
a sparse weight matrix (sparse factorisation's codes); its memory counts
nonzeros only.  ``training_state`` holds what only training uses (gradient
buffers, optimiser moments), which parameter cleaning drops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import networkx as nx
import numpy as np

from deepx_sim.errors import ModelError

ALLOWED_BITS = (64, 32, 16, 8)


@dataclass(frozen=True)
class Op:
    """One operation.  ``kind``: dense, conv, relu, maxpool, flatten, dropout, softmax.

    dense: ``weight`` (m, n) = (out, in), ``bias`` (m,) or None; y = x W^T + b.
    conv: ``weight`` (N, C, kh, kw), ``bias`` (N,) or None, ``stride``, ``pad`` (h, w).
    maxpool: ``kernel``, ``stride``.  ``bits`` is the weights' storage precision;
    ``scale`` the per-output-channel scales of 8-bit weights; ``sparse`` marks a
    weight stored as nonzeros only.
    """

    name: str
    kind: str
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)
    kernel: tuple[int, int] = (1, 1)
    bits: int = 32
    scale: np.ndarray | None = None
    sparse: bool = False
    origin: str = ""  # which optimiser made this op, and from which layer

    @property
    def has_weights(self) -> bool:
        return self.weight is not None

    def float_weight(self) -> np.ndarray:
        """The weight as float32 as computation sees it (8-bit dequantised)."""
        assert self.weight is not None
        if self.bits == 8:
            assert self.scale is not None
            shape = (-1,) + (1,) * (self.weight.ndim - 1)
            return self.weight.astype(np.float32) * self.scale.reshape(shape).astype(np.float32)
        return self.weight.astype(np.float32)

    def stored_weight_values(self) -> int:
        """Weight values stored: nonzeros for a sparse weight, all elements otherwise."""
        if self.weight is None:
            return 0
        return int(np.count_nonzero(self.weight)) if self.sparse else int(self.weight.size)

    def params(self) -> int:
        bias = 0 if self.bias is None else int(self.bias.size)
        return self.stored_weight_values() + bias

    def weight_bytes(self) -> int:
        """Bytes to store this op's weights, bias and scales at its precision.

        A sparse weight costs a value and an index of the same width per
        nonzero: DXTK's break-even nnz(A) < n*k/2 for a k x n code matrix."""
        if self.weight is None:
            return 0
        value_bytes = self.bits // 8
        weight = self.stored_weight_values() * value_bytes * (2 if self.sparse else 1)
        bias = 0 if self.bias is None else self.bias.size * 4  # biases stay float32 (tiny, accuracy-critical)
        scale = 0 if self.scale is None else self.scale.size * 4
        return int(weight + bias + scale)


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def dense(name: str, weight: np.ndarray, bias: np.ndarray | None = None, **extra: object) -> Op:
    return Op(name, "dense", weight=weight, bias=bias, **extra)  # type: ignore[arg-type]


def conv(name: str, weight: np.ndarray, bias: np.ndarray | None = None, stride: int | tuple[int, int] = 1,
         pad: int | tuple[int, int] = 0, **extra: object) -> Op:
    return Op(name, "conv", weight=weight, bias=bias, stride=_pair(stride), pad=_pair(pad),
              **extra)  # type: ignore[arg-type]


def im2col(x: np.ndarray, kh: int, kw: int, stride: tuple[int, int], pad: tuple[int, int]) -> np.ndarray:
    """(B, C, H, W) -> (B, C*kh*kw, OH*OW) patches, channel-major like the weights."""
    b, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    oh = (h + 2 * pad[0] - kh) // stride[0] + 1
    ow = (w + 2 * pad[1] - kw) // stride[1] + 1
    cols = np.empty((b, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i:i + stride[0] * oh:stride[0], j:j + stride[1] * ow:stride[1]]
    return cols.reshape(b, c * kh * kw, oh * ow)


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: tuple[int, int],
           pad: tuple[int, int]) -> np.ndarray:
    n, _, kh, kw = weight.shape
    b, _, h, w = x.shape
    oh = (h + 2 * pad[0] - kh) // stride[0] + 1
    ow = (w + 2 * pad[1] - kw) // stride[1] + 1
    cols = im2col(x, kh, kw, stride, pad)
    y = np.einsum("nk,bkp->bnp", weight.reshape(n, -1), cols, optimize=True).reshape(b, n, oh, ow)
    return y if bias is None else y + bias.reshape(1, n, 1, 1)


def maxpool2d(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    b, c, h, w = x.shape
    oh = (h - kernel[0]) // stride[0] + 1
    ow = (w - kernel[1]) // stride[1] + 1
    out = np.full((b, c, oh, ow), -np.inf, dtype=x.dtype)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            out = np.maximum(out, x[:, :, i:i + stride[0] * oh:stride[0], j:j + stride[1] * ow:stride[1]])
    return out


@dataclass
class Network:
    """A chain of ops on one input of ``input_shape`` (without the batch axis)."""

    name: str
    input_shape: tuple[int, ...]
    ops: list[Op]
    training_state: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [op.name for op in self.ops]
        if len(set(names)) != len(names):
            raise ModelError(f"network {self.name!r}: duplicate op names")

    # ------------------------------------------------------------ running
    def forward(self, x: np.ndarray, upto: int | None = None) -> np.ndarray:
        """Run on a batch (B, *input_shape) in float32; logits or probabilities out."""
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != self.input_shape:
            raise ModelError(f"network {self.name!r} takes inputs of shape (batch, "
                             f"{', '.join(map(str, self.input_shape))}), got {x.shape}")
        for op in self.ops[:upto]:
            x = run_op(op, x)
        return x

    def predict(self, x: np.ndarray, batch: int = 512) -> np.ndarray:
        return np.concatenate([self.forward(x[i:i + batch]).argmax(axis=1)
                               for i in range(0, len(x), batch)])

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float((self.predict(x) == np.asarray(y)).mean())

    # ------------------------------------------------------------ costs
    def shapes(self) -> list[tuple[int, ...]]:
        """Output shape (without batch) after each op."""
        out, x = [], np.zeros((1, *self.input_shape), dtype=np.float32)
        for op in self.ops:
            x = run_op(op, x)
            out.append(tuple(x.shape[1:]))
        return out

    def params(self) -> int:
        return sum(op.params() for op in self.ops)

    def macs(self) -> int:
        """Multiply-adds of one inference (sparse weights count their nonzeros)."""
        total = 0
        for op, out in zip(self.ops, self.shapes(), strict=True):
            if op.kind == "dense":
                total += op.stored_weight_values()
            elif op.kind == "conv":
                assert op.weight is not None
                total += math.prod(out) * math.prod(op.weight.shape[1:])
        return total

    def weight_bytes(self) -> int:
        return sum(op.weight_bytes() for op in self.ops)

    def training_state_bytes(self) -> int:
        return int(sum(a.nbytes for a in self.training_state.values()))

    def memory_bytes(self) -> int:
        """Model memory as DXTK counts it: stored weights plus training-only state."""
        return self.weight_bytes() + self.training_state_bytes()

    def summary(self) -> dict[str, int]:
        return {"params": self.params(), "macs": self.macs(), "weight_bytes": self.weight_bytes(),
                "training_state_bytes": self.training_state_bytes(), "memory_bytes": self.memory_bytes()}

    def weighted_ops(self, kind: str | None = None) -> list[Op]:
        return [op for op in self.ops if op.has_weights and (kind is None or op.kind == kind)]

    def replaced(self, name: str, new_ops: list[Op]) -> Network:
        """A copy with op ``name`` replaced by ``new_ops`` (training state kept)."""
        ops: list[Op] = []
        for op in self.ops:
            ops.extend(new_ops if op.name == name else [op])
        return Network(self.name, self.input_shape, ops, dict(self.training_state))

    def copy_with(self, ops: list[Op], training_state: dict[str, np.ndarray] | None = None) -> Network:
        return Network(self.name, self.input_shape, ops,
                       dict(self.training_state) if training_state is None else training_state)

    # ------------------------------------------------------------ conversions
    def to_layer_graph(self) -> nx.DiGraph:
        """The project's layer graph (FLOPs, bytes, params) with these weights in its store."""
        from deepx_sim.model.layers import (
            ConvSpec,
            FcSpec,
            LayerKind,
            PoolSpec,
            add_layer,
            make_layer,
            new_layer_graph,
        )
        from deepx_sim.model.weights import WeightStore

        graph = new_layer_graph(self.name, "deepx_sim.compress.Network")
        store = WeightStore()
        graph.graph["weights"] = store
        prev = add_layer(graph, make_layer("input", LayerKind.INPUT, [], (1, *self.input_shape)))
        shape = (1, *self.input_shape)
        for op, out in zip(self.ops, self.shapes(), strict=True):
            out_shape = (1, *out)
            if op.kind == "dense":
                assert op.weight is not None
                m, n = op.weight.shape
                layer = make_layer(op.name, LayerKind.FC, [shape], out_shape,
                                   fc=FcSpec(m, n, bias=op.bias is not None))
                if op.sparse:  # only nonzeros are stored and multiplied
                    nnz = op.stored_weight_values()
                    layer = replace(layer, weight_params=nnz, macs=nnz, flops=2 * nnz)
            elif op.kind == "conv":
                assert op.weight is not None
                spec = ConvSpec(op.weight.shape[1], op.weight.shape[0], op.weight.shape[2:],  # type: ignore[arg-type]
                                op.stride, op.pad, 1, op.bias is not None)
                layer = make_layer(op.name, LayerKind.CONV, [shape], out_shape, conv=spec)
            elif op.kind == "maxpool":
                layer = make_layer(op.name, LayerKind.POOL, [shape], out_shape,
                                   pool=PoolSpec(op.kernel, op.stride))
            else:
                kind = {"relu": LayerKind.ACTIVATION, "flatten": LayerKind.FLATTEN,
                        "dropout": LayerKind.DROPOUT, "softmax": LayerKind.SOFTMAX}[op.kind]
                layer = make_layer(op.name, kind, [shape], out_shape)
            prev = add_layer(graph, layer, [prev.name])
            if op.weight is not None:
                w = op.float_weight()
                store.set(op.name, "weight", w.reshape(w.shape[0], -1) if op.kind == "dense" else w)
                if op.bias is not None:
                    store.set(op.name, "bias", op.bias)
            shape = out_shape
        graph.graph["weight_bits"] = {op.name: op.bits for op in self.weighted_ops()}
        return graph

    def to_onnx(self, opset: int = 17):  # type: ignore[no-untyped-def]
        from deepx_sim.compress.onnx_io import network_to_onnx

        return network_to_onnx(self, opset)

    def save_onnx(self, path: str | Path) -> Path:
        from deepx_sim.compress.onnx_io import save_onnx

        return save_onnx(self, path)


def run_op(op: Op, x: np.ndarray) -> np.ndarray:
    if op.kind == "dense":
        y = x @ op.float_weight().T
        return y if op.bias is None else y + op.bias.astype(np.float32)
    if op.kind == "conv":
        return conv2d(x, op.float_weight(), None if op.bias is None else op.bias.astype(np.float32),
                      op.stride, op.pad)
    if op.kind == "relu":
        return np.maximum(x, 0)
    if op.kind == "maxpool":
        return maxpool2d(x, op.kernel, op.stride)
    if op.kind == "flatten":
        return x.reshape(x.shape[0], -1)
    if op.kind == "dropout":
        return x  # identity at inference
    if op.kind == "softmax":
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    raise ModelError(f"op {op.name!r}: unknown kind {op.kind!r}")
