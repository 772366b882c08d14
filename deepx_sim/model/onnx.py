"""ONNX to and from layer graphs: the project's one ONNX reader and writer.

Reading (opset 7 or later): shapes come from ``onnx.shape_inference`` (with
constant propagation); weights stay in the file and are converted to numpy
only when asked for (see :class:`~deepx_sim.model.weights.WeightStore`).
Weights stored at another precision (an initialiser followed by ``Cast`` or
``DequantizeLinear``) are folded back into the layer they feed, their
storage precision and scales kept.  A ``MatMul`` by a weight followed by an
``Add`` of a bias (how exporters write a linear layer on 3-D inputs) is one
fc layer.  A symbolic batch dimension is read as batch 1.  Operators we do
not model become ``other`` layers costed at one operation per output
element, and are listed in a warning.

Writing: one node per layer, named after it, weights as initialisers
``<layer>/<role>`` at their storage precision, training-only state as
initialisers no node reads, sparse layers and optimiser origins in the
model's metadata; the result passes ``onnx.checker``.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from deepx_sim.errors import ModelError
from deepx_sim.model.layers import (
    ConvSpec,
    FcSpec,
    Layer,
    LayerKind,
    PoolSpec,
    Shape,
    add_layer,
    layers_in_order,
    make_layer,
    new_layer_graph,
    tensor_bytes,
    validate_graph,
    with_nonzeros,
)
from deepx_sim.model.onnx_light import Extent
from deepx_sim.model.weights import Storage, WeightStore, initializer_loader

MIN_OPSET = 7
#: Reductions read as pooling over the reduced axes (global average pooling is ReduceMean over H, W).
REDUCTIONS = {"ReduceMean": "avg", "ReduceMax": "max", "ReduceSum": "sum"}
WRITE_OPSET = 17
TRAINING_PREFIX = "training_state/"
SPARSE_KEY = "deepx_sim.sparse_layers"
ORIGIN_KEY = "deepx_sim.origins"

#: The operator table: the layer kind of every ONNX operator we model (conv, fc and
#: pooling have their own readers below).  Anything else is an ``other`` layer.
OP_KINDS: dict[str, LayerKind] = {
    **{
        op: LayerKind.ACTIVATION
        for op in (
            "Relu",
            "LeakyRelu",
            "PRelu",
            "Sigmoid",
            "Tanh",
            "Clip",
            "HardSigmoid",
            "HardSwish",
            "Elu",
            "Selu",
            "Gelu",
            "Softplus",
            "Softsign",
            "Mish",
            "Erf",
            "ThresholdedRelu",
        )
    },
    **{op: LayerKind.ACTIVATION for op in ("Sqrt", "Exp", "Log", "Reciprocal", "Neg", "Abs")},
    **{op: LayerKind.ADD for op in ("Add", "Sum", "Sub", "Mul", "Div", "Pow")},
    **{op: LayerKind.FLATTEN for op in ("Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity")},
    **{op: LayerKind.VIEW for op in ("Transpose", "Slice", "Split", "Expand", "Cast")},
    **{op: LayerKind.POOL for op in REDUCTIONS},
    "Concat": LayerKind.CONCAT,
    "Dropout": LayerKind.DROPOUT,
    "Softmax": LayerKind.SOFTMAX,
    "LogSoftmax": LayerKind.SOFTMAX,
    "LRN": LayerKind.LRN,
    "BatchNormalization": LayerKind.BATCHNORM,
    "LayerNormalization": LayerKind.LAYERNORM,
}
#: Operator attributes a layer keeps for the executor and the writer.
_KEPT_ATTRS = {
    "LeakyRelu": ("alpha",),
    "Elu": ("alpha",),
    "HardSigmoid": ("alpha", "beta"),
    "Clip": ("min", "max"),
    "LRN": ("size", "alpha", "beta", "bias"),
    "BatchNormalization": ("epsilon",),
    "Softmax": ("axis",),
    "LogSoftmax": ("axis",),
    "Concat": ("axis",),
    "Transpose": ("perm",),
    "Split": ("axis",),
    "Gather": ("axis",),
    "LayerNormalization": ("axis", "epsilon"),
    "Cast": ("to",),
}


class UnknownOperatorWarning(UserWarning):
    """Operators imported as ``other`` layers with an estimated cost."""


def parse_input_shape(text: str) -> tuple[str | None, Shape]:
    """Parse ``NAME=1x3x224x224`` or ``1x3x224x224`` into (name or None, shape)."""
    name, _, dims = text.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x"))
    except ValueError:
        raise ModelError(
            f"--input-shape {text!r}: expected NAME=DxDx... or DxDx... with positive "
            f"integers, e.g. input=1x3x224x224"
        ) from None
    if not shape or any(d <= 0 for d in shape):
        raise ModelError(f"--input-shape {text!r}: every dimension must be > 0")
    return (name or None), shape


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _dims(value_info: Any) -> list[int | str]:
    dims: list[int | str] = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or "?")
    return dims


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise ModelError(f"{path}: no such ONNX file")
    if path.stat().st_size == 0:
        raise ModelError(f"{path}: the file is empty (0 bytes); expected an ONNX model")


def read_model(path: Path) -> tuple[Any, dict[str, Extent]]:
    """The parsed ONNX model at ``path`` and where its large weights lie in the file
    (:mod:`~deepx_sim.model.onnx_light`; ModelError if it is not an ONNX model)."""
    import onnx

    from deepx_sim.model.onnx_light import load_light

    _check_file(path)
    try:
        model, extents = load_light(path)
    except Exception:  # anything the light reader does not cover: onnx's own, which explains errors
        extents = {}
        try:
            model = onnx.load(str(path), load_external_data=True)
        except Exception as exc:  # the protobuf parser raises many types
            raise ModelError(f"{path}: not a readable ONNX model ({exc})") from None
    if not model.graph.node:
        raise ModelError(f"{path}: not an ONNX model with a graph (no nodes); is it an ONNX file?")
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < MIN_OPSET:
        raise ModelError(f"{path}: opset_import is {opset}; opset {MIN_OPSET} or later is needed")
    return model, extents


def _checker_message(model: Any, node: Any) -> str:
    """What onnx.checker finds wrong with ``node`` ('' if nothing): it explains a node
    whose shape cannot be inferred (a missing attribute, a wrong input count)."""
    import onnx

    ctx = onnx.checker.C.CheckerContext()
    ctx.ir_version = model.ir_version
    ctx.opset_imports = {o.domain: o.version for o in model.opset_import}
    try:
        onnx.checker.check_node(node, ctx)
    except Exception as exc:  # the checker raises ValidationError and protobuf errors
        text = str(exc).strip()
        return text.splitlines()[0] if text else type(exc).__name__
    return ""


def _check_order(path: Path, graph_def: Any, available: set[str]) -> None:
    """Every node reads only tensors produced before it (ONNX requires a
    topological order; a cycle can never satisfy it)."""
    produced = set(available)
    later = {out: node for node in graph_def.node for out in node.output}
    for index, node in enumerate(graph_def.node):
        for tensor in node.input:
            if tensor and tensor not in produced:
                name = node.name or f"{node.op_type}_{index}"
                if tensor in later:
                    raise ModelError(
                        f"{path}: node {name!r} ({node.op_type}) reads {tensor!r} before node "
                        f"{later[tensor].name or later[tensor].op_type!r} produces it: the nodes are out "
                        "of topological order or form a cycle"
                    )
                raise ModelError(
                    f"{path}: node {name!r} ({node.op_type}) reads {tensor!r}, which is "
                    "no input, initializer or node output"
                )
        produced.update(node.output)


def load_onnx(
    path: str | Path,
    input_shapes: Mapping[str | None, Shape] | None = None,
) -> nx.DiGraph:
    """Read ``path`` into a layer graph.

    ``input_shapes`` fixes dynamic input dimensions: ``{input_name: shape}``,
    or ``{None: shape}`` for a single-input model.  Raises ModelError for a
    missing, empty or invalid file, an opset below 7, nodes out of order, or
    an unresolved dynamic dimension after the batch axis.  The graph read from
    a file is cached (:mod:`deepx_sim.model.skeleton`): reading the same bytes
    again parses nothing, and weights load only when asked for.
    """
    from deepx_sim.model import skeleton

    path = Path(path)
    _check_file(path)
    raw_key = skeleton.bytes_key(path)
    key = skeleton.file_key(raw_key, input_shapes)
    graph = skeleton.load(key, path)
    if graph is not None:
        return graph
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reader = _Reader(path, key)
        graph = reader.read(input_shapes)
    skeleton.save(key, raw_key, graph, reader.recipes, reader.extents,
                  [(w.category, str(w.message)) for w in caught])
    for w in caught:
        warnings.warn(w.message, stacklevel=2)
    return graph


class _Reader:
    """One ONNX file into one layer graph (state shared by the per-node steps)."""

    def __init__(self, path: Path, file_key: str) -> None:
        self.path = path
        self.file_key = file_key
        self.model, self.extents = read_model(path)
        # (layer, role) -> (initialiser, transpose, factor): how the skeleton cache reloads it
        self.recipes: dict[tuple[str, str], tuple[str, bool, float]] = {}
        self.graph_def = self.model.graph
        self.initializers = {t.name: t for t in self.graph_def.initializer}
        self.constants: dict[str, np.ndarray] = {}
        # tensors computed from constants by Cast/DequantizeLinear: (stored array, storage, axis)
        self.stored: dict[str, tuple[np.ndarray, Storage, int]] = {}
        self.shapes: dict[str, Shape] = {}
        self.producer: dict[str, str] = {}
        self.store = WeightStore()
        self.unknown_ops: dict[str, int] = {}
        meta = {p.key: p.value for p in self.model.metadata_props}
        self.sparse = set(filter(None, meta.get(SPARSE_KEY, "").split(",")))
        self.origins: dict[str, str] = json.loads(meta.get(ORIGIN_KEY, "{}"))

    # ------------------------------------------------------------ inputs and shapes
    def _inputs(self, overrides_in: Mapping[str | None, Shape] | None) -> dict[str, Shape]:
        inputs = [i for i in self.graph_def.input if i.name not in self.initializers]
        if not inputs:
            raise ModelError(f"{self.path}: the graph has no inputs")
        overrides = dict(overrides_in or {})
        names = ", ".join(i.name for i in inputs)
        if None in overrides:
            if len(inputs) != 1:
                raise ModelError(f"{self.path}: --input-shape needs NAME=... for a model with inputs {names}")
            overrides[inputs[0].name] = overrides.pop(None)
        unknown = set(overrides) - {i.name for i in inputs}
        if unknown:
            raise ModelError(f"{self.path}: --input-shape names {sorted(unknown)}; the inputs are {names}")
        result: dict[str, Shape] = {}
        for inp in inputs:
            dims = _dims(inp)
            if inp.name in overrides:
                shape = tuple(overrides[inp.name])  # type: ignore[arg-type]
                if len(shape) != len(dims):
                    raise ModelError(
                        f"{self.path}: input {inp.name!r} has rank {len(dims)} {dims}, "
                        f"--input-shape gave {shape}"
                    )
            elif any(isinstance(d, str) for d in dims[1:]):
                hint = "x".join(str(d) if isinstance(d, int) else "1" for d in dims)
                raise ModelError(
                    f"{self.path}: input {inp.name!r} has dynamic dimensions {dims}; give "
                    f"them with --input-shape {inp.name}={hint}"
                )
            else:  # a symbolic batch axis alone is batch 1
                shape = tuple(1 if isinstance(d, str) else int(d) for d in dims)
            for d, value in zip(inp.type.tensor_type.shape.dim, shape, strict=True):
                d.Clear()
                d.dim_value = value
            result[inp.name] = shape
        return result

    def _skeleton(self) -> Any:
        """The model without its large initialisers' bytes, each declared as an input of its
        type and shape: shape inference copies and serialises what it is given, and a
        VGG-16's 553 MB of weights made that the slowest, largest step of an import."""
        from onnx import helper

        g = self.model.graph
        small = [p for p in self.initializers.values() if math.prod(p.dims) <= 1024]  # shape arithmetic
        declared = {i.name for i in g.input}  # old exporters list initialisers as inputs too
        large = [
            helper.make_tensor_value_info(name, p.data_type, list(p.dims))
            for name, p in self.initializers.items()
            if math.prod(p.dims) > 1024 and name not in declared
        ]
        graph = helper.make_graph(
            list(g.node),
            g.name,
            [*g.input, *large],
            list(g.output),
            initializer=small,
            value_info=list(g.value_info),
        )
        light = helper.make_model(graph, opset_imports=list(self.model.opset_import))
        light.ir_version = self.model.ir_version
        return light

    def _infer_shapes(self, input_dims: dict[str, Shape]) -> None:
        from onnx import shape_inference

        try:
            inferred = shape_inference.infer_shapes(self._skeleton(), strict_mode=False, data_prop=True)
        except Exception as exc:
            raise ModelError(f"{self.path}: ONNX shape inference failed: {exc}") from None
        for vi in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]:
            dims = _dims(vi)
            if dims and all(isinstance(d, int) for d in dims):
                self.shapes[vi.name] = tuple(int(d) for d in dims)  # type: ignore[misc]
            elif vi.type.tensor_type.HasField("shape") and not dims:
                self.shapes[vi.name] = ()
        self.shapes.update(input_dims)
        for name, tensor in self.initializers.items():
            self.shapes[name] = tuple(int(d) for d in tensor.dims)

    # ------------------------------------------------------------ constants
    def initializer(self, name: str) -> np.ndarray:
        """An initialiser's values, read from the file if the light reader left them there."""
        if name in self.extents:
            return self.extents[name].read(self.path)
        return tensor_array(self.initializers[name])

    def static(self, name: str) -> np.ndarray | None:
        if name in self.initializers:
            return self.initializer(name)
        if name in self.stored:
            array, storage, axis = self.stored[name]
            return _dequantize(array, storage, axis)
        return self.constants.get(name)

    def is_static(self, name: str) -> bool:
        return name in self.initializers or name in self.constants or name in self.stored

    def _fold(self, node: Any) -> bool:
        """Constant, and Cast/DequantizeLinear of constants: no layer, a constant."""
        from onnx import numpy_helper

        if node.op_type == "Constant":
            value = next((a for a in node.attribute if a.name == "value"), None)
            if value is None:
                return False
            self.constants[node.output[0]] = numpy_helper.to_array(value.t)
        elif node.op_type == "Identity" and self.is_static(node.input[0]):
            if node.input[0] in self.stored:
                self.stored[node.output[0]] = self.stored[node.input[0]]
            else:
                self.constants[node.output[0]] = self.static(node.input[0])  # type: ignore[assignment]
        elif node.op_type == "Cast" and self.is_static(node.input[0]):
            source = self.static(node.input[0])
            assert source is not None
            bits = {np.dtype(np.float64): 64, np.dtype(np.float16): 16}.get(source.dtype, 32)
            if source.dtype.kind == "f":
                self.stored[node.output[0]] = (source, Storage(bits), 0)
            else:
                self.constants[node.output[0]] = source.astype(np.float32)
        elif node.op_type == "DequantizeLinear" and all(self.is_static(t) for t in node.input if t):
            self._fold_dequantize(node)
        elif OP_KINDS.get(node.op_type) in (LayerKind.VIEW, LayerKind.FLATTEN, LayerKind.CONCAT) and all(
            self.is_static(t) for t in node.input if t
        ):
            value = self._evaluate(node)  # a view of constants (a weight transposed, a bias expanded)
            if value is None:
                return False
            self.constants[node.output[0]] = value
        else:
            return False
        out = node.output[0]
        self.shapes[out] = tuple(self.static(out).shape)  # type: ignore[union-attr]
        return True

    def _fold_dequantize(self, node: Any) -> None:
        q, scale = self.static(node.input[0]), self.static(node.input[1])
        assert q is not None and scale is not None
        zero = self.static(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        axis = int(_attrs(node).get("axis", 1)) % max(q.ndim, 1)
        if q.dtype != np.int8 or (zero is not None and np.any(zero)):
            self.constants[node.output[0]] = _dequantize(q, Storage(32), 0, scale, zero)
            return
        per_channel = scale.reshape(-1) if scale.ndim else np.full(q.shape[axis], float(scale))
        self.stored[node.output[0]] = (q, Storage(8, per_channel.astype(np.float32)), axis)

    def register(
        self, layer: str, role: str, tensor: str, transpose: bool = False, factor: float = 1.0
    ) -> None:
        """A lazy loader for ``tensor`` as ``layer``'s ``role`` (the stored form for a weight)."""
        self.recipes.pop((layer, role), None)  # set below unless the array is kept in memory
        if tensor in self.stored and role == "weight" and factor == 1.0:
            array, storage, axis = self.stored[tensor]
            out_axis = array.ndim - 1 if transpose else 0
            if storage.scale is None or axis == out_axis:
                storage = replace(storage, sparse=layer in self.sparse)
                self.store.set(layer, role, array.T if transpose else array, storage)
                return
        if tensor in self.initializers:
            from deepx_sim.model.skeleton import digest_key

            proto = self.initializers[tensor]
            loader = initializer_loader(partial(self.initializer, tensor), transpose, factor)
            self.store.register(layer, role, loader, digest_key(self.file_key, layer, role))
            self.recipes[(layer, role)] = (tensor, transpose, factor)
            if role == "weight":
                bits = {1: 32, 11: 64, 10: 16}.get(proto.data_type, 32)  # TensorProto FLOAT/DOUBLE/FLOAT16
                self.store.set_storage(layer, Storage(bits, sparse=layer in self.sparse))
            return
        array = self.static(tensor)
        if array is not None:
            array = (
                (array.T if transpose else array) * factor
                if factor != 1.0
                else (array.T if transpose else array)
            )
            self.store.set(layer, role, np.asarray(array, dtype=np.float32))

    # ------------------------------------------------------------ the graph
    def read(self, overrides: Mapping[str | None, Shape] | None) -> nx.DiGraph:
        input_dims = self._inputs(overrides)
        _check_order(self.path, self.graph_def, set(input_dims) | set(self.initializers))
        self._infer_shapes(input_dims)
        for _ in range(8):  # shape arithmetic folded to constants, then shapes inferred again
            if not self._fold_shape_arithmetic() or not self._unshaped():
                break
            self._infer_shapes(input_dims)
        graph = new_layer_graph(self.path.stem, str(self.path))
        graph.graph["weights"] = self.store
        for name, shape in input_dims.items():
            add_layer(graph, make_layer(name, LayerKind.INPUT, [], shape, op_type="Input"))
            self.producer[name] = name
        used = set(graph.nodes)
        for index, node in enumerate(self.graph_def.node):
            if self._fold(node) or self._fold_bias(graph, node):
                continue
            name = node.name or f"{node.op_type}_{index}"
            while name in used:
                name = f"{name}_{index}"
            used.add(name)
            self._add_node(graph, node, name)
        self._finish(graph)
        return graph

    def _unshaped(self) -> bool:
        return any(out and out not in self.shapes for node in self.graph_def.node for out in node.output[:1])

    def _shape_static(self, tensor: str) -> bool:
        """A tensor of shape arithmetic: a small integer constant (never a weight)."""
        if tensor in self.constants:
            return True
        proto = self.initializers.get(tensor)
        small_integers = proto is not None and proto.data_type in (6, 7)  # INT32, INT64
        return small_integers and math.prod(proto.dims) <= 1024  # type: ignore[union-attr]

    def _evaluate(self, node: Any) -> np.ndarray | None:
        """``node``'s first output from its static inputs, by ONNX's reference evaluator."""
        from onnx import helper
        from onnx.reference import ReferenceEvaluator

        inputs = [t for t in node.input if t]
        sub = helper.make_model(
            helper.make_graph(
                [node],
                "fold",
                [helper.make_tensor_value_info(t, 0, None) for t in inputs],
                [helper.make_tensor_value_info(o, 0, None) for o in node.output],
            ),
            opset_imports=self.model.opset_import,
        )
        try:
            return np.asarray(ReferenceEvaluator(sub).run(None, {t: self.static(t) for t in inputs})[0])
        except Exception:  # the reference evaluator raises many types for ops it cannot run
            return None

    def _fold_shape_arithmetic(self) -> bool:
        """Evaluate the nodes that compute shapes (Shape of a known shape, and integer
        arithmetic on constants) with ONNX's reference evaluator, so that Reshape, Slice
        and Expand see constant inputs; returns whether anything new was folded."""
        from onnx import numpy_helper

        folded, kept = False, []
        for node in self.graph_def.node:
            inputs = [t for t in node.input if t]
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                value = numpy_helper.to_array(node.attribute[0].t)
                if value.dtype.kind not in "iu":  # float constants stay for the layer reader
                    kept.append(node)
                    continue
            elif node.op_type == "Shape" and inputs[0] in self.shapes:
                start, end = _attrs(node).get("start", 0), _attrs(node).get("end")
                value = np.array(self.shapes[inputs[0]][start:end], dtype=np.int64)
            elif (
                inputs
                and node.op_type not in ("Cast", "DequantizeLinear", "Identity")
                and all(self._shape_static(t) for t in inputs)
            ):
                value = self._evaluate(node)
                if value is None:  # an op the reference cannot run: leave it to shape inference
                    kept.append(node)
                    continue
            else:
                kept.append(node)
                continue
            proto = numpy_helper.from_array(np.asarray(value), node.output[0])
            self.graph_def.initializer.append(proto)
            self.initializers[node.output[0]] = proto
            folded = True
        if folded:
            del self.graph_def.node[:]
            self.graph_def.node.extend(kept)
        return folded

    def _add_node(self, graph: nx.DiGraph, node: Any, name: str) -> None:
        act_inputs = [t for t in node.input if t in self.producer]
        in_shapes = [self.shapes.get(t, ()) for t in act_inputs]
        out_name = node.output[0] if node.output else ""
        maker = _LayerMaker(self, node, name, in_shapes, self.shapes.get(out_name, ()))
        maker.check_inputs()
        if out_name not in self.shapes:
            raise ModelError(
                f"{self.path}: node {name!r} ({node.op_type}): shape inference gave no static shape for "
                f"output {out_name!r} (inputs {[self.shapes.get(t) for t in node.input]}); "
                + (
                    f"onnx.checker says: {why}"
                    if (why := _checker_message(self.model, node))
                    else "check the node's attributes and input shapes, or fix dynamic inputs with "
                    "--input-shape"
                )
            )
        layer = maker.make()
        if name in self.origins:
            layer = make_layer_origin(layer, self.origins[name])
        if name in self.sparse and layer.fc is not None:
            layer = with_nonzeros(layer, int(np.count_nonzero(self.store.stored(name))))
        add_layer(graph, layer, dict.fromkeys(self.producer[t] for t in act_inputs))
        for t in act_inputs:  # edge size is the tensor's own, for multi-output producers
            elements = math.prod(self.shapes.get(t, ()))
            graph.edges[self.producer[t], name].update(
                elements=elements, size_bytes=tensor_bytes(elements, 32)
            )
        for out in node.output:
            self.producer[out] = name

    def _fold_bias(self, graph: nx.DiGraph, node: Any) -> bool:
        """``Add(MatMul(x, W), b)``: the bias of the fc layer the MatMul became."""
        if node.op_type != "Add" or len(node.input) != 2:
            return False
        act = [t for t in node.input if t in self.producer]
        const = [t for t in node.input if self.is_static(t)]
        if len(act) != 1 or len(const) != 1:
            return False
        src = self.producer[act[0]]
        lay: Layer = graph.nodes[src]["layer"]
        bias = self.static(const[0])
        consumers = sum(act[0] in n.input for n in self.graph_def.node)
        if lay.fc is None or lay.fc.bias or consumers != 1 or bias is None or bias.size != lay.fc.m:
            return False
        fc = FcSpec(lay.fc.m, lay.fc.n, bias=True)
        graph.nodes[src]["layer"] = _refresh(
            lay,
            make_layer(
                lay.name, LayerKind.FC, lay.input_shapes, lay.output_shape, fc=fc, op_type=lay.op_type
            ),
        )
        self.register(src, "bias", const[0])
        self.producer[node.output[0]] = src
        return True

    def _finish(self, graph: nx.DiGraph) -> None:
        read = {t for n in self.graph_def.node for t in n.input}
        for name in self.initializers:
            if name not in read:  # training-only state (gradients, optimiser moments)
                self.store.training_state[name.removeprefix(TRAINING_PREFIX)] = self.initializer(name)
        if self.unknown_ops:
            listing = ", ".join(f"{op} x{count}" for op, count in sorted(self.unknown_ops.items()))
            warnings.warn(
                f"{self.path}: operators imported as 'other' (cost estimated by output size): {listing}",
                UnknownOperatorWarning,
                stacklevel=3,
            )
        validate_graph(graph)


def tensor_array(proto: Any) -> np.ndarray:
    """An initialiser as numpy: float32 raw bytes are viewed in place, not copied (a
    VGG-16 fc6 is 411 MB), read-only; anything else through onnx's converter."""
    from onnx import numpy_helper

    if proto.data_type == 1 and proto.raw_data and not proto.external_data:  # FLOAT, inline
        return np.frombuffer(proto.raw_data, dtype="<f4").reshape(tuple(proto.dims))
    return numpy_helper.to_array(proto)


def _frozen(value: Any) -> Any:
    """Attribute values as a frozen Layer can hold them (lists become tuples)."""
    return tuple(value) if isinstance(value, list) else value


def _refresh(old: Layer, new: Layer) -> Layer:
    return replace(new, order=old.order, attrs=old.attrs, origin=old.origin)


def make_layer_origin(layer: Layer, origin: str) -> Layer:
    return replace(layer, origin=origin)


def _dequantize(
    array: np.ndarray,
    storage: Storage,
    axis: int,
    scale: np.ndarray | None = None,
    zero: np.ndarray | None = None,
) -> np.ndarray:
    scale = storage.scale if scale is None else scale
    if scale is None:
        return array.astype(np.float32)
    shape = [1] * array.ndim
    if np.ndim(scale):
        shape[axis] = -1
    values = array.astype(np.float32) - (0 if zero is None else np.reshape(zero, shape).astype(np.float32))
    return values * np.reshape(scale, shape).astype(np.float32)


class _LayerMaker:
    """One ONNX node -> one Layer, registering its weights."""

    def __init__(self, reader: _Reader, node: Any, name: str, in_shapes: list[Shape], out_shape: Shape):
        self.r, self.node, self.name = reader, node, name
        self.op = node.op_type
        self.attrs = _attrs(node)
        self.inputs = list(node.input)
        self.in_shapes, self.out_shape = in_shapes, out_shape

    def fail(self, why: str) -> ModelError:
        return ModelError(f"{self.r.path}: node {self.name!r} ({self.op}): {why}")

    def kept(self) -> dict[str, Any]:
        kept = {k: _frozen(self.attrs[k]) for k in _KEPT_ATTRS.get(self.op, ()) if k in self.attrs}
        if self.op == "Clip":  # opset >= 11 gives min and max as inputs
            for position, key in ((1, "min"), (2, "max")):
                if len(self.inputs) > position and self.inputs[position]:
                    value = self.r.static(self.inputs[position])
                    if value is not None:
                        kept[key] = float(value)
        return kept

    def check_inputs(self) -> None:
        """Weight and input shapes that cannot go together (named before shape inference's silence)."""
        w_shape = self.r.shapes.get(self.inputs[1]) if len(self.inputs) > 1 else None
        x_shape = self.in_shapes[0] if self.in_shapes else ()
        if not w_shape or not x_shape or not self.r.is_static(self.inputs[1]):
            return
        if self.op == "Conv" and len(w_shape) == 4 and len(x_shape) == 4:
            groups = int(self.attrs.get("group", 1))
            if x_shape[1] != w_shape[1] * groups:
                raise self.fail(
                    f"input has {x_shape[1]} channels, the weight {w_shape} with group {groups} "
                    f"expects {w_shape[1] * groups}"
                )
        elif self.op in ("Gemm", "MatMul") and len(w_shape) == 2:
            trans_b = self.op == "Gemm" and int(self.attrs.get("transB", 0)) == 1
            n = w_shape[1] if trans_b else w_shape[0]
            if x_shape[-1] != n:
                raise self.fail(
                    f"input's last dimension {x_shape[-1]} does not match the weight {w_shape} "
                    f"(transB={int(trans_b)}), which takes {n}"
                )

    def make(self) -> Layer:
        if self.op == "Conv":
            return self.conv()
        if self.op in ("Gemm", "MatMul"):
            return self.gemm()
        if self.op in ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"):
            return self.pool()
        if self.op in REDUCTIONS:
            return self.reduction()
        if self.op == "Gather":
            return self.gather()
        if self.op == "LayerNormalization":
            for role, tensor in zip(("scale", "bias"), self.inputs[1:3], strict=False):
                if tensor:
                    self.r.register(self.name, role, tensor)
            params = sum(math.prod(self.r.shapes.get(t, ())) for t in self.inputs[1:3] if t)
            return make_layer(
                self.name,
                LayerKind.LAYERNORM,
                self.in_shapes[:1],
                self.out_shape,
                op_type=self.op,
                extra_params=params,
                attrs=self.kept(),
            )
        if self.op == "BatchNormalization":
            for role, tensor in zip(("scale", "bias", "mean", "var"), self.inputs[1:5], strict=False):
                self.r.register(self.name, role, tensor)
            channels = self.out_shape[1] if len(self.out_shape) > 1 else 0
            return make_layer(
                self.name,
                LayerKind.BATCHNORM,
                self.in_shapes[:1],
                self.out_shape,
                op_type=self.op,
                extra_params=2 * channels,
                attrs=self.kept(),
            )
        kind = OP_KINDS.get(self.op)
        if kind is None:
            self.r.unknown_ops[self.op] = self.r.unknown_ops.get(self.op, 0) + 1
            kind = LayerKind.OTHER
        attrs = {**self.kept(), **self.view_attrs()}
        if kind == LayerKind.ADD:
            const = [i for i, t in enumerate(self.inputs) if t and self.r.is_static(t)]
            if const:
                self.r.register(self.name, "constant", self.inputs[const[0]])
                attrs["constant_position"] = const[0]
        return make_layer(self.name, kind, self.in_shapes, self.out_shape, op_type=self.op, attrs=attrs)

    def conv(self) -> Layer:
        w_shape = self.r.shapes.get(self.inputs[1])
        if not w_shape or len(w_shape) != 4:
            raise self.fail(
                f"only 2-D convolutions with a known weight shape are supported, got weight shape {w_shape}"
            )
        c_out, c_in_per_group, kh, kw = w_shape
        groups = int(self.attrs.get("group", 1))
        pads = tuple(int(p) for p in self.attrs.get("pads", (0, 0, 0, 0)))
        has_bias = len(self.inputs) > 2 and bool(self.inputs[2])
        spec = ConvSpec(
            c_in_per_group * groups,
            c_out,
            (kh, kw),
            tuple(self.attrs.get("strides", (1, 1)))[:2],  # type: ignore[arg-type]
            pads[:2],
            groups,
            has_bias,  # type: ignore[arg-type]
            tuple(self.attrs.get("dilations", (1, 1)))[:2],  # type: ignore[arg-type]
            None if pads[2:] == pads[:2] else pads[2:4],
        )  # type: ignore[arg-type]
        self.r.register(self.name, "weight", self.inputs[1])
        if has_bias:
            self.r.register(self.name, "bias", self.inputs[2])
        depthwise = groups > 1 and groups == spec.c_in == c_out
        kind = LayerKind.DEPTHWISE_CONV if depthwise else LayerKind.CONV
        return make_layer(self.name, kind, self.in_shapes[:1], self.out_shape, conv=spec, op_type=self.op)

    def gemm(self) -> Layer:
        b_shape = self.r.shapes.get(self.inputs[1]) if len(self.inputs) > 1 else None
        if not (self.r.is_static(self.inputs[1]) and b_shape and len(b_shape) == 2):
            # activation x activation product (attention scores, context)
            return make_layer(self.name, LayerKind.MATMUL, self.in_shapes, self.out_shape, op_type=self.op)
        trans_b = self.op == "Gemm" and int(self.attrs.get("transB", 0)) == 1
        if self.op == "Gemm" and int(self.attrs.get("transA", 0)):
            raise self.fail("Gemm with transA=1 is not supported")
        m, n = (b_shape[0], b_shape[1]) if trans_b else (b_shape[1], b_shape[0])
        has_bias = self.op == "Gemm" and len(self.inputs) > 2 and bool(self.inputs[2])
        alpha, beta = float(self.attrs.get("alpha", 1.0)), float(self.attrs.get("beta", 1.0))
        self.r.register(self.name, "weight", self.inputs[1], transpose=not trans_b, factor=alpha)
        if has_bias:
            self.r.register(self.name, "bias", self.inputs[2], factor=beta)
        return make_layer(
            self.name,
            LayerKind.FC,
            self.in_shapes[:1],
            self.out_shape,
            fc=FcSpec(m=m, n=n, bias=has_bias),
            op_type=self.op,
        )

    def constant_input(self, position: int) -> list[int] | None:
        if len(self.inputs) > position and self.inputs[position]:
            value = self.r.static(self.inputs[position])
            return None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]
        return None

    def gather(self) -> Layer:
        """A lookup in a constant table (an embedding) or a selection from an activation."""
        data, indices = self.inputs[0], self.inputs[1]
        if self.r.is_static(data):
            self.r.register(self.name, "weight", data)
            return make_layer(
                self.name,
                LayerKind.EMBEDDING,
                self.in_shapes,
                self.out_shape,
                op_type=self.op,
                extra_params=math.prod(self.r.shapes.get(data, ())),
            )
        chosen = self.r.static(indices)
        attrs = {**self.kept(), **({} if chosen is None else {"indices": _frozen(chosen.tolist())})}
        return make_layer(
            self.name, LayerKind.VIEW, self.in_shapes[:1], self.out_shape, op_type=self.op, attrs=attrs
        )

    def reduction(self) -> Layer:
        """ReduceMean/Max/Sum as pooling over the reduced axes (all axes when none given)."""
        rank = len(self.in_shapes[0]) if self.in_shapes else 0
        axes = self.attrs.get("axes") or self.constant_input(1) or list(range(rank))
        axes = sorted(int(a) % max(rank, 1) for a in axes)
        spec = PoolSpec((1, 1), (1, 1), (0, 0), REDUCTIONS[self.op], global_pool=True)
        return make_layer(
            self.name,
            LayerKind.POOL,
            self.in_shapes[:1],
            self.out_shape,
            pool=spec,
            op_type=self.op,
            attrs={"axes": tuple(axes), "keepdims": int(self.attrs.get("keepdims", 1))},
        )

    def view_attrs(self) -> dict[str, Any]:
        """What a Slice reads from its constant inputs (starts, ends, axes, steps)."""
        if self.op != "Slice":
            return {}
        if "starts" in self.attrs:  # opset < 10
            return {k: tuple(self.attrs[k]) for k in ("starts", "ends", "axes") if k in self.attrs}
        names = ("starts", "ends", "axes", "steps")
        found = {name: self.constant_input(i + 1) for i, name in enumerate(names)}
        return {k: tuple(v) for k, v in found.items() if v is not None}

    def pool(self) -> Layer:
        mode = "max" if "Max" in self.op else "avg"
        if self.op.startswith("Global"):
            hw = tuple(self.in_shapes[0][2:4]) if self.in_shapes and len(self.in_shapes[0]) >= 4 else (1, 1)
            spec = PoolSpec(hw, (1, 1), (0, 0), mode, global_pool=True)  # type: ignore[arg-type]
        else:
            if "kernel_shape" not in self.attrs:
                raise self.fail("the required attribute kernel_shape is missing")
            kernel = tuple(self.attrs["kernel_shape"])
            pads = tuple(int(p) for p in self.attrs.get("pads", (0,) * 2 * len(kernel)))
            spec = PoolSpec(
                kernel[:2],
                tuple(self.attrs.get("strides", (1,) * len(kernel)))[:2],  # type: ignore[arg-type]
                pads[:2],
                mode,
                bool(self.attrs.get("ceil_mode", 0)),  # type: ignore[arg-type]
                padding_end=None if pads[2:] == pads[:2] else pads[2:4],  # type: ignore[arg-type]
                count_include_pad=bool(self.attrs.get("count_include_pad", 0)),
            )
        return make_layer(
            self.name, LayerKind.POOL, self.in_shapes[:1], self.out_shape, pool=spec, op_type=self.op
        )


