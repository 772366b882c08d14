"""DXTK's five model optimisers, each a function Network -> (Network, report).

- weight factorisation (``wf``): W (m x n) ~ U_k V_k by truncated SVD, a k-unit
  linear layer inserted; pays when k < mn/(m+n);
- sparse factorisation (``sf``): W ~ B A with a learned dictionary B (k atoms,
  scikit-learn's dictionary learning) and sparse codes A (orthogonal matching
  pursuit); pays when nnz(A) < n*k/2 (with B's m*k values counted too);
- convolution separation (``cs``): a d x d conv (C -> N) ~ a d x 1 conv to K
  channels then a 1 x d conv (Tai et al., ICLR 2016, closed form by SVD);
- precision scaling (``ps``): weights stored at 64/32/16-bit float or 8-bit
  integer with a scale per output channel;
- parameter cleaning (``pc``): drop training-only state and dropout ops.

Every report gives, per layer, the relative reconstruction error
||W - W'||_F / ||W||_F of what it changed and the parameters before/after.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from deepx_sim.compress.network import ALLOWED_BITS, Network, Op
from deepx_sim.errors import ModelError


@dataclass
class LayerChange:
    layer: str
    optimizer: str
    setting: str  # e.g. "rank 40", "16-bit"
    params_before: int
    params_after: int
    rel_error: float  # ||W - W'||_F / ||W||_F
    detail: dict[str, float] = field(default_factory=dict)


@dataclass
class Report:
    optimizer: str
    changes: list[LayerChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def err2_total(self) -> float:
        return float(sum(c.rel_error ** 2 for c in self.changes))


def _rel_error(w: np.ndarray, approx: np.ndarray) -> float:
    norm = float(np.linalg.norm(w))
    return float(np.linalg.norm(w - approx)) / norm if norm else 0.0


def _targets(net: Network, kind: str, layers: list[str] | None, optimizer: str) -> list[Op]:
    ops = net.weighted_ops(kind)
    if layers is not None:
        unknown = sorted(set(layers) - {op.name for op in ops})
        if unknown:
            raise ModelError(f"{optimizer}: {net.name!r} has no {kind} layer {unknown[0]!r}; "
                             f"its {kind} layers are {[op.name for op in ops]}")
        ops = [op for op in ops if op.name in layers]
    return [op for op in ops if not op.origin]  # never re-factorise a factor


def _pick_rank(optimizer: str, what: str, layer: str, ranks: dict[str, int] | None, fraction: float | None,
               break_even: float, full: int) -> int:
    """The rank asked for a layer: given explicitly, or a fraction of its break-even rank."""
    if ranks is not None:
        k = int(ranks[layer])
    else:
        if fraction is None or not 0 < fraction <= 1:
            raise ModelError(f"{optimizer}: fraction must be in (0, 1], got {fraction!r}")
        k = max(1, int(break_even * fraction))
    if not 1 <= k <= full:
        raise ModelError(f"{optimizer}: {what} for {layer!r} must be in 1..{full}, got {k}")
    return k


# ---------------------------------------------------------------- weight factorisation

def svd_factors(w: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """(V_k (k x n), U_k S_k (m x k)) with W ~ (U_k S_k) V_k."""
    u, s, vt = np.linalg.svd(w.astype(np.float64), full_matrices=False)
    return vt[:rank].astype(np.float32), (u[:, :rank] * s[:rank]).astype(np.float32)


def weight_factorization(net: Network, ranks: dict[str, int] | None = None, fraction: float | None = None,
                         layers: list[str] | None = None) -> tuple[Network, Report]:
    """Replace dense layers by rank-k factor pairs: explicit ``ranks`` per layer, or
    ``fraction`` of each layer's break-even rank mn/(m+n).  Layers where the
    factorisation would not save parameters are left whole (noted)."""
    report = Report("wf")
    out = net
    for op in _targets(net, "dense", layers if ranks is None else list(ranks), "wf"):
        w = op.float_weight()
        m, n = w.shape
        break_even = m * n / (m + n)
        k = _pick_rank("wf", "rank", op.name, ranks, fraction, break_even, min(m, n))
        if k >= break_even:
            report.notes.append(f"{op.name}: rank {k} >= break-even {break_even:.1f}; left whole")
            continue
        v_k, us_k = svd_factors(w, k)
        first = Op(f"{op.name}_v", "dense", weight=v_k, bias=None, origin=f"wf:{op.name}")
        second = Op(f"{op.name}_u", "dense", weight=us_k, bias=op.bias, origin=f"wf:{op.name}")
        out = out.replaced(op.name, [first, second])
        report.changes.append(LayerChange(op.name, "wf", f"rank {k}", op.params(),
                                          first.params() + second.params(), _rel_error(w, us_k @ v_k),
                                          {"rank": k, "break_even_rank": break_even}))
    return out, report


# ---------------------------------------------------------------- sparse factorisation

def sparse_factors(w: np.ndarray, atoms: int, nonzeros: int, seed: int = 0,
                   max_iter: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """(A (k x n) sparse codes, B (m x k) dictionary) with W ~ B A.

    The columns of W (one per input) are the samples; each is coded with at
    most ``nonzeros`` atoms by orthogonal matching pursuit."""
    from sklearn.decomposition import MiniBatchDictionaryLearning, sparse_encode

    samples = w.T.astype(np.float64)  # n samples of m features
    learner = MiniBatchDictionaryLearning(n_components=atoms, batch_size=min(256, len(samples)),
                                          max_iter=max_iter, random_state=seed,
                                          transform_algorithm="omp",
                                          transform_n_nonzero_coefs=nonzeros)
    dictionary = learner.fit(samples).components_  # (k, m), unit-norm atoms
    codes = sparse_encode(samples, dictionary, algorithm="omp", n_nonzero_coefs=nonzeros)  # (n, k)
    return codes.T.astype(np.float32), dictionary.T.astype(np.float32)


def sparse_factorization(net: Network, atoms_fraction: float = 0.5, nonzeros: int = 8,
                         layers: list[str] | None = None, seed: int = 0) -> tuple[Network, Report]:
    """Replace dense layers by B A: k = ``atoms_fraction`` x min(m, n) atoms, at most
    ``nonzeros`` nonzeros per input column.  Left whole where B A would not be
    smaller than W (noted), or where nnz(A) >= n*k/2 (DXTK's criterion)."""
    if not 0 < atoms_fraction <= 1:
        raise ModelError(f"sf: atoms_fraction must be in (0, 1], got {atoms_fraction!r}")
    if nonzeros < 1:
        raise ModelError(f"sf: nonzeros must be >= 1, got {nonzeros!r}")
    report = Report("sf")
    out = net
    for op in _targets(net, "dense", layers, "sf"):
        w = op.float_weight()
        m, n = w.shape
        k = max(1, int(min(m, n) * atoms_fraction))
        s = min(nonzeros, k)
        # storage: A's nonzeros as value + index, B dense
        if 2 * n * s + m * k >= m * n:
            report.notes.append(f"{op.name}: {k} atoms x {s} nonzeros would not be smaller; left whole")
            continue
        codes, dictionary = sparse_factors(w, k, s, seed)
        nnz = int(np.count_nonzero(codes))
        if nnz >= n * k / 2:
            report.notes.append(f"{op.name}: nnz(A) {nnz} >= n*k/2; left whole")
            continue
        first = Op(f"{op.name}_a", "dense", weight=codes, bias=None, sparse=True, origin=f"sf:{op.name}")
        second = Op(f"{op.name}_b", "dense", weight=dictionary, bias=op.bias, origin=f"sf:{op.name}")
        out = out.replaced(op.name, [first, second])
        report.changes.append(LayerChange(
            op.name, "sf", f"{k} atoms, {s} nonzeros", op.params(), first.params() + second.params(),
            _rel_error(w, dictionary @ codes),
            {"atoms": k, "nnz": nnz, "sparsity": 1 - nnz / codes.size}))
    return out, report


# ---------------------------------------------------------------- convolution separation

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


def conv_separation(net: Network, ranks: dict[str, int] | None = None, fraction: float | None = None,
                    layers: list[str] | None = None) -> tuple[Network, Report]:
    """Split d x d convolutions (d > 1) into d x 1 then 1 x d with K channels between:
    explicit ``ranks`` per layer, or ``fraction`` of the break-even K = NCd/(C+N)."""
    report = Report("cs")
    out = net
    for op in _targets(net, "conv", layers if ranks is None else list(ranks), "cs"):
        w = op.float_weight()
        n_out, c_in, dh, dw = w.shape
        if dh == 1 or dw == 1 or dh != dw:
            report.notes.append(f"{op.name}: kernel {dh}x{dw} is not square d x d with d > 1; left whole")
            continue
        break_even = n_out * c_in * dh / (c_in + n_out)
        full = min(c_in * dh, n_out * dw)
        k = _pick_rank("cs", "K", op.name, ranks, fraction, break_even, full)
        if k >= break_even and k < full:
            report.notes.append(f"{op.name}: K {k} >= break-even {break_even:.1f}; left whole")
            continue
        vertical, horizontal = separate_conv(w, k)
        first = Op(f"{op.name}_v", "conv", weight=vertical, bias=None, stride=(op.stride[0], 1),
                   pad=(op.pad[0], 0), origin=f"cs:{op.name}")
        second = Op(f"{op.name}_h", "conv", weight=horizontal, bias=op.bias, stride=(1, op.stride[1]),
                    pad=(0, op.pad[1]), origin=f"cs:{op.name}")
        out = out.replaced(op.name, [first, second])
        report.changes.append(LayerChange(op.name, "cs", f"K {k}", op.params(),
                                          first.params() + second.params(),
                                          _rel_error(w, recompose_conv(vertical, horizontal)),
                                          {"K": k, "break_even_K": break_even}))
    if not report.changes and not report.notes:
        report.notes.append("no convolution layers")
    return out, report


# ---------------------------------------------------------------- precision scaling

def quantize_int8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel int8: (q, scale) with w ~ q * scale."""
    flat = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    scale = np.where(flat > 0, flat / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale.reshape((-1,) + (1,) * (w.ndim - 1))), -127, 127).astype(np.int8)
    return q, scale


def precision_scaling(net: Network, bits: int) -> tuple[Network, Report]:
    """Store every weight at ``bits`` (64, 32, 16 float; 8 integer per channel)."""
    if bits not in ALLOWED_BITS:
        raise ModelError(f"ps: bits must be one of {', '.join(map(str, ALLOWED_BITS))}, got {bits!r}")
    report = Report("ps")
    ops: list[Op] = []
    for op in net.ops:
        if not op.has_weights:
            ops.append(op)
            continue
        w = op.float_weight()
        if bits == 8:
            q, scale = quantize_int8(w)
            new = replace(op, weight=q, bits=8, scale=scale)
        else:
            dtype = {64: np.float64, 32: np.float32, 16: np.float16}[bits]
            new = replace(op, weight=w.astype(dtype), bits=bits, scale=None)
        ops.append(new)
        report.changes.append(LayerChange(op.name, "ps", f"{bits}-bit", op.params(), new.params(),
                                          _rel_error(w, new.float_weight()),
                                          {"bytes_before": op.weight_bytes(),
                                           "bytes_after": new.weight_bytes()}))
    return net.copy_with(ops), report


# ---------------------------------------------------------------- parameter cleaning

def parameter_cleaning(net: Network) -> tuple[Network, Report]:
    """Drop training-only state (gradients, optimiser moments) and dropout ops."""
    report = Report("pc")
    dropped = [op.name for op in net.ops if op.kind == "dropout"]
    report.notes.append(f"dropped {net.training_state_bytes():,} bytes of training-only state "
                        f"({len(net.training_state)} tensors) and {len(dropped)} dropout ops")
    return net.copy_with([op for op in net.ops if op.kind != "dropout"], training_state={}), report


OPTIMIZERS = {"wf": "weight factorisation", "sf": "sparse factorisation", "cs": "convolution separation",
              "ps": "precision scaling", "pc": "parameter cleaning"}
