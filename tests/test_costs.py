"""The cost model against closed forms worked by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepx_sim.costs import Conditions, CostModel, Variant
from deepx_sim.errors import CostError, PlatformError, ProfileError
from deepx_sim.model import load_model
from deepx_sim.model.layers import get_layer, layers_in_order
from deepx_sim.model.profiles import load_profile
from deepx_sim.platform import Platform, load_platform


@pytest.fixture(scope="module")
def alexnet_k1() -> CostModel:
    return CostModel(load_model("alexnet"), load_platform("tegra_k1"), Conditions(link="wifi"))


def test_compute_bound_conv_on_gpu(alexnet_k1: CostModel) -> None:
    # conv2: 223,948,800 MACs -> 447.9 MFLOP at 365 GFLOP/s x 0.5 efficiency
    cost = alexnet_k1.layer_cost("conv2", "gpu")
    compute_s = 2 * 223_948_800 / (365e9 * 0.5)
    traffic = (96 * 27 * 27 + 256 * 27 * 27) * 4 + 307_456 * 4
    memory_s = traffic / (14.9e9 * 0.7)
    assert cost.compute_s == pytest.approx(compute_s)
    assert cost.memory_s == pytest.approx(memory_s)
    assert compute_s > memory_s
    assert cost.latency_s == pytest.approx(compute_s + 0.05e-3)
    assert cost.energy_j == pytest.approx(6.0 * cost.latency_s)


def test_small_matrix_products_slow_a_grouped_convolution() -> None:
    # ResNeXt-50's first grouped 3x3: 32 groups of 128 / 32 = 4 output channels, each a
    # product of 4 rows, 4 x 9 = 36 deep, over 56 x 56 = 3136 output positions
    graph = load_model("resnext50")
    layer = next(lay for lay in layers_in_order(graph) if lay.conv and lay.conv.groups == 32)
    assert layer.gemm_dims == (4, 36, 3136)
    assert get_layer(graph, "fc").gemm_dims is None  # only convolutions
    platform = load_platform("vm_datasheet")
    data = platform.model_dump()
    data["processors"][0]["gemm_half_size"] = {"rows": 4.0, "depth": 0.0, "columns": 3136.0}
    slowed = Platform.model_validate(data)
    plain = CostModel(graph, platform).layer_cost(layer.name, "vm").compute_s
    # each dimension d at half size h keeps d / (d + h) of the efficiency: 1/2 x 1 x 1/2
    assert CostModel(graph, slowed).layer_cost(layer.name, "vm").compute_s == pytest.approx(4 * plain)


def test_short_channel_planes_slow_a_batchnorm() -> None:
    # ResNet-50's last BatchNorm: 2048 channels of 7 x 7 = 49 positions; a half size of 49
    # halves its compute and memory efficiency, and leaves the convolutions alone
    graph = load_model("resnet50")
    norm = [lay for lay in layers_in_order(graph) if lay.kind.value == "batchnorm"][-1]
    conv = next(lay for lay in layers_in_order(graph) if lay.kind.value == "conv")
    assert norm.plane_size == 49 and get_layer(graph, "fc").plane_size is None
    platform = load_platform("vm_datasheet")
    data = platform.model_dump()
    data["processors"][0]["plane_half_size"] = {"batchnorm": 49.0}
    slowed = CostModel(graph, Platform.model_validate(data))
    plain = CostModel(graph, platform)
    for what in ("compute_s", "memory_s"):
        assert getattr(slowed.layer_cost(norm.name, "vm"), what) == \
            pytest.approx(2 * getattr(plain.layer_cost(norm.name, "vm"), what))
    assert slowed.layer_cost(conv.name, "vm") == plain.layer_cost(conv.name, "vm")


def test_memory_bound_fc_on_cpu(alexnet_k1: CostModel) -> None:
    cost = alexnet_k1.layer_cost("fc6", "cpu")
    traffic = (9216 + 4096) * 4 + 37_752_832 * 4
    assert cost.memory_s == pytest.approx(traffic / (14.9e9 * 0.6))
    assert cost.latency_s == pytest.approx(cost.memory_s + 0.01e-3)
    assert cost.param_bytes == 37_752_832 * 4


def test_svd_rank_costs_k_times_m_plus_n(alexnet_k1: CostModel) -> None:
    cost = alexnet_k1.layer_cost("fc6", "gpu", Variant(rank=256))
    assert cost.flops == 2 * 256 * (4096 + 9216)
    assert cost.param_bytes == (256 * (4096 + 9216) + 4096) * 4
    with pytest.raises(CostError, match="only fc layers take a rank"):
        alexnet_k1.layer_cost("conv1", "gpu", Variant(rank=4))
    with pytest.raises(CostError, match="rank must be in 1..4096"):
        alexnet_k1.layer_cost("fc6", "gpu", Variant(rank=5000))


def test_precision_changes_peak_and_weight_bytes(alexnet_k1: CostModel) -> None:
    fp32 = alexnet_k1.layer_cost("conv3", "cpu", Variant(bits=32))
    fp64 = alexnet_k1.layer_cost("conv3", "cpu", Variant(bits=64))
    assert fp64.compute_s == pytest.approx(fp32.compute_s * 73.6 / 9.2)
    assert fp64.param_bytes == 2 * fp32.param_bytes
    with pytest.raises(CostError, match="no 16-bit support"):
        alexnet_k1.layer_cost("conv3", "cpu", Variant(bits=16))


def test_background_load_stretches_latency_not_energy() -> None:
    g, p = load_model("speakerid"), load_platform("tegra_k1")
    idle = CostModel(g, p).layer_cost("fc2", "cpu")
    loaded = CostModel(g, p, Conditions(free_fraction={"cpu": 0.25})).layer_cost("fc2", "cpu")
    assert loaded.latency_s == pytest.approx(4 * idle.latency_s)
    assert loaded.energy_j == pytest.approx(idle.energy_j)
    with pytest.raises(CostError, match=r"free_fraction\['cpu'\] must be in \(0, 1\]"):
        Conditions(free_fraction={"cpu": 0})
    with pytest.raises(PlatformError, match="no processor 'cpuu'"):
        CostModel(g, p, Conditions(free_fraction={"cpuu": 0.5}))


def test_free_layers_cost_nothing(alexnet_k1: CostModel) -> None:
    for name in ("input", "flatten", "drop6"):
        assert alexnet_k1.layer_cost(name, "cpu").latency_s == 0.0


def test_transfers_closed_form(alexnet_k1: CostModel) -> None:
    size = 618_348
    on_chip = alexnet_k1.transfer_cost(size, "cpu", "gpu")
    assert on_chip.latency_s == pytest.approx(size / 14.9e9)
    assert on_chip.energy_j == pytest.approx(3.5 * size / 14.9e9)
    up = alexnet_k1.transfer_cost(size, "cpu", "cloud")
    up_s = 0.010 + size * 8 / 15e6  # rtt/2 + bits / 15 Mbps
    assert up.latency_s == pytest.approx(up_s)
    # Huang power a*rate + b while bits move, b alone during the rtt/2
    assert up.energy_j == pytest.approx((283.17 * 15 + 132.86) / 1000 * (size * 8 / 15e6)
                                        + 0.13286 * 0.010)
    down = alexnet_k1.transfer_cost(4000, "cloud", "cpu")
    down_s = 0.010 + 4000 * 8 / 30e6
    assert down.energy_j == pytest.approx((137.01 * 30 + 132.86) / 1000 * (down_s - 0.010)
                                          + 0.13286 * 0.010)
    assert alexnet_k1.transfer_cost(size, "gpu", "gpu").latency_s == 0


def test_conditions_override_the_link(alexnet_k1: CostModel) -> None:
    g, p = load_model("alexnet"), load_platform("tegra_k1")
    slow = CostModel(g, p, Conditions(link="lte", uplink_mbps=1.0, rtt_ms=100))
    assert slow.transfer_cost(1000, "cpu", "cloud").latency_s == pytest.approx(0.05 + 8000 / 1e6)
    charge = slow.radio_charge(first_use_s=0.1, span_s=0.5)  # idle radio, no next request
    assert charge.promotion_s == pytest.approx(0.2601)
    assert charge.promotion_j + charge.tail_j == pytest.approx(1.2107 * 0.2601 + 1.060 * 11.576)
    unreachable = CostModel(g, p, Conditions(link="lte", cloud_reachable=False))
    assert "cloud" not in [q.name for q in unreachable.available_processors()]
    with pytest.raises(CostError, match="not reachable"):
        unreachable.transfer_cost(10, "cpu", "cloud")


def test_cloud_compute_costs_radio_wait_not_compute_energy(alexnet_k1: CostModel) -> None:
    cost = alexnet_k1.layer_cost("conv1", "cloud")
    assert cost.energy_j == pytest.approx(0.1193 * cost.latency_s)


def test_measured_profile_overrides_and_scales(tmp_path: Path) -> None:
    g, p = load_model("alexnet"), load_platform("tegra_k1")
    csv = tmp_path / "prof.csv"
    csv.write_text("layer,processor,latency_s,power_w\nfc6,cpu,0.2,2.0\nconv1,gpu,0.004,\n")
    model = CostModel(g, p, profile=load_profile(csv, g, p))
    fc6 = model.layer_cost("fc6", "cpu")
    assert fc6.latency_s == pytest.approx(0.2)
    assert fc6.energy_j == pytest.approx(0.4)
    assert model.layer_cost("conv1", "gpu").energy_j == pytest.approx(6.0 * 0.004)
    analytic = CostModel(g, p)
    ratio = (analytic.layer_cost("fc6", "cpu", Variant(rank=100)).busy_s
             / analytic.layer_cost("fc6", "cpu").busy_s)
    assert model.layer_cost("fc6", "cpu", Variant(rank=100)).latency_s == pytest.approx(0.2 * ratio)


def test_measured_zero_latency_is_valid(tmp_path: Path) -> None:
    g, p = load_model("alexnet"), load_platform("tegra_k1")
    csv = tmp_path / "prof.csv"
    csv.write_text("layer,processor,latency_s\nfc6,cpu,0\n")
    model = CostModel(g, p, profile=load_profile(csv, g, p))
    assert model.layer_cost("fc6", "cpu").latency_s == 0.0
    with pytest.raises(ProfileError, match=r"row 2\.latency_s must be > 0, got '0'"):
        load_profile(csv, g, p, zero_latency_ok=False)


@pytest.mark.parametrize(("content", "suffix", "expected"), [
    ("layer,processor,latency_s\nfc9,cpu,0.1\n", ".csv", "row 2.layer 'fc9' is not a layer"),
    ("layer,processor,latency_s\nfc6,tpu,0.1\n", ".csv", "row 2.processor 'tpu' is not on"),
    ("layer,processor,latency_s\nfc6,cpu,-1\n", ".csv", "row 2.latency_s must be >= 0, got '-1'"),
    ("layer,latency_s\nfc6,0.1\n", ".csv", "missing ['processor']"),
    ('[{"layer": "fc6", "processor": "cpu", "latency_s": "x"}]', ".json",
     "[0].latency_s must be a number"),
    ('{"layer": "fc6"}', ".json", "must be a JSON list"),
    ("", ".txt", "must be .csv or .json"),
])
def test_bad_profiles(tmp_path: Path, content: str, suffix: str, expected: str) -> None:
    path = tmp_path / f"p{suffix}"
    path.write_text(content)
    with pytest.raises(ProfileError) as err:
        load_profile(path, load_model("alexnet"), load_platform("tegra_k1"))
    assert expected in str(err.value)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(("state", "tail_left_s", "gap_s", "promoted", "tail_s"), [
    ("idle", 0.0, None, True, 11.576),  # a lone request: promotion and the whole tail
    ("connected", 3.0, None, False, 11.576),  # the tail outlasts the 0.1 s of local work first
    ("connected", 0.05, None, True, 11.576),  # it runs out during that local work
    ("promoting", 0.0, 2.0, False, 2.0 - 0.5),  # the next request arrives 2 s on: shares the rest
    ("idle", 0.0, 0.3, True, 0.0),  # the next one arrives before this one is done with the radio
    ("connected", 9.0, 20.0, False, 11.576),  # the next one comes after the tail: it promotes
])
def test_radio_rule_charges_promotion_from_idle_and_the_unshared_tail(
        state: str, tail_left_s: float, gap_s: float | None, promoted: bool, tail_s: float) -> None:
    g, p = load_model("alexnet"), load_platform("tegra_k1")
    conditions = Conditions(link="lte", radio_state=state, tail_left_s=tail_left_s,  # type: ignore[arg-type]
                            next_gap_s=gap_s)
    charge = CostModel(g, p, conditions).radio_charge(first_use_s=0.1, span_s=0.5)
    # Huang et al. LTE: promotion 1210.7 mW x 260.1 ms, one tail stage of 1060 mW for 11.576 s
    assert charge.promotion_s == pytest.approx(0.2601 if promoted else 0.0)
    assert charge.promotion_j == pytest.approx(1.2107 * 0.2601 if promoted else 0.0)
    assert charge.tail_j == pytest.approx(1.060 * tail_s)


def test_bad_radio_conditions_are_named() -> None:
    with pytest.raises(CostError, match="radio_state must be one of"):
        Conditions(radio_state="asleep")  # type: ignore[arg-type]
    with pytest.raises(CostError, match="tail_left_s must be >= 0, and 0 unless the radio is connected"):
        Conditions(radio_state="idle", tail_left_s=2.0)
    with pytest.raises(CostError, match="next_gap_s must be > 0"):
        Conditions(next_gap_s=-1.0)
