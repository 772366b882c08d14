"""CNNs written directly with ``onnx.helper``, the way an exporter writes them:
held-out architectures and randomly sampled ones.

They check a calibrated cost model on models it has not seen, and they share no
code with deepx_sim's own ONNX writer, so they also exercise the importer on
files from elsewhere.  Names follow torch.onnx (``/features.3/Conv``, outputs
``/features.3/Conv_output_0``); weights are random (He initialisation), which
is all timing needs.  Shapes are those of SqueezeNet (Iandola et al. 2016),
DenseNet (Huang et al. 2017), MobileNet v1 (Howard et al. 2017) and RegNetX
(Radosavovic et al. 2020), at a few widths and input sizes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

Shape = tuple[int, ...]
OPSET = 13


class OnnxNet:
    """Append ONNX nodes to a chain (or DAG) of NCHW tensors, tracking shapes."""

    def __init__(self, name: str, input_shape: Shape, seed: int = 0) -> None:
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes: list[object] = []
        self.initializers: list[object] = []
        self.shapes: dict[str, Shape] = {"input": input_shape}
        self.input_shape = input_shape
        self.last = "input"
        self._count = 0

    # ------------------------------------------------------------ plumbing
    def _node(self, op: str, scope: str, inputs: list[str], out_shape: Shape, **attrs: object) -> str:
        from onnx import helper

        self._count += 1
        name = f"/{scope}/{op}" if scope else f"/{op}_{self._count}"
        out = f"{name}_output_0"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        self.shapes[out] = out_shape
        self.last = out
        return out

    def _const(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    # ------------------------------------------------------------ layers
    def conv(self, c_out: int, k: int, scope: str, stride: int = 1, groups: int = 1,
             x: str | None = None, bias: bool = False) -> str:
        x = x or self.last
        n, c_in, h, w = self.shapes[x]
        pad = k // 2
        fan_in = c_in // groups * k * k
        weight = self.rng.standard_normal((c_out, c_in // groups, k, k)) * np.sqrt(2.0 / fan_in)
        inputs = [x, self._const(f"{scope}.weight", weight)]
        if bias:
            inputs.append(self._const(f"{scope}.bias", np.zeros(c_out)))
        out_hw = ((h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1)
        return self._node("Conv", scope, inputs, (n, c_out, *out_hw), kernel_shape=[k, k],
                          strides=[stride, stride], pads=[pad] * 4, group=groups, dilations=[1, 1])

    def bn(self, scope: str, x: str | None = None) -> str:
        x = x or self.last
        c = self.shapes[x][1]
        params = [self._const(f"{scope}.{role}", value) for role, value in (
            ("weight", np.ones(c)), ("bias", np.zeros(c)), ("running_mean", np.zeros(c)),
            ("running_var", np.ones(c)))]
        return self._node("BatchNormalization", scope, [x, *params], self.shapes[x], epsilon=1e-5)

    def relu(self, scope: str, x: str | None = None) -> str:
        x = x or self.last
        return self._node("Relu", scope, [x], self.shapes[x])

    def conv_bn_relu(self, c_out: int, k: int, scope: str, stride: int = 1, groups: int = 1,
                     relu: bool = True, x: str | None = None) -> str:
        self.conv(c_out, k, f"{scope}.conv", stride, groups, x)
        out = self.bn(f"{scope}.bn")
        return self.relu(f"{scope}.relu") if relu else out

    def pool(self, k: int, stride: int, scope: str, mode: str = "max", pad: int = 0,
             x: str | None = None) -> str:
        x = x or self.last
        n, c, h, w = self.shapes[x]
        out_hw = ((h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1)
        op = "MaxPool" if mode == "max" else "AveragePool"
        return self._node(op, scope, [x], (n, c, *out_hw), kernel_shape=[k, k],
                          strides=[stride, stride], pads=[pad] * 4)

    def global_pool(self, scope: str, x: str | None = None) -> str:
        x = x or self.last
        n, c = self.shapes[x][:2]
        return self._node("GlobalAveragePool", scope, [x], (n, c, 1, 1))

    def concat(self, xs: list[str], scope: str) -> str:
        n, _, h, w = self.shapes[xs[0]]
        c = sum(self.shapes[x][1] for x in xs)
        return self._node("Concat", scope, xs, (n, c, h, w), axis=1)

    def add(self, a: str, b: str, scope: str) -> str:
        return self._node("Add", scope, [a, b], self.shapes[a])

    def classifier(self, classes: int, scope: str = "classifier") -> str:
        """Flatten then a Gemm with transB=1, as torch.onnx writes nn.Linear."""
        n, c = self.shapes[self.last][:2]
        self._node("Flatten", "flatten", [self.last], (n, c), axis=1)
        weight = self.rng.standard_normal((classes, c)) * np.sqrt(1.0 / c)
        inputs = [self.last, self._const(f"{scope}.weight", weight),
                  self._const(f"{scope}.bias", np.zeros(classes))]
        return self._node("Gemm", scope, inputs, (n, classes), alpha=1.0, beta=1.0, transB=1)

    # ------------------------------------------------------------ output
    def to_model(self) -> object:
        import onnx
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            self.nodes, self.name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(self.input_shape))],
            [helper.make_tensor_value_info(self.last, TensorProto.FLOAT, list(self.shapes[self.last]))],
            self.initializers)
        model = helper.make_model(graph, producer_name="deepx_sim.measure.heldout",
                                  opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model

    def save(self, path: str | Path) -> Path:
        import onnx

        path = Path(path)
        onnx.save(self.to_model(), str(path))
        return path


# ------------------------------------------------------------------ families

def squeezenet(name: str, version: str = "1.1", size: int = 224, seed: int = 0) -> OnnxNet:
    """SqueezeNet 1.0 or 1.1: fire modules of squeeze 1x1 then expand 1x1 | 3x3 concatenated."""
    net = OnnxNet(name, (1, 3, size, size), seed)
    if version == "1.0":
        net.conv(96, 7, "features.0", stride=2, bias=True)
        fires = [(16, 64), (16, 64), (32, 128), "pool", (32, 128), (48, 192), (48, 192),
                 (64, 256), "pool", (64, 256)]
    else:
        net.conv(64, 3, "features.0", stride=2, bias=True)
        fires = [(16, 64), (16, 64), "pool", (32, 128), (32, 128), "pool", (48, 192),
                 (48, 192), (64, 256), (64, 256)]
    net.relu("features.1")
    net.pool(3, 2, "features.2")
    for i, fire in enumerate(fires, start=3):
        if fire == "pool":
            net.pool(3, 2, f"features.{i}")
            continue
        squeeze, expand = fire  # type: ignore[misc]
        p = f"features.{i}"
        s = net.relu(f"{p}.squeeze_activation", net.conv(squeeze, 1, f"{p}.squeeze", bias=True))
        e1 = net.relu(f"{p}.expand1x1_activation", net.conv(expand, 1, f"{p}.expand1x1", x=s, bias=True))
        e3 = net.relu(f"{p}.expand3x3_activation", net.conv(expand, 3, f"{p}.expand3x3", x=s, bias=True))
        net.concat([e1, e3], p)
    net.conv(1000, 1, "classifier.1", bias=True)
    net.relu("classifier.2")
    net.global_pool("classifier.3")
    net._node("Flatten", "flatten", [net.last], (1, 1000), axis=1)
    return net


def densenet(name: str, blocks: tuple[int, ...] = (6, 12), growth: int = 32, size: int = 224,
             seed: int = 0) -> OnnxNet:
    """DenseNet-BC: pre-activation BN-ReLU-conv1x1(4k)-BN-ReLU-conv3x3(k), concatenated."""
    net = OnnxNet(name, (1, 3, size, size), seed)
    net.conv_bn_relu(2 * growth, 7, "features.conv0", stride=2)
    features = net.pool(3, 2, "features.pool0", pad=1)
    for b, layers in enumerate(blocks, start=1):
        for i in range(1, layers + 1):
            p = f"features.denseblock{b}.denselayer{i}"
            net.relu(f"{p}.relu1", net.bn(f"{p}.norm1", features))
            net.conv(4 * growth, 1, f"{p}.conv1")
            net.relu(f"{p}.relu2", net.bn(f"{p}.norm2"))
            new = net.conv(growth, 3, f"{p}.conv2")
            features = net.concat([features, new], f"{p}")
        if b < len(blocks):
            p = f"features.transition{b}"
            net.relu(f"{p}.relu", net.bn(f"{p}.norm", features))
            net.conv(net.shapes[features][1] // 2, 1, f"{p}.conv")
            features = net.pool(2, 2, f"{p}.pool", mode="avg")
    net.relu("features.relu5", net.bn("features.norm5", features))
    net.global_pool("avgpool")
    net.classifier(1000)
    return net


def mobilenet_v1(name: str, alpha: float = 1.0, size: int = 224, seed: int = 0) -> OnnxNet:
    """MobileNet v1: a 3x3 stem, then 13 depthwise 3x3 + pointwise 1x1 pairs."""
    net = OnnxNet(name, (1, 3, size, size), seed)
    width = [int(c * alpha) for c in (32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)]
    strides = [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    net.conv_bn_relu(width[0], 3, "model.0", stride=2)
    for i, stride in enumerate(strides, start=1):
        c_in = width[i - 1]
        net.conv_bn_relu(c_in, 3, f"model.{i}.dw", stride=stride, groups=c_in)
        net.conv_bn_relu(width[i], 1, f"model.{i}.pw")
    net.global_pool("avgpool")
    net.classifier(1000)
    return net


def regnet_x(name: str, widths: tuple[int, ...], depths: tuple[int, ...], group_width: int,
             size: int = 224, seed: int = 0) -> OnnxNet:
    """RegNetX: a 3x3 stem, then X blocks (1x1, grouped 3x3, 1x1) with residual adds."""
    net = OnnxNet(name, (1, 3, size, size), seed)
    net.conv_bn_relu(32, 3, "stem", stride=2)
    for s, (width, depth) in enumerate(zip(widths, depths, strict=True), start=1):
        for d in range(depth):
            p = f"trunk_output.block{s}.block{s}-{d}"
            entry = net.last
            stride = 2 if d == 0 else 1
            net.conv_bn_relu(width, 1, f"{p}.f.a", x=entry)
            net.conv_bn_relu(width, 3, f"{p}.f.b", stride=stride, groups=width // group_width)
            main = net.conv_bn_relu(width, 1, f"{p}.f.c", relu=False)
            shortcut = entry
            if d == 0:
                shortcut = net.conv_bn_relu(width, 1, f"{p}.proj", stride=stride, relu=False, x=entry)
            net.relu(f"{p}.activation", net.add(main, shortcut, f"{p}"))
    net.global_pool("avgpool")
    net.classifier(1000)
    return net


#: Held-out CNNs: name -> builder.  Sizes keep a single-thread run under ~0.2 s.
HELDOUT: dict[str, Callable[[], OnnxNet]] = {
    "squeezenet1_0": lambda: squeezenet("squeezenet1_0", "1.0", 224),
    "squeezenet1_1": lambda: squeezenet("squeezenet1_1", "1.1", 224),
    "squeezenet1_1_160": lambda: squeezenet("squeezenet1_1_160", "1.1", 160, seed=1),
    "densenet_6_12": lambda: densenet("densenet_6_12", (6, 12), 32, 160),
    "densenet_4_8_8": lambda: densenet("densenet_4_8_8", (4, 8, 8), 24, 192, seed=1),
    "mobilenet_v1_1.0": lambda: mobilenet_v1("mobilenet_v1_1.0", 1.0, 224),
    "mobilenet_v1_0.75": lambda: mobilenet_v1("mobilenet_v1_0.75", 0.75, 192, seed=1),
    "mobilenet_v1_0.5": lambda: mobilenet_v1("mobilenet_v1_0.5", 0.5, 160, seed=2),
    # RegNetX-200MF (w 24-56-152-368, d 1-1-4-7, g 8) and -400MF (32-64-160-400, 1-2-7-12, 16)
    "regnetx_200mf": lambda: regnet_x("regnetx_200mf", (24, 56, 152, 368), (1, 1, 4, 7), 8, 224),
    "regnetx_400mf": lambda: regnet_x("regnetx_400mf", (32, 64, 160, 400), (1, 2, 7, 12), 16, 160),
}


def write_heldout(folder: str | Path, names: list[str] | None = None) -> list[Path]:
    """Write the held-out CNNs (all, or ``names``) as ONNX files into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [HELDOUT[n]().save(folder / f"{n}.onnx") for n in (names or list(HELDOUT))]


