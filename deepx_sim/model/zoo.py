"""The model zoo: exact architectures of the papers' models and modern ones.

Every model is built at batch 1.  Parameter counts and multiply-adds are checked
against published numbers in tests/model/test_zoo.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import networkx as nx

from deepx_sim.errors import ModelError, closest_names
from deepx_sim.model.builder import GraphBuilder


@dataclass(frozen=True)
class ZooEntry:
    name: str
    build: Callable[[], nx.DiGraph]
    description: str
    reference: str


def _dnn(name: str, widths: list[int]) -> nx.DiGraph:
    b = GraphBuilder(name, (1, widths[0]))
    for i, width in enumerate(widths[1:], start=1):
        b.fc(width, name=f"fc{i}")
        if i < len(widths) - 1:
            # DXTK's DNNs are plain feed-forward nets; the activation costs ~nothing
            b.relu(name=f"act{i}")
    b.softmax(name="prob")
    return b.build()


def speakerid() -> nx.DiGraph:
    """SpeakerID DNN: 13 MFCC x 50 frames = 650 inputs, 2 x 1000 hidden, 106 speakers."""
    return _dnn("speakerid", [650, 1000, 1000, 106])


def ambient() -> nx.DiGraph:
    """Ambient-scene DNN: SpeakerID's shape with 19 scene classes."""
    return _dnn("ambient", [650, 1000, 1000, 19])


def alexnet() -> nx.DiGraph:
    """AlexNet as in Krizhevsky et al. 2012 / Caffe bvlc_alexnet (groups=2 in conv2/4/5)."""
    b = GraphBuilder("alexnet", (1, 3, 227, 227))
    b.conv(96, 11, stride=4, name="conv1")
    b.relu(name="relu1")
    b.lrn(name="norm1")
    b.pool(3, 2, name="pool1")
    b.conv(256, 5, padding=2, groups=2, name="conv2")
    b.relu(name="relu2")
    b.lrn(name="norm2")
    b.pool(3, 2, name="pool2")
    b.conv(384, 3, padding=1, name="conv3")
    b.relu(name="relu3")
    b.conv(384, 3, padding=1, groups=2, name="conv4")
    b.relu(name="relu4")
    b.conv(256, 3, padding=1, groups=2, name="conv5")
    b.relu(name="relu5")
    b.pool(3, 2, name="pool5")
    b.flatten(name="flatten")
    for i, width in ((6, 4096), (7, 4096)):
        b.fc(width, name=f"fc{i}")
        b.relu(name=f"relu{i}")
        b.dropout(name=f"drop{i}")
    b.fc(1000, name="fc8")
    b.softmax(name="prob")
    return b.build()


def _levi_hassner(name: str, classes: int) -> nx.DiGraph:
    """Levi & Hassner 2015 age/gender CNN; Caffe pools round up (ceil mode)."""
    b = GraphBuilder(name, (1, 3, 227, 227))
    b.conv(96, 7, stride=4, name="conv1")
    b.relu(name="relu1")
    b.pool(3, 2, ceil_mode=True, name="pool1")
    b.lrn(name="norm1")
    b.conv(256, 5, padding=2, name="conv2")
    b.relu(name="relu2")
    b.pool(3, 2, ceil_mode=True, name="pool2")
    b.lrn(name="norm2")
    b.conv(384, 3, padding=1, name="conv3")
    b.relu(name="relu3")
    b.pool(3, 2, ceil_mode=True, name="pool5")
    b.flatten(name="flatten")
    for i in (6, 7):
        b.fc(512, name=f"fc{i}")
        b.relu(name=f"relu{i}")
        b.dropout(name=f"drop{i}")
    b.fc(classes, name="fc8")
    b.softmax(name="prob")
    return b.build()


def agenet() -> nx.DiGraph:
    """AgeNet: 8 age groups."""
    return _levi_hassner("agenet", 8)


def gendernet() -> nx.DiGraph:
    """GenderNet: 2 classes."""
    return _levi_hassner("gendernet", 2)


