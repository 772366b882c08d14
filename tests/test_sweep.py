"""Sweeps: expansion, validation, resume, failures, parallel and Dask runs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

import deepx_sim
from deepx_sim.errors import ScenarioError
from deepx_sim.sweep import Progress, derived_seed, load_sweep, run_sweep

BASE = {
    "model": "speakerid", "platform": "tegra_k1", "seed": 5, "duration_s": 10,
    "conditions": {"link": "wifi"}, "workload": {"arrivals": "poisson", "rate_per_s": 2},
    "policy": {"kind": "static"},
}
#: wall-clock columns differ between any two runs
TIMING = ["wall_s", "planner_full_solves"]


def write_sweep(tmp_path: Path, **fields: object) -> Path:
    data = {"name": "t", "base": BASE, "grid": {"policy.planner": ["deepx", "cpu-only"]},
            "zip": {"conditions.bandwidth_mbps": [2, 20], "conditions.rtt_ms": [80, 10]}, "repetitions": 2}
    data.update(fields)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def comparable(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=[c for c in TIMING if c in table]).sort_values("key").reset_index(drop=True)


def test_expansion_grid_times_zip_times_repetitions(tmp_path: Path) -> None:
    sweep = load_sweep(write_sweep(tmp_path))
    assert len(sweep.runs) == 2 * 2 * 2
    params = [r.params for r in sweep.runs]
    swept = {(p["policy.planner"], p["conditions.bandwidth_mbps"], p["conditions.rtt_ms"]) for p in params}
    assert swept == {("deepx", 2, 80), ("deepx", 20, 10), ("cpu-only", 2, 80), ("cpu-only", 20, 10)}
    assert {p["seed"] for p in params} == {5, derived_seed(5, 1)}
    assert len({r.key for r in sweep.runs}) == 8
    again = load_sweep(write_sweep(tmp_path))
    assert [r.key for r in again.runs] == [r.key for r in sweep.runs]  # keys are stable


@pytest.mark.parametrize(("fields", "message"), [
    ({"grid": {"policy.plannr": ["deepx"]}}, "policy.plannr is not a known field"),
    ({"grid": {"constraints.deadline_ms": [100, -1]}}, "conditions.rtt_ms=80]: constraints.deadline_ms "
                                                       "must be > 0, got -1"),
    ({"zip": {"conditions.rtt_ms": [1, 2], "conditions.bandwidth_mbps": [3]}}, "equal lengths"),
    ({"grid": {"model": "alexnet"}}, "grid.model must be a non-empty list"),
    ({"repetitions": 0}, "repetitions must be an integer >= 1"),
    ({"axes": {}}, "axes is not a known field"),
])
def test_bad_sweeps_name_the_file_and_field(tmp_path: Path, fields: dict, message: str) -> None:
    path = write_sweep(tmp_path, **fields)
    with pytest.raises(ScenarioError) as err:
        load_sweep(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_failures_are_recorded_and_the_rest_go_on_then_resume_skips_done_runs(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, grid={"policy.planner": ["deepx", "npu-only"]})
    out = tmp_path / "out"
    states: list[Progress] = []
    table = run_sweep(load_sweep(path), out, workers=1, progress=lambda s: states.append(
        Progress(s.total, s.skipped, s.done, s.failed)))
    assert (table.status == "ok").sum() == 4 and (table.status == "failed").sum() == 4
    assert table[table.status == "failed"].error.str.contains("no available npu processor").all()
    assert states[-1].done == 4 and states[-1].failed == 4
    assert (out / "results.parquet").is_file()
    # a re-run retries only the failed runs
    states.clear()
    run_sweep(load_sweep(path), out, workers=1, progress=lambda s: states.append(
        Progress(s.total, s.skipped, s.done, s.failed)))
    assert states[0].skipped == 4 and states[-1].failed == 4 and states[-1].done == 0


def test_interrupted_sweep_keeps_finished_runs_and_resumes(tmp_path: Path) -> None:
    sweep = load_sweep(write_sweep(tmp_path))
    out = tmp_path / "out"

    def stop_after_three(state: Progress) -> None:
        if state.finished == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, out, workers=1, progress=stop_after_three)
    assert len(list((out / "runs").glob("*.json"))) == 3
    assert not list((out / "runs").glob(".*"))  # no half-written files
    full = run_sweep(sweep, out, workers=1)
    assert len(full) == 8 and (full.status == "ok").all()


def test_parallel_and_dask_runs_equal_the_sequential_one(tmp_path: Path) -> None:
    sweep = load_sweep(write_sweep(tmp_path, keep_records=True))
    sequential = run_sweep(sweep, tmp_path / "seq", workers=1)
    parallel = run_sweep(sweep, tmp_path / "par", workers=2)
    pd.testing.assert_frame_equal(comparable(sequential), comparable(parallel))
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        on_dask = run_sweep(sweep, tmp_path / "dask", dask_address=cluster.scheduler_address)
    pd.testing.assert_frame_equal(comparable(sequential), comparable(on_dask))
    key = sweep.runs[0].key
    a = pd.read_parquet(tmp_path / "seq" / "records" / f"{key}.parquet")
    b = pd.read_parquet(tmp_path / "dask" / "records" / f"{key}.parquet")
    pd.testing.assert_frame_equal(a, b)


def test_load_results_is_exported_and_checks_the_folder(tmp_path: Path) -> None:
    with pytest.raises(deepx_sim.DeepxError, match="not a sweep results folder"):
        deepx_sim.load_results(tmp_path)
    sweep = load_sweep(write_sweep(tmp_path, repetitions=1, zip={}))
    run_sweep(sweep, tmp_path / "out")
    table = deepx_sim.load_results(tmp_path / "out")
    assert list(table["policy.planner"]) == ["deepx", "cpu-only"]  # the sweep's order
    assert {"latency_p95_s", "energy_mean_j", "deadline_miss_rate", "seed", "status"} <= set(table.columns)


def test_base_overrides_fields_of_base_file_and_keeps_the_rest(tmp_path: Path) -> None:
    scenario = {"model": "speakerid", "platform": "tegra_k1", "duration_s": 10,
                "conditions": {"link": "wifi", "rtt_ms": 30},
                "workload": {"arrivals": "periodic", "interval_s": 1.0}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(scenario))
    sweep_file = tmp_path / "sw.yaml"
    sweep_file.write_text(yaml.safe_dump({"base_file": "s.yaml",
                                          "base": {"duration_s": 4, "conditions": {"rtt_ms": 5}},
                                          "grid": {"policy.kind": ["static", "replan"]}}))
    runs = load_sweep(sweep_file).runs
    assert len(runs) == 2
    for run in runs:
        assert run.scenario["duration_s"] == 4
        assert run.scenario["conditions"] == {"link": "wifi", "rtt_ms": 5}
        assert run.scenario["workload"]["interval_s"] == 1.0
    sweep_file.write_text(yaml.safe_dump({"grid": {"policy.kind": ["static"]}}))
    with pytest.raises(ScenarioError, match="give base"):
        load_sweep(sweep_file)
