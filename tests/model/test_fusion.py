"""Layer fusion: units as runtimes run them, totals unchanged."""

from __future__ import annotations

import pytest

from deepx_sim.model import load_model
from deepx_sim.model.fusion import fuse, fused_members
from deepx_sim.model.layers import LayerKind, get_layer, layers_in_order, total


@pytest.mark.parametrize("name", ["alexnet", "resnet50", "mobilenetv2", "vit_b16"])
def test_fusion_keeps_every_total_and_leaves_no_lone_follower(name: str) -> None:
    graph = load_model(name)
    fused = fuse(graph)
    for key in ("params", "macs", "flops"):
        assert total(fused, key) == total(graph, key), key
    members = [m for lay in layers_in_order(fused) for m in fused_members(lay)]
    assert sorted(members) == sorted(graph.nodes)  # every layer stands in exactly one unit
    for lay in layers_in_order(fused):  # no batchnorm or activation left right after a fusable head
        preds = [get_layer(fused, p) for p in fused.predecessors(lay.name)]
        if lay.kind in (LayerKind.BATCHNORM, LayerKind.ACTIVATION) and len(preds) == 1:
            head = preds[0]
            fusable = head.kind in (LayerKind.CONV, LayerKind.FC)
            assert not fusable or fused.out_degree(head.name) > 1, lay.name


def test_resnet_units_are_conv_bn_relu_and_add_relu() -> None:
    fused = fuse(load_model("resnet50"))
    units = {lay.name: fused_members(lay) for lay in layers_in_order(fused)}
    assert units["conv1"] == ("conv1", "bn1", "relu1")
    adds = [members for members in units.values() if get_layer(load_model("resnet50"), members[0]).kind
            == LayerKind.ADD]
    assert adds and all(len(members) == 2 for members in adds)  # the residual add and its ReLU
    assert fused.number_of_nodes() < load_model("resnet50").number_of_nodes() / 2


def test_alexnet_relus_join_their_convolutions() -> None:
    graph = load_model("alexnet")
    fused = fuse(graph)
    assert not [lay for lay in layers_in_order(fused) if lay.kind == LayerKind.ACTIVATION]
    conv1 = get_layer(fused, "conv1")
    assert fused_members(conv1) == ("conv1", "relu1")
    assert conv1.output_shape == get_layer(graph, "relu1").output_shape