def vgg16() -> nx.DiGraph:
    """VGG-16 (Simonyan & Zisserman 2015, configuration D) at 224 x 224."""
    b = GraphBuilder("vgg16", (1, 3, 224, 224))
    stages = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]
    for s, (channels, convs) in enumerate(stages, start=1):
        for c in range(1, convs + 1):
            b.conv(channels, 3, padding=1, name=f"conv{s}_{c}")
            b.relu(name=f"relu{s}_{c}")
        b.pool(2, 2, name=f"pool{s}")
    b.flatten(name="flatten")
    for i in (6, 7):
        b.fc(4096, name=f"fc{i}")
        b.relu(name=f"relu{i}")
        b.dropout(name=f"drop{i}")
    b.fc(1000, name="fc8")
    b.softmax(name="prob")
    return b.build()


def _classifier(b: GraphBuilder, fc_name: str, dropout: bool) -> nx.DiGraph:
    """The ImageNet head: global average pool, flatten, (dropout,) fc to 1000, softmax."""
    b.global_pool("avg", name="avgpool")
    b.flatten(name="flatten")
    if dropout:
        b.dropout(name="dropout")
    b.fc(1000, name=fc_name)
    b.softmax(name="prob")
    return b.build()


def _conv_bn(b: GraphBuilder, c_out: int, kernel: int, inputs: str, prefix: str, index: int | str = "",
             stride: int = 1, groups: int = 1, relu: bool = True) -> str:
    """A bias-free "same" convolution, batch norm and optionally ReLU (torchvision's usual
    unit), named ``{prefix}conv{index}``, ``{prefix}bn{index}`` and ``{prefix}relu{index}``."""
    b.conv(c_out, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False,
           name=f"{prefix}conv{index}", inputs=inputs)
    out = b.batchnorm(name=f"{prefix}bn{index}")
    return b.relu(name=f"{prefix}relu{index}") if relu else out


def _resnet_block(b: GraphBuilder, p: str, planes: int, stride: int, bottleneck: bool, groups: int,
                  width_per_group: int) -> None:
    """A residual block: basic (two 3x3) or bottleneck (1x1, grouped 3x3, 1x1 x4), with a
    projection shortcut where the shape changes (torchvision's layout, stride on the 3x3)."""
    entry = b.last
    out_channels = planes * 4 if bottleneck else planes
    if bottleneck:
        width = planes * width_per_group // 64 * groups
        x = _conv_bn(b, width, 1, entry, f"{p}.", 1)
        x = _conv_bn(b, width, 3, x, f"{p}.", 2, stride=stride, groups=groups)
        main = _conv_bn(b, out_channels, 1, x, f"{p}.", 3, relu=False)
    else:
        x = _conv_bn(b, planes, 3, entry, f"{p}.", 1, stride=stride)
        main = _conv_bn(b, planes, 3, x, f"{p}.", 2, relu=False)
    shortcut = entry
    if stride != 1 or b.shape(entry)[1] != out_channels:
        shortcut = _conv_bn(b, out_channels, 1, entry, f"{p}.downsample.", stride=stride, relu=False)
    b.add([main, shortcut], name=f"{p}.add")
    b.relu(name=f"{p}.relu{3 if bottleneck else 2}")


def _resnet(name: str, blocks: tuple[int, int, int, int], bottleneck: bool, groups: int = 1,
            width_per_group: int = 64) -> nx.DiGraph:
    """The ResNet family at 224 (He et al. 2016; ResNeXt, Xie et al. 2017, via ``groups``)."""
    b = GraphBuilder(name, (1, 3, 224, 224))
    x = _conv_bn(b, 64, 7, b.last, "", 1, stride=2)
    b.pool(3, 2, padding=1, name="maxpool", inputs=x)
    for stage, count in enumerate(blocks, start=1):
        for block in range(count):
            stride = 2 if stage > 1 and block == 0 else 1
            _resnet_block(b, f"layer{stage}.{block}", 64 * 2 ** (stage - 1), stride, bottleneck, groups,
                          width_per_group)
    return _classifier(b, "fc", dropout=False)


