"""Layers and layer graphs: the one place where the attribute keys are defined.

A *layer graph* is a :class:`networkx.DiGraph`:

Graph attributes (``G.graph[...]``)
    ``name``         model name (str)
    ``source``       where it came from: ``"zoo"``, an ONNX path, ... (str)
    ``weights``      optional :class:`~deepx_sim.model.weights.WeightStore` giving the
                     layers' real weights as numpy arrays, loaded lazily
    ``colocation``   optional {class name: [layer names]}: each class's layers must run
                     on one processor (profiled graphs' colour classes); read it with
                     :func:`colocation`
    ``platform``     optional :class:`~deepx_sim.platform.Platform` a profiled graph
                     file brings (:mod:`deepx_sim.model.profiled`)

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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import networkx as nx

from deepx_sim.errors import ModelError
from deepx_sim.kinds import LayerKind

Shape = tuple[int, ...]

#: Bits per element of activations when nothing else is said (float32).
DEFAULT_ACTIVATION_BITS = 32

#: Layer kinds that run no kernel at inference (identities and views): free unless
#: their tensor crosses processors.
NO_KERNEL_KINDS = frozenset({LayerKind.INPUT, LayerKind.FLATTEN, LayerKind.VIEW, LayerKind.DROPOUT})

#: Layer kinds that carry a weight matrix or kernel the DXTK optimisers rewrite.
WEIGHTED_KINDS = frozenset({LayerKind.CONV, LayerKind.DEPTHWISE_CONV, LayerKind.FC})

#: Per output element operation counts of the element-wise kinds (a FLOP estimate).
_FLOPS_PER_OUTPUT = {
    LayerKind.INPUT: 0,
    LayerKind.ACTIVATION: 1,  # max(0, x) or a table lookup
    LayerKind.BATCHNORM: 2,  # inference BN folds to one scale and one shift
    LayerKind.LAYERNORM: 8,  # mean, variance (3), normalise (2), scale and shift (2): an estimate
    LayerKind.EMBEDDING: 0,  # a lookup moves bytes, computes nothing
    LayerKind.DROPOUT: 0,  # identity at inference
    LayerKind.FLATTEN: 0,  # a view
    LayerKind.VIEW: 0,  # data movement only
    LayerKind.SOFTMAX: 3,  # exp, sum, divide
    LayerKind.OTHER: 1,  # unknown operator: one operation per output element
}


@dataclass(frozen=True)
class ConvSpec:
    """A 2-D convolution: ``c_in`` -> ``c_out`` channels with ``groups`` groups.

    ``padding`` is (top, left); ``padding_end`` (bottom, right) defaults to the same."""

    c_in: int
    c_out: int
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1
    bias: bool = True
    dilation: tuple[int, int] = (1, 1)
    padding_end: tuple[int, int] | None = None

    @property
    def pads(self) -> tuple[int, int, int, int]:
        """(top, left, bottom, right), ONNX's order."""
        end = self.padding if self.padding_end is None else self.padding_end
        return (*self.padding, *end)

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
        return break_even_rank(self.m, self.n)


def break_even_rank(rows: int, cols: int) -> float:
    """Rank k below which a rank-k factor pair of a rows x cols matrix has fewer values:
    k (rows + cols) < rows cols (DeepX; DXTK). Convolution separation uses it with
    rows = C d and cols = N d, giving Tai et al.'s K < N C d / (C + N)."""
    return rows * cols / (rows + cols)


