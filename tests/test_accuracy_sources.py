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


def _low_rank_classifier(folder: Path) -> tuple[Path, Path]:
    """64 -> 512 -> 512 -> 4 whose first layer is rank 4 plus small noise (the planner factorises
    it) and whose labels it predicts; written as ONNX with an .npz of labelled rows."""
    from deepx_sim.model.builder import GraphBuilder
    from tests.compress.conftest import with_weights

    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 64)).astype(np.float32)
    w_true = rng.standard_normal((4, 64))
    hidden = np.vstack([w_true, rng.standard_normal((508, 64)) * 0.01]).astype(np.float32)
    middle = rng.standard_normal((512, 8)) @ rng.standard_normal((8, 512)) / 20 + np.eye(512)
    out = np.zeros((4, 512), np.float32)
    out[:, :4] = np.eye(4)
    b = GraphBuilder("lowrank", (1, 64))
    for name, width in (("fc1", 512), ("r1", 0), ("fc2", 512), ("r2", 0), ("fc3", 4)):
        b.fc(width, name=name) if width else b.relu(name=name)
    weights = {"fc1/weight": hidden, "fc2/weight": middle.astype(np.float32), "fc3/weight": out,
               "fc1/bias": np.zeros(512), "fc2/bias": np.zeros(512), "fc3/bias": np.zeros(4)}
    net = with_weights(b.build(), weights, {})
    np.savez(folder / "data.npz", x=x, y=(x @ w_true.T).argmax(axis=1))
    return save_onnx(net, folder / "lowrank.onnx"), folder / "data.npz"


def test_plan_and_compare_measure_on_the_data_given_as_compress_does(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from deepx_sim.compress.optimizers import weight_factorization
    from deepx_sim.model.onnx import load_onnx

    model, data = _low_rank_classifier(tmp_path)
    args = ["--model", str(model), "--platform", "snapdragon_800", "--data", str(data),
            "--max-accuracy-loss", "0.1"]
    assert main(["plan", *args, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["accuracy_source"] == f"measured: accuracy loss on {data}, 300 labelled rows"
    ranks = {a["layer"]: a["rank"] for a in record["assignment"] if a["rank"] is not None}
    assert ranks and all(a["bits"] == 32 for a in record["assignment"])  # the plan factorises
    # the oracle: the plan's ranks made structurally, scored on every row given
    graph = load_onnx(model)
    expected = reference(graph, load_labelled(data, graph)).score_model(
        weight_factorization(graph, ranks=ranks)[0]).loss
    assert abs(record["accuracy_loss_measured"] - expected) <= 1 / 300 + 1e-12
    assert main(["compare", *args]) == 0
    text = capsys.readouterr().out
    assert "measured" in text and f"measured: accuracy loss on {data}" in text


@pytest.mark.parametrize(("model", "data", "message"), [
    ("speakerid", "data.npz", "model 'speakerid' has no weights"),
    ("lowrank.onnx", "missing.npz", "missing.npz: no such data (.npz) file"),
    ("lowrank.onnx", "x.npy", "not a NumPy .npz archive"),
])
def test_plan_with_data_it_cannot_use_says_why(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              model: str, data: str, message: str) -> None:
    path, _ = _low_rank_classifier(tmp_path)
    np.save(tmp_path / "x.npy", np.zeros((5, 64), np.float32))
    name = str(path) if model.endswith(".onnx") else model
    given = str(tmp_path / data)
    assert main(["plan", "--model", name, "--platform", "snapdragon_800", "--data", given]) == 2
    err = capsys.readouterr().err
    assert err.startswith("deepx-sim: error:") and message in err and "Traceback" not in err
    assert given in err
