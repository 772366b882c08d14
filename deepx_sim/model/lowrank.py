"""Low-rank approximations of weights: the math DXTK's factorisations and the
accuracy measurements share (each is exact in Frobenius norm, Eckart-Young)."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from deepx_sim.cache import array_digest

#: Decompositions kept in memory, so a search over the ranks of one layer computes one SVD.
_KEPT_SVDS = 4
_svds: OrderedDict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()


def svd_factors(w: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """(V_k (k x n), U_k S_k (m x k)) with W ~ (U_k S_k) V_k."""
    digest = array_digest(w)
    if digest not in _svds:
        _svds[digest] = np.linalg.svd(w.astype(np.float64), full_matrices=False)
        while len(_svds) > _KEPT_SVDS:
            _svds.popitem(last=False)
    _svds.move_to_end(digest)
    u, s, vt = _svds[digest]
    return vt[:rank].astype(np.float32), (u[:, :rank] * s[:rank]).astype(np.float32)


def separate_conv(w: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Tai et al.'s closed form: (vertical (K, C, d, 1), horizontal (N, K, 1, d)).

    W[n, c, i, j] is laid out as a (C*d) x (N*d) matrix over (c, i) and (n, j);
    its rank-K SVD gives the two filters, optimal in Frobenius norm."""
    n_out, c_in, dh, dw = w.shape
    mat = w.transpose(1, 2, 0, 3).reshape(c_in * dh, n_out * dw).astype(np.float64)
    u, s, vt = np.linalg.svd(mat, full_matrices=False)
    root = np.sqrt(s[:rank])
    vertical = (u[:, :rank] * root).T.reshape(rank, c_in, dh, 1)
    horizontal = (vt[:rank].T * root).reshape(n_out, dw, rank).transpose(0, 2, 1).reshape(n_out, rank, 1, dw)
    return vertical.astype(np.float32), horizontal.astype(np.float32)


def recompose_conv(vertical: np.ndarray, horizontal: np.ndarray) -> np.ndarray:
    """The d x d kernel the separated pair computes: W'[n,c,i,j] = sum_k H[n,k,j] V[k,c,i]."""
    return np.einsum("kci,nkj->ncij", vertical[..., 0], horizontal[:, :, 0, :])
