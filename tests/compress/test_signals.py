"""MNIST-1D generated locally: seeded, independent rows, the callers' random state untouched."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from deepx_sim.compress import signals


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPX_SIM_CACHE", str(tmp_path))


def test_rows_are_seeded_balanced_and_standardised() -> None:
    first = signals.mnist1d_rows(0, train_rows=300, test_rows=200)
    again = signals.mnist1d_rows(0, train_rows=300, test_rows=200)  # from the cache
    other = signals.mnist1d_rows(1, train_rows=300, test_rows=200)
    assert first["x_train"].shape == (300, signals.SEQUENCE_LENGTH) and first["x_test"].shape == (200, 64)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["x_test"], other["x_test"])
    y = np.concatenate([first["y_train"], first["y_test"]])
    assert (np.bincount(y, minlength=10) == 50).all()  # the generator draws N / 10 rows per digit
    x = np.concatenate([first["x_train"], first["x_test"]])
    assert abs(x.mean()) < 1e-5 and x.std() == pytest.approx(1.0, abs=1e-5)


def test_no_test_row_repeats_a_training_row() -> None:
    rows = signals.mnist1d_rows(0, train_rows=300, test_rows=200)
    train = {r.tobytes() for r in rows["x_train"]}
    assert not any(r.tobytes() in train for r in rows["x_test"])
    assert len(train) == 300


def test_generation_leaves_the_global_generators_as_they_were() -> None:
    np.random.seed(123)
    random.seed(456)
    expected = np.random.random(), random.random()
    np.random.seed(123)
    random.seed(456)
    signals.mnist1d_rows(2, train_rows=20, test_rows=10)
    assert (np.random.random(), random.random()) == expected
