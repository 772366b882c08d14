"""`deepx-sim compress`: a valid ONNX out, before/after figures, clear errors, no partial files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from deepx_sim.cli import main
from deepx_sim.model.builder import GraphBuilder
from deepx_sim.model.execute import accuracy
from deepx_sim.model.layers import total
from deepx_sim.model.onnx import load_onnx, save_onnx
from tests.compress.conftest import small_mlp, with_weights


@pytest.fixture()
def model(tmp_path: Path) -> tuple[Path, Path]:
    """A small classifier with a learnable structure and labelled data for it."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 20)).astype(np.float32)
    w_true = rng.standard_normal((4, 20))
    y = (x @ w_true.T).argmax(axis=1)
    hidden = np.vstack([w_true, rng.standard_normal((60, 20)) * 0.01]).astype(np.float32)
    out = np.zeros((4, 64), np.float32)
    out[:, :4] = np.eye(4)
    b = GraphBuilder("toy", (1, 20))
    b.fc(64, name="fc1")
    b.relu(name="r")
    b.fc(4, name="fc2")
    net = with_weights(b.build(), {"fc1/weight": hidden, "fc1/bias": np.zeros(64), "fc2/weight": out,
                                   "fc2/bias": np.zeros(4)}, {"fc1/grad": np.zeros_like(hidden)})
    path = save_onnx(net, tmp_path / "toy.onnx")
    data = tmp_path / "data.npz"
    np.savez(data, x=x, y=y)
    return path, data


def test_compress_writes_a_checked_model_and_reports_figures(
    model: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, data = model
    out = tmp_path / "small.onnx"
    assert (
        main(["compress", str(path), "-o", str(out), "--data", str(data), "--max-accuracy-loss", "0.02"]) == 0
    )
    onnx.checker.check_model(onnx.load(str(out)))
    text = capsys.readouterr().out
    for label in ("parameters", "multiply-adds", "weight bytes", "accuracy"):
        assert label in text
    before, after = load_onnx(path), load_onnx(out)
    assert total(after, "params") < total(before, "params")
    arrays = np.load(data)
    assert accuracy(before, arrays["x"], arrays["y"]) - accuracy(after, arrays["x"], arrays["y"]) <= 0.02


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("no_weights", "has no fully connected or convolution layers"),
        ("budget", "no setting of wf keeps the loss within --max-accuracy-loss 0"),
        ("shape", "x has shape (10, 7); the model takes (N, 20)"),
        ("labels", "y has shape (3,); expected (10,)"),
        ("optimizer", "'xx' is not an optimiser"),
        ("suffix", "the output must end in .onnx"),
        ("unsupported", "(Hardmax, kind other) cannot be executed"),
        ("no_convs", "has no layers cs can change"),
        ("not_npz", "not a NumPy .npy or .npz file"),
        ("empty", "the file is empty; expected a NumPy data (.npz) file"),
        ("nan", "x holds NaN or infinite values in 2 of 10 rows; inputs must be finite"),
        ("class", "y holds class 7; the model has 4 outputs (classes 0..3)"),
        ("inputs_shape", "x has shape (10, 3, 4); the model takes (N, 20)"),
        ("inputs_dtype", "x has dtype <U1; expected numbers (float32) of shape (N, 20)"),
        ("inputs_empty", "the file is empty; expected a NumPy inputs (.npy) file"),
        ("inputs_inf", "x holds NaN or infinite values in 1 of 10 rows"),
        ("inputs_no_rows", "x has no rows; expected at least 2 rows of shape (N, 20)"),
        ("budget_high", "--max-accuracy-loss must be in [0, 1), got 1.0"),
        ("budget_negative", "--max-accuracy-loss must be in [0, 1), got -0.1"),
    ],
)
def test_bad_input_gets_a_clear_message_and_no_output(
    model: tuple[Path, Path], tmp_path: Path, setup: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path, data = model
    out = tmp_path / "out.onnx"
    args = ["compress", str(path), "-o", str(out), "--data", str(data)]
    x = np.zeros((10, 20), np.float32)
    if setup == "no_weights":
        relu = helper.make_graph(
            [helper.make_node("Relu", ["input"], ["y"], name="r")],
            "relu",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["b", 20])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 20])],
        )
        onnx.save(
            helper.make_model(relu, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "r.onnx")
        )
        args[1] = str(tmp_path / "r.onnx")
    elif setup == "budget":  # a full-rank random layer: every rank that saves weights flips some outputs
        save_onnx(small_mlp(np.random.default_rng(1)), tmp_path / "full.onnx")
        args = ["compress", str(tmp_path / "full.onnx"), "-o", str(out), "--optimizers", "wf",
                "--max-accuracy-loss", "0"]
    elif setup in ("shape", "labels", "nan", "class"):
        bad = tmp_path / "bad.npz"
        y = np.zeros(10 if setup != "labels" else 3, np.int64)
        if setup == "shape":
            x = np.zeros((10, 7), np.float32)
        elif setup == "nan":
            x[2, 3], x[5, 0] = np.nan, np.inf
        elif setup == "class":
            y[4] = 7
        np.savez(bad, x=x, y=y)
        args[-1] = str(bad)
    elif setup.startswith("inputs_"):
        bad = tmp_path / "bad.npy"
        if setup == "inputs_empty":
            bad.write_bytes(b"")
        else:
            arrays = {"inputs_shape": np.zeros((10, 3, 4), np.float32),
                      "inputs_dtype": np.array([list("a" * 20)] * 10),
                      "inputs_no_rows": np.zeros((0, 20), np.float32), "inputs_inf": x.copy()}
            arrays["inputs_inf"][9, 9] = -np.inf
            np.save(bad, arrays[setup])
        args[-2:] = ["--inputs", str(bad)]
    elif setup == "empty":
        (tmp_path / "empty.npz").write_bytes(b"")
        args[-1] = str(tmp_path / "empty.npz")
    elif setup.startswith("budget_"):
        args += ["--max-accuracy-loss", "1.0" if setup == "budget_high" else "-0.1"]
    elif setup == "optimizer":
        args += ["--optimizers", "wf,xx"]
    elif setup == "suffix":
        args[3] = str(tmp_path / "out.txt")
    elif setup == "no_convs":
        args += ["--optimizers", "cs"]
    elif setup == "not_npz":
        (tmp_path / "text.npz").write_text("x,y\n1,2\n")
        args[-1] = str(tmp_path / "text.npz")
    elif setup == "unsupported":  # an operator the executor does not know, after an fc layer
        g = onnx.load(str(path))
        g.graph.node.append(helper.make_node("Hardmax", [g.graph.output[0].name], ["y"], name="t"))
        g.graph.output[0].name = "y"
        onnx.save(g, str(tmp_path / "t.onnx"))
        args[1] = str(tmp_path / "t.onnx")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    if setup not in ("no_weights", "budget", "optimizer", "suffix", "unsupported", "no_convs") \
            and not setup.startswith("budget_"):
        assert str(tmp_path) in err  # names the data file
    assert not out.exists() and not list(tmp_path.glob(".out.onnx*"))