# ---------------------------------------------------------------- writing


def to_onnx(graph: nx.DiGraph, opset: int = WRITE_OPSET) -> Any:
    """The layer graph with its weights as a checked ONNX ModelProto."""
    import onnx

    writer = _Writer(graph)
    model = writer.model(opset)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"model {graph.graph.get('name')!r}: the ONNX written is invalid: {exc}") from None
    return model


def save_onnx(graph: nx.DiGraph, path: str | Path) -> Path:
    """Write ``graph`` as a checked ONNX file, atomically (never half-written)."""
    import onnx

    from deepx_sim.results import atomic_path

    path = Path(path)
    if path.suffix != ".onnx":
        raise ModelError(f"{path}: the output must end in .onnx")
    model = to_onnx(graph)
    with atomic_path(path) as tmp:
        onnx.save(model, tmp)
    return path


class _Writer:
    """Layer graph -> ONNX nodes and initialisers."""

    def __init__(self, graph: nx.DiGraph) -> None:
        from deepx_sim.model.weights import require_weights

        self.graph = graph
        self.store = require_weights(graph, "writing ONNX")
        self.nodes: list[Any] = []
        self.inits: list[Any] = []

    def init(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, lay: Layer, transpose: bool = False) -> str:
        """The float weight tensor's name, through Cast or DequantizeLinear when stored otherwise."""
        from onnx import TensorProto, helper

        name, storage = f"{lay.name}/weight", self.store.storage(lay.name)
        stored = self.store.stored(lay.name)
        stored = stored.T if transpose else stored
        if storage.bits == 32:
            return self.init(name, stored.astype(np.float32))
        if storage.bits == 8:
            assert storage.scale is not None
            q = self.init(f"{name}_q", stored.astype(np.int8))
            s = self.init(f"{name}_scale", storage.scale.astype(np.float32))
            z = self.init(f"{name}_zero", np.zeros(storage.scale.shape, np.int8))
            self.nodes.append(
                helper.make_node(
                    "DequantizeLinear",
                    [q, s, z],
                    [name],
                    name=f"{name}_dequantize",
                    axis=1 if transpose else 0,
                )
            )
            return name
        raw = self.init(f"{name}_stored", stored)
        self.nodes.append(helper.make_node("Cast", [raw], [name], name=f"{name}_cast", to=TensorProto.FLOAT))
        return name

    def model(self, opset: int) -> Any:
        from onnx import TensorProto, helper

        inputs, outputs = [], []
        for lay in layers_in_order(self.graph):
            if lay.kind == LayerKind.INPUT:
                inputs.append(
                    helper.make_tensor_value_info(
                        lay.name, TensorProto.FLOAT, ["batch", *lay.output_shape[1:]]
                    )
                )
                continue
            preds = list(self.graph.predecessors(lay.name))
            if len(preds) == 1 and len(lay.input_shapes) > 1:
                preds = preds * len(lay.input_shapes)
            self.layer(lay, preds)
            if self.graph.out_degree(lay.name) == 0:
                outputs.append(
                    helper.make_tensor_value_info(
                        lay.name, TensorProto.FLOAT, ["batch", *lay.output_shape[1:]]
                    )
                )
        for key, array in self.store.training_state.items():
            self.init(TRAINING_PREFIX + key, array)
        graph_def = helper.make_graph(
            self.nodes, str(self.graph.graph.get("name", "model")), inputs, outputs, initializer=self.inits
        )
        model = helper.make_model(
            graph_def, opset_imports=[helper.make_opsetid("", opset)], producer_name="deepx_sim"
        )
        model.ir_version = min(model.ir_version, 8)  # readable by onnxruntime releases of the last years
        layers = layers_in_order(self.graph)
        sparse = [lay.name for lay in layers if self.store.storage(lay.name).sparse]
        origins = {lay.name: lay.origin for lay in layers if lay.origin}
        helper.set_model_props(model, {SPARSE_KEY: ",".join(sparse), ORIGIN_KEY: json.dumps(origins)})
        return model

    def layer(self, lay: Layer, preds: list[str]) -> None:
        from onnx import helper

        kind, node = lay.kind, None
        name = lay.name
        if kind in (LayerKind.CONV, LayerKind.DEPTHWISE_CONV):
            c = lay.conv
            assert c is not None
            ins = [preds[0], self.weight(lay)] + (
                [self.init(f"{name}/bias", self.store.get(name, "bias"))] if c.bias else []
            )
            node = helper.make_node(
                "Conv",
                ins,
                [name],
                name=name,
                kernel_shape=list(c.kernel),
                strides=list(c.stride),
                pads=list(c.pads),
                dilations=list(c.dilation),
                group=c.groups,
            )
        elif kind == LayerKind.FC:
            node = self.fc(lay, preds[0])
        elif kind == LayerKind.POOL:
            node = self.pool(lay, preds[0])
        elif kind == LayerKind.LAYERNORM:
            ins = [preds[0]] + [
                self.init(f"{name}/{r}", self.store.get(name, r))
                for r in ("scale", "bias")
                if self.store.has(name, r)
            ]
            node = helper.make_node(
                "LayerNormalization",
                ins,
                [name],
                name=name,
                axis=int(lay.attr("axis", -1)),
                epsilon=float(lay.attr("epsilon", 1e-5)),
            )
        elif kind == LayerKind.BATCHNORM:
            ins = [preds[0]] + [
                self.init(f"{name}/{r}", self.store.get(name, r)) for r in ("scale", "bias", "mean", "var")
            ]
            node = helper.make_node(
                "BatchNormalization", ins, [name], name=name, epsilon=float(lay.attr("epsilon", 1e-5))
            )
        else:
            node = self.simple(lay, preds)
        self.nodes.append(node)

    def fc(self, lay: Layer, x: str) -> Any:
        from onnx import helper

        name = lay.name
        bias = (
            [self.init(f"{name}/bias", self.store.get(name, "bias"))] if self.store.has(name, "bias") else []
        )
        if len(lay.input_shapes[0]) == 2:
            return helper.make_node("Gemm", [x, self.weight(lay), *bias], [name], name=name, transB=1)
        if not bias:
            return helper.make_node("MatMul", [x, self.weight(lay, transpose=True)], [name], name=name)
        self.nodes.append(
            helper.make_node("MatMul", [x, self.weight(lay, transpose=True)], [f"{name}/matmul"], name=name)
        )
        return helper.make_node("Add", [f"{name}/matmul", bias[0]], [name], name=f"{name}/add_bias")

    def pool(self, lay: Layer, x: str) -> Any:
        from onnx import helper

        p = lay.pool
        assert p is not None
        if p.global_pool and lay.op_type in REDUCTIONS:
            return helper.make_node(
                lay.op_type,
                [x],
                [lay.name],
                name=lay.name,
                axes=list(lay.attr("axes")),
                keepdims=int(lay.attr("keepdims", 1)),
            )
        if p.global_pool:
            op = "GlobalMaxPool" if p.mode == "max" else "GlobalAveragePool"
            return helper.make_node(op, [x], [lay.name], name=lay.name)
        extra = {} if p.mode == "max" else {"count_include_pad": int(p.count_include_pad)}
        return helper.make_node(
            "MaxPool" if p.mode == "max" else "AveragePool",
            [x],
            [lay.name],
            name=lay.name,
            kernel_shape=list(p.kernel),
            strides=list(p.stride),
            pads=list(p.pads),
            ceil_mode=int(p.ceil_mode),
            **extra,
        )

    def simple(self, lay: Layer, preds: list[str]) -> Any:
        from onnx import helper

        from deepx_sim.model.execute import concat_axis

        name, kind, op = lay.name, lay.kind, lay.op_type
        ins = list(preds)
        attrs = {k: v for k, v in lay.attrs if k not in ("min", "max", "constant_position")}
        if kind == LayerKind.ACTIVATION and op in ("Clip", "Relu6"):
            ins += [
                self.init(f"{name}/min", np.float32(lay.attr("min", 0.0 if op == "Relu6" else -np.inf))),
                self.init(f"{name}/max", np.float32(lay.attr("max", 6.0 if op == "Relu6" else np.inf))),
            ]
            op = "Clip"
        elif kind == LayerKind.ADD and self.store.has(name, "constant"):
            ins.insert(
                int(lay.attr("constant_position", 1)),
                self.init(f"{name}/constant", self.store.get(name, "constant")),
            )
        elif kind == LayerKind.CONCAT:
            attrs["axis"] = concat_axis(lay)
        elif kind == LayerKind.VIEW and op == "Slice":
            names = [
                self.init(f"{name}/{key}", np.array(lay.attr(key), dtype=np.int64))
                for key in ("starts", "ends", "axes", "steps")
                if lay.attr(key) is not None
            ]
            return helper.make_node("Slice", [ins[0], *names], [name], name=name)
        elif kind == LayerKind.VIEW and op == "Expand":
            shape = self.init(f"{name}/shape", np.array([1, *lay.output_shape[1:]], dtype=np.int64))
            return helper.make_node("Expand", [ins[0], shape], [name], name=name)
        elif kind == LayerKind.MATMUL:
            return helper.make_node("MatMul", ins, [name], name=name)
        elif kind == LayerKind.VIEW and op == "Gather" and lay.attr("indices") is not None:
            indices = self.init(f"{name}/indices", np.array(lay.attr("indices"), dtype=np.int64))
            return helper.make_node(
                "Gather", [ins[0], indices], [name], name=name, axis=int(lay.attr("axis", 0))
            )
        elif kind == LayerKind.VIEW and op == "Split":
            raise ModelError(f"layer {name!r} (Split) cannot be written to ONNX: one layer, several outputs")
        elif kind == LayerKind.FLATTEN:
            rest = lay.output_shape[1:]
            if len(lay.output_shape) == 2 and math.prod(lay.input_shapes[0][1:]) == rest[0]:
                return helper.make_node("Flatten", ins, [name], name=name, axis=1)
            shape = self.init(f"{name}/shape", np.array([-1, *rest], dtype=np.int64))
            return helper.make_node("Reshape", [ins[0], shape], [name], name=name)
        elif kind in (LayerKind.OTHER, LayerKind.INPUT) or op in ("", str(kind)):
            raise ModelError(f"layer {name!r} ({op}, kind {kind}) cannot be written to ONNX")
        return helper.make_node(op, ins, [name], name=name, **attrs)
