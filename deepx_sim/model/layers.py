"""Layers and layer graphs: the one place where the attribute keys are defined.

A *layer graph* is a :class:`networkx.DiGraph`:

Graph attributes (``G.graph[...]``)
    ``name``         model name (str)
    ``source``       where it came from: ``"zoo"``, an ONNX path, ... (str)
    ``weights``      optional :class:`~deepx_sim.model.weights.WeightStore` giving the
                     layers' real weights as numpy arrays, loaded lazily

Node keys are layer names.  Node attributes (``G.nodes[name][...]``)
    ``layer``        the :class:`Layer` (frozen): kind, shapes, FLOPs, parameters

Edge attributes (``G.edges[u, v][...]``)
    ``elements``     number of elements of the tensor ``u`` hands to ``v``
    ``size_bytes``   that tensor's size at 32-bit activations (cost code rescales it
                     for other precisions with :func:`tensor_bytes`)

Nodes are inserted in execution order; ``Layer.order`` records it and
:func:`layers_in_order` returns it.  Shapes include the batch dimension (the zoo
uses batch 1).  Counting conventions, used everywhere:

- ``macs`` counts multiply-accumulates of conv and fc layers (what papers and
  thop report as "multiply-adds"); other layers have 0.
- ``flops`` is ``2 * macs`` plus one operation per output element for
  element-wise work (activation, add, batchnorm...), see :func:`make_layer`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

import networkx as nx

from deepx_sim.errors import ModelError

Shape = tuple[int, ...]

#: Bits per element of activations when nothing else is said (float32).
DEFAULT_ACTIVATION_BITS = 32


class LayerKind(StrEnum):
    """What a layer computes; decides its FLOP formula and which optimisers apply."""

    INPUT = "input"
    CONV = "conv"
    DEPTHWISE_CONV = "depthwise_conv"
    FC = "fc"
    POOL = "pool"
    ACTIVATION = "activation"
    LRN = "lrn"
    BATCHNORM = "batchnorm"
    ADD = "add"
    CONCAT = "concat"
    FLATTEN = "flatten"
    DROPOUT = "dropout"
    SOFTMAX = "softmax"
    OTHER = "other"


#: Per output element operation counts of the element-wise kinds (a FLOP estimate).
_FLOPS_PER_OUTPUT = {
    LayerKind.INPUT: 0,
    LayerKind.ACTIVATION: 1,  # max(0, x) or a table lookup
    LayerKind.BATCHNORM: 2,  # inference BN folds to one scale and one shift
    LayerKind.DROPOUT: 0,  # identity at inference
    LayerKind.FLATTEN: 0,  # a view
    LayerKind.SOFTMAX: 3,  # exp, sum, divide
    LayerKind.OTHER: 1,  # unknown operator: one operation per output element
}


@dataclass(frozen=True)
class ConvSpec:
    """A 2-D convolution: ``c_in`` -> ``c_out`` channels with ``groups`` groups."""

    c_in: int
    c_out: int
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1
    bias: bool = True

    @property
    def weight_params(self) -> int:
        return self.c_out * (self.c_in // self.groups) * self.kernel[0] * self.kernel[1]


@dataclass(frozen=True)
class FcSpec:
    """A fully connected layer ``y = W x + b`` with ``W`` of shape (m, n) = (out, in)."""

    m: int
    n: int
    bias: bool = True

    @property
    def break_even_rank(self) -> float:
        """Rank below which the SVD factorisation U_k V_k is cheaper: mn / (m + n)."""
        return self.m * self.n / (self.m + self.n)


@dataclass(frozen=True)
class PoolSpec:
    """A pooling window; ``global_pool`` pools each channel to one value."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)
    mode: str = "max"
    ceil_mode: bool = False
    global_pool: bool = False


