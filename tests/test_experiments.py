"""The experiment scripts run end to end on small settings and agree with oracles."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from deepx_sim.costs import Conditions
from deepx_sim.model import load_model
from deepx_sim.plan import Constraints, Problem, get_planner
from deepx_sim.platform import load_platform

REPO = Path(__file__).resolve().parent.parent


def run_experiment(name: str, out: Path) -> str:
    done = subprocess.run([sys.executable, str(REPO / "experiments" / f"{name}.py"), "--quick",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_deepx_comparison_ratios_match_direct_plans_and_papers(tmp_path: Path) -> None:
    stdout = run_experiment("deepx_comparison", tmp_path)
    table = pd.read_csv(tmp_path / "comparison.csv")
    assert (tmp_path / "comparison.png").stat().st_size > 0
    assert "paper_ratio" in stdout
    # DeepX optimises over every assignment, so no fixed strategy can beat it
    assert (table["ratio"] >= 1 - 1e-9).all()
    # compression only adds options: DeepX with it is at least as good as without
    assert (table["ratio"] >= table["dad_only_ratio"] - 1e-9).all()
    row = table[(table["platform"] == "tegra_k1") & (table["strategy"] == "cpu-only")].iloc[0]
    problem = Problem(load_model(row["model"]), load_platform("tegra_k1"), Conditions(link="wifi"),
                      Constraints(deadline_s=5.0, max_accuracy_loss=0.05))
    cpu = get_planner("cpu-only").plan(problem).energy_j
    deepx = get_planner("deepx").plan(problem).energy_j
    assert row["ratio"] == pytest.approx(cpu / deepx, rel=1e-6)
    assert row["paper_ratio"] == 7.8  # SpeakerID vs CPU-only on Tegra K1 (DeepX demo paper)


def test_dxtk_memory_matches_the_papers_originals(tmp_path: Path) -> None:
    run_experiment("dxtk_memory", tmp_path)
    table = pd.read_csv(tmp_path / "memory.csv").set_index("model")
    # DXTK Figure 6: AlexNet 930.3 and SpeakerID 26.9 "MB" (MiB) originals
    assert table.loc["alexnet", "original_mib"] == pytest.approx(930.3, abs=0.1)
    assert table.loc["speakerid", "original_mib"] == pytest.approx(26.9, abs=0.1)
    assert (table["wf_estimated_loss"] <= 0.05 + 1e-12).all()
    assert (table["wf_mib"] < table["cleaned_mib"]).all()
    assert list(table["cleaned_mib"] * 4) == pytest.approx(list(table["original_mib"]), rel=1e-6)


def test_offloading_experiment_finds_where_the_cloud_pays(tmp_path: Path) -> None:
    run_experiment("offloading", tmp_path)
    offload = pd.read_csv(tmp_path / "offload.csv").set_index(["link", "deadline_ms", "bandwidth_mbps"])
    # VGG-16 on a Snapdragon 400: over fast WiFi the cloud is cheaper than the phone ...
    assert offload.loc[("wifi", 5000, 50), "deepx_offload_rate"] == 1
    assert offload.loc[("wifi", 5000, 50), "deepx_energy_j"] < offload.loc[("wifi", 5000, 50),
                                                                            "best_local_energy_j"]
    # ... over LTE the radio tail makes it dearer, so with a loose deadline DeepX stays local
    assert offload.loc[("lte", 5000, 50), "deepx_offload_rate"] == 0
    # a 500 ms deadline no local plan meets: only a fast link makes it
    assert offload.loc[("wifi", 500, 50), "deepx_miss_rate"] == 0
    assert offload.loc[("wifi", 500, 1), "deepx_miss_rate"] == 1
    replan = pd.read_csv(tmp_path / "replan.csv").set_index("policy.kind")
    assert replan.loc["replan", "miss_rate"] <= replan.loc["static", "miss_rate"]
    # a re-run finds every run done and does not repeat them
    runs = sorted((tmp_path / "offload_bandwidth_deadline" / "runs").glob("*.json"))
    stamps = [p.stat().st_mtime_ns for p in runs]
    run_experiment("offloading", tmp_path)
    assert [p.stat().st_mtime_ns for p in runs] == stamps


def test_an_experiment_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    done = subprocess.run([sys.executable, str(REPO / "experiments" / "dxtk_memory.py"), "--out",
                           str(blocker / "sub")], capture_output=True, text=True)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and str(blocker) in done.stderr


def test_dxtk_accuracy_measures_each_optimiser_on_real_weights(tmp_path: Path) -> None:
    stdout = run_experiment("dxtk_accuracy", tmp_path)
    table = pd.read_csv(tmp_path / "optimisers.csv")
    lossless = table[table["setting"].isin(["cleaned, 32-bit", "16-bit"])]
    assert (lossless["accuracy_loss"].abs() < 0.005).all()
    # each lossy setting saves memory against the cleaned model
    for model, part in table.groupby("model"):
        cleaned = part[part["optimiser"] == "pc"]["memory_bytes"].iloc[0]
        assert (part[part["optimiser"].isin(["wf", "sf", "cs"])]["memory_bytes"] < cleaned).all(), model
    budgets = pd.read_csv(tmp_path / "budgets.csv")
    assert (budgets["memory_after_bytes"] < budgets["memory_before_bytes"]).all()
    assert "Estimator calibration" in stdout