def resnet18() -> nx.DiGraph:
    """ResNet-18: basic blocks 2-2-2-2."""
    return _resnet("resnet18", (2, 2, 2, 2), bottleneck=False)


def resnet50() -> nx.DiGraph:
    """ResNet-50 v1.5 (torchvision: stride on the 3x3 conv), a DAG with residual adds."""
    return _resnet("resnet50", (3, 4, 6, 3), bottleneck=True)


def resnext50() -> nx.DiGraph:
    """ResNeXt-50 32x4d: ResNet-50's bottlenecks with 32-group 3x3 convolutions, twice as wide."""
    return _resnet("resnext50", (3, 4, 6, 3), bottleneck=True, groups=32, width_per_group=4)


def _bn_relu_conv(b: GraphBuilder, c_out: int, kernel: int, p: str, inputs: str, padding: int = 0) -> str:
    """DenseNet's pre-activation unit: batch norm, ReLU, then a bias-free convolution."""
    b.batchnorm(name=f"{p}.norm", inputs=inputs)
    b.relu(name=f"{p}.relu")
    return b.conv(c_out, kernel, padding=padding, bias=False, name=f"{p}.conv")


def densenet121() -> nx.DiGraph:
    """DenseNet-121 (Huang et al. 2017; torchvision): growth 32, blocks 6-12-24-16,
    bottleneck 4 x growth, transitions halving the channels; each dense layer reads
    the concatenation of every feature map before it in its block."""
    b = GraphBuilder("densenet121", (1, 3, 224, 224))
    b.conv(64, 7, stride=2, padding=3, bias=False, name="features.conv0")
    b.batchnorm(name="features.norm0")
    b.relu(name="features.relu0")
    x = b.pool(3, 2, padding=1, name="features.pool0")
    for block, layers in enumerate((6, 12, 24, 16), start=1):
        features = [x]
        for i in range(1, layers + 1):
            p = f"features.denseblock{block}.denselayer{i}"
            joined = features[0] if len(features) == 1 else b.concat(features, name=f"{p}.cat")
            _bn_relu_conv(b, 4 * 32, 1, f"{p}.1", joined)
            features.append(_bn_relu_conv(b, 32, 3, f"{p}.2", b.last, padding=1))
        x = b.concat(features, name=f"features.denseblock{block}.cat")
        if block < 4:
            p = f"features.transition{block}"
            _bn_relu_conv(b, b.shape(x)[1] // 2, 1, p, x)
            x = b.pool(2, 2, mode="avg", name=f"{p}.pool")
    b.batchnorm(name="features.norm5", inputs=x)
    b.relu(name="features.relu5")
    b.global_pool("avg", name="avgpool")
    b.flatten(name="flatten")
    b.fc(1000, name="classifier")
    return b.build()


#: GoogLeNet's inception blocks: 1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5" (a 3x3 in
#: torchvision), pool projection (Szegedy et al. 2015, Table 1).
INCEPTION_BLOCKS = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128), "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


def googlenet() -> nx.DiGraph:
    """GoogLeNet / Inception v1 (Szegedy et al. 2015) as torchvision builds it, without
    the auxiliary classifiers: nine four-branch inception blocks joined by concats."""
    b = GraphBuilder("googlenet", (1, 3, 224, 224))
    x = _conv_bn(b, 64, 7, b.last, "conv1.", stride=2)
    x = b.pool(3, 2, ceil_mode=True, name="maxpool1", inputs=x)
    x = _conv_bn(b, 64, 1, x, "conv2.")
    x = _conv_bn(b, 192, 3, x, "conv3.")
    x = b.pool(3, 2, ceil_mode=True, name="maxpool2", inputs=x)
    for block, (c1, r3, c3, r5, c5, proj) in INCEPTION_BLOCKS.items():
        p = f"inception{block}"
        branches = [_conv_bn(b, c1, 1, x, f"{p}.branch1.")]
        branches.append(_conv_bn(b, c3, 3, _conv_bn(b, r3, 1, x, f"{p}.branch2.0."), f"{p}.branch2.1."))
        branches.append(_conv_bn(b, c5, 3, _conv_bn(b, r5, 1, x, f"{p}.branch3.0."), f"{p}.branch3.1."))
        pooled = b.pool(3, 1, padding=1, ceil_mode=True, name=f"{p}.branch4.pool", inputs=x)
        branches.append(_conv_bn(b, proj, 1, pooled, f"{p}.branch4.1."))
        x = b.concat(branches, name=f"{p}.cat")
        if block in ("3b", "4e"):
            x = b.pool(3, 2, ceil_mode=True, name=f"maxpool{3 if block == '3b' else 4}", inputs=x)
    b.global_pool("avg", name="avgpool", inputs=x)
    b.flatten(name="flatten")
    b.fc(1000, name="fc")
    return b.build()


