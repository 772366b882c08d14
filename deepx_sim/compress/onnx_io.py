"""Networks to and from ONNX.

Export writes one node chain: Gemm for dense layers (MatMul when there is no
bias), Conv, Relu, MaxPool, Flatten, Dropout, Softmax.  Weights stored at
64 or 16 bits are initialisers of that type followed by a Cast to float;
8-bit weights are int8 with per-output-channel scales and a DequantizeLinear
(opset >= 13).  Training-only state is written as initialisers no node reads,
the way a training framework's checkpoint carries it; parameter cleaning
removes them.

Import reads chains of those operators (Gemm, MatMul + Add, Conv, Relu,
MaxPool, Flatten/Reshape, Dropout, Softmax, Identity, Cast and
DequantizeLinear on weights) and names anything else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deepx_sim.compress.network import Network, Op
from deepx_sim.errors import ModelError
from deepx_sim.results import atomic_path

TRAINING_PREFIX = "training_state/"


def _weight_inputs(op: Op, role: str, array: np.ndarray, nodes: list[Any], inits: list[Any]) -> str:
    """Initialisers for one weight tensor at the op's precision; returns the float tensor name."""
    from onnx import TensorProto, helper, numpy_helper

    name = f"{op.name}/{role}"
    if role == "bias" or op.bits == 32:
        inits.append(numpy_helper.from_array(np.asarray(array, dtype=np.float32), name))
        return name
    if op.bits == 8 and role == "weight":
        assert op.scale is not None
        inits.append(numpy_helper.from_array(np.asarray(array, dtype=np.int8), f"{name}_q"))
        inits.append(numpy_helper.from_array(op.scale.astype(np.float32), f"{name}_scale"))
        inits.append(numpy_helper.from_array(np.zeros(op.scale.shape, dtype=np.int8), f"{name}_zero"))
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_scale", f"{name}_zero"],
                                      [name], name=f"{name}_dequantize", axis=0))
        return name
    dtype = {64: np.float64, 16: np.float16}[op.bits]
    inits.append(numpy_helper.from_array(np.asarray(array, dtype=dtype), f"{name}_stored"))
    nodes.append(helper.make_node("Cast", [f"{name}_stored"], [name], name=f"{name}_cast",
                                  to=TensorProto.FLOAT))
    return name


def network_to_onnx(net: Network, opset: int = 17) -> Any:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    inits: list[Any] = []
    current = "input"
    for op in net.ops:
        out = op.name
        if op.kind == "dense":
            assert op.weight is not None
            w = _weight_inputs(op, "weight", op.weight, nodes, inits)
            if op.bias is not None:
                b = _weight_inputs(op, "bias", op.bias, nodes, inits)
                nodes.append(helper.make_node("Gemm", [current, w, b], [out], name=op.name, transB=1))
            else:
                nodes.append(helper.make_node("Gemm", [current, w], [out], name=op.name, transB=1))
        elif op.kind == "conv":
            assert op.weight is not None
            inputs = [current, _weight_inputs(op, "weight", op.weight, nodes, inits)]
            if op.bias is not None:
                inputs.append(_weight_inputs(op, "bias", op.bias, nodes, inits))
            nodes.append(helper.make_node("Conv", inputs, [out], name=op.name,
                                          kernel_shape=list(op.weight.shape[2:]), strides=list(op.stride),
                                          pads=[op.pad[0], op.pad[1], op.pad[0], op.pad[1]]))
        elif op.kind == "maxpool":
            nodes.append(helper.make_node("MaxPool", [current], [out], name=op.name,
                                          kernel_shape=list(op.kernel), strides=list(op.stride)))
        elif op.kind == "flatten":
            nodes.append(helper.make_node("Flatten", [current], [out], name=op.name, axis=1))
        else:
            onnx_op = {"relu": "Relu", "dropout": "Dropout", "softmax": "Softmax"}[op.kind]
            nodes.append(helper.make_node(onnx_op, [current], [out], name=op.name))
        current = out
    for key, array in net.training_state.items():
        inits.append(numpy_helper.from_array(np.asarray(array), TRAINING_PREFIX + key))
    out_shape = net.shapes()[-1]
    graph = helper.make_graph(
        nodes, net.name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *net.input_shape])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, ["batch", *out_shape])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="deepx_sim")
    model.ir_version = min(model.ir_version, 8)  # readable by onnxruntime releases of the last years
    onnx.checker.check_model(model)
    return model


def save_onnx(net: Network, path: str | Path) -> Path:
    """Write ``net`` as a checked ONNX file, atomically (never half-written)."""
    import onnx

    path = Path(path)
    if path.suffix != ".onnx":
        raise ModelError(f"{path}: the output must end in .onnx")
    model = network_to_onnx(net)
    with atomic_path(path) as tmp:
        onnx.save(model, tmp)
    return path


