"""Zoo architectures against published parameter counts and multiply-adds."""

from __future__ import annotations

import pytest

from deepx_sim.errors import ModelError
from deepx_sim.model import LayerKind, footprints, layers_in_order, load_model, total
from deepx_sim.model.layers import FcSpec, conv_output_hw
from deepx_sim.model.memory import MIB

# (model, exact params, published multiply-adds, relative tolerance on MACs)
# Sources: FACTS.md table: Caffe bvlc_alexnet; thop README (VGG-16);
# torchvision docs (ResNet-50 25,557,032 params, 4.1 GMACs; MobileNetV2 3,504,872,
# 0.30 G per Sandler et al.; DenseNet-121 7,978,856, 2.83 G; GoogLeNet 6,624,904,
# 1.5 G; ResNet-18 11,689,512, 1.81 G; ResNeXt-50 32x4d 25,028,904, 4.23 G; MnasNet 1.0
# 4,383,312, 0.31 G -- torchvision's "GFLOPS" column counts multiply-adds);
# DXTK Table 1 (AgeNet/GenderNet 11.4 M).
PUBLISHED = [
    ("alexnet", 60_965_224, 0.72e9, 0.02),
    ("vgg16", 138_357_544, 15.5e9, 0.01),
    ("resnet50", 25_557_032, 4.1e9, 0.01),
    ("mobilenetv2", 3_504_872, 0.30e9, 0.01),
    ("densenet121", 7_978_856, 2.83e9, 0.01),
    ("googlenet", 6_624_904, 1.5e9, 0.01),
    ("resnet18", 11_689_512, 1.81e9, 0.01),
    ("resnext50", 25_028_904, 4.23e9, 0.01),
    ("mnasnet", 4_383_312, 0.31e9, 0.02),
    ("speakerid", 1_758_106, 1_756_000, 0.0),
]


@pytest.mark.parametrize(("name", "params", "macs", "tol"), PUBLISHED)
def test_params_and_macs_match_published(name: str, params: int, macs: float, tol: float) -> None:
    graph = load_model(name)
    assert total(graph, "params") == params
    assert total(graph, "macs") == pytest.approx(macs, rel=tol)


@pytest.mark.parametrize("name", ["agenet", "gendernet"])
def test_levi_hassner_models_have_11_4m_params(name: str) -> None:
    assert round(total(load_model(name), "params") / 1e6, 1) == 11.4


def test_ambient_is_speakerid_with_19_classes() -> None:
    fc = [lay for lay in layers_in_order(load_model("ambient")) if lay.kind == LayerKind.FC]
    assert [(lay.fc.m, lay.fc.n) for lay in fc] == [(1000, 650), (1000, 1000), (19, 1000)]


def test_alexnet_memory_reproduces_dxtk_figure6() -> None:
    fp = footprints(load_model("alexnet"), bits=32)
    # 60,965,224 params x 8 B x 2 (weights + gradients): the paper's 930.3 MB
    assert fp.original_bytes == 60_965_224 * 16
    assert fp.original_bytes / MIB == pytest.approx(930.26, abs=0.01)
    assert fp.scaled_bytes == 60_965_224 * 8
    # cleaned at 32-bit: the paper's 233 MB (232.6 MiB)
    assert round(fp.cleaned_bytes / MIB, 1) == 232.6


def test_speakerid_original_is_26_8_mib() -> None:
    assert round(footprints(load_model("speakerid"), 32).original_bytes / MIB, 1) == 26.8


def test_precision_scaling_halves_and_quarters() -> None:
    g = load_model("speakerid")
    assert footprints(g, 16).cleaned_bytes * 2 == footprints(g, 32).cleaned_bytes
    assert footprints(g, 8).cleaned_bytes * 4 == footprints(g, 32).cleaned_bytes


def test_resnet50_is_a_real_dag() -> None:
    g = load_model("resnet50")
    adds = [lay for lay in layers_in_order(g) if lay.kind == LayerKind.ADD]
    assert len(adds) == 16  # 3 + 4 + 6 + 3 bottleneck blocks
    assert all(g.in_degree(a.name) == 2 for a in adds)
    assert max(d for _, d in g.out_degree()) == 2  # block inputs feed two branches


def test_mobilenetv2_has_depthwise_convolutions() -> None:
    g = load_model("mobilenetv2")
    dw = [lay for lay in layers_in_order(g) if lay.kind == LayerKind.DEPTHWISE_CONV]
    assert len(dw) == 17
    assert all(lay.conv.groups == lay.conv.c_in == lay.conv.c_out for lay in dw)


def test_execution_order_is_topological() -> None:
    g = load_model("resnet50")
    order = {lay.name: lay.order for lay in layers_in_order(g)}
    assert all(order[u] < order[v] for u, v in g.edges)


def test_edges_carry_the_producer_tensor_bytes() -> None:
    g = load_model("alexnet")
    assert g.edges["pool5", "flatten"]["size_bytes"] == 256 * 6 * 6 * 4


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(ModelError, match=r"did you mean alexnet.*Known: agenet"):
        load_model("alexnett")


def test_conv_output_size_closed_form() -> None:
    assert conv_output_hw(227, 227, (11, 11), (4, 4), (0, 0)) == (55, 55)
    # Caffe ceil-mode pooling: 56 -> 28 (floor would give 27)
    assert conv_output_hw(56, 56, (3, 3), (2, 2), (0, 0), ceil_mode=True) == (28, 28)
    assert conv_output_hw(56, 56, (3, 3), (2, 2), (0, 0)) == (27, 27)


def test_break_even_rank() -> None:
    assert FcSpec(m=4096, n=9216).break_even_rank == pytest.approx(4096 * 9216 / (4096 + 9216))
