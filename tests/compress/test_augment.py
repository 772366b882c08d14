"""Augmented digits: seeded distortions, split by source image (no leakage)."""

from __future__ import annotations

import numpy as np
import pytest

from deepx_sim.compress import augment
from deepx_sim.compress.train import digits


def _images(n: int = 6) -> np.ndarray:
    return np.random.default_rng(3).uniform(0, 1, (n, 8, 8)).astype(np.float32)


def test_variants_are_seeded_start_with_the_image_and_stay_in_range() -> None:
    images = _images()
    first, groups = augment.variants(images, 4, seed=2, split="test")
    again, _ = augment.variants(images, 4, seed=2, split="test")
    other, _ = augment.variants(images, 4, seed=3, split="test")
    assert first.shape == (24, 8, 8) and (groups == np.repeat(np.arange(6), 4)).all()
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert np.array_equal(first[::4], images)  # variant 0 is the image itself
    assert first.min() >= 0 and first.max() <= 1
    assert not np.allclose(first[1], images[0])  # the others are distorted


def test_a_null_distortion_is_the_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    # oracle: with every distortion size 0 the resampling grid is the pixel grid
    for name in ("ROTATION_DEG", "SCALE", "SHIFT_PX", "ELASTIC_ALPHA"):
        monkeypatch.setattr(augment, name, 0.0)
    images = _images()
    assert np.allclose(augment.distort(images, np.random.default_rng(0)), images, atol=1e-6)


def test_a_pure_rotation_by_a_quarter_turn_rotates_the_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SCALE", "SHIFT_PX", "ELASTIC_ALPHA"):
        monkeypatch.setattr(augment, name, 0.0)
    monkeypatch.setattr(augment, "ROTATION_DEG", 90.0)

    class QuarterTurn:  # every draw at the top of its range: +90 degrees
        def uniform(self, low: float, high: float, size: object) -> np.ndarray:
            return np.full(size, high)  # type: ignore[arg-type]

    images = _images(3)
    out = augment.distort(images, QuarterTurn())  # type: ignore[arg-type]
    turned = [np.rot90(images, k, axes=(1, 2)) for k in (1, 3)]
    assert any(np.allclose(out, t, atol=1e-5) for t in turned)


def test_the_augmented_split_is_by_source_image() -> None:
    plain, aug = digits(), digits(augment=True)
    assert aug.groups_train is not None and aug.groups_test is not None
    assert not set(aug.groups_train) & set(aug.groups_test)
    assert len(aug.x_test) == augment.TEST_VARIANTS * len(plain.x_test)
    assert len(aug.x_train) == augment.TRAIN_VARIANTS * len(plain.x_train)
    # the source images of the test split are the plain split's, each label kept by its variants
    assert np.array_equal(aug.x_test[:: augment.TEST_VARIANTS], plain.x_test)
    assert np.array_equal(aug.y_test, np.repeat(plain.y_test, augment.TEST_VARIANTS))
    assert aug.x_train.shape[1:] == (64,) and digits(image=True, augment=True).x_test.shape[1:] == (1, 8, 8)
