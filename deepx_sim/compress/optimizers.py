"""DXTK's five model optimisers, each a function graph -> (graph, report).

They act on the fc and conv layers of any layer graph with weights, wherever
those sit (chains and DAGs alike), and return a new graph; the input graph
and its weight store are left as they were.

- weight factorisation (``wf``): W (m x n) ~ U_k V_k by truncated SVD, a k-unit
  linear layer inserted; pays when k < mn/(m+n);
- sparse factorisation (``sf``): W ~ B A with a learned dictionary B (k atoms,
  scikit-learn's dictionary learning) and sparse codes A (orthogonal matching
  pursuit); pays when nnz(A) < n*k/2 (with B's m*k values counted too);
- convolution separation (``cs``): a d x d conv (C -> N) ~ a d x 1 conv to K
  channels then a 1 x d conv (Tai et al., ICLR 2016, closed form by SVD);
- precision scaling (``ps``): weights stored at 64/32/16-bit float or 8-bit
  integer with a scale per output channel;
- parameter cleaning (``pc``): drop training-only state and dropout layers.

Every report gives, per layer, the relative reconstruction error
||W - W'||_F / ||W||_F of what it changed and the parameters before/after.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import networkx as nx
import numpy as np

from deepx_sim.accuracy import break_even_rank, separable
from deepx_sim.errors import ModelError
from deepx_sim.model.layers import (
    ConvSpec,
    FcSpec,
    Layer,
    LayerKind,
    layers_in_order,
    make_layer,
    rewrite_graph,
    with_nonzeros,
)
from deepx_sim.model.lowrank import recompose_conv, separate_conv, svd_factors
from deepx_sim.model.memory import layer_weight_bytes
from deepx_sim.model.weights import Storage, WeightStore, as_stored, require_weights


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
        return float(sum(c.rel_error**2 for c in self.changes))


def rel_error(w: np.ndarray, approx: np.ndarray) -> float:
    norm = float(np.linalg.norm(w))
    return float(np.linalg.norm(w - approx)) / norm if norm else 0.0


def targets(
    graph: nx.DiGraph, kinds: tuple[LayerKind, ...], layers: list[str] | None, optimizer: str
) -> list[Layer]:
    """The weighted layers of ``kinds`` an optimiser may change (never a factor again)."""
    store = require_weights(graph, optimizer)
    found = [lay for lay in layers_in_order(graph) if lay.kind in kinds and store.has(lay.name)]
    if layers is not None:
        unknown = sorted(set(layers) - {lay.name for lay in found})
        if unknown:
            raise ModelError(
                f"{optimizer}: {graph.graph.get('name')!r} has no {'/'.join(kinds)} layer "
                f"{unknown[0]!r} with weights; those are {[lay.name for lay in found]}"
            )
        found = [lay for lay in found if lay.name in layers]
    return [lay for lay in found if not lay.origin]


def _with_store(graph: nx.DiGraph) -> tuple[nx.DiGraph, WeightStore]:
    new = graph.copy()
    store = require_weights(graph, "an optimiser").copy()
    new.graph["weights"] = store
    return new, store


def _replace_pairs(
    graph: nx.DiGraph,
    pairs: dict[str, tuple[Layer, Layer, dict[str, np.ndarray], dict[str, np.ndarray], Storage]],
) -> nx.DiGraph:
    """Replace each named layer by its (first, second) pair and their arrays."""
    new = rewrite_graph(graph, {name: [first, second] for name, (first, second, *_) in pairs.items()})
    store = require_weights(graph, "an optimiser").copy()
    for name, (first, second, first_arrays, second_arrays, first_storage) in pairs.items():
        bias = store.get(name, "bias") if store.has(name, "bias") else None
        store.drop(name)
        for role, array in first_arrays.items():
            store.set(first.name, role, array, first_storage if role == "weight" else None)
        for role, array in second_arrays.items():
            store.set(second.name, role, array)
        if bias is not None:
            store.set(second.name, "bias", bias)
    new.graph["weights"] = store
    return new


def pick_rank(
    optimizer: str,
    what: str,
    layer: str,
    ranks: dict[str, int] | None,
    fraction: float | None,
    break_even: float,
    full: int,
) -> int:
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


def _fc_pair(lay: Layer, first_name: str, second_name: str, k: int, origin: str) -> tuple[Layer, Layer]:
    """fc (m x n) -> fc (k x n) then fc (m x k), same input and output shapes."""
    assert lay.fc is not None
    mid = (*lay.input_shapes[0][:-1], k)
    first = make_layer(
        first_name,
        LayerKind.FC,
        lay.input_shapes[:1],
        mid,
        fc=FcSpec(k, lay.fc.n, bias=False),
        op_type=lay.op_type,
        origin=origin,
    )
    second = make_layer(
        second_name,
        LayerKind.FC,
        [mid],
        lay.output_shape,
        fc=FcSpec(lay.fc.m, k, lay.fc.bias),
        op_type=lay.op_type,
        origin=origin,
    )
    return first, second


# ---------------------------------------------------------------- weight factorisation


def weight_factorization(
    graph: nx.DiGraph,
    ranks: dict[str, int] | None = None,
    fraction: float | None = None,
    layers: list[str] | None = None,
) -> tuple[nx.DiGraph, Report]:
    """Replace fc layers by rank-k factor pairs: explicit ``ranks`` per layer, or
    ``fraction`` of each layer's break-even rank mn/(m+n).  Layers where the
    factorisation would not save parameters are left whole (noted)."""
    report = Report("wf")
    store = require_weights(graph, "wf")
    pairs = {}
    for lay in targets(graph, (LayerKind.FC,), layers if ranks is None else list(ranks), "wf"):
        w = store.get(lay.name)
        m, n = w.shape
        be = break_even_rank(m, n)
        k = pick_rank("wf", "rank", lay.name, ranks, fraction, be, min(m, n))
        if k >= be:
            report.notes.append(f"{lay.name}: rank {k} >= break-even {be:.1f}; left whole")
            continue
        v_k, us_k = svd_factors(w, k)
        first, second = _fc_pair(lay, f"{lay.name}_v", f"{lay.name}_u", k, f"wf:{lay.name}")
        pairs[lay.name] = (first, second, {"weight": v_k}, {"weight": us_k}, Storage())
        report.changes.append(
            LayerChange(
                lay.name,
                "wf",
                f"rank {k}",
                lay.params,
                first.params + second.params,
                rel_error(w, us_k @ v_k),
                {"rank": k, "break_even_rank": be},
            )
        )
    return (_replace_pairs(graph, pairs) if pairs else graph), report


# ---------------------------------------------------------------- sparse factorisation


def sparse_factors(
    w: np.ndarray, atoms: int, nonzeros: int, seed: int = 0, max_iter: int = 30
) -> tuple[np.ndarray, np.ndarray]:
    """(A (k x n) sparse codes, B (m x k) dictionary) with W ~ B A.

    The columns of W (one per input) are the samples; each is coded with at
    most ``nonzeros`` atoms by orthogonal matching pursuit."""
    from sklearn.decomposition import MiniBatchDictionaryLearning, sparse_encode

    samples = w.T.astype(np.float64)  # n samples of m features
    learner = MiniBatchDictionaryLearning(
        n_components=atoms,
        batch_size=min(256, len(samples)),
        max_iter=max_iter,
        random_state=seed,
        transform_algorithm="omp",
        transform_n_nonzero_coefs=nonzeros,
    )
    dictionary = learner.fit(samples).components_  # (k, m), unit-norm atoms
    codes = sparse_encode(samples, dictionary, algorithm="omp", n_nonzero_coefs=nonzeros)  # (n, k)
    return codes.T.astype(np.float32), dictionary.T.astype(np.float32)


def sparse_factorization(
    graph: nx.DiGraph,
    atoms_fraction: float = 0.5,
    nonzeros: int = 8,
    layers: list[str] | None = None,
    seed: int = 0,
) -> tuple[nx.DiGraph, Report]:
    """Replace fc layers by B A: k = ``atoms_fraction`` x min(m, n) atoms, at most
    ``nonzeros`` nonzeros per input column.  Left whole where B A would not be
    smaller than W (noted), or where nnz(A) >= n*k/2 (DXTK's criterion)."""
    if not 0 < atoms_fraction <= 1:
        raise ModelError(f"sf: atoms_fraction must be in (0, 1], got {atoms_fraction!r}")
    if nonzeros < 1:
        raise ModelError(f"sf: nonzeros must be >= 1, got {nonzeros!r}")
    report = Report("sf")
    store = require_weights(graph, "sf")
    pairs = {}
    for lay in targets(graph, (LayerKind.FC,), layers, "sf"):
        w = store.get(lay.name)
        m, n = w.shape
        k = max(1, int(min(m, n) * atoms_fraction))
        s = min(nonzeros, k)
        if 2 * n * s + m * k >= m * n:  # A's nonzeros as value + index, B dense
            report.notes.append(f"{lay.name}: {k} atoms x {s} nonzeros would not be smaller; left whole")
            continue
        codes, dictionary = sparse_factors(w, k, s, seed)
        nnz = int(np.count_nonzero(codes))
        if nnz >= n * k / 2:
            report.notes.append(f"{lay.name}: nnz(A) {nnz} >= n*k/2; left whole")
            continue
        first, second = _fc_pair(lay, f"{lay.name}_a", f"{lay.name}_b", k, f"sf:{lay.name}")
        first = with_nonzeros(first, nnz)
        pairs[lay.name] = (first, second, {"weight": codes}, {"weight": dictionary}, Storage(sparse=True))
        report.changes.append(
            LayerChange(
                lay.name,
                "sf",
                f"{k} atoms, {s} nonzeros",
                lay.params,
                first.params + second.params,
                rel_error(w, dictionary @ codes),
                {"atoms": k, "nnz": nnz, "sparsity": 1 - nnz / codes.size},
            )
        )
    return (_replace_pairs(graph, pairs) if pairs else graph), report


# ---------------------------------------------------------------- convolution separation


def _conv_pair(lay: Layer, k: int) -> tuple[Layer, Layer]:
    c = lay.conv
    assert c is not None
    top, left, bottom, right = c.pads
    batch, _, _, width = lay.input_shapes[0]
    mid = (batch, k, lay.output_shape[2], width)
    first = make_layer(
        f"{lay.name}_v",
        LayerKind.CONV,
        lay.input_shapes[:1],
        mid,
        op_type="Conv",
        conv=ConvSpec(
            c.c_in, k, (c.kernel[0], 1), (c.stride[0], 1), (top, 0), 1, False, padding_end=(bottom, 0)
        ),
        origin=f"cs:{lay.name}",
    )
    second = make_layer(
        f"{lay.name}_h",
        LayerKind.CONV,
        [mid],
        lay.output_shape,
        op_type="Conv",
        conv=ConvSpec(
            k, c.c_out, (1, c.kernel[1]), (1, c.stride[1]), (0, left), 1, c.bias, padding_end=(0, right)
        ),
        origin=f"cs:{lay.name}",
    )
    return first, second


def conv_separation(
    graph: nx.DiGraph,
    ranks: dict[str, int] | None = None,
    fraction: float | None = None,
    layers: list[str] | None = None,
) -> tuple[nx.DiGraph, Report]:
    """Split d x d convolutions (d > 1) into d x 1 then 1 x d with K channels between:
    explicit ``ranks`` per layer, or ``fraction`` of the break-even K = NCd/(C+N)."""
    report = Report("cs")
    store = require_weights(graph, "cs")
    pairs = {}
    for lay in targets(graph, (LayerKind.CONV,), layers if ranks is None else list(ranks), "cs"):
        if not separable(lay):
            report.notes.append(f"{lay.name}: not a square d x d (d > 1) ungrouped kernel; left whole")
            continue
        w = store.get(lay.name)
        n_out, c_in, dh, dw = w.shape
        be = break_even_rank(c_in * dh, n_out * dw)
        full = min(c_in * dh, n_out * dw)
        k = pick_rank("cs", "K", lay.name, ranks, fraction, be, full)
        if be <= k < full:
            report.notes.append(f"{lay.name}: K {k} >= break-even {be:.1f}; left whole")
            continue
        vertical, horizontal = separate_conv(w, k)
        first, second = _conv_pair(lay, k)
        pairs[lay.name] = (first, second, {"weight": vertical}, {"weight": horizontal}, Storage())
        report.changes.append(
            LayerChange(
                lay.name,
                "cs",
                f"K {k}",
                lay.params,
                first.params + second.params,
                rel_error(w, recompose_conv(vertical, horizontal)),
                {"K": k, "break_even_K": be},
            )
        )
    if not report.changes and not report.notes:
        report.notes.append("no convolution layers")
    return (_replace_pairs(graph, pairs) if pairs else graph), report


# ---------------------------------------------------------------- precision scaling


def precision_scaling(graph: nx.DiGraph, bits: int) -> tuple[nx.DiGraph, Report]:
    """Store every fc and conv weight at ``bits`` (64, 32, 16 float; 8 integer per channel)."""
    new, store = _with_store(graph)
    report = Report("ps")
    kinds = (LayerKind.FC, LayerKind.CONV, LayerKind.DEPTHWISE_CONV)
    for lay in [lay for lay in layers_in_order(graph) if lay.kind in kinds and store.has(lay.name)]:
        w = store.get(lay.name)
        before = layer_weight_bytes(graph, lay)
        stored, storage = as_stored(w, bits)
        store.set(lay.name, "weight", stored, replace(storage, sparse=store.storage(lay.name).sparse))
        report.changes.append(
            LayerChange(
                lay.name,
                "ps",
                f"{bits}-bit",
                lay.params,
                lay.params,
                rel_error(w, store.get(lay.name)),
                {"bytes_before": before, "bytes_after": layer_weight_bytes(new, lay)},
            )
        )
    return new, report


# ---------------------------------------------------------------- parameter cleaning


def parameter_cleaning(graph: nx.DiGraph) -> tuple[nx.DiGraph, Report]:
    """Drop training-only state (gradients, optimiser moments) and dropout layers."""
    store = require_weights(graph, "pc")
    dropped = [lay.name for lay in layers_in_order(graph) if lay.kind == LayerKind.DROPOUT]
    state_bytes = int(sum(np.asarray(a).nbytes for a in store.training_state.values()))
    report = Report(
        "pc",
        notes=[
            f"dropped {state_bytes:,} bytes of training-only state "
            f"({len(store.training_state)} tensors) and {len(dropped)} dropout layers"
        ],
    )
    new = rewrite_graph(graph, bypass=dropped)
    cleaned = store.copy()
    cleaned.training_state = {}
    new.graph["weights"] = cleaned
    return new, report


OPTIMIZERS = {
    "wf": "weight factorisation",
    "sf": "sparse factorisation",
    "cs": "convolution separation",
    "ps": "precision scaling",
    "pc": "parameter cleaning",
}
