"""Where accuracy figures come from: the three sources, their units, and the flag that
plan --json, compare and the simulation records carry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deepx_sim.accuracy import Source, load_inputs, load_labelled, synthetic
from deepx_sim.accuracy.sources import reference
from deepx_sim.cli import main
from deepx_sim.costs import Conditions
from deepx_sim.model import load_model
from deepx_sim.model.onnx import save_onnx
from deepx_sim.plan import Problem, get_planner
from deepx_sim.platform import load_platform
from deepx_sim.sim import Simulation, StaticPolicy, World
from tests.compress.conftest import small_mlp


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPX_SIM_CACHE", str(tmp_path / "cache"))


def test_synthetic_inputs_are_standard_normal_and_seeded() -> None:
    graph = small_mlp(np.random.default_rng(0))
    a, b = synthetic(graph, rows=4000), synthetic(graph, rows=4000)
    assert np.array_equal(a.x, b.x) and a.x.shape == (4000, 30) and a.y is None
    assert abs(a.x.mean()) < 0.01 and abs(a.x.std() - 1) < 0.01  # N(0, 1): 120,000 draws
    assert "i.i.d. N(0, 1)" in a.describe() and a.unit == "estimated fidelity loss"


def test_split_is_disjoint_complete_and_seeded() -> None:
    x = np.arange(100, dtype=np.float32).reshape(100, 1)
    src = Source("labels", x, np.arange(100) % 3, "d.npz")
    chosen, held = src.split(0.3)
    assert (chosen.rows, held.rows) == (70, 30)
    assert sorted(np.concatenate([chosen.x, held.x]).ravel().tolist()) == list(range(100))
    assert np.array_equal(chosen.y, chosen.x.ravel().astype(int) % 3)  # labels follow their rows
    assert np.array_equal(src.split(0.3)[1].x, held.x)
    assert "the 30 % held apart" in held.describe()


def test_fidelity_and_accuracy_losses_closed_form() -> None:
    graph = small_mlp(np.random.default_rng(0))
    x = synthetic(graph, rows=200).x
    ref = reference(graph, Source("inputs", x, None, "x.npy"))
    assert ref.score(ref.outputs).loss == 0.0 and ref.score(ref.outputs).agreement == 1.0
    changed = ref.outputs.copy()
    rows = np.arange(20)
    changed[rows, (ref.top1[rows] + 1) % changed.shape[1]] += 1e6  # 20 rows change class
    score = ref.score(changed)
    assert score.agreement == pytest.approx(0.9) and score.loss == pytest.approx(0.1)
    y = ref.top1.copy()
    y[150:] = (y[150:] + 1) % 10  # the original is right on 150 of 200 rows
    labelled = reference(graph, Source("labels", x, y, "d.npz"))
    assert labelled.accuracy == pytest.approx(0.75)
    assert labelled.score(changed).loss == pytest.approx(20 / 200)  # the 20 changed were right


def test_loaders_accept_npy_and_npz_inputs(tmp_path: Path) -> None:
    graph = small_mlp(np.random.default_rng(0))
    x = np.ones((5, 30), np.float64)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", x=x)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(5))
    assert load_inputs(tmp_path / "x.npy", graph).x.dtype == np.float32
    assert load_inputs(tmp_path / "x.npz", graph).rows == 5
    assert load_labelled(tmp_path / "d.npz", graph).kind == "labels"


def test_plan_json_compare_and_records_say_where_accuracy_comes_from(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--model", "speakerid", "--platform", "tegra_k1", "--json"]) == 0
    zoo = json.loads(capsys.readouterr().out)
    assert zoo["accuracy_source"].startswith("estimate: spectral model (no weights")
    path = save_onnx(small_mlp(np.random.default_rng(0)), tmp_path / "m.onnx")
    assert main(["plan", "--model", str(path), "--platform", "tegra_k1", "--json"]) == 0
    weighted = json.loads(capsys.readouterr().out)
    assert weighted["accuracy_source"].startswith("measured: estimated fidelity loss on synthetic inputs")
    assert main(["compare", "--model", "speakerid", "--platform", "tegra_k1"]) == 0
    assert "acc loss: estimate: spectral model" in capsys.readouterr().out
    problem = Problem(load_model("speakerid"), load_platform("tegra_k1"), Conditions(link="wifi"))
    plan = get_planner("deepx").plan(problem)
    assert plan.accuracy_source == problem.accuracy.accuracy_source  # type: ignore[union-attr]
    world = World.nominal(problem)
    records = Simulation(problem, world, StaticPolicy(problem, world, "deepx"), [0.0]).run().records
    assert records.accuracy_source.iloc[0] == plan.accuracy_source