#: ReLU6 as torchvision exports it: Clip to [0, 6].
RELU6 = {"min": 0.0, "max": 6.0}


def mobilenetv2() -> nx.DiGraph:
    """MobileNetV2 1.0 at 224 (Sandler et al. 2018, torchvision layout)."""
    b = GraphBuilder("mobilenetv2", (1, 3, 224, 224))
    b.conv(32, 3, stride=2, padding=1, bias=False, name="features.0.conv")
    b.batchnorm(name="features.0.bn")
    b.relu(name="features.0.relu6", op_type="Clip", attrs=RELU6)
    settings = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]
    index = 1
    for expand, c_out, repeats, first_stride in settings:
        for r in range(repeats):
            stride = first_stride if r == 0 else 1
            p = f"features.{index}"
            entry = b.last
            c_in = b.shape(entry)[1]
            hidden = c_in * expand
            if expand != 1:
                b.conv(hidden, 1, bias=False, name=f"{p}.expand", inputs=entry)
                b.batchnorm(name=f"{p}.expand_bn")
                b.relu(name=f"{p}.expand_relu6", op_type="Clip", attrs=RELU6)
            b.conv(
                hidden, 3, stride=stride, padding=1, groups=hidden, bias=False, name=f"{p}.dw", inputs=b.last
            )
            b.batchnorm(name=f"{p}.dw_bn")
            b.relu(name=f"{p}.dw_relu6", op_type="Clip", attrs=RELU6)
            b.conv(c_out, 1, bias=False, name=f"{p}.project")
            out = b.batchnorm(name=f"{p}.project_bn")
            if stride == 1 and c_in == c_out:
                b.add([out, entry], name=f"{p}.add")
            index += 1
    b.conv(1280, 1, bias=False, name=f"features.{index}.conv")
    b.batchnorm(name=f"features.{index}.bn")
    b.relu(name=f"features.{index}.relu6", op_type="Clip", attrs=RELU6)
    return _classifier(b, "classifier", dropout=True)


#: MnasNet-B1 1.0's inverted-residual stacks: (out channels, kernel, first stride, expansion,
#: repeats), as torchvision's mnasnet1_0 builds them (Tan et al. 2019, Fig. 7)
MNASNET_STACKS = ((24, 3, 2, 3, 3), (40, 5, 2, 3, 3), (80, 5, 2, 6, 3), (96, 3, 1, 6, 2),
                  (192, 5, 2, 6, 4), (320, 3, 1, 6, 1))


def mnasnet() -> nx.DiGraph:
    """MnasNet-B1 1.0 at 224 (torchvision mnasnet1_0, no squeeze-excite): depthwise 3x3 and
    5x5 convolutions in inverted residuals, plain ReLU."""
    b = GraphBuilder("mnasnet", (1, 3, 224, 224))
    x = _conv_bn(b, 32, 3, b.last, "stem.", 1, stride=2)
    x = _conv_bn(b, 32, 3, x, "stem.dw_", groups=32)
    _conv_bn(b, 16, 1, x, "stem.project_", relu=False)
    for s, (c_out, kernel, first_stride, expand, repeats) in enumerate(MNASNET_STACKS, start=1):
        for r in range(repeats):
            p, entry = f"stack{s}.{r}.", b.last
            c_in = b.shape(entry)[1]
            x = _conv_bn(b, c_in * expand, 1, entry, f"{p}expand_")
            x = _conv_bn(b, c_in * expand, kernel, x, f"{p}dw_", stride=first_stride if r == 0 else 1,
                         groups=c_in * expand)
            out = _conv_bn(b, c_out, 1, x, f"{p}project_", relu=False)
            if r > 0:  # same shape: the residual add
                b.add([out, entry], name=f"{p}add")
    _conv_bn(b, 1280, 1, b.last, "head.")
    return _classifier(b, "classifier", dropout=True)


