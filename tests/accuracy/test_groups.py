"""Rows that share a source (distortions of one image): splits keep a group whole and
standard errors are taken over groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepx_sim.accuracy import Source, load_labelled
from deepx_sim.accuracy.sources import mean_se, reference
from deepx_sim.cli import main
from deepx_sim.compress.search import compress
from deepx_sim.model.onnx import load_onnx, save_onnx
from tests.compress.conftest import small_mlp


def _source(rows: int, groups: np.ndarray | None) -> Source:
    x = np.arange(rows * 2, dtype=np.float32).reshape(rows, 2)
    return Source("labels", x, np.arange(rows) % 3, "test", groups=groups)


def test_a_split_without_groups_is_the_seeded_row_permutation() -> None:
    chosen, held = _source(20, None).split(0.3, seed=4)
    order = np.random.default_rng(4).permutation(20)  # oracle: the first 30 % of the permutation
    assert sorted(held.x[:, 0] // 2) == sorted(order[:6])
    assert sorted(chosen.x[:, 0] // 2) == sorted(order[6:])
    assert chosen.groups is None and held.groups is None


def test_a_split_with_groups_keeps_every_group_on_one_side() -> None:
    groups = np.repeat(np.arange(10) * 7, 4)  # 10 groups of 4 rows, ids not 0..9
    chosen, held = _source(40, groups).split(0.3, seed=1)
    assert chosen.groups is not None and held.groups is not None
    assert not set(chosen.groups) & set(held.groups)
    assert len(set(held.groups)) == 3 and held.rows == 12 and chosen.rows == 28
    # the rows travel with their labels and groups
    rows = (held.x[:, 0] // 2).astype(int)
    assert (held.groups == groups[rows]).all() and (held.y == rows % 3).all()


def test_one_group_cannot_be_split() -> None:
    from deepx_sim.errors import ModelError

    with pytest.raises(ModelError, match="1 groups cannot be split"):
        _source(5, np.zeros(5, int)).split(0.3)


def test_the_grouped_error_is_the_ordinary_one_for_singletons_and_ignores_copies() -> None:
    rng = np.random.default_rng(0)
    d = rng.choice([-1.0, 0.0, 1.0], size=200, p=[0.1, 0.8, 0.1])
    ordinary = d.std(ddof=1) / np.sqrt(len(d))
    assert mean_se(d) == pytest.approx(ordinary)
    assert mean_se(d, np.arange(len(d))) == pytest.approx(ordinary)
    # five exact copies of each row carry no new information: the error over groups of copies
    # is the error of the rows themselves, where the row-wise one would shrink by sqrt(5)
    copies, groups = np.repeat(d, 5), np.repeat(np.arange(len(d)), 5)
    assert mean_se(copies, groups) == pytest.approx(ordinary)
    assert mean_se(copies) == pytest.approx(ordinary / np.sqrt(5), rel=0.01)


def _data_file(tmp_path: Path, rows: int, groups: np.ndarray | None) -> tuple[Path, Path]:
    graph = small_mlp(np.random.default_rng(0))
    model, data = tmp_path / "m.onnx", tmp_path / "d.npz"
    save_onnx(graph, model)
    x = np.random.default_rng(1).standard_normal((rows, 30)).astype(np.float32)
    y = reference(graph, Source("inputs", x, None, "x")).top1
    np.savez(data, x=x, y=y, **({} if groups is None else {"groups": groups}))
    return model, data


def test_a_data_file_may_name_each_rows_source_and_compress_holds_whole_groups_apart(tmp_path: Path) -> None:
    model, data = _data_file(tmp_path, 60, np.repeat(np.arange(12), 5))
    source = load_labelled(data, load_onnx(model))
    assert source.groups is not None and (source.groups == np.repeat(np.arange(12), 5)).all()
    outcome = compress(load_onnx(model), ["pc", "wf"], 0.1, source)
    assert outcome.held_apart.groups is not None and outcome.chosen_on.groups is not None
    assert not set(outcome.held_apart.groups) & set(outcome.chosen_on.groups)


@pytest.mark.parametrize("groups, message", [
    (np.arange(59), "groups has shape (59,)"),
    (np.linspace(0, 1, 60), "dtype float64"),
    (np.zeros(60, np.int64), "groups names 1 source"),
])
def test_bad_groups_get_a_clear_message_and_no_output(tmp_path: Path, groups: np.ndarray, message: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    model, data = _data_file(tmp_path, 60, groups)
    out = tmp_path / "out.onnx"
    assert main(["compress", str(model), "-o", str(out), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(data) in err and "Traceback" not in err
    assert not out.exists()
