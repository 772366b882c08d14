"""Singular values of a weight: what the accuracy model needs, computed once and cached.

The cheapest exact method for the shape: LAPACK's values-only SVD for small
matrices (smaller side up to 128); for larger ones the eigenvalues of the float32 Gram matrix of the
smaller side (one BLAS ``syrk`` and a symmetric eigensolver, no float64 copy
of the weight, no temporary larger than the weight).  The Gram route rounds
to float32: each s_i^2 is off by at most about 1e-6 of s_1^2, so a tail share
err2(k) moves by well under 1e-3 (tests/model/test_spectra.py bounds it).
Results are cached on disk by a hash of the weight's bytes
(:mod:`deepx_sim.cache`): a second run, a sweep worker or the replanning
fast path never recomputes them.
"""

from __future__ import annotations

import numpy as np

from deepx_sim.cache import array_digest, cached
from deepx_sim.errors import ModelError

#: Below this smaller side, a values-only float64 SVD is about as fast as the Gram route.
GRAM_MIN_SIDE = 128


def check_finite(matrix: np.ndarray, layer: str) -> None:
    """A clear error for NaN or infinity (a float64 sum is finite iff every value is)."""
    if not np.isfinite(np.sum(matrix, dtype=np.float64)):
        bad = int(matrix.size - np.count_nonzero(np.isfinite(matrix)))
        raise ModelError(
            f"layer {layer!r}: its weight holds {bad} NaN or infinite values; the accuracy model needs "
            "finite weights")


def _compute(matrix: np.ndarray, layer: str) -> np.ndarray:
    check_finite(matrix, layer)  # a cached entry came from finite weights with these very bytes
    if min(matrix.shape) <= GRAM_MIN_SIDE:
        return np.linalg.svd(matrix.astype(np.float64), compute_uv=False)
    import scipy.linalg

    side = matrix if matrix.shape[0] <= matrix.shape[1] else matrix.T
    side = side.astype(np.float32, copy=False)
    from threadpoolctl import threadpool_limits

    gram = side @ side.T  # numpy runs A A^T as one syrk
    # One BLAS thread: the symmetric eigensolver gains little from threads and, on a shared
    # machine, spinning threads made it 50-100x slower (0.07 s against 6 s at 768 x 768).
    with threadpool_limits(limits=1, user_api="blas"):
        eig = scipy.linalg.eigh(gram, eigvals_only=True, overwrite_a=True, check_finite=False, driver="evd")
    return np.sqrt(np.clip(eig[::-1].astype(np.float64), 0.0, None))


def singular_values(weight: np.ndarray, layer: str = "?") -> np.ndarray:
    """Singular values of ``weight`` (as a rows x rest matrix), largest first, float64."""
    matrix = np.asarray(weight).reshape(np.shape(weight)[0], -1)
    return cached("spectra", array_digest(matrix), lambda: {"s": _compute(matrix, layer)})["s"]