@dataclass(frozen=True)
class Layer:
    """One layer of a model with its costs in operations and parameters.

    ``op_type`` keeps the source operator name (e.g. the ONNX op) for ``other``.
    """

    name: str
    kind: LayerKind
    input_shapes: tuple[Shape, ...]
    output_shape: Shape
    macs: int
    flops: int
    weight_params: int
    bias_params: int
    order: int = -1
    conv: ConvSpec | None = None
    fc: FcSpec | None = None
    pool: PoolSpec | None = None
    op_type: str = ""
    notes: tuple[str, ...] = field(default=())

    @property
    def params(self) -> int:
        return self.weight_params + self.bias_params

    @property
    def output_elements(self) -> int:
        return math.prod(self.output_shape)

    @property
    def input_elements(self) -> int:
        return sum(math.prod(s) for s in self.input_shapes)

    def param_bytes(self, bits: int) -> int:
        """Bytes of weights and biases stored at ``bits`` per parameter."""
        return tensor_bytes(self.params, bits)

    def output_bytes(self, bits: int = DEFAULT_ACTIVATION_BITS) -> int:
        return tensor_bytes(self.output_elements, bits)

    def input_bytes(self, bits: int = DEFAULT_ACTIVATION_BITS) -> int:
        return tensor_bytes(self.input_elements, bits)


def tensor_bytes(elements: int, bits: int) -> int:
    """Bytes of ``elements`` values at ``bits`` each, rounded up to whole bytes."""
    return (elements * bits + 7) // 8


def conv_output_hw(
    h: int, w: int, kernel: tuple[int, int], stride: tuple[int, int],
    padding: tuple[int, int], ceil_mode: bool = False,
) -> tuple[int, int]:
    """Spatial output size of a convolution or pooling window (Caffe/PyTorch rule)."""
    rounding = math.ceil if ceil_mode else math.floor
    out = []
    for size, k, s, p in zip((h, w), kernel, stride, padding, strict=True):
        o = int(rounding((size + 2 * p - k) / s)) + 1
        if ceil_mode and (o - 1) * s >= size + p:
            o -= 1  # the last window must start inside the input (Caffe/PyTorch)
        out.append(o)
    return out[0], out[1]


