"""The flagship scenario shows runtime adaptation, and ``simulate --compare`` shows it.

Oracle for the targets: the oracle policy (a full solve per request under the
true conditions) run on the same scenario in the same test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from deepx_sim.cli import main
from deepx_sim.scenario import build_simulation, load_scenario

FLAGSHIP = Path(__file__).parents[2] / "scenarios" / "vgg16_sd400_lte_dense.yaml"
TRACES = {"verizon": ("traces/Verizon-LTE-short.up", "traces/Verizon-LTE-short.down"),
          "att": ("traces/ATT-LTE-driving-2016.up", "traces/ATT-LTE-driving-2016.down")}


def _run(kind: str, trace: str) -> dict:  # type: ignore[type-arg]
    scenario, base = load_scenario(FLAGSHIP)
    up, down = TRACES[trace]
    conditions = scenario.conditions.model_copy(update={
        "uplink": scenario.conditions.uplink.model_copy(update={"trace": up}),  # type: ignore[union-attr]
        "downlink": scenario.conditions.downlink.model_copy(update={"trace": down})})  # type: ignore[union-attr]
    scenario = scenario.model_copy(update={"conditions": conditions,
                                           "policy": scenario.policy.model_copy(update={"kind": kind})})
    return build_simulation(scenario, base, str(FLAGSHIP)).run().summary


@pytest.mark.slow
@pytest.mark.parametrize("trace", sorted(TRACES))
def test_replanning_adapts_and_stays_within_two_percent_of_the_oracle(trace: str) -> None:
    replan, oracle = _run("replan", trace), _run("oracle", trace)
    assert replan["distinct_plans"] >= 2
    assert 0 < replan["offload_rate"] < 1  # some requests go to the cloud, some stay
    assert replan["energy_mean_j"] <= oracle["energy_mean_j"] * 1.02
    assert replan["deadline_miss_rate"] == oracle["deadline_miss_rate"]


def _small_scenario(tmp_path: Path) -> Path:
    data = {"model": "speakerid", "platform": "tegra_k1", "duration_s": 6,
            "conditions": {"link": "wifi", "uplink": {"markov": {"good": 20, "bad": 0.3, "mean_good_s": 2,
                                                                  "mean_bad_s": 2}}},
            "workload": {"arrivals": "periodic", "interval_s": 0.5},
            "constraints": {"deadline_ms": 100}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_simulate_compare_prints_the_three_policies(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = _small_scenario(tmp_path)
    assert main(["simulate", str(path), "--compare", "--json"]) == 0
    summaries = json.loads(capsys.readouterr().out)
    assert list(summaries) == ["static", "replan", "oracle"]
    assert main(["simulate", str(path), "--compare"]) == 0
    lines = capsys.readouterr().out.splitlines()
    oracle = next(line for line in lines if line.startswith("oracle"))
    assert "1.000x" in oracle
    ratio = summaries["replan"]["energy_mean_j"] / summaries["oracle"]["energy_mean_j"]
    assert f"{ratio:.3f}x" in next(line for line in lines if line.startswith("replan"))
    assert main(["simulate", str(path), "--compare", "--out", str(tmp_path / "r.csv")]) == 2
    assert "cannot be used with --compare" in capsys.readouterr().err