@dataclass(frozen=True)
class PoolSpec:
    """A pooling window; ``global_pool`` pools each channel to one value."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)
    mode: str = "max"
    ceil_mode: bool = False
    global_pool: bool = False
    padding_end: tuple[int, int] | None = None
    count_include_pad: bool = False

    @property
    def pads(self) -> tuple[int, int, int, int]:
        end = self.padding if self.padding_end is None else self.padding_end
        return (*self.padding, *end)


@dataclass(frozen=True)
class Layer:
    """One layer of a model with its costs in operations and parameters.

    ``op_type`` keeps the source operator name (e.g. the ONNX op): it tells the
    executor and the ONNX writer which activation or element-wise op this is.
    ``attrs`` holds the operator attributes they need (epsilon, alpha, ...).
    ``origin`` names the optimiser and layer a layer was made from (``"wf:fc6"``).
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
    attrs: tuple[tuple[str, Any], ...] = ()
    origin: str = ""

    def attr(self, name: str, default: Any = None) -> Any:
        return dict(self.attrs).get(name, default)

    @property
    def source_layer(self) -> str:
        """The layer this one was made from by an optimiser (itself if none)."""
        return self.origin.split(":", 1)[1] if self.origin else self.name

    @property
    def params(self) -> int:
        return self.weight_params + self.bias_params

    # cached: the cost model and the planner's builder ask for them thousands of times
    # per plan (a frozen dataclass still takes a cached_property: it writes __dict__)
    @cached_property
    def output_elements(self) -> int:
        return math.prod(self.output_shape)

    @cached_property
    def input_elements(self) -> int:
        return sum(math.prod(s) for s in self.input_shapes)

    @cached_property
    def gemm_dims(self) -> tuple[int, int, int] | None:
        """A convolution as its ``groups`` matrix products, each (rows, depth, columns): a
        (c_out / g) x (c_in / g x kernel area) weight matrix times the unrolled input, one
        column per output position; None for a layer of another kind (a depthwise
        convolution has a kernel of its own)."""
        spec = self.conv
        if self.kind != LayerKind.CONV or spec is None:
            return None
        return (spec.c_out // spec.groups, spec.c_in // spec.groups * spec.kernel[0] * spec.kernel[1],
                self.output_elements // spec.c_out)

    @cached_property
    def plane_size(self) -> int | None:
        """Output positions per channel (None for an output without planes, e.g. ``(1, n)``)."""
        return math.prod(self.output_shape[2:]) if len(self.output_shape) > 2 else None

    def param_bytes(self, bits: int) -> int:
        """Bytes of weights and biases stored at ``bits`` per parameter."""
        return tensor_bytes(self.params, bits)

    def output_bytes(self, bits: int = DEFAULT_ACTIVATION_BITS) -> int:
        return tensor_bytes(self.output_elements, bits)

    def input_bytes(self, bits: int = DEFAULT_ACTIVATION_BITS) -> int:
        return tensor_bytes(self.input_elements, bits)


def with_nonzeros(layer: Layer, nonzeros: int) -> Layer:
    """An fc layer whose weight keeps only ``nonzeros`` values: only they are stored
    and multiplied (sparse factorisation's codes)."""
    assert layer.fc is not None
    rows = layer.macs // (layer.fc.m * layer.fc.n)
    return replace(layer, weight_params=nonzeros, macs=rows * nonzeros, flops=2 * rows * nonzeros)


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
    attrs: dict[str, Any] | None = None,
    origin: str = "",
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
        if pool.global_pool:  # every input element read once, whatever the axes reduced
            window = math.prod(in_shapes[0]) // max(1, out_elems)
        else:
            window = pool.kernel[0] * pool.kernel[1]
        flops = out_elems * window  # one compare or add per window element
    elif kind == LayerKind.MATMUL:
        # (..., p, q) x (..., q, r): every output element is a q-long dot product
        macs = out_elems * in_shapes[0][-1]
        flops = 2 * macs
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
        attrs=tuple(sorted((attrs or {}).items())), origin=origin,
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


def rewrite_graph(
    graph: nx.DiGraph,
    chains: Mapping[str, Sequence[Layer]] | None = None,
    bypass: Iterable[str] = (),
) -> nx.DiGraph:
    """A new graph where each layer in ``chains`` becomes that chain of layers (the
    first reads the old layer's inputs, the last feeds its consumers) and each
    layer in ``bypass`` (one input, same shape out) is removed, its input feeding
    its consumers.  Execution order is renumbered; edge data is kept; graph
    attributes are copied (the weight store is shared: copy it to change it)."""
    chains = dict(chains or {})
    skip = set(bypass)
    new = nx.DiGraph(**graph.graph)
    alias: dict[str, str] = {}
    for lay in layers_in_order(graph):
        preds = list(graph.predecessors(lay.name))
        if lay.name in skip:
            if len(preds) != 1:
                raise ModelError(f"layer {lay.name!r} has {len(preds)} inputs; only a one-input "
                                 "layer can be bypassed")
            alias[lay.name] = alias[preds[0]]
            continue
        chain = list(chains.get(lay.name, [lay]))
        inputs = [(alias[p], graph.edges[p, lay.name]) for p in preds]
        for link in chain:
            link = replace(link, order=new.number_of_nodes())
            new.add_node(link.name, layer=link)
            for src, data in inputs:
                new.add_edge(src, link.name, **data)
            inputs = [(link.name, {"elements": link.output_elements,
                                   "size_bytes": link.output_bytes(DEFAULT_ACTIVATION_BITS)})]
        alias[lay.name] = chain[-1].name
    return new


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


#: ``graph.graph[COLOCATION]``: {class: [layer names]}, classes of two or more layers.
COLOCATION = "colocation"


def colocation(graph: nx.DiGraph) -> dict[str, list[str]]:
    """Classes of layers that must share a processor ({} if none)."""
    return dict(graph.graph.get(COLOCATION) or {})


def total(graph: nx.DiGraph, attribute: str) -> int:
    """Sum an integer Layer attribute (``macs``, ``flops``, ``params`` ...) over layers."""
    return sum(getattr(d["layer"], attribute) for _, d in graph.nodes(data=True))
