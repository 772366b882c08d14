"""One model from ONNX to compressed ONNX and back: what compress prints is what inspect reads,
the planner and the simulator run on it, and numpy and onnxruntime compute the same outputs."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from deepx_sim.cli import main
from deepx_sim.compress.optimizers import precision_scaling
from deepx_sim.model.execute import run
from deepx_sim.model.layers import get_layer
from deepx_sim.model.memory import stored_sizes
from deepx_sim.model.onnx import load_onnx, save_onnx
from tests.compress.conftest import residual_cnn, run_onnx, small_cnn, small_mlp, wide_low_rank_mlp

ort = pytest.importorskip("onnxruntime")


MODELS = {"mlp": small_mlp, "wide": wide_low_rank_mlp, "cnn": small_cnn, "dag": residual_cnn}
OPTIMIZER_SETS = ["wf", "sf", "cs", "ps", "pc", "pc,wf,ps", "pc,sf,cs,ps", "wf,cs"]


def _printed(text: str) -> dict[str, int]:
    """The 'after' column of compress's before/after table."""
    out = {}
    for label, key in (("parameters", "params"), ("multiply-adds", "macs"), ("weight bytes", "weight_bytes")):
        match = re.search(rf"^\| {label}\s*\| [\d,]+\s*\| ([\d,]+)", text, re.M) or re.search(
            rf"^{label}\s+[\d,]+\s+([\d,]+)", text, re.M
        )
        assert match, f"no {label!r} row in:\n{text}"
        out[key] = int(match.group(1).replace(",", ""))
    return out


def _input(graph: nx.DiGraph, rows: int, seed: int = 0) -> np.ndarray:
    shape = get_layer(graph, "input").output_shape[1:]
    return np.random.default_rng(seed).standard_normal((rows, *shape)).astype(np.float32)


@pytest.mark.parametrize(("model", "optimizers"), list(itertools.product(MODELS, OPTIMIZER_SETS)))
def test_compress_output_reads_back_as_printed_and_runs(
    model: str, optimizers: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    graph = MODELS[model](np.random.default_rng(1))
    src = save_onnx(graph, tmp_path / f"{model}.onnx")
    out = tmp_path / "small.onnx"
    code = main(
        ["compress", str(src), "-o", str(out), "--optimizers", optimizers, "--max-accuracy-loss", "0.5"]
    )
    text = capsys.readouterr()
    if code == 2:  # no layer the optimisers change; sparse codes never pay on small dense weights
        assert "has no layers" in text.err or (
            optimizers == "sf" and model != "wide" and "no setting of sf" in text.err
        )
        assert not out.exists()
        return
    assert code == 0, text.err
    printed = _printed(text.out)
    assert main(["inspect", str(out), "--json"]) == 0
    totals = json.loads(capsys.readouterr().out)["totals"]
    assert (totals["params"], totals["macs"], totals["stored_weight_bytes"]) == (
        printed["params"],
        printed["macs"],
        printed["weight_bytes"],
    )
    again = load_onnx(out)
    x = _input(again, 6)
    np.testing.assert_allclose(
        run(again, x), run_onnx(again, x, tmp_path / "again.onnx"), rtol=1e-4, atol=1e-4
    )
    assert main(["plan", "--model", str(out), "--platform", "tegra_k1", "--link", "wifi", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["status"] == "optimal"
    assert {m for a in plan["assignment"] for m in a["layers"]} == set(again.nodes)  # fused units cover all
    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        f"model: {out}\nplatform: tegra_k1\nseed: 0\nduration_s: 2\n"
        "conditions: {link: wifi}\nworkload: {arrivals: periodic, interval_s: 0.5}\n"
        "policy: {kind: replan, planner: deepx}\n"
    )
    assert main(["simulate", str(scenario)]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("bits", [64, 32, 16, 8])
@pytest.mark.parametrize("model", list(MODELS))
def test_every_precision_survives_the_file(model: str, bits: int, tmp_path: Path) -> None:
    scaled, _ = precision_scaling(MODELS[model](np.random.default_rng(2)), bits)
    path = save_onnx(scaled, tmp_path / "m.onnx")
    again = load_onnx(path)
    assert stored_sizes(again) == stored_sizes(scaled)
    assert {again.graph["weights"].storage(n).bits for n in again if again.graph["weights"].has(n)} == {bits}
    x = _input(again, 5)
    np.testing.assert_allclose(run(again, x), run(scaled, x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(run_onnx(again, x, tmp_path / "m2.onnx"), run(scaled, x), rtol=1e-4, atol=1e-4)
