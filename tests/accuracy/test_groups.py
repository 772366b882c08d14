"""Rows that share a source (distortions of one image): splits keep a group whole and
standard errors are taken over groups."""

from __future__ import annotations

import numpy as np
import pytest

from deepx_sim.accuracy import Source
from deepx_sim.accuracy.sources import mean_se


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
