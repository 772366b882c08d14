"""Scenario files: validation messages, reproducibility, the shipped examples."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deepx_sim.errors import ScenarioError
from deepx_sim.scenario import build_simulation, load_scenario, run_scenario

SCENARIOS = Path(__file__).parents[2] / "scenarios"

BASE = {
    "model": "speakerid", "platform": "tegra_k1", "seed": 3, "duration_s": 20,
    "conditions": {"link": "wifi", "uplink": {"markov": {"good": 20, "bad": 0.5, "mean_good_s": 5,
                                                          "mean_bad_s": 3}}},
    "workload": {"arrivals": "poisson", "rate_per_s": 2},
    "policy": {"kind": "replan", "planner": "deepx"},
}


def write(tmp_path: Path, data: dict, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def with_change(dotted: str, value: object) -> dict:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    node = data
    *parents, last = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return data


def test_same_scenario_and_seed_give_identical_rows(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    a, b = run_scenario(path).records, run_scenario(path).records
    assert len(a) > 20
    assert a.equals(b)
    other = run_scenario(write(tmp_path, with_change("seed", 4), "t.yaml")).records
    assert not a[["arrival_s"]].equals(other[["arrival_s"]])


@pytest.mark.parametrize(("dotted", "value", "message"), [
    ("policy.kind", "sometimes", "s.yaml: policy.kind: unknown policy 'sometimes': known: oracle, "
                                 "replan, static"),
    ("policy.planer", "deepx", "s.yaml: policy.planer is not a known field"),
    ("policy.planner", "deepxx", "s.yaml: policy.planner: unknown planner 'deepxx'"),
    ("constraints.deadline_ms", -5, "s.yaml: constraints.deadline_ms must be > 0, got -5"),
    ("conditions.uplink", {"constant": 3, "trace": "x.up"}, "give exactly one of constant, trace"),
    ("conditions.uplink", {"trace": "missing.up"}, "s.yaml: conditions.uplink.trace: no such file"),
    ("conditions.link", "5g", "s.yaml: conditions.link: unknown link '5g' on tegra_k1"),
    ("conditions.load", {"gpuu": {"constant": 0.5}}, "conditions.load.gpuu: unknown processor 'gpuu'"),
    ("conditions.load", {"gpu": {"constant": 1.5}}, "a load is a share of the processor in [0, 1], got 1.5"),
    ("conditions.load", {"gpu": {"constant": 1.0}}, "the load must end below 1"),
    ("conditions.outages", [[10, 5]], "conditions.outages: outage [10.0, 5.0]: needs 0 <= start < end"),
    ("conditions.bandwidth_mbps", 5, "bandwidth_mbps sets both directions"),
    ("workload.arrivals", "periodic", "arrivals periodic needs interval_s"),
    ("model", "alexnett", "s.yaml: model: unknown model 'alexnett'"),
    ("platform", "tegra", "s.yaml: platform: unknown platform 'tegra'"),
])
def test_bad_scenarios_name_file_field_value_and_rule(tmp_path: Path, dotted: str, value: object,
                                                      message: str) -> None:
    path = write(tmp_path, with_change(dotted, value))
    with pytest.raises(ScenarioError) as err:
        scenario, base = load_scenario(path)
        build_simulation(scenario, base, str(path))
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ScenarioError, match="must be a mapping"):
        load_scenario(path)


def test_trace_paths_are_relative_to_the_scenario_file(tmp_path: Path) -> None:
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "bw.csv").write_text("time_s,mbps\n0,1\n5,30\n")
    data = with_change("conditions.uplink", {"trace": "traces/bw.csv"})
    sim = build_simulation(*load_scenario(write(tmp_path, data)))
    assert sim.world.uplink_mbps.value_at(6) == 30


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_scenarios_run(path: Path) -> None:
    scenario, base = load_scenario(path)
    short = scenario.model_copy(update={"duration_s": min(scenario.duration_s, 20.0)})
    result = build_simulation(short, base, str(path)).run()
    assert result.summary["requests"] > 0
    assert (result.records.finish_s >= result.records.arrival_s).all()


def test_arrivals_from_a_timestamp_file(tmp_path: Path) -> None:
    (tmp_path / "arrivals.csv").write_text("time_s\n0.5\n0.5\n3\n")
    data = with_change("workload", {"arrivals": "trace", "timestamps_file": "arrivals.csv"})
    records = run_scenario(write(tmp_path, data)).records
    assert records.arrival_s.tolist() == [0.5, 0.5, 3.0]
    for rows, message in [("1\nsoon\n", "arrivals.csv:3: time_s must be a finite number >= 0, got 'soon'"),
                          ("1\n25\n", "arrivals.csv:3: time_s 25 is past the run's end (duration_s 20); "
                                      "arrivals must lie in [0, duration_s)"),
                          ("3\n1\n", "arrivals.csv:3: time_s must not decrease, got 1 after 3"),
                          ("", "arrivals.csv: the arrivals file has a header but no rows")]:
        (tmp_path / "arrivals.csv").write_text("time_s\n" + rows)
        with pytest.raises(ScenarioError) as err:
            run_scenario(write(tmp_path, data))
        assert str(err.value) == f"{tmp_path / 's.yaml'}: workload: {tmp_path / message}"


def test_static_policy_plans_at_the_runs_average_conditions(tmp_path: Path) -> None:
    data = with_change("conditions", {"link": "wifi", "bandwidth_mbps": 3})
    data["policy"] = {"kind": "static"}
    sim = build_simulation(*load_scenario(write(tmp_path, data)))
    assert sim.policy.decide(0.0).conditions.uplink_mbps == 3
    data["conditions"] = {"link": "wifi", "uplink": {"markov": {"good": 10, "bad": 2, "mean_good_s": 4,
                                                                "mean_bad_s": 4}}}
    sim = build_simulation(*load_scenario(write(tmp_path, data)))
    expected = sim.world.uplink_mbps.mean(0, data["duration_s"])
    assert sim.policy.decide(0.0).conditions.uplink_mbps == pytest.approx(expected)
