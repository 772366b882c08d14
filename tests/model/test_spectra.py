"""Singular values computed once, cheaply, and shared through the disk cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from deepx_sim.accuracy import tail_energy
from deepx_sim.cache import CacheWarning, array_digest, cache_root
from deepx_sim.errors import ModelError
from deepx_sim.model import spectra
from deepx_sim.model.spectra import singular_values


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DEEPX_SIM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _low_rank_plus_noise(rows: int, cols: int, rank: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, rank)) @ rng.standard_normal((rank, cols)) / np.sqrt(rank)
    return (w + 0.05 * rng.standard_normal((rows, cols))).astype(np.float32)


@pytest.mark.parametrize("shape", [(700, 900), (1100, 600)])
def test_gram_route_matches_float64_svd_within_the_stated_tolerance(shape: tuple[int, int]) -> None:
    w = _low_rank_plus_noise(*shape, rank=40, seed=1)
    assert min(shape) > spectra.GRAM_MIN_SIDE  # the Gram route is the one under test
    exact = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    fast = singular_values(w, "fc")
    np.testing.assert_allclose(tail_energy(fast), tail_energy(exact), atol=1e-4)
    np.testing.assert_allclose(fast[:40], exact[:40], rtol=1e-4)


def test_a_cached_spectrum_equals_a_fresh_one_and_is_not_recomputed(monkeypatch: pytest.MonkeyPatch) -> None:
    w = _low_rank_plus_noise(300, 200, rank=10, seed=2)
    fresh = singular_values(w, "fc")
    calls = []
    monkeypatch.setattr(spectra, "_compute", lambda m, layer: calls.append(m) or np.zeros(1))
    np.testing.assert_array_equal(singular_values(w.copy(), "fc"), fresh)
    assert calls == []


def test_a_corrupt_entry_is_detected_and_recomputed(private_cache: Path) -> None:
    w = _low_rank_plus_noise(64, 80, rank=5, seed=3)
    fresh = singular_values(w, "fc")
    entry = private_cache / "spectra" / f"{array_digest(w)}.npz"
    assert entry.is_file() and cache_root() == private_cache
    entry.write_bytes(entry.read_bytes()[:-40])  # truncated
    np.testing.assert_array_equal(singular_values(w, "fc"), fresh)
    data = dict(np.load(entry))
    data["s"] = data["s"] * 2  # tampered values no longer match the stored checksum
    np.savez(entry, **data)
    np.testing.assert_array_equal(singular_values(w, "fc"), fresh)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_cache_computes_in_memory_with_one_warning(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    monkeypatch.setenv("DEEPX_SIM_CACHE", str(locked))
    with pytest.warns(CacheWarning, match="cannot write the cache folder"):
        singular_values(np.eye(5, dtype=np.float32), "fc")


def test_an_unwritable_cache_under_a_file_warns_and_still_answers(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DEEPX_SIM_CACHE", str(blocker))
    with pytest.warns(CacheWarning, match="cannot write the cache folder"):
        s = singular_values(np.diag([3.0, 2.0, 1.0]).astype(np.float32), "fc")
    np.testing.assert_allclose(s, [3, 2, 1])


def test_nan_or_inf_weights_name_the_layer_before_any_spectrum() -> None:
    w = np.ones((4, 5), np.float32)
    w[1, 2] = np.nan
    w[0, 0] = np.inf
    with pytest.raises(ModelError, match=r"layer 'fc7': its weight holds 2 NaN or infinite values"):
        singular_values(w, "fc7")