# ------------------------------------------------------------------ sampled CNNs

#: channel counts a sampled block picks from, capped by the feature map's size
CHANNELS = (8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
BLOCKS = ("conv", "grouped", "separable", "fire", "dense", "residual", "pool")


def _widths(hw: int) -> list[int]:
    cap = 64 if hw > 96 else 128 if hw > 48 else 256 if hw > 24 else 512
    return [c for c in CHANNELS if c <= cap]


def _common_groups(c_in: int, c_out: int) -> list[int]:
    return [g for g in (2, 4, 8, 16, 32) if c_in % g == 0 and c_out % g == 0]


def _block(net: OnnxNet, rng: np.random.Generator, kind: str, p: str) -> None:
    """Append one randomly shaped block of ``kind`` under scope ``p``."""
    x = net.last
    c_in, hw = net.shapes[x][1], net.shapes[x][2]
    c_out = int(rng.choice(_widths(hw)))
    stride = 2 if hw >= 16 and rng.random() < 0.3 else 1
    if kind == "conv":
        net.conv_bn_relu(c_out, int(rng.choice([1, 3, 5, 7])), p, stride=stride)
    elif kind == "grouped" and _common_groups(c_in, c_out):
        net.conv_bn_relu(c_out, 3, p, stride=stride, groups=int(rng.choice(_common_groups(c_in, c_out))))
    elif kind == "separable":
        net.conv_bn_relu(c_in, int(rng.choice([3, 5])), f"{p}.dw", stride=stride, groups=c_in)
        net.conv_bn_relu(c_out, 1, f"{p}.pw")
    elif kind == "fire":
        s = net.relu(f"{p}.squeeze_relu", net.conv(max(8, c_out // 4), 1, f"{p}.squeeze"))
        e1 = net.relu(f"{p}.e1_relu", net.conv(c_out // 2, 1, f"{p}.e1", x=s))
        e3 = net.relu(f"{p}.e3_relu", net.conv(c_out // 2, 3, f"{p}.e3", x=s))
        net.concat([e1, e3], p)
    elif kind == "dense":
        growth = int(rng.choice([12, 16, 24, 32]))
        net.relu(f"{p}.relu1", net.bn(f"{p}.norm1", x))
        net.conv(4 * growth, 1, f"{p}.conv1")
        net.relu(f"{p}.relu2", net.bn(f"{p}.norm2"))
        net.concat([x, net.conv(growth, 3, f"{p}.conv2")], p)
    elif kind == "residual":
        width = int(rng.choice(_widths(hw)))
        groups = [*_common_groups(width, width), 1]
        net.conv_bn_relu(width, 1, f"{p}.a")
        net.conv_bn_relu(width, 3, f"{p}.b", groups=int(rng.choice(groups)))
        main = net.conv_bn_relu(c_in, 1, f"{p}.c", relu=False)
        net.relu(f"{p}.relu", net.add(main, x, p))
    elif hw >= 8:
        net.pool(int(rng.choice([2, 3])), 2, p, mode=str(rng.choice(["max", "avg"])))
    else:
        net.conv_bn_relu(c_out, 1, p)


def sampled_cnn(name: str, seed: int) -> OnnxNet:
    """A random CNN of the blocks real ones are made of, for calibration data
    (nn-Meter calibrates on sampled kernels rather than on a few whole models)."""
    rng = np.random.default_rng(seed)
    size = int(rng.choice([96, 128, 160, 192, 224]))
    net = OnnxNet(name, (1, 3, size, size), seed)
    net.conv_bn_relu(int(rng.choice([16, 24, 32])), 3, "stem", stride=2)
    for b in range(int(rng.integers(8, 16))):
        _block(net, rng, str(rng.choice(BLOCKS)), f"block{b}")
    net.global_pool("avgpool")
    net.classifier(int(rng.choice([10, 100, 1000])))
    return net


def write_sampled(folder: str | Path, count: int, first_seed: int = 0) -> list[Path]:
    """Write ``count`` sampled CNNs (seeds first_seed, first_seed + 1, ...) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [sampled_cnn(f"sampled_{s}", s).save(folder / f"sampled_{s}.onnx")
            for s in range(first_seed, first_seed + count)]


#: model names that these builders answer to (``heldout:squeezenet1_1``, ``sampled:3``)
PREFIXES = ("heldout:", "sampled:")


def is_net_name(model: str) -> bool:
    return str(model).startswith(PREFIXES)


def write_net(model: str, folder: str | Path) -> Path:
    """Write the net named ``heldout:NAME`` or ``sampled:SEED`` as ONNX into ``folder``.

    Raises ModelError for an unknown name or a seed that is not an integer.
    """
    from deepx_sim.errors import ModelError, closest_names

    prefix, _, rest = str(model).partition(":")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if prefix == "heldout":
        if rest not in HELDOUT:
            raise ModelError(f"unknown held-out CNN {rest!r}: {closest_names(rest, list(HELDOUT))}")
        return HELDOUT[rest]().save(folder / f"{rest}.onnx")
    if prefix == "sampled" and rest.isdigit():
        return sampled_cnn(f"sampled_{rest}", int(rest)).save(folder / f"sampled_{rest}.onnx")
    raise ModelError(f"model {model!r}: expected heldout:NAME or sampled:SEED (a non-negative integer)")