def _attention(b: GraphBuilder, src: str, p: str, heads: int) -> str:
    """Multi-head self-attention: q, k, v projections, scores, softmax, context, output."""
    n, tokens, width = b.shape(src)
    head = width // heads
    parts = {}
    for part, perm in (("q", (0, 2, 1, 3)), ("k", (0, 2, 3, 1)), ("v", (0, 2, 1, 3))):
        b.fc(width, name=f"{p}.attn.{part}", inputs=src)
        b.view(shape=(n, tokens, heads, head), name=f"{p}.attn.{part}_heads")
        parts[part] = b.view(perm=perm, name=f"{p}.attn.{part}_t")
    b.matmul(parts["q"], parts["k"], name=f"{p}.attn.scores")
    b.scale(name=f"{p}.attn.scale", op_type="Div")  # by sqrt(head width)
    probs = b.softmax(name=f"{p}.attn.softmax")
    b.matmul(probs, parts["v"], name=f"{p}.attn.context")
    b.view(perm=(0, 2, 1, 3), name=f"{p}.attn.context_t")
    b.view(shape=(n, tokens, width), name=f"{p}.attn.merge")
    return b.fc(width, name=f"{p}.attn.out")


def _encoder(b: GraphBuilder, x: str, p: str, heads: int, hidden: int, pre_norm: bool) -> str:
    """A transformer encoder block: BERT's post-norm or ViT's pre-norm."""
    width = b.shape(x)[-1]
    attn = _attention(b, b.layernorm(name=f"{p}.ln1", inputs=x) if pre_norm else x, p, heads)
    mid = b.add([attn, x], name=f"{p}.residual1")
    if not pre_norm:
        mid = b.layernorm(name=f"{p}.ln1", inputs=mid)
    b.fc(hidden, name=f"{p}.mlp.fc1", inputs=b.layernorm(name=f"{p}.ln2", inputs=mid) if pre_norm else mid)
    b.relu(name=f"{p}.mlp.gelu", op_type="Gelu")
    out = b.add([b.fc(width, name=f"{p}.mlp.fc2"), mid], name=f"{p}.residual2")
    return out if pre_norm else b.layernorm(name=f"{p}.ln2", inputs=out)


def bert_base(seq: int = 128) -> nx.DiGraph:
    """BERT-base (Devlin et al. 2019): 12 post-norm blocks, 768 wide, 12 heads, MLP 3072,
    vocabulary 30522, 512 positions, 2 segments, with the pooler; sequence ``seq``."""
    b = GraphBuilder("bert_base", (1, seq))
    ids = b.last
    sources = [
        b.embedding(vocab, 768, name=f"embeddings.{what}", inputs=ids)
        for what, vocab in (("word", 30522), ("position", 512), ("token_type", 2))
    ]
    x = b.layernorm(name="embeddings.ln", inputs=b.add(sources, name="embeddings.sum"))
    for i in range(12):
        x = _encoder(b, x, f"encoder.{i}", heads=12, hidden=3072, pre_norm=False)
    b.view(shape=(1, 768), name="pooler.first_token")
    b.fc(768, name="pooler.dense")
    b.relu(name="pooler.tanh", op_type="Tanh")
    return b.build()


