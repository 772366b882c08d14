"""The deepx-sim command line: outputs, JSON shape and error handling."""

from __future__ import annotations

import json

import pytest

from deepx_sim.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_alexnet_shows_dxtk_memory(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "inspect", "alexnet")
    assert code == 0
    assert "930.26 MiB" in out and "975,443,584 B" in out
    assert "232.56 MiB" in out
    assert "60,965,224" in out


def test_inspect_json_totals(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "inspect", "speakerid", "--json", "--precision", "16")
    data = json.loads(out)
    assert code == 0 and data["schema_version"] == 1 and data["precision_bits"] == 16
    totals = data["totals"]
    assert totals["params"] == 1_758_106
    assert totals["macs"] == 1_756_000
    assert totals["original_bytes"] == 1_758_106 * 16
    assert totals["cleaned_bytes"] == 1_758_106 * 2
    assert {"scaled_bytes", "peak_activation_bytes", "flops", "layers"} <= set(totals)
    assert data["layers"][1]["fc"] == {"m": 1000, "n": 650}


def test_models_platforms_platform(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models")
    assert code == 0 and "resnet50" in out and "25,557,032" in out
    code, out, _ = run(capsys, "platforms")
    assert code == 0 and "snapdragon_8_gen_3" in out
    code, out, _ = run(capsys, "platform", "snapdragon_800", "--json")
    data = json.loads(out)
    assert [p["name"] for p in data["processors"]] == ["cpu", "gpu", "dsp", "cloud"]
    assert data["links"][1]["radio"]["name"] == "lte"


def test_errors_are_one_line_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "inspect", "resnet")
    assert code == 2 and out == ""
    assert err.startswith("deepx-sim: error: unknown model 'resnet'") and "resnet50" in err
    assert "Traceback" not in err
    code, _, err = run(capsys, "platform", "/nonexistent/x.yaml")
    assert code == 2 and "no such hardware file" in err


def test_plan_json_has_the_documented_keys(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", "--model", "speakerid", "--platform", "tegra_k1",
                       "--link", "lte", "--bandwidth-mbps", "2", "--json")
    data = json.loads(out)
    assert code == 0 and data["status"] == "optimal" and data["planner"] == "deepx"
    assert {"latency_s", "energy_j", "accuracy_loss", "solve_time_s", "gap",
            "memory_bytes"} <= set(data)
    assert data["conditions"]["uplink_mbps"] == 2.0
    assert [a["layer"] for a in data["assignment"]][:2] == ["input", "fc1"]
    assert set(data["assignment"][1]) == {"layer", "processor", "rank", "bits", "layers"}
    assert data["assignment"][1]["layers"] == ["fc1", "act1"]  # a fused unit names its layers


def test_plan_with_lower_precisions(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", "--model", "alexnet", "--platform", "snapdragon_8_gen_3",
                       "--precisions", "32,16,8", "--json")
    bits = {a["bits"] for a in json.loads(out)["assignment"]}
    assert code == 0 and bits <= {32, 16, 8}
    code, _, err = run(capsys, "plan", "--model", "alexnet", "--platform", "tegra_k1",
                       "--precisions", "32,12")
    assert code == 2 and "[12] not allowed" in err


def test_impossible_plan_and_compare(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "plan", "--model", "alexnet", "--platform", "tegra_k1",
                       "--deadline-ms", "10")
    assert code == 2 and "deadline 10 ms cannot be met: the fastest plan takes" in err
    code, out, _ = run(capsys, "compare", "--model", "alexnet", "--platform", "tegra_k1",
                       "--link", "wifi")
    assert code == 0 and "cloud-only" in out and "1.00x" in out


def test_quality_command(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    out_csv = tmp_path / "q.csv"
    code, out, _ = run(capsys, "quality", "--models", "speakerid", "--limit", "3",
                       "--planner", "deepx", "--planner", "greedy", "--out", str(out_csv))
    assert code == 0 and "mean_ratio" in out and out_csv.is_file()


def _scenario(tmp_path, **changes: object):  # type: ignore[no-untyped-def]
    import yaml

    data = {"model": "speakerid", "platform": "tegra_k1", "duration_s": 10,
            "conditions": {"link": "wifi", "bandwidth_mbps": 8},
            "workload": {"arrivals": "periodic", "interval_s": 0.5}, "policy": {"kind": "static"}}
    data.update(changes)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_simulate_prints_a_summary_and_writes_records(capsys: pytest.CaptureFixture[str], tmp_path,
                                                       suffix: str) -> None:
    from deepx_sim.results import read_table

    out_file = tmp_path / f"records{suffix}"
    code, out, err = run(capsys, "simulate", str(_scenario(tmp_path)), "--out", str(out_file))
    assert code == 0, err
    assert "20 requests" in out and "latency p50 / p95 / p99" in out and "battery drain" in out
    records = read_table(out_file)
    assert len(records) == 20 and {"latency_s", "energy_j", "plan_id", "deadline_met"} <= set(records)
    assert not list(tmp_path.glob(".records*"))  # no temporary file left behind


def test_simulate_json(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    code, out, _ = run(capsys, "simulate", str(_scenario(tmp_path)), "--json")
    data = json.loads(out)
    assert code == 0 and data["summary"]["requests"] == 20
    assert sum(data["run_energy_j"].values()) == pytest.approx(data["summary"]["run_energy_j"])


def test_simulate_bad_scenario_is_one_clear_line(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    path = _scenario(tmp_path, policy={"kind": "static", "estimator": "psychic"})
    code, _, err = run(capsys, "simulate", str(path))
    assert code == 2
    assert err.startswith("deepx-sim: error: ")
    assert "run.yaml: policy.estimator must be one of 'last', 'ewma' or 'current', got 'psychic'" in err
    assert "Traceback" not in err
    code, _, err = run(capsys, "simulate", str(_scenario(tmp_path)), "--out", str(tmp_path / "x.txt"))
    assert code == 2 and "must end in .parquet or .csv" in err
