"""Singular values of a weight: what the accuracy model needs, computed once and cached.

The cheapest exact method for the shape: LAPACK's values-only SVD for small
matrices (smaller side up to 128); for larger ones the eigenvalues of the
float32 Gram matrix of the smaller side (one BLAS ``syrk``, on two threads only
when a core is spare, then a symmetric eigensolver on one thread, two-stage
from side 2560; no float64 copy of the weight, no temporary larger than it).  The Gram route rounds
to float32: each s_i^2 is off by at most about 1e-6 of s_1^2, so a tail share
err2(k) moves by well under 1e-3 (tests/model/test_spectra.py bounds it).
Results are cached on disk by a hash of the weight's bytes
(:mod:`deepx_sim.cache`): a second run, a sweep worker or the replanning
fast path never recomputes them; :func:`weight_singular_values` takes that hash
from the weight store, which knows it for an unchanged ONNX file without
reading the weight at all.

Why no truncated or randomised method: the planner reads err2 at every rank of
the ladder, up to 0.9 of the break-even rank (3169 of VGG-16 fc6's 4096), so
the sum of nearly all squared singular values is needed.  A rank-l subspace
bounds err2(k) only to within its residual energy, which stays large unless l
is close to the full rank: with the project's own spectrum model (s_i = i^-0.6)
a 4096-wide layer keeps 20 % of its energy beyond rank 128 (7 % beyond 1024),
a random (Marchenko-Pastur) weight more; and each pass of a rank-l range finder
costs 2 m n l flops, as much as the whole Gram (m^2 n) once l reaches m / 2.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from functools import lru_cache

import numpy as np

from deepx_sim.cache import array_digest, cached
from deepx_sim.model.weights import WeightStore, check_finite

#: Below this smaller side, a values-only float64 SVD is about as fast as the Gram route.
GRAM_MIN_SIDE = 128
#: From this side up, LAPACK's two-stage eigensolver (band reduction in BLAS-3) beats the
#: one-stage one, whose tridiagonal reduction is memory-bound: 2.7 s against 3.8 s of CPU
#: at 4096, 1.35 against 1.68 at 3072, but 0.49 against 0.47 at 2048 (measured here).
TWO_STAGE_MIN_SIDE = 2560
_ROW_MAJOR = 101
#: Below this many flops (0.2 s on one core here) a spectrum runs on one BLAS thread
#: without sampling the machine: threads would save less than the sample costs.
THREADED_MIN_FLOPS = 2e10
#: How long the idle cores are sampled (/proc/stat counts in 10 ms ticks per core).
IDLE_SAMPLE_S = 0.04


def _compute(matrix: np.ndarray, layer: str) -> np.ndarray:
    check_finite(matrix, layer)  # a cached entry came from finite weights with these very bytes
    if min(matrix.shape) <= GRAM_MIN_SIDE:
        return np.linalg.svd(matrix.astype(np.float64), compute_uv=False)
    from threadpoolctl import threadpool_limits

    side = matrix if matrix.shape[0] <= matrix.shape[1] else matrix.T
    side = side.astype(np.float32, copy=False)
    m, n = side.shape
    threads = blas_threads(m * m * n + 4 * m**3 / 3)  # the syrk, then the reduction to tridiagonal
    with threadpool_limits(limits=threads, user_api="blas"):
        gram = side @ side.T  # numpy runs A A^T as one syrk
    eig = eigvalsh(gram, threads)
    return np.sqrt(np.clip(np.sort(eig)[::-1].astype(np.float64), 0.0, None))


def eigvalsh(gram: np.ndarray, threads: int = 1) -> np.ndarray:
    """Eigenvalues of the symmetric float32 ``gram`` (overwritten): LAPACK's two-stage
    driver from this side up, on ``threads`` BLAS threads, else the one-stage divide and
    conquer on one."""
    import scipy.linalg
    from threadpoolctl import threadpool_limits

    n = gram.shape[0]
    two_stage = _two_stage_driver() if n >= TWO_STAGE_MIN_SIDE else None
    if two_stage is not None:
        values = np.empty(n, np.float32)
        a = np.require(gram, np.float32, ["C", "W"])
        # its band reduction is BLAS-3: 1.68 s on two idle cores against 2.42 s on one (n = 4096)
        with threadpool_limits(limits=threads, user_api="blas"):
            if two_stage(_ROW_MAJOR, b"N", b"L", n, a.ctypes.data, n, values.ctypes.data) == 0:
                return values
    # One BLAS thread: the one-stage solver gains little from threads and, on a shared
    # machine, spinning threads made it 50-100x slower (0.07 s against 6 s at 768 x 768).
    with threadpool_limits(limits=1, user_api="blas"):
        return scipy.linalg.eigh(gram, eigvals_only=True, overwrite_a=True, check_finite=False, driver="evd")


@lru_cache(maxsize=1)
def _two_stage_driver() -> Callable[..., int] | None:
    """LAPACKE_ssyevd_2stage from the OpenBLAS scipy ships (scipy does not wrap it), checked
    on a matrix with known eigenvalues; None where it is missing."""
    import ctypes

    import scipy.linalg  # noqa: F401  (loads the library threadpoolctl then finds)
    from threadpoolctl import threadpool_info

    for lib in threadpool_info():
        try:
            fn = ctypes.CDLL(lib["filepath"]).scipy_LAPACKE_ssyevd_2stage
        except (OSError, AttributeError):  # another BLAS, or a 64-bit-integer build (other names)
            continue
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_int, ctypes.c_char, ctypes.c_char, ctypes.c_int, ctypes.c_void_p,
                       ctypes.c_int, ctypes.c_void_p]
        a, values = np.array([[2.0, 1.0], [1.0, 2.0]], np.float32), np.empty(2, np.float32)
        if fn(_ROW_MAJOR, b"N", b"L", 2, a.ctypes.data, 2, values.ctypes.data) == 0 and \
                np.allclose(np.sort(values), [1.0, 3.0]):
            return fn
    return None


def blas_threads(flops: float) -> int:
    """BLAS threads for a job of ``flops``: one below ``THREADED_MIN_FLOPS`` (too short for
    threads to pay back the idle sample), else one per core idle right now.  A core counts
    as idle only when no other process wants it: on a busy machine a second spinning BLAS
    thread slowed the Gram 1.5x and the eigensolver 50-100x."""
    cores = os.cpu_count() or 1
    if cores == 1 or flops < THREADED_MIN_FLOPS:
        return 1
    spare = _idle_cores(cores)
    return max(1, min(cores, int(spare + 0.25)))


def _idle_cores(cores: int) -> float:
    """Cores idle over the next ``IDLE_SAMPLE_S`` by the kernel's counters (/proc/stat),
    else by the 1-minute load average, which lags by a minute (it still counts what this
    very process did a moment ago), else none."""
    before = _cpu_ticks()
    if before is not None:
        time.sleep(IDLE_SAMPLE_S)
        after = _cpu_ticks()
        if after is not None and after[1] > before[1]:
            return cores * (after[0] - before[0]) / (after[1] - before[1])
    try:
        return cores - os.getloadavg()[0]
    except (OSError, AttributeError):  # no load average on this system
        return 0.0


def _cpu_ticks(stat_path: str = "/proc/stat") -> tuple[int, int] | None:
    """(ticks free for this process, all ticks) summed over cores since boot, or None
    where /proc/stat is missing.  Free: idle and I/O wait, and, for a process that is not
    itself niced, time of niced processes: the scheduler gives a nice-0 thread about ten
    times the share of a nice-10 one (weights 1024 against 110), so they make way."""
    try:
        with open(stat_path, encoding="ascii") as handle:
            fields = handle.readline().split()
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    except (OSError, ValueError):
        return None
    free = idle + iowait + (nice if os.nice(0) == 0 else 0)
    return free, user + nice + system + idle + iowait + irq + softirq + steal


def _spectrum(digest: str, weight: Callable[[], np.ndarray], layer: str) -> np.ndarray:
    def compute() -> dict[str, np.ndarray]:
        w = weight()
        return {"s": _compute(w.reshape(w.shape[0], -1), layer)}

    return cached("spectra", digest, compute)["s"]


def singular_values(weight: np.ndarray, layer: str = "?") -> np.ndarray:
    """Singular values of ``weight`` (as a rows x rest matrix), largest first, float64."""
    w = np.asarray(weight)
    return _spectrum(array_digest(w), lambda: w, layer)


def weight_singular_values(store: WeightStore, layer: str) -> np.ndarray:
    """:func:`singular_values` of ``layer``'s weight, keyed by the store's digest: a
    weight whose spectrum is cached is never loaded."""
    return _spectrum(store.digest(layer), lambda: store.get(layer), layer)
