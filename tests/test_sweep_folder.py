"""A sweep folder a researcher can trust: stale runs of an edited sweep set
aside, an exit status that says when runs failed, files shared by the umask."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import warnings
from pathlib import Path

import pandas as pd
import pytest
import yaml

from deepx_sim.cli import main
from deepx_sim.sweep import load_results, load_sweep, run_sweep
from tests.test_sweep import BASE


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def write(path: Path, planners: list[str], bandwidths: list[float]) -> Path:
    path.write_text(yaml.safe_dump({"name": "t", "base": BASE, "grid": {
        "policy.planner": planners, "conditions.bandwidth_mbps": bandwidths}}))
    return path


def keys(path: Path) -> list[str]:
    return [r.key for r in load_sweep(path).runs]


def test_an_edited_sweep_rerun_keeps_shared_runs_and_sets_the_others_aside(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep_file, out = tmp_path / "s.yaml", tmp_path / "out"
    old = keys(write(sweep_file, ["deepx", "cpu-only"], [2, 20]))
    assert cli(capsys, "sweep", str(sweep_file), "--out", str(out), "--workers", "1", "--quiet")[0] == 0
    shared_before = {k: (out / "runs" / f"{k}.json").read_bytes() for k in old}
    new = keys(write(sweep_file, ["deepx", "cpu-only"], [2, 5]))  # 20 Mbps dropped, 5 added
    kept, stale = set(old) & set(new), set(old) - set(new)
    assert len(kept) == 2 and len(stale) == 2 and len(new) == 4
    code, stdout, _ = cli(capsys, "sweep", str(sweep_file), "--out", str(out), "--workers", "1", "--quiet")
    assert code == 0
    assert (f"was made from an earlier version of {sweep_file.resolve()}: {len(kept)} runs kept, "
            f"{len(stale)} stale") in stdout
    assert "t: 4 of 4 runs ok" in stdout
    for k in kept:  # not run again
        assert (out / "runs" / f"{k}.json").read_bytes() == shared_before[k]
    # the table holds the current sweep's runs, in its order; all_runs adds the stale ones, marked
    assert list(load_results(out).key) == new
    assert list(pd.read_parquet(out / "results.parquet").key) == new
    everything = load_results(out, all_runs=True)
    assert set(everything.key) == set(old) | set(new)
    assert set(everything[everything.stale].key) == stale
    # the folder records the file it was made from, with the file's own hash
    index = json.loads((out / "sweep.json").read_text())
    assert index["sweep_file"] == str(sweep_file.resolve())
    assert index["sweep_sha256"] == hashlib.sha256(sweep_file.read_bytes()).hexdigest()
    # the CLI's results and plot follow the same rule
    code, stdout, _ = cli(capsys, "results", str(out), "--csv")
    assert code == 0 and list(pd.read_csv(io.StringIO(stdout)).key) == new
    code, stdout, _ = cli(capsys, "results", str(out), "--csv", "--all-runs", "--where", "stale=true")
    assert code == 0 and set(pd.read_csv(io.StringIO(stdout)).key) == stale
    code, _, err = cli(capsys, "plot", str(out), "--x", "conditions.bandwidth_mbps", "--y", "energy_mean_j",
                       "--all-runs", "-o", str(tmp_path / "all.svg"))
    assert code == 0, err
    # a second run of the same file has nothing to say about versions, only the stale runs it keeps
    code, stdout, _ = cli(capsys, "sweep", str(sweep_file), "--out", str(out), "--workers", "1", "--quiet")
    assert code == 0 and "earlier version" not in stdout and f"also holds {len(stale)} stale runs" in stdout


def test_a_sweep_file_edited_after_its_run_is_flagged(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    sweep_file = write(tmp_path / "s.yaml", ["deepx"], [2])
    run_sweep(load_sweep(sweep_file), tmp_path / "out")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_results(tmp_path / "out")  # unchanged: no warning
    write(sweep_file, ["deepx"], [3])
    with pytest.warns(UserWarning, match="s.yaml changed after these runs were made"):
        load_results(tmp_path / "out")
    code, _, err = cli(capsys, "results", str(tmp_path / "out"))
    assert code == 0 and "deepx-sim: warning: " in err and "run the sweep again to update it" in err


@pytest.mark.parametrize("planners", [["deepx", "npu-only", "cpu-only"], ["npu-only"]])
def test_failed_runs_give_exit_status_1_are_named_last_and_the_others_are_kept(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], planners: list[str]) -> None:
    sweep_file = write(tmp_path / "s.yaml", planners, [2, 20])
    out = tmp_path / "out"
    failing = [r.key for r in load_sweep(sweep_file).runs  # tegra_k1 has no NPU (oracle: its YAML)
               if r.params["policy.planner"] == "npu-only"]
    code, stdout, err = cli(capsys, "sweep", str(sweep_file), "--out", str(out), "--workers", "2", "--quiet")
    n_ok = 2 * len(planners) - len(failing)
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"deepx-sim: error: {len(failing)} of {2 * len(planners)} runs failed: ")
    assert all(k in last for k in failing) and "policy.planner=npu-only" in last
    assert f"the {n_ok} that succeeded are saved in {out}" in last
    assert f"t: {n_ok} of {2 * len(planners)} runs ok" in stdout
    statuses = {p.stem: json.loads(p.read_text())["status"] for p in (out / "runs").glob("*.json")}
    assert sorted(k for k, s in statuses.items() if s == "failed") == sorted(failing)
    assert sum(s == "ok" for s in statuses.values()) == n_ok


def test_more_than_three_failures_are_counted_on_the_last_line(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    sweep_file = write(tmp_path / "s.yaml", ["npu-only"], [1, 2, 3, 4, 5])
    code, _, err = cli(capsys, "sweep", str(sweep_file), "--out", str(tmp_path / "o"), "--quiet",
                       "--workers", "1")
    assert code == 1 and err.strip().splitlines()[-1].count("policy.planner=npu-only") == 3
    assert "and 2 more; the 0 that succeeded" in err


@pytest.fixture
def umask_022() -> object:
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_every_file_of_a_sweep_follows_the_umask(tmp_path: Path, umask_022: object) -> None:
    sweep_file = write(tmp_path / "s.yaml", ["deepx", "cpu-only"], [2, 20])
    data = yaml.safe_load(sweep_file.read_text())
    sweep_file.write_text(yaml.safe_dump({**data, "keep_records": True}))
    out = tmp_path / "out"
    run_sweep(load_sweep(sweep_file), out, workers=2, csv=True)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) == 4 + 4 + 3  # runs, records, sweep.json + results.parquet + results.csv
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o644}
    assert {stat.S_IMODE(p.stat().st_mode) for p in [out, *out.rglob("*")] if p.is_dir()} == {0o755}


def test_ctrl_c_in_simulate_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import deepx_sim.scenario

    def interrupted(path: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(deepx_sim.scenario, "run_scenario", interrupted)
    scenario = tmp_path / "s.yaml"
    scenario.write_text(yaml.safe_dump(BASE))
    code, stdout, err = cli(capsys, "simulate", str(scenario), "--out", str(tmp_path / "r.parquet"))
    assert code == 130 and stdout == ""
    assert err.strip() == f"interrupted: nothing written to {tmp_path / 'r.parquet'}"
    assert list(tmp_path.iterdir()) == [scenario]
