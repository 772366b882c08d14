"""A small sequential/DAG builder with shape inference, used by the model zoo.

Each method appends one layer and returns its name; ``inputs`` defaults to the
layer added last, so chains read top to bottom and branches name their inputs.
"""

from __future__ import annotations

import math

import networkx as nx

from deepx_sim.errors import ModelError
from deepx_sim.model.layers import (
    ConvSpec,
    FcSpec,
    LayerKind,
    PoolSpec,
    Shape,
    add_layer,
    conv_output_hw,
    get_layer,
    make_layer,
    new_layer_graph,
    validate_graph,
)


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else value


class GraphBuilder:
    """Builds a layer graph layer by layer; call :meth:`build` at the end."""

    def __init__(self, name: str, input_shape: Shape, source: str = "zoo") -> None:
        self.graph = new_layer_graph(name, source)
        self._last = ""
        self._counts: dict[str, int] = {}
        self.input("input", input_shape)

    # -------------------------------------------------------------- plumbing
    def _auto_name(self, prefix: str) -> str:
        self._counts[prefix] = self._counts.get(prefix, 0) + 1
        return f"{prefix}{self._counts[prefix]}"

    def _inputs(self, inputs: str | list[str] | None) -> list[str]:
        if inputs is None:
            return [self._last]
        return [inputs] if isinstance(inputs, str) else list(inputs)

    def shape(self, name: str | None = None) -> Shape:
        return get_layer(self.graph, name or self._last).output_shape

    def _add(self, name: str, kind: LayerKind, inputs: list[str], out_shape: Shape, **specs: object) -> str:
        in_shapes = [self.shape(i) for i in inputs]
        layer = make_layer(name, kind, in_shapes, out_shape, **specs)  # type: ignore[arg-type]
        add_layer(self.graph, layer, inputs)
        self._last = name
        return name

    # -------------------------------------------------------------- layers
    def input(self, name: str, shape: Shape) -> str:
        layer = make_layer(name, LayerKind.INPUT, [], shape)
        add_layer(self.graph, layer)
        self._last = name
        return name

    def conv(
        self,
        c_out: int,
        kernel: int | tuple[int, int],
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bias: bool = True,
        name: str | None = None,
        inputs: str | list[str] | None = None,
    ) -> str:
        ins = self._inputs(inputs)
        n, c_in, h, w = self.shape(ins[0])
        k, s, p = _pair(kernel), _pair(stride), _pair(padding)
        oh, ow = conv_output_hw(h, w, k, s, p)
        spec = ConvSpec(c_in, c_out, k, s, p, groups, bias)
        depthwise = groups > 1 and groups == c_in == c_out
        kind = LayerKind.DEPTHWISE_CONV if depthwise else LayerKind.CONV
        return self._add(name or self._auto_name("conv"), kind, ins, (n, c_out, oh, ow), conv=spec)

    def fc(
        self, m: int, bias: bool = True, name: str | None = None, inputs: str | list[str] | None = None
    ) -> str:
        """A linear layer on the last axis: (N, n) -> (N, m), or (N, tokens, n) -> (N, tokens, m)."""
        ins = self._inputs(inputs)
        shape = self.shape(ins[0])
        if len(shape) < 2:
            raise ModelError(f"fc layer {name!r} needs a (N, ..., features) input, got {shape}")
        return self._add(
            name or self._auto_name("fc"),
            LayerKind.FC,
            ins,
            (*shape[:-1], m),
            fc=FcSpec(m=m, n=shape[-1], bias=bias),
            op_type="Gemm" if len(shape) == 2 else "MatMul",
        )

    def pool(
        self,
        kernel: int,
        stride: int,
        padding: int = 0,
        mode: str = "max",
        ceil_mode: bool = False,
        name: str | None = None,
        inputs: str | list[str] | None = None,
    ) -> str:
        ins = self._inputs(inputs)
        n, c, h, w = self.shape(ins[0])
        k, s, p = _pair(kernel), _pair(stride), _pair(padding)
        oh, ow = conv_output_hw(h, w, k, s, p, ceil_mode)
        spec = PoolSpec(k, s, p, mode, ceil_mode)
        return self._add(name or self._auto_name("pool"), LayerKind.POOL, ins, (n, c, oh, ow), pool=spec)

    def global_pool(
        self, mode: str = "avg", name: str | None = None, inputs: str | list[str] | None = None
    ) -> str:
        ins = self._inputs(inputs)
        n, c, h, w = self.shape(ins[0])
        spec = PoolSpec((h, w), (1, 1), (0, 0), mode, global_pool=True)
        return self._add(name or self._auto_name("gpool"), LayerKind.POOL, ins, (n, c, 1, 1), pool=spec)

    def _same_shape(
        self,
        kind: LayerKind,
        prefix: str,
        name: str | None,
        inputs: str | list[str] | None,
        op_type: str = "",
        extra_params: int = 0,
        attrs: dict[str, float] | None = None,
    ) -> str:
        ins = self._inputs(inputs)
        return self._add(
            name or self._auto_name(prefix),
            kind,
            ins,
            self.shape(ins[0]),
            op_type=op_type,
            extra_params=extra_params,
            attrs=attrs,
        )

    def relu(
        self,
        name: str | None = None,
        inputs: str | list[str] | None = None,
        op_type: str = "Relu",
        attrs: dict[str, float] | None = None,
    ) -> str:
        return self._same_shape(LayerKind.ACTIVATION, "relu", name, inputs, op_type, attrs=attrs)

    def lrn(self, name: str | None = None, inputs: str | list[str] | None = None) -> str:
        # AlexNet's local response normalisation (Krizhevsky et al. 2012, Sec. 3.3)
        return self._same_shape(
            LayerKind.LRN,
            "lrn",
            name,
            inputs,
            "LRN",
            attrs={"size": 5, "alpha": 1e-4, "beta": 0.75, "bias": 1.0},
        )

    def batchnorm(self, name: str | None = None, inputs: str | list[str] | None = None) -> str:
        channels = self.shape(self._inputs(inputs)[0])[1]
        # learned scale and shift; running mean/var are buffers, not parameters
        return self._same_shape(
            LayerKind.BATCHNORM,
            "bn",
            name,
            inputs,
            "BatchNormalization",
            extra_params=2 * channels,
            attrs={"epsilon": 1e-5},
        )

    def dropout(self, name: str | None = None, inputs: str | list[str] | None = None) -> str:
        return self._same_shape(LayerKind.DROPOUT, "dropout", name, inputs, "Dropout")

    def softmax(self, name: str | None = None, inputs: str | list[str] | None = None) -> str:
        return self._same_shape(LayerKind.SOFTMAX, "softmax", name, inputs, "Softmax")

    def add(self, inputs: list[str], name: str | None = None) -> str:
        shapes = {self.shape(i) for i in inputs}
        if len(shapes) != 1:
            raise ModelError(f"add {name!r}: inputs have different shapes {sorted(shapes)}")
        return self._same_shape(LayerKind.ADD, "add", name, inputs, "Add")

    def concat(self, inputs: list[str], name: str | None = None) -> str:
        """Join (N, C, ...) tensors along the channel axis (DenseNet's and Inception's joins)."""
        shapes = [self.shape(i) for i in inputs]
        if len({(s[0], *s[2:]) for s in shapes}) != 1:
            raise ModelError(f"concat {name!r}: inputs differ beyond the channel axis: {shapes}")
        out = (shapes[0][0], sum(s[1] for s in shapes), *shapes[0][2:])
        return self._add(name or self._auto_name("concat"), LayerKind.CONCAT, inputs, out,
                         op_type="Concat", attrs={"axis": 1})

    def flatten(self, name: str | None = None, inputs: str | list[str] | None = None) -> str:
        ins = self._inputs(inputs)
        shape = self.shape(ins[0])
        return self._add(
            name or self._auto_name("flatten"),
            LayerKind.FLATTEN,
            ins,
            (shape[0], math.prod(shape[1:])),
            op_type="Flatten",
        )

    # -------------------------------------------------------------- transformers
    def embedding(
        self, vocab: int, dim: int, name: str | None = None, inputs: str | list[str] | None = None
    ) -> str:
        """A lookup table of ``vocab`` x ``dim`` parameters read by integer ids."""
        ins = self._inputs(inputs)
        return self._add(
            name or self._auto_name("embedding"),
            LayerKind.EMBEDDING,
            ins,
            (*self.shape(ins[0]), dim),
            op_type="Gather",
            extra_params=vocab * dim,
        )

    def layernorm(self, name: str | None = None, inputs: str | list[str] | None = None) -> str:
        """Layer normalisation over the last axis with a learned scale and shift."""
        dim = self.shape(self._inputs(inputs)[0])[-1]
        return self._same_shape(
            LayerKind.LAYERNORM,
            "ln",
            name,
            inputs,
            "LayerNormalization",
            extra_params=2 * dim,
            attrs={"axis": -1, "epsilon": 1e-12},
        )

    def matmul(self, a: str, b: str, name: str | None = None) -> str:
        """The product of two activations (..., p, q) x (..., q, r) -> (..., p, r)."""
        sa, sb = self.shape(a), self.shape(b)
        if sa[-1] != sb[-2] or sa[:-2] != sb[:-2]:
            raise ModelError(f"matmul {name!r}: shapes {sa} and {sb} do not multiply")
        return self._add(
            name or self._auto_name("matmul"), LayerKind.MATMUL, [a, b], (*sa[:-1], sb[-1]), op_type="MatMul"
        )

    def view(
        self,
        shape: tuple[int, ...] | None = None,
        perm: tuple[int, ...] | None = None,
        name: str | None = None,
        inputs: str | list[str] | None = None,
    ) -> str:
        """A reshape to ``shape`` or a transpose by ``perm``: data movement, no arithmetic."""
        ins = self._inputs(inputs)
        src = self.shape(ins[0])
        if perm is not None:
            return self._add(
                name or self._auto_name("transpose"),
                LayerKind.VIEW,
                ins,
                tuple(src[i] for i in perm),
                op_type="Transpose",
                attrs={"perm": tuple(perm)},
            )
        assert shape is not None
        if math.prod(shape) != math.prod(src):  # a part of the tensor (the class token)
            return self._add(name or self._auto_name("slice"), LayerKind.VIEW, ins, shape, op_type="Slice")
        return self._add(name or self._auto_name("reshape"), LayerKind.FLATTEN, ins, shape, op_type="Reshape")

    def class_token(self, name: str | None = None, inputs: str | list[str] | None = None) -> str:
        """Prepend one learned token to a (N, tokens, width) sequence (ViT's [class])."""
        ins = self._inputs(inputs)
        n, tokens, width = self.shape(ins[0])
        return self._add(
            name or self._auto_name("cls"),
            LayerKind.CONCAT,
            ins,
            (n, tokens + 1, width),
            op_type="Concat",
            extra_params=width,
        )

    def scale(
        self,
        name: str | None = None,
        inputs: str | list[str] | None = None,
        params: int = 0,
        op_type: str = "Mul",
    ) -> str:
        """An element-wise op with a constant (attention's 1/sqrt(d)); ``params`` learned values
        (a position embedding added, a class token)."""
        return self._same_shape(LayerKind.ADD, "scale", name, inputs, op_type, extra_params=params)

    @property
    def last(self) -> str:
        return self._last

    def build(self) -> nx.DiGraph:
        validate_graph(self.graph)
        return self.graph