def load_network(path: str | Path) -> Network:
    """Read a chain-shaped ONNX model into a Network; unsupported operators are named."""
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # the protobuf parser and checker raise many types
        raise ModelError(f"{path}: not a valid ONNX model ({exc})") from None
    graph = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    real_inputs = [i for i in graph.input if i.name not in inits]
    if len(real_inputs) != 1:
        raise ModelError(f"{path}: compress takes models with one input, this has "
                         f"{[i.name for i in real_inputs]}")
    dims = [d.dim_value for d in real_inputs[0].type.tensor_type.shape.dim][1:]
    if any(d <= 0 for d in dims):
        raise ModelError(f"{path}: input {real_inputs[0].name!r} needs fixed dimensions after the batch "
                         f"axis, got {dims}")
    # weight tensors computed from initialisers (Cast, DequantizeLinear) count as constants
    consts: dict[str, tuple[np.ndarray, int, np.ndarray | None]] = {
        k: (v, {np.dtype(np.float64): 64, np.dtype(np.float16): 16}.get(v.dtype, 32), None)
        for k, v in inits.items()}
    ops: list[Op] = []
    current = real_inputs[0].name

    def const(name: str, node: Any) -> tuple[np.ndarray, int, np.ndarray | None]:
        if name not in consts:
            raise ModelError(f"{path}: node {node.name or node.op_type!r} ({node.op_type}) reads {name!r}, "
                             "which is not a constant weight; only single-chain models are supported")
        return consts[name]

    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        name = node.name or node.output[0]
        if node.op_type == "Cast" and node.input[0] in consts:
            array, bits, scale = const(node.input[0], node)
            consts[node.output[0]] = (array, bits, scale)
            continue
        if node.op_type == "DequantizeLinear" and node.input[0] in consts:
            q = const(node.input[0], node)[0]
            scale = const(node.input[1], node)[0].astype(np.float32)
            if len(node.input) > 2 and node.input[2] and np.any(const(node.input[2], node)[0]):
                raise ModelError(f"{path}: node {name!r}: only symmetric (zero-point 0) int8 weights "
                                 "are supported")
            consts[node.output[0]] = (q, 8, scale if scale.ndim else np.full(q.shape[0], float(scale)))
            continue
        if node.input and node.input[0] != current:
            raise ModelError(f"{path}: node {name!r} ({node.op_type}) does not continue the chain from "
                             f"{current!r}; only single-chain models are supported")
        if node.op_type in ("Gemm", "MatMul"):
            w, bits, scale = const(node.input[1], node)
            if node.op_type == "MatMul" or not attrs.get("transB", 0):
                w = w.T  # stored (in, out); ours is (out, in)
                if scale is not None and bits == 8:
                    raise ModelError(f"{path}: node {name!r}: int8 weights must be stored (out, in)")
            if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
                raise ModelError(f"{path}: node {name!r}: Gemm with transA, alpha or beta is not supported")
            bias = const(node.input[2], node)[0].astype(np.float32) if len(node.input) > 2 else None
            ops.append(Op(name, "dense", weight=np.ascontiguousarray(w), bias=bias, bits=bits, scale=scale))
        elif node.op_type == "Add" and ops and ops[-1].kind == "dense" and ops[-1].bias is None \
                and node.input[1] in consts:
            ops[-1] = Op(ops[-1].name, "dense", weight=ops[-1].weight,
                         bias=const(node.input[1], node)[0].astype(np.float32).reshape(-1),
                         bits=ops[-1].bits, scale=ops[-1].scale)
        elif node.op_type == "Conv":
            w, bits, scale = const(node.input[1], node)
            if attrs.get("group", 1) != 1 or any(d != 1 for d in attrs.get("dilations", [1, 1])):
                raise ModelError(f"{path}: node {name!r}: grouped or dilated Conv is not supported")
            pads = list(attrs.get("pads", [0, 0, 0, 0]))
            if pads[:2] != pads[2:]:
                raise ModelError(f"{path}: node {name!r}: asymmetric padding {pads} is not supported")
            bias = const(node.input[2], node)[0].astype(np.float32) if len(node.input) > 2 else None
            ops.append(Op(name, "conv", weight=w, bias=bias, bits=bits, scale=scale,
                          stride=tuple(attrs.get("strides", [1, 1])),  # type: ignore[arg-type]
                          pad=(pads[0], pads[1])))
        elif node.op_type == "MaxPool":
            ops.append(Op(name, "maxpool", kernel=tuple(attrs["kernel_shape"]),  # type: ignore[arg-type]
                          stride=tuple(attrs.get("strides", attrs["kernel_shape"]))))  # type: ignore[arg-type]
        elif node.op_type in ("Flatten", "Reshape"):
            ops.append(Op(name, "flatten"))
        elif node.op_type in ("Relu", "Dropout", "Softmax"):
            ops.append(Op(name, node.op_type.lower()))
        elif node.op_type == "Identity":
            pass
        else:
            raise ModelError(f"{path}: operator {node.op_type} (node {name!r}) is not supported by compress;"
                             " supported: Gemm, MatMul, Add (bias), Conv, Relu, MaxPool, Flatten, Reshape, "
                             "Dropout, Softmax, Identity, Cast, DequantizeLinear")
        current = node.output[0]
    # initialisers no node reads are training-only state (gradients, optimiser moments)
    read = {name for node in graph.node for name in node.input}
    training = {k.removeprefix(TRAINING_PREFIX): v for k, v in inits.items() if k not in read}
    return Network(graph.name or path.stem, tuple(dims), ops, training)