def vit_b16() -> nx.DiGraph:
    """ViT-B/16 at 224 (Dosovitskiy et al. 2021): 16 x 16 patches, a class token, learned
    positions, 12 pre-norm blocks 768 wide, 12 heads, MLP 3072, 1000 classes."""
    b = GraphBuilder("vit_b16", (1, 3, 224, 224))
    b.conv(768, 16, stride=16, name="patch_embed")
    b.view(shape=(1, 768, 196), name="patch_embed.flatten")
    b.view(perm=(0, 2, 1), name="patch_embed.tokens")
    b.class_token(name="cls_token")
    x = b.scale(name="pos_embed", op_type="Add", params=197 * 768)
    for i in range(12):
        x = _encoder(b, x, f"blocks.{i}", heads=12, hidden=3072, pre_norm=True)
    b.layernorm(name="norm")
    b.view(shape=(1, 768), name="head.class_token")
    b.fc(1000, name="head")
    return b.build()


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in [
        ZooEntry(
            "speakerid",
            speakerid,
            "speaker identification DNN 650-1000-1000-106",
            "DXTK (Lane et al. 2016), Table 1",
        ),
        ZooEntry(
            "ambient", ambient, "ambient scene DNN 650-1000-1000-19", "DXTK (Lane et al. 2016), Table 1"
        ),
        ZooEntry(
            "alexnet",
            alexnet,
            "AlexNet, grouped conv2/4/5, 227x227",
            "Krizhevsky et al. 2012; Caffe bvlc_alexnet",
        ),
        ZooEntry("agenet", agenet, "age CNN, 3 conv + 3 fc, 8 classes", "Levi & Hassner 2015"),
        ZooEntry("gendernet", gendernet, "gender CNN, 3 conv + 3 fc, 2 classes", "Levi & Hassner 2015"),
        ZooEntry("vgg16", vgg16, "VGG-16 (configuration D), 224x224", "Simonyan & Zisserman 2015"),
        ZooEntry(
            "resnet50", resnet50, "ResNet-50 v1.5 with residual adds, 224x224", "He et al. 2016; torchvision"
        ),
        ZooEntry(
            "resnet18", resnet18, "ResNet-18, basic residual blocks, 224x224", "He et al. 2016; torchvision"
        ),
        ZooEntry(
            "resnext50",
            resnext50,
            "ResNeXt-50 32x4d, 32-group 3x3 convs, 224x224",
            "Xie et al. 2017; torchvision resnext50_32x4d",
        ),
        ZooEntry(
            "mnasnet",
            mnasnet,
            "MnasNet-B1 1.0, depthwise 3x3 and 5x5 convs, 224x224",
            "Tan et al. 2019; torchvision mnasnet1_0",
        ),
        ZooEntry(
            "mobilenetv2",
            mobilenetv2,
            "MobileNetV2 1.0, depthwise convs, 224x224",
            "Sandler et al. 2018; torchvision",
        ),
        ZooEntry(
            "densenet121",
            densenet121,
            "DenseNet-121, dense blocks joined by concats, 224x224",
            "Huang et al. 2017; torchvision",
        ),
        ZooEntry(
            "googlenet",
            googlenet,
            "GoogLeNet (Inception v1) without auxiliary heads, 224x224",
            "Szegedy et al. 2015; torchvision",
        ),
        ZooEntry(
            "bert_base",
            bert_base,
            "BERT-base encoder with pooler, sequence 128",
            "Devlin et al. 2019; Hugging Face bert-base-uncased",
        ),
        ZooEntry(
            "vit_b16",
            vit_b16,
            "ViT-B/16, 224x224, 1000 classes",
            "Dosovitskiy et al. 2021; timm vit_base_patch16_224",
        ),
    ]
}


def model_names() -> list[str]:
    return sorted(ZOO)


def load_zoo_model(name: str) -> nx.DiGraph:
    """Build a zoo model by name; ModelError lists the known names otherwise."""

    def key(text: str) -> str:
        return text.lower().replace("-", "").replace("_", "").replace("/", "")

    found = [entry for entry in ZOO.values() if key(entry.name) == key(name)]
    if not found:
        raise ModelError(f"unknown model {name!r}: {closest_names(name, model_names())}")
    return found[0].build()
