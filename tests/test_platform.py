"""Shipped hardware files load; wrong files get errors naming file, field, value, rule."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deepx_sim.errors import PlatformError
from deepx_sim.platform import RADIO_PRESETS, hardware_dir, load_platform, platform_names

SHIPPED = ["tegra_k1", "snapdragon_800", "snapdragon_400", "cortex_m0", "cortex_m3",
           "jetson_orin_nano", "snapdragon_8_gen_3"]


def test_all_required_platforms_ship() -> None:
    assert set(SHIPPED) <= set(platform_names())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_platform_loads(name: str) -> None:
    p = load_platform(name)
    assert p.local_processors
    assert p.sensor in {q.name for q in p.local_processors}


@pytest.mark.parametrize("name", SHIPPED)
def test_every_number_has_a_source_or_says_estimate(name: str) -> None:
    sourced = ("peak_gflops", "efficiency", "memory_bandwidth_gbps", "memory_efficiency",
               "usable_memory_mib", "active_power_w", "idle_power_w", "launch_overhead_ms",
               "shared_memory_gbps", "uplink_mbps", "downlink_mbps", "rtt_ms")
    for path in (hardware_dir() / f"{name}.yaml", hardware_dir() / "remote" / "cloud_a100.yaml"):
        for line in path.read_text().splitlines():
            key = line.strip().split(":")[0]
            if key in sourced:
                assert "#" in line, f"{path.name}: no source or 'estimate' on {line.strip()!r}"


def test_cloud_reachable_over_wifi_lte_3g() -> None:
    p = load_platform("tegra_k1")
    assert [lk.name for lk in p.links] == ["wifi", "lte", "3g"]
    assert p.processor("cloud").is_remote
    assert p.link("lte").radio == RADIO_PRESETS["lte"]


def edited_tegra(edit: dict) -> dict:
    """tegra_k1 without its remote file, with dotted fields (``processors.1.kind``) changed."""
    data = yaml.safe_load((hardware_dir() / "tegra_k1.yaml").read_text())
    data.pop("remote")
    for dotted, value in edit.items():
        target = data
        *path, last = dotted.split(".")
        for part in path:
            target = target[int(part)] if part.isdigit() else target[part]
        target[last] = value
    return data


def _write(tmp_path: Path, edit: dict) -> Path:
    out = tmp_path / "x.yaml"
    out.write_text(yaml.safe_dump(edited_tegra(edit)))
    return out


def test_negative_peak_names_file_field_value(tmp_path: Path) -> None:
    path = _write(tmp_path, {"processors.1.peak_gflops": {"fp32": -3}})
    with pytest.raises(PlatformError) as err:
        load_platform(path)
    assert str(err.value) == f"{path}: processors[1].peak_gflops.fp32 must be in [1e-06, 1e+09], got -3"


@pytest.mark.parametrize(("edit", "expected"), [
    ({"processors.0.kind": "fpga"}, "processors[0].kind must be one of"),
    ({"processors.0.colour": "red"}, "processors[0].colour is not a known field"),
    ({"processors.2.efficiency": {"default": 1.5}}, "processors[2].efficiency.default must be in [0.001, 1]"),
    ({"processors.2.efficiency": {"cnv": 0.5, "default": 0.5}}, "unknown layer kinds ['cnv']"),
    ({"processors.0.idle_power_w": 9.0}, "idle_power_w (9.0) must be <= active_power_w"),
    ({"sensor_processor": "gpu0"}, "sensor_processor 'gpu0' must be a local processor"),
    ({"shared_memory_gbps": "fast"}, "shared_memory_gbps"),
    ({"processors.1.count": 0}, "processors[1].count must be >= 1, got 0"),
    ({"processors.1.count": 2.5}, "processors[1].count must be a whole number, got 2.5"),
    ({"processors.1.count": "8"}, "processors[1].count must be a whole number, got '8'"),
    ({"processors.1.count": 2, "processors.0.name": "lpc1"}, "got duplicates ['lpc1']"),
    ({"processors.1.gemm_half_size": {"rows": -4}}, "processors[1].gemm_half_size.rows must be"),
    ({"processors.1.gemm_half_size": {"width": 4}}, "gemm_half_size.width is not a known field"),
    ({"processors.1.plane_half_size": {"bn": 4}}, "plane_half_size has unknown layer kinds ['bn']"),
])
def test_wrong_fields_are_named(tmp_path: Path, edit: dict, expected: str) -> None:
    with pytest.raises(PlatformError) as err:
        load_platform(_write(tmp_path, edit))
    assert expected in str(err.value)
    assert "x.yaml" in str(err.value)


def test_unknown_radio_preset_and_remote(tmp_path: Path) -> None:
    data = yaml.safe_load((hardware_dir() / "tegra_k1.yaml").read_text())
    data["remote"] = "nowhere"
    path = tmp_path / "y.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(PlatformError, match="remote 'nowhere'"):
        load_platform(path)


def test_malformed_yaml_and_unknown_name(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("processors: [unclosed\n")
    with pytest.raises(PlatformError, match=r"bad.yaml:2:1: not valid YAML: expected ',' or ']'"):
        load_platform(bad)
    with pytest.raises(PlatformError, match="unknown platform 'tegra'.*tegra_k1"):
        load_platform("tegra")


def test_radio_preset_energies_closed_form() -> None:
    lte = RADIO_PRESETS["lte"]
    assert lte.tail_energy_j == pytest.approx(1.060 * 11.576)
    assert lte.promotion_energy_j == pytest.approx(1.2107 * 0.2601)
    g3 = RADIO_PRESETS["3g"]
    assert g3.tail_energy_j == pytest.approx(0.8039 * 8.0882 + 0.6013 * 0.8242)
    wifi = RADIO_PRESETS["wifi"]
    assert wifi.transfer_power_w(up_mbps=10) == pytest.approx((283.17 * 10 + 132.86) / 1000)


def test_count_expands_into_interchangeable_instances(tmp_path: Path) -> None:
    plain = load_platform(_write(tmp_path, {}))
    expanded = load_platform(_write(tmp_path, {"processors.1.count": 3}))
    written = plain.processors[1]
    copies = [p for p in expanded.processors if p.group == written.name]
    assert [p.name for p in copies] == [f"{written.name}{i}" for i in range(3)]
    for p in copies:  # each keeps the class's per-instance numbers
        assert p.usable_memory_bytes == written.usable_memory_bytes
        assert p.peak_gflops == written.peak_gflops and p.klass == written.name and p.count == 1
    assert len(expanded.processors) == len(plain.processors) + 2
    assert expanded.processors[0] == plain.processors[0] and plain.processors[0].klass == "cpu"
