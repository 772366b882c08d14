"""Import an ONNX model (opset 7 or later) as a layer graph.

Shapes come from ``onnx.shape_inference``; weights stay in the file's
initializers and are converted to numpy only when asked for (see WeightStore).
Operators we do not model become ``other`` layers costed at one operation per
output element, and are listed in a warning.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path

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
    make_layer,
    new_layer_graph,
    tensor_bytes,
    validate_graph,
)
from deepx_sim.model.weights import WeightStore

MIN_OPSET = 7

_SIMPLE_KINDS: dict[str, LayerKind] = {
    **{op: LayerKind.ACTIVATION for op in (
        "Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Clip", "HardSigmoid", "HardSwish",
        "Elu", "Selu", "Gelu", "Softplus", "Softsign", "Mish", "Erf", "ThresholdedRelu")},
    **{op: LayerKind.ADD for op in ("Add", "Sum", "Sub", "Mul", "Div")},
    **{op: LayerKind.FLATTEN for op in ("Flatten", "Reshape", "Squeeze", "Unsqueeze")},
    "Concat": LayerKind.CONCAT,
    "Dropout": LayerKind.DROPOUT,
    "Softmax": LayerKind.SOFTMAX,
    "LogSoftmax": LayerKind.SOFTMAX,
    "LRN": LayerKind.LRN,
    "BatchNormalization": LayerKind.BATCHNORM,
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


def _attrs(node: object) -> dict[str, object]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}  # type: ignore[attr-defined]


def _dims(value_info: object) -> list[int | str]:
    dims: list[int | str] = []
    for d in value_info.type.tensor_type.shape.dim:  # type: ignore[attr-defined]
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or "?")
    return dims


def load_onnx(
    path: str | Path,
    input_shapes: Mapping[str | None, Shape] | None = None,
) -> nx.DiGraph:
    """Read ``path`` into a layer graph.

    ``input_shapes`` fixes dynamic input dimensions: ``{input_name: shape}``,
    or ``{None: shape}`` for a single-input model.  Raises ModelError for a
    missing or invalid file, an opset below 7, or an unresolved dynamic input.
    """
    import onnx
    from onnx import numpy_helper, shape_inference

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # the protobuf parser raises many types
        raise ModelError(f"{path}: not a readable ONNX model ({exc})") from None
    opset = max(
        (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0
    )
    if opset < MIN_OPSET:
        raise ModelError(f"{path}: opset_import is {opset}; opset {MIN_OPSET} or later is needed")

    graph_def = model.graph
    initializers = {t.name: t for t in graph_def.initializer}
    constants: dict[str, np.ndarray] = {}
    inputs = [i for i in graph_def.input if i.name not in initializers]
    if not inputs:
        raise ModelError(f"{path}: the graph has no inputs")

    overrides = dict(input_shapes or {})
    if None in overrides:
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs)
            raise ModelError(f"{path}: --input-shape needs NAME=... for a model with inputs {names}")
        overrides[inputs[0].name] = overrides.pop(None)
    unknown = set(overrides) - {i.name for i in inputs}
    if unknown:
        names = ", ".join(i.name for i in inputs)
        raise ModelError(f"{path}: --input-shape names {sorted(unknown)}; the inputs are {names}")

    input_dims: dict[str, Shape] = {}
    for inp in inputs:
        dims = _dims(inp)
        if inp.name in overrides:
            shape = tuple(overrides[inp.name])  # type: ignore[arg-type]
            if len(shape) != len(dims):
                raise ModelError(
                    f"{path}: input {inp.name!r} has rank {len(dims)} {dims}, "
                    f"--input-shape gave {shape}"
                )
            for d, value in zip(inp.type.tensor_type.shape.dim, shape, strict=True):
                d.Clear()
                d.dim_value = value
        elif any(isinstance(d, str) for d in dims):
            raise ModelError(
                f"{path}: input {inp.name!r} has dynamic dimensions {dims}; give them with "
                f"--input-shape {inp.name}={'x'.join(str(d) if isinstance(d, int) else '1' for d in dims)}"
            )
        else:
            shape = tuple(int(d) for d in dims)
        input_dims[inp.name] = shape

    try:
        inferred = shape_inference.infer_shapes(model, strict_mode=False)
    except Exception as exc:
        raise ModelError(f"{path}: ONNX shape inference failed: {exc}") from None
    shapes: dict[str, Shape] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]:
        dims = _dims(vi)
        if dims and all(isinstance(d, int) for d in dims):
            shapes[vi.name] = tuple(int(d) for d in dims)  # type: ignore[misc]
        elif vi.type.tensor_type.HasField("shape") and not dims:
            shapes[vi.name] = ()
    shapes.update(input_dims)
    for name, tensor in initializers.items():
        shapes[name] = tuple(int(d) for d in tensor.dims)

    graph = new_layer_graph(path.stem, str(path))
    store = WeightStore()
    graph.graph["weights"] = store
    producer: dict[str, str] = {}
    for inp in inputs:
        layer = make_layer(inp.name, LayerKind.INPUT, [], input_dims[inp.name], op_type="Input")
        add_layer(graph, layer)
        producer[inp.name] = inp.name

    def static_array(name: str) -> np.ndarray | None:
        if name in initializers:
            return numpy_helper.to_array(initializers[name])
        return constants.get(name)

    def lazy(name: str, transform: str = "") -> object | None:
        tensor = initializers.get(name)
        if tensor is None:
            array = constants.get(name)
            return None if array is None else (lambda a=array: a.T if transform == "T" else a)
        return lambda t=tensor: (
            numpy_helper.to_array(t).T if transform == "T" else numpy_helper.to_array(t)
        )

    unknown_ops: dict[str, int] = {}
    used_names = set(graph.nodes)
    for index, node in enumerate(graph_def.node):
        if node.op_type == "Constant" and node.output:
            value = next((a for a in node.attribute if a.name == "value"), None)
            if value is not None:
                constants[node.output[0]] = numpy_helper.to_array(value.t)
                shapes[node.output[0]] = tuple(constants[node.output[0]].shape)
                continue
        name = node.name or f"{node.op_type}_{index}"
        while name in used_names:
            name = f"{name}_{index}"
        used_names.add(name)
        act_inputs = [t for t in node.input if t in producer]
        in_shapes = [shapes.get(t, ()) for t in act_inputs]
        out_name = node.output[0] if node.output else ""
        if out_name not in shapes:
            raise ModelError(
                f"{path}: node {name!r} ({node.op_type}): shape inference gave no static "
                f"shape for output {out_name!r}; give --input-shape or check the model"
            )
        out_shape = shapes[out_name]
        layer = _make_onnx_layer(path, node, name, in_shapes, out_shape, shapes, static_array,
                                 store, lazy, unknown_ops)
        add_layer(graph, layer, dict.fromkeys(producer[t] for t in act_inputs))
        for t in act_inputs:  # edge size is the tensor's own, for multi-output producers
            src = producer[t]
            elements = math.prod(shapes.get(t, ()))
            graph.edges[src, name]["elements"] = elements
            graph.edges[src, name]["size_bytes"] = tensor_bytes(elements, 32)
        for out in node.output:
            producer[out] = name
    if unknown_ops:
        listing = ", ".join(f"{op} x{count}" for op, count in sorted(unknown_ops.items()))
        warnings.warn(
            f"{path}: operators imported as 'other' (cost estimated by output size): {listing}",
            UnknownOperatorWarning, stacklevel=2,
        )
    validate_graph(graph)
    return graph


def _make_onnx_layer(path: Path, node: object, name: str, in_shapes: list[Shape],
                     out_shape: Shape, shapes: dict[str, Shape], static_array: object,
                     store: WeightStore, lazy: object, unknown_ops: dict[str, int]) -> Layer:
    op = node.op_type  # type: ignore[attr-defined]
    attrs = _attrs(node)
    inputs = list(node.input)  # type: ignore[attr-defined]

    def register(role: str, tensor: str, transform: str = "") -> None:
        loader = lazy(tensor, transform)  # type: ignore[operator]
        if loader is not None:
            store.register(name, role, loader)

    if op == "Conv":
        w_shape = shapes.get(inputs[1])
        if not w_shape or len(w_shape) != 4:
            raise ModelError(f"{path}: Conv {name!r}: only 2-D convolutions with a known "
                             f"weight shape are supported, got weight shape {w_shape}")
        c_out, c_in_per_group, kh, kw = w_shape
        groups = int(attrs.get("group", 1))  # type: ignore[arg-type]
        strides = tuple(attrs.get("strides", (1, 1)))  # type: ignore[arg-type]
        pads = tuple(attrs.get("pads", (0, 0, 0, 0)))  # type: ignore[arg-type]
        has_bias = len(inputs) > 2 and bool(inputs[2])
        spec = ConvSpec(c_in_per_group * groups, c_out, (kh, kw), strides[:2],  # type: ignore[arg-type]
                        pads[:2], groups, has_bias)  # type: ignore[arg-type]
        depthwise = groups > 1 and groups == spec.c_in == c_out
        register("weight", inputs[1])
        if has_bias:
            register("bias", inputs[2])
        kind = LayerKind.DEPTHWISE_CONV if depthwise else LayerKind.CONV
        return make_layer(name, kind, in_shapes[:1], out_shape, conv=spec, op_type=op)

    if op in ("Gemm", "MatMul"):
        b_shape = shapes.get(inputs[1]) if len(inputs) > 1 else None
        is_weight = static_array(inputs[1]) is not None  # type: ignore[operator]
        if is_weight and b_shape and len(b_shape) == 2:
            trans_b = op == "Gemm" and int(attrs.get("transB", 0)) == 1  # type: ignore[arg-type]
            m, n = (b_shape[0], b_shape[1]) if trans_b else (b_shape[1], b_shape[0])
            has_bias = op == "Gemm" and len(inputs) > 2 and bool(inputs[2])
            register("weight", inputs[1], "" if trans_b else "T")  # always (m, n)
            if has_bias:
                register("bias", inputs[2])
            return make_layer(name, LayerKind.FC, in_shapes[:1], out_shape,
                              fc=FcSpec(m=m, n=n, bias=has_bias), op_type=op)
        # activation x activation product (attention): 2 * out elements * inner dim
        inner = in_shapes[0][-1] if in_shapes and in_shapes[0] else 1
        return make_layer(name, LayerKind.OTHER, in_shapes, out_shape, op_type=op,
                          flops_override=2 * math.prod(out_shape) * inner)

    if op in ("MaxPool", "AveragePool"):
        kernel = tuple(attrs["kernel_shape"])  # type: ignore[arg-type]
        strides = tuple(attrs.get("strides", (1,) * len(kernel)))  # type: ignore[arg-type]
        pads = tuple(attrs.get("pads", (0,) * 2 * len(kernel)))  # type: ignore[arg-type]
        spec = PoolSpec(kernel[:2], strides[:2], pads[:2],  # type: ignore[arg-type]
                        "max" if op == "MaxPool" else "avg",
                        bool(attrs.get("ceil_mode", 0)))
        return make_layer(name, LayerKind.POOL, in_shapes[:1], out_shape, pool=spec, op_type=op)
    if op in ("GlobalAveragePool", "GlobalMaxPool"):
        hw = tuple(in_shapes[0][2:4]) if in_shapes and len(in_shapes[0]) >= 4 else (1, 1)
        spec = PoolSpec(hw, (1, 1), (0, 0), "avg" if "Average" in op else "max",  # type: ignore[arg-type]
                        global_pool=True)
        return make_layer(name, LayerKind.POOL, in_shapes[:1], out_shape, pool=spec, op_type=op)

    if op == "BatchNormalization":
        channels = out_shape[1] if len(out_shape) > 1 else 0
        register("scale", inputs[1])
        register("bias", inputs[2])
        return make_layer(name, LayerKind.BATCHNORM, in_shapes[:1], out_shape, op_type=op,
                          extra_params=2 * channels)

    kind = _SIMPLE_KINDS.get(op)
    if kind is None:
        unknown_ops[op] = unknown_ops.get(op, 0) + 1
        kind = LayerKind.OTHER
    return make_layer(name, kind, in_shapes, out_shape, op_type=op)
