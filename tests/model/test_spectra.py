"""Singular values computed once, cheaply, and shared through the disk cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from deepx_sim import cache
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


def _symmetric_with_spectrum(eigenvalues: np.ndarray, seed: int) -> np.ndarray:
    """A dense symmetric matrix with exactly these eigenvalues, built in O(n^2): a
    Householder reflection H = I - 2 v v^T / v^T v is orthogonal and symmetric, so
    H diag(d) H has eigenvalues d (the probes are Gaussian, so its eigenvectors' basis
    does not change what they see)."""
    d = np.asarray(eigenvalues, dtype=float)
    v = np.random.default_rng(seed).standard_normal(len(d))
    v /= np.linalg.norm(v)
    dv = d * v
    a = np.diag(d) - 2 * np.outer(v, dv) - 2 * np.outer(dv, v) + 4 * (v @ dv) * np.outer(v, v)
    return a.astype(np.float32)


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
    monkeypatch.setattr(spectra, "_compute", lambda m, layer, estimate_from: calls.append(m) or np.zeros(1))
    np.testing.assert_array_equal(singular_values(w.copy(), "fc"), fresh)
    assert calls == []


def test_a_corrupt_entry_is_detected_and_recomputed(private_cache: Path) -> None:
    w = _low_rank_plus_noise(64, 80, rank=5, seed=3)
    fresh = singular_values(w, "fc")
    entry = cache.entry_path("spectra", array_digest(w))
    assert entry.is_file() and cache_root() == private_cache
    good = entry.read_bytes()
    mid = len(good) // 2  # within the singular values
    flipped = good[:mid] + bytes([good[mid] ^ 0xFF]) + good[mid + 1:]
    for bad in (good[:-40], flipped, good[:4] + bytes([cache.FORMAT_VERSION - 1]) + good[5:]):
        entry.write_bytes(bad)  # truncated; a byte flipped (fails the checksum); an older format
        assert cache.lookup("spectra", array_digest(w)) is None and not entry.exists()
        entry.write_bytes(bad)
        np.testing.assert_array_equal(singular_values(w, "fc"), fresh)
        assert entry.read_bytes() == good  # recomputed and stored again


def test_entries_keep_every_dtype_and_shape() -> None:
    arrays = {"s": np.arange(5.0), "names": np.array(["a\tb", "ccc"]), "empty": np.zeros((0, 3), np.float32),
              "scalar": np.array(3), "transposed": np.arange(6, dtype=np.int8).reshape(2, 3).T}
    cache.store("test", "k", arrays)
    back = cache.lookup("test", "k")
    assert back is not None and set(back) == set(arrays)
    for name, array in arrays.items():
        assert back[name].dtype == array.dtype and back[name].shape == array.shape, name
        np.testing.assert_array_equal(back[name], array)


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


def test_nan_weights_in_a_file_get_one_line_from_plan_and_compress(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from deepx_sim.cli import main
    from deepx_sim.model.onnx import save_onnx
    from tests.compress.conftest import small_mlp

    graph = small_mlp(np.random.default_rng(0))
    weight = graph.graph["weights"].get("fc1").copy()
    weight[3, 4] = np.inf
    graph.graph["weights"].set("fc1", "weight", weight)
    path = save_onnx(graph, tmp_path / "bad.onnx")
    for args in (["plan", "--model", str(path), "--platform", "tegra_k1"],
                 ["compress", str(path), "-o", str(tmp_path / "out.onnx")]):
        assert main(args) == 2
        assert "layer 'fc1': its weight holds 1 NaN or infinite values" in capsys.readouterr().err
    assert not (tmp_path / "out.onnx").exists()


def test_the_two_stage_eigensolver_finds_a_known_spectrum() -> None:
    """A dense matrix with a known spectrum, at a size the two-stage driver takes."""
    n = spectra.TWO_STAGE_MIN_SIDE + 40
    if spectra._two_stage_driver() is None:
        pytest.skip("this LAPACK has no two-stage driver; the one-stage fallback is tested above")
    d = np.random.default_rng(5).uniform(0.0, 10.0, n)
    a = _symmetric_with_spectrum(d, 5)
    values = spectra.eigvalsh(a)
    # backward stability: each eigenvalue within O(n eps ||A||_2) (Golub & Van Loan 8.4)
    np.testing.assert_allclose(np.sort(values), np.sort(d), atol=n * np.finfo(np.float32).eps * d.max())


def test_a_short_job_runs_on_one_thread_without_sampling_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spectra, "_idle_cores", lambda cores: pytest.fail("sampled for a short job"))
    assert spectra.blas_threads(spectra.THREADED_MIN_FLOPS / 2) == 1


@pytest.mark.parametrize(("free_ticks", "threads"), [(80, 2), (70, 2), (50, 1), (0, 1)])
def test_threads_follow_the_idle_cores_sampled(monkeypatch: pytest.MonkeyPatch, free_ticks: int,
                                               threads: int) -> None:
    """80 ticks over 2 cores: free_ticks of them idle -> 2 * free_ticks / 80 idle cores."""
    samples = iter([(1000, 5000), (1000 + free_ticks, 5080)])
    monkeypatch.setattr(spectra, "_cpu_ticks", lambda: next(samples))
    monkeypatch.setattr(spectra.os, "cpu_count", lambda: 2)
    assert spectra.blas_threads(spectra.THREADED_MIN_FLOPS) == threads


def test_without_proc_stat_the_load_average_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spectra, "_cpu_ticks", lambda: None)
    monkeypatch.setattr(spectra.os, "cpu_count", lambda: 2)
    for load, threads in ((0.1, 2), (0.9, 1), (3.0, 1)):
        monkeypatch.setattr(spectra.os, "getloadavg", lambda load=load: (load, load, load))
        assert spectra.blas_threads(spectra.THREADED_MIN_FLOPS) == threads


@pytest.mark.parametrize(("own_nice", "free"), [(0, 400 + 50 + 300), (10, 400 + 50)])
def test_niced_work_makes_way_only_for_a_process_that_is_not_niced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, own_nice: int, free: int) -> None:
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 300 20 400 50 5 5 20 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    monkeypatch.setattr(spectra.os, "nice", lambda increment: own_nice)
    assert spectra._cpu_ticks(str(stat)) == (free, 900)
    stat.write_text("no counters here\n")
    assert spectra._cpu_ticks(str(stat)) is None


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="no /proc/stat")
def test_a_core_kept_busy_is_not_counted_idle() -> None:
    import threading

    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        cores = os.cpu_count() or 1
        idle = spectra._idle_cores(cores)
    finally:
        stop.set()
        spinner.join()
    assert 0.0 <= idle <= cores - 0.5  # at least most of a core was ours (counter ticks are 10 ms)


def _marchenko_pastur(n: int, seed: int) -> np.ndarray:
    """Eigenvalues of W W^T for a random Gaussian n x 6n W (a random weight's Gram)."""
    w = np.random.default_rng(seed).standard_normal((n, 6 * n))
    return np.linalg.eigvalsh(w @ w.T)


SHAPES = {
    "marchenko-pastur": _marchenko_pastur,
    "power-law": lambda n, seed: np.arange(1, n + 1, dtype=float) ** -1.2,  # s_i = i^-0.6, the spectrum model
    "low-rank-plus-noise": lambda n, seed: np.concatenate([np.geomspace(400, 20, 40), np.full(n - 40, 1.0)])
    + np.random.default_rng(seed).uniform(0, 0.5, n),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("seed", [0, 1])
def test_the_estimate_holds_err2_within_the_stated_error_at_every_rank(shape: str, seed: int) -> None:
    """At 1024 with 8 probes x 15 blocks the Krylov space spans 12 % of the side, as the
    defaults' 480 dimensions do at VGG-16's 4096 (with fewer probes: harsher).  The weight
    is symmetric with singular values sqrt(exact), so its Gram has eigenvalues exact."""
    n = 1024
    exact = np.sort(SHAPES[shape](n, seed))[::-1]
    weight = _symmetric_with_spectrum(np.sqrt(exact), seed + 10)
    estimate = spectra.estimate_eigenvalues(weight, block=8, steps=15)
    assert estimate.shape == (n,) and np.all(estimate >= 0)
    assert np.all(np.diff(estimate) <= 1e-12 * estimate[0])  # largest first
    error = np.abs(tail_energy(np.sqrt(estimate)) - tail_energy(np.sqrt(exact)))
    assert error.max() <= spectra.ESTIMATE_ERR2_ERROR
    np.testing.assert_allclose(estimate.sum(), exact.sum(), rtol=1e-4)  # the trace is matched exactly


def test_an_estimate_of_a_gram_the_krylov_space_exhausts_is_its_spectrum() -> None:
    """Rank 20 below the 8 x 15 Krylov dimensions: every eigenvalue is found, the rest are zero."""
    exact = np.concatenate([np.geomspace(50.0, 1.0, 20), np.zeros(180)])
    estimate = spectra.estimate_eigenvalues(_symmetric_with_spectrum(np.sqrt(exact), 3), block=8, steps=15)
    np.testing.assert_allclose(estimate, exact, atol=1e-4 * exact[0])
    assert not spectra.estimate_eigenvalues(np.zeros((50, 50), np.float32), block=8, steps=3).any()
    tiny = np.random.default_rng(7).standard_normal((20, 50)).astype(np.float32)  # fewer rows than a block
    exact_tiny = np.linalg.svd(tiny.astype(np.float64), compute_uv=False) ** 2
    np.testing.assert_allclose(spectra.estimate_eigenvalues(tiny), exact_tiny, rtol=1e-4)


def test_large_weights_are_estimated_and_say_so_and_the_rest_are_exact() -> None:
    w = _low_rank_plus_noise(300, 700, rank=20, seed=4)
    found = spectra.spectrum(w, "fc", estimate_from=300)
    exact = spectra.spectrum(w, "fc", estimate_from=None)
    assert (found.method, found.err2_error) == (spectra.ESTIMATED, spectra.ESTIMATE_ERR2_ERROR)
    assert (exact.method, exact.err2_error) == (spectra.EXACT, 0.0)
    # below the threshold, and now cached: exact
    assert spectra.spectrum(w, "fc", estimate_from=301).method == spectra.EXACT
    assert np.abs(tail_energy(found.values) - tail_energy(exact.values)).max() <= spectra.ESTIMATE_ERR2_ERROR


def test_an_exact_entry_is_never_replaced_by_an_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    w = _low_rank_plus_noise(300, 700, rank=20, seed=5)
    estimated = spectra.spectrum(w, "fc", estimate_from=300)
    exact = spectra.spectrum(w, "fc", estimate_from=None)  # an estimate does not answer an exact request
    assert exact.method == spectra.EXACT
    monkeypatch.setattr(spectra, "_compute", lambda *args: pytest.fail("recomputed"))
    for estimate_from in (300, None):  # once cached, the exact entry answers both
        again = spectra.spectrum(w, "fc", estimate_from=estimate_from)
        assert again.method == spectra.EXACT
        np.testing.assert_array_equal(again.values, exact.values)
    digest = array_digest(w)
    stored = cache.lookup("spectra", spectra._key(digest, spectra.ESTIMATED))
    assert stored is not None and stored["method"].tobytes() == b"estimated"
    np.testing.assert_array_equal(stored["s"], estimated.values)


def test_an_entry_whose_method_disagrees_with_its_key_is_recomputed() -> None:
    w = _low_rank_plus_noise(200, 300, rank=10, seed=6)
    fresh = spectra.spectrum(w, "fc")
    digest = array_digest(w)
    cache.store("spectra", digest, {"s": np.zeros(200), "method": np.frombuffer(b"estimated", np.uint8),
                                    "err2_error": np.array(0.005)})
    again = spectra.spectrum(w, "fc")
    assert again.method == spectra.EXACT
    np.testing.assert_array_equal(again.values, fresh.values)


def test_the_accuracy_source_names_the_estimated_layers_and_their_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from deepx_sim.accuracy import AccuracyModel
    from deepx_sim.model.builder import GraphBuilder
    from deepx_sim.model.weights import random_weights

    b = GraphBuilder("two_fc", (1, 320))
    b.fc(300, name="big")
    b.fc(10, name="small")
    graph = b.build()
    random_weights(graph, seed=0)
    model = AccuracyModel(graph, measure=False)
    assert "estimated" not in model.accuracy_source
    real = spectra._spectrum
    monkeypatch.setattr(spectra, "_spectrum", lambda digest, weight, layer, estimate_from:
                        real(digest, weight, layer, 300 if estimate_from is not None else None))
    layers = {lay.name: lay for lay in (graph.nodes[n]["layer"] for n in graph)}
    for name in ("big", "small"):
        model.tail(layers[name])
    note = ("singular values of big estimated by block Lanczos quadrature, "
            f"err2 within +-{spectra.ESTIMATE_ERR2_ERROR:g}")
    assert model.spectra_note() == note and model.accuracy_source.endswith("; " + note)


def test_prefetch_computes_small_spectra_side_by_side_once_each(monkeypatch: pytest.MonkeyPatch) -> None:
    from deepx_sim.model.weights import WeightStore

    store = WeightStore()
    weights = {f"fc{i}": _low_rank_plus_noise(150 + 10 * i, 200, rank=5, seed=20 + i) for i in range(5)}
    weights["tied"] = weights["fc0"]  # the same array: one spectrum, one cache entry
    for name, w in weights.items():
        store.set(name, "weight", w)
    monkeypatch.setattr(spectra, "blas_threads", lambda flops: 2)  # as on an idle two-core machine
    real, computed = spectra._compute, []
    monkeypatch.setattr(spectra, "_compute", lambda *args: computed.append(args[1]) or real(*args))
    spectra.prefetch_spectra(store, {name: w.shape for name, w in weights.items()})
    assert sorted(computed) in (sorted(weights.keys() - {"tied"}), sorted(weights.keys() - {"fc0"}))
    monkeypatch.setattr(spectra, "_compute", lambda *args: pytest.fail("recomputed"))
    for name, w in weights.items():  # cached, and right within the Gram route's stated tolerance
        exact = np.linalg.svd(w.astype(np.float64), compute_uv=False)
        found = spectra.weight_singular_values(store, name)
        np.testing.assert_allclose(tail_energy(found), tail_energy(exact), atol=1e-4)


def test_prefetch_leaves_large_spectra_and_busy_machines_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from deepx_sim.model.weights import WeightStore

    store = WeightStore()
    for seed, name in enumerate(("a", "b")):
        store.set(name, "weight", _low_rank_plus_noise(150, 200, rank=5, seed=seed))
    monkeypatch.setattr(spectra, "_compute", lambda *args: pytest.fail("computed"))
    monkeypatch.setattr(spectra, "blas_threads", lambda flops: 1)  # no idle core to spare
    spectra.prefetch_spectra(store, {"a": (150, 200), "b": (150, 200)})
    monkeypatch.setattr(spectra, "blas_threads", lambda flops: 2)
    spectra.prefetch_spectra(store, {"a": (4096, 25088), "b": (4096, 4096)})  # each worth its own threads
    for name in ("a", "b"):
        cache.store("spectra", store.digest(name), {"s": np.zeros(1)})
    monkeypatch.setattr(spectra, "blas_threads", lambda flops: pytest.fail("sampled with nothing to do"))
    spectra.prefetch_spectra(store, {"a": (150, 200), "b": (150, 200)})  # cached: not even a sample


def test_plan_json_notes_an_estimated_spectrum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from deepx_sim.cli import main
    from deepx_sim.model.builder import GraphBuilder
    from deepx_sim.model.onnx import save_onnx
    from deepx_sim.model.weights import random_weights

    b = GraphBuilder("wide_fc", (1, 320))
    b.fc(300, name="big")
    b.fc(10, name="out")
    graph = b.build()
    random_weights(graph, seed=0)
    path = save_onnx(graph, tmp_path / "wide.onnx")
    real = spectra._spectrum
    monkeypatch.setattr(spectra, "_spectrum", lambda digest, weight, layer, estimate_from:
                        real(digest, weight, layer, 300 if estimate_from is not None else None))

    def too_large(*args: object, **kwargs: object) -> None:  # as VGG-16 is: its spectra are read instead
        raise ModelError("too large to measure")

    monkeypatch.setattr("deepx_sim.accuracy.loss.check_measurable", too_large)
    assert main(["plan", "--model", str(path), "--platform", "tegra_k1", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["accuracy_source"].startswith("estimate: err2 rule on the weights' singular values")
    assert any(note.startswith("singular values of big estimated") for note in record["notes"])
    assert "singular values of big estimated" in record["accuracy_source"]
