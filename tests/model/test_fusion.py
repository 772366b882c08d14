"""Layer fusion: units as runtimes run them, totals unchanged."""

from __future__ import annotations

import pytest

from deepx_sim.model import load_model
from deepx_sim.model.builder import GraphBuilder
from deepx_sim.model.fusion import fuse, fuse_profile, fused_members
from deepx_sim.model.layers import LayerKind, get_layer, layers_in_order, total
from deepx_sim.model.profiles import ProfileEntry


@pytest.mark.parametrize("name", ["alexnet", "resnet50", "mobilenetv2", "vit_b16", "bert_base", "densenet121",
                                  "googlenet"])
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


def test_bert_units_are_what_onnxruntime_fuses() -> None:
    """Projections take their reshapes, attention scores their scale and softmax, a
    residual add its layer norm (onnxruntime's SkipLayerNormalization)."""
    units = {lay.name: fused_members(lay) for lay in layers_in_order(fuse(load_model("bert_base")))}
    p = "encoder.3"
    assert units[f"{p}.attn.q"] == (f"{p}.attn.q", f"{p}.attn.q_heads", f"{p}.attn.q_t")
    assert units[f"{p}.attn.scores"] == (f"{p}.attn.scores", f"{p}.attn.scale", f"{p}.attn.softmax")
    assert units[f"{p}.residual1"] == (f"{p}.residual1", f"{p}.ln1")
    assert units[f"{p}.mlp.fc1"] == (f"{p}.mlp.fc1", f"{p}.mlp.gelu")
    assert len(units) == 126  # 10 per block, plus input, 3 embeddings, their sum + norm, pooler


def test_a_view_with_a_shared_producer_stays_a_layer() -> None:
    """A view is absorbed only into a producer it alone reads from."""
    b = GraphBuilder("shared", (1, 8, 16))
    x = b.fc(16, name="fc")
    b.view(shape=(1, 128), name="flat", inputs=x)
    b.relu(name="other", inputs=x)
    fused = fuse(b.build())
    assert "flat" in fused.nodes and fused_members(get_layer(fused, "fc")) == ("fc",)


def test_profile_rows_add_up_per_unit() -> None:
    graph = load_model("alexnet")
    fused = fuse(graph)
    profile = {("conv1", "cpu"): ProfileEntry(0.003, 2.0), ("relu1", "cpu"): ProfileEntry(0.001, 4.0),
               ("fc8", "cpu"): ProfileEntry(0.002)}
    merged = fuse_profile(profile, fused)
    assert merged[("conv1", "cpu")].latency_s == pytest.approx(0.004)
    assert merged[("conv1", "cpu")].power_w == pytest.approx((0.003 * 2 + 0.001 * 4) / 0.004)
    assert merged[("fc8", "cpu")] == profile[("fc8", "cpu")]