def make_layer(
    name: str,
    kind: LayerKind,
    input_shapes: Sequence[Shape],
    output_shape: Shape,
    *,
    conv: ConvSpec | None = None,
    fc: FcSpec | None = None,
    pool: PoolSpec | None = None,
    op_type: str = "",
    extra_params: int = 0,
    flops_override: int | None = None,
) -> Layer:
    """Build a :class:`Layer`, computing MACs, FLOPs and parameter counts.

    ``extra_params`` counts learned parameters of non conv/fc layers
    (batchnorm's scale and shift); ``flops_override`` sets the FLOPs of an
    ``other`` layer whose cost is known (an activation x activation MatMul).
    Raises ModelError on inconsistent specs.
    """
    out_elems = math.prod(output_shape)
    in_shapes = tuple(tuple(int(d) for d in s) for s in input_shapes)
    output_shape = tuple(int(d) for d in output_shape)
    macs = 0
    weight_params = 0
    bias_params = 0
    if kind in (LayerKind.CONV, LayerKind.DEPTHWISE_CONV):
        if conv is None:
            raise ModelError(f"layer {name!r}: a {kind} layer needs a ConvSpec")
        if conv.c_in % conv.groups or conv.c_out % conv.groups:
            raise ModelError(
                f"layer {name!r}: groups={conv.groups} must divide c_in={conv.c_in} "
                f"and c_out={conv.c_out}"
            )
        # every output element needs (c_in / groups) * kh * kw multiply-adds
        macs = out_elems * (conv.c_in // conv.groups) * conv.kernel[0] * conv.kernel[1]
        weight_params = conv.weight_params
        bias_params = conv.c_out if conv.bias else 0
        flops = 2 * macs
    elif kind == LayerKind.FC:
        if fc is None:
            raise ModelError(f"layer {name!r}: an fc layer needs an FcSpec")
        rows = out_elems // fc.m  # batch (and any leading dims) times m outputs
        macs = rows * fc.m * fc.n
        weight_params = fc.m * fc.n
        bias_params = fc.m if fc.bias else 0
        flops = 2 * macs
    elif kind == LayerKind.POOL:
        if pool is None:
            raise ModelError(f"layer {name!r}: a pool layer needs a PoolSpec")
        if pool.global_pool:
            window = math.prod(in_shapes[0][2:]) if len(in_shapes[0]) > 2 else 1
        else:
            window = pool.kernel[0] * pool.kernel[1]
        flops = out_elems * window  # one compare or add per window element
    elif kind == LayerKind.LRN:
        flops = out_elems * 8  # window of 5 squares, a sum, a power and a divide
    elif kind in (LayerKind.ADD, LayerKind.CONCAT):
        # an n-input add does n-1 adds per element (x + constant: one); concat only copies
        flops = out_elems * max(1, len(in_shapes) - 1) if kind == LayerKind.ADD else 0
    elif flops_override is not None:
        flops = flops_override
    else:
        flops = out_elems * _FLOPS_PER_OUTPUT[kind]
    if kind not in (LayerKind.CONV, LayerKind.DEPTHWISE_CONV, LayerKind.FC):
        weight_params = extra_params
    return Layer(
        name=name, kind=kind, input_shapes=in_shapes, output_shape=output_shape,
        macs=macs, flops=flops, weight_params=weight_params, bias_params=bias_params,
        conv=conv, fc=fc, pool=pool, op_type=op_type or str(kind),
    )


# ---------------------------------------------------------------- graph helpers

def new_layer_graph(name: str, source: str) -> nx.DiGraph:
    """An empty layer graph with its graph attributes set."""
    return nx.DiGraph(name=name, source=source, weights=None)


def add_layer(graph: nx.DiGraph, layer: Layer, inputs: Iterable[str] = ()) -> Layer:
    """Append ``layer`` in execution order with edges from ``inputs``.

    Each edge carries the producing layer's output tensor size.
    """
    if layer.name in graph:
        raise ModelError(f"model {graph.graph.get('name')!r}: duplicate layer name {layer.name!r}")
    layer = replace(layer, order=graph.number_of_nodes())
    graph.add_node(layer.name, layer=layer)
    for src in inputs:
        if src not in graph:
            raise ModelError(
                f"model {graph.graph.get('name')!r}: layer {layer.name!r} reads unknown "
                f"layer {src!r}"
            )
        producer: Layer = graph.nodes[src]["layer"]
        graph.add_edge(
            src, layer.name, elements=producer.output_elements,
            size_bytes=producer.output_bytes(DEFAULT_ACTIVATION_BITS),
        )
    return layer


def get_layer(graph: nx.DiGraph, name: str) -> Layer:
    try:
        return graph.nodes[name]["layer"]
    except KeyError:
        raise ModelError(
            f"model {graph.graph.get('name')!r} has no layer {name!r}"
        ) from None


def layers_in_order(graph: nx.DiGraph) -> list[Layer]:
    """The layers in execution order (a topological order of the graph)."""
    return sorted((d["layer"] for _, d in graph.nodes(data=True)), key=lambda lay: lay.order)


def replace_layer(graph: nx.DiGraph, layer: Layer) -> None:
    """Swap a node's Layer (same name) and refresh the sizes on its out-edges."""
    old = get_layer(graph, layer.name)
    graph.nodes[layer.name]["layer"] = replace(layer, order=old.order)
    for _, _dst, data in graph.out_edges(layer.name, data=True):
        data["elements"] = layer.output_elements
        data["size_bytes"] = layer.output_bytes(DEFAULT_ACTIVATION_BITS)


def validate_graph(graph: nx.DiGraph) -> None:
    """Check the invariants every stage relies on; raise ModelError otherwise."""
    name = graph.graph.get("name", "?")
    if graph.number_of_nodes() == 0:
        raise ModelError(f"model {name!r} has no layers")
    if not nx.is_directed_acyclic_graph(graph):
        cycle = nx.find_cycle(graph)
        raise ModelError(f"model {name!r} has a cycle: {cycle}")
    order = {n: d["layer"].order for n, d in graph.nodes(data=True)}
    for u, v in graph.edges:
        if order[u] >= order[v]:
            raise ModelError(
                f"model {name!r}: edge {u!r} -> {v!r} goes against execution order"
            )


def total(graph: nx.DiGraph, attribute: str) -> int:
    """Sum an integer Layer attribute (``macs``, ``flops``, ``params`` ...) over layers."""
    return sum(getattr(d["layer"], attribute) for _, d in graph.nodes(data=True))
