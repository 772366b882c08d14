"""Singular values of a weight: what the accuracy model needs, computed once and cached.

The cheapest exact method for the shape: LAPACK's values-only SVD for small
matrices; for larger ones the eigenvalues of the float32 Gram matrix of the
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
GRAM_MIN_SIDE = 512


def weight_matrix(weight: np.ndarray, layer: str) -> np.ndarray:
    """The weight as a 2-D matrix (rows = outputs); a clear error for NaN or infinity."""
    matrix = np.asarray(weight).reshape(np.shape(weight)[0], -1)
    finite = np.isfinite(matrix)
    if not finite.all():
        bad = int(matrix.size - finite.sum())
        raise ModelError(
            f"layer {layer!r}: its weight holds {bad} NaN or infinite values; the accuracy model "
            "needs finite weights"
        )
    return matrix


def _compute(matrix: np.ndarray) -> np.ndarray:
    if min(matrix.shape) <= GRAM_MIN_SIDE:
        return np.linalg.svd(matrix.astype(np.float64), compute_uv=False)
    import scipy.linalg

    side = matrix if matrix.shape[0] <= matrix.shape[1] else matrix.T
    side = side.astype(np.float32, copy=False)
    gram = side @ side.T  # numpy runs A A^T as one syrk
    eig = scipy.linalg.eigh(gram, eigvals_only=True, overwrite_a=True, check_finite=False, driver="evd")
    return np.sqrt(np.clip(eig[::-1].astype(np.float64), 0.0, None))


def singular_values(weight: np.ndarray, layer: str = "?") -> np.ndarray:
    """Singular values of ``weight`` (as a rows x rest matrix), largest first, float64."""
    matrix = weight_matrix(weight, layer)
    return cached("spectra", array_digest(matrix), lambda: {"s": _compute(matrix)})["s"]
