"""Apply DXTK's optimisers in order within an accuracy budget.

With labelled data the budget is checked by measuring: each optimiser's
setting is searched (per layer, largest layer first) for the most compressed
one whose measured accuracy loss, with every earlier choice applied, stays
within the budget.  Without data the planner's estimator decides (its
calibrated reconstruction-error -> accuracy-loss model), and the printed
loss is an estimate.

Order: parameter cleaning, factorisation (wf or sf per dense layer),
convolution separation, precision scaling, the order DXTK's Figure 6 uses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np

from deepx_sim.accuracy import break_even_rank, geometric_fractions, rank_ladder
from deepx_sim.compress.calibration import estimate_loss
from deepx_sim.compress.optimizers import (
    OPTIMIZERS,
    Report,
    conv_separation,
    parameter_cleaning,
    precision_scaling,
    separable,
    sparse_factorization,
    targets,
    weight_factorization,
)
from deepx_sim.errors import ModelError
from deepx_sim.model.execute import accuracy
from deepx_sim.model.layers import Layer, LayerKind, layers_in_order
from deepx_sim.model.weights import require_weights

ORDER = ("pc", "sf", "wf", "cs", "ps")
SF_SETTINGS = ((0.1, 4), (0.2, 8), (0.3, 16))  # (atoms as a share of min(m, n), nonzeros per column)


@dataclass
class LabelledData:
    x: np.ndarray
    y: np.ndarray
    source: str


#: Points of the fine rank ladder the budgeted search walks (per layer, by bisection).
SEARCH_LADDER_POINTS = 24


@dataclass
class Outcome:
    graph: nx.DiGraph
    reports: list[Report] = field(default_factory=list)
    base_accuracy: float | None = None
    accuracy: float | None = None
    estimated_loss: float = 0.0

    @property
    def measured_loss(self) -> float | None:
        if self.base_accuracy is None or self.accuracy is None:
            return None
        return self.base_accuracy - self.accuracy


def parse_optimizers(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in OPTIMIZERS]
    if bad or not names:
        raise ModelError(
            f"--optimizers: {bad[0] if bad else text!r} is not an optimiser; choose from "
            + ", ".join(f"{k} ({v})" for k, v in OPTIMIZERS.items())
        )
    return names


def input_shape(graph: nx.DiGraph) -> tuple[int, ...]:
    """The one input's shape after the batch axis (compress takes one-input models)."""
    inputs = [lay for lay in layers_in_order(graph) if lay.kind == LayerKind.INPUT]
    if len(inputs) != 1:
        raise ModelError(
            f"model {graph.graph.get('name')!r}: compress takes models with one input, this has "
            f"{[lay.name for lay in inputs]}"
        )
    return inputs[0].output_shape[1:]


def load_data(path: str | Path, graph: nx.DiGraph) -> LabelledData:
    """Labelled inputs from an ``.npz`` with arrays ``x`` (N, *input shape) and ``y`` (N,) ints."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such data file")
    try:
        arrays = np.load(path, allow_pickle=False)
        files = set(arrays.files)
    except Exception:  # numpy raises several types, with misleading texts, for a non-archive
        raise ModelError(
            f"{path}: not a NumPy .npz archive; save one with numpy.savez(path, x=inputs, y=labels)"
        ) from None
    missing = sorted({"x", "y"} - files)
    if missing:
        raise ModelError(
            f"{path}: missing array {missing[0]!r}; a data file holds x (inputs) and "
            f"y (labels), found {sorted(files)}"
        )
    x, y = arrays["x"], arrays["y"]
    shape = input_shape(graph)
    expected = ("N", *shape)
    if x.ndim != len(expected) or tuple(x.shape[1:]) != shape:
        raise ModelError(f"{path}: x has shape {x.shape}; the model takes ({', '.join(map(str, expected))})")
    if y.ndim != 1 or len(y) != len(x):
        raise ModelError(f"{path}: y has shape {y.shape}; expected ({len(x)},), one label per row of x")
    if not np.issubdtype(y.dtype, np.integer):
        raise ModelError(f"{path}: y must hold integer class labels, got dtype {y.dtype}")
    return LabelledData(x.astype(np.float32), y.astype(np.int64), str(path))


def _search(candidates: list[int], ok: Callable[[int], bool]) -> int | None:
    """Smallest candidate (sorted ascending) for which ``ok`` holds, assuming monotone."""
    lo, hi, best = 0, len(candidates) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        if ok(candidates[mid]):
            best, hi = candidates[mid], mid - 1
        else:
            lo = mid + 1
    return best


def _search_ladder(lay: Layer) -> list[int]:
    """The fine rank ladder of an fc layer (rank) or a separable conv (K), lowest first."""
    if lay.fc is not None:
        be, full = lay.fc.break_even_rank, min(lay.fc.m, lay.fc.n)
    else:
        c = lay.conv
        assert c is not None
        be = break_even_rank(c.c_in * c.kernel[0], c.c_out * c.kernel[1])
        full = min(c.c_in * c.kernel[0], c.c_out * c.kernel[1])
    return sorted(rank_ladder(be, full, geometric_fractions(be, SEARCH_LADDER_POINTS)))


def _lowest_ranks(
    graph: nx.DiGraph, optimizer: str, within: Callable[[nx.DiGraph, list[Report]], bool]
) -> tuple[nx.DiGraph, Report]:
    """Per layer (largest first), the lowest rank on the fine ladder within the budget."""
    apply = weight_factorization if optimizer == "wf" else conv_separation
    kind = LayerKind.FC if optimizer == "wf" else LayerKind.CONV
    report = Report(optimizer)
    candidates = [
        lay for lay in targets(graph, (kind,), None, optimizer) if kind == LayerKind.FC or separable(lay)
    ]
    for lay in sorted(candidates, key=lambda lay: -lay.params):
        ladder = _search_ladder(lay)
        base, done = graph, list(report.changes)

        def ok(k: int, base: nx.DiGraph = base, name: str = lay.name, done: list = done) -> bool:  # type: ignore[type-arg]
            trial, step = apply(base, ranks={name: k})
            return bool(step.changes) and within(trial, [Report(optimizer, [*done, *step.changes])])

        chosen = _search(ladder, ok) if ladder else None
        if chosen is None:
            report.notes.append(f"{lay.name}: no rank within the budget; left whole")
            continue
        graph, step = apply(graph, ranks={lay.name: chosen})
        report.changes.extend(step.changes)
    return graph, report


def _sparse(
    graph: nx.DiGraph, within: Callable[[nx.DiGraph, list[Report]], bool]
) -> tuple[nx.DiGraph, Report]:
    """Per fc layer (largest first), the sparsest setting within the budget."""
    report = Report("sf")
    for lay in sorted(targets(graph, (LayerKind.FC,), None, "sf"), key=lambda lay: -lay.params):
        for atoms_fraction, nonzeros in SF_SETTINGS:
            trial, step = sparse_factorization(graph, atoms_fraction, nonzeros, layers=[lay.name])
            if step.changes and within(trial, [Report("sf", [*report.changes, *step.changes])]):
                graph = trial
                report.changes.extend(step.changes)
                break
        else:
            report.notes.append(f"{lay.name}: no sparse setting within the budget; left whole")
    return graph, report


def _usable(graph: nx.DiGraph, optimizers: list[str]) -> list[str]:
    """The optimisers in ``optimizers`` that have no layer to change in ``graph``."""
    fcs = targets(graph, (LayerKind.FC,), None, "compress")
    convs = [lay for lay in targets(graph, (LayerKind.CONV,), None, "compress") if separable(lay)]
    layers_for = {"wf": fcs, "sf": fcs, "cs": convs}
    return [n for n in optimizers if n in layers_for and not layers_for[n]]


def compress(
    graph: nx.DiGraph, optimizers: list[str], max_accuracy_loss: float, data: LabelledData | None = None
) -> Outcome:
    """Apply ``optimizers`` within ``max_accuracy_loss`` (fraction, e.g. 0.05)."""
    if not 0 <= max_accuracy_loss < 1:
        raise ModelError(f"--max-accuracy-loss must be in [0, 1), got {max_accuracy_loss!r}")
    require_weights(graph, "compress")
    kinds = (LayerKind.FC, LayerKind.CONV, LayerKind.DEPTHWISE_CONV)
    if not any(lay.kind in kinds for lay in layers_in_order(graph)):
        raise ModelError(
            f"model {graph.graph.get('name')!r} has no fully connected or convolution layers to optimise"
        )
    unusable = _usable(graph, optimizers)
    if unusable and not [n for n in optimizers if n not in unusable]:
        raise ModelError(
            f"model {graph.graph.get('name')!r} has no layers {', '.join(unusable)} can change: "
            + "; ".join(
                f"{n} ({OPTIMIZERS[n]}) needs "
                + ("square d x d convolutions with d > 1" if n == "cs" else "fully connected layers")
                for n in unusable
            )
        )
    base = None if data is None else accuracy(graph, data.x, data.y)
    outcome = Outcome(graph, base_accuracy=base)

    def within(candidate: nx.DiGraph, reports: list[Report]) -> bool:
        if data is not None:
            assert base is not None
            return base - accuracy(candidate, data.x, data.y) <= max_accuracy_loss + 1e-12
        return estimate_loss(candidate, [*outcome.reports, *reports]) <= max_accuracy_loss

    for name in [n for n in ORDER if n in optimizers]:
        if name in unusable:
            outcome.reports.append(Report(name, notes=[f"{name}: the model has no layers it applies to"]))
            continue
        current = outcome.graph
        if name == "pc":
            current, report = parameter_cleaning(current)
        elif name == "ps":
            report = Report("ps")
            for bits in (8, 16, 32):
                trial, trial_report = precision_scaling(current, bits)
                if within(trial, [trial_report]):
                    current, report = trial, trial_report
                    break
        elif name in ("wf", "cs"):
            current, report = _lowest_ranks(current, name, within)
        else:
            current, report = _sparse(current, within)
        outcome.graph = current
        outcome.reports.append(report)
    lossy = [
        r for r in outcome.reports if r.optimizer in ("wf", "sf", "cs", "ps") and r.optimizer not in unusable
    ]
    if lossy and not any(r.changes for r in lossy) and "pc" not in optimizers:
        judged = "measured on " + data.source if data is not None else "estimated"
        raise ModelError(
            f"no setting of {', '.join(r.optimizer for r in lossy)} keeps the accuracy loss "
            f"within --max-accuracy-loss {max_accuracy_loss:g} ({judged}); raise the budget or "
            "add other optimisers"
        )
    outcome.estimated_loss = estimate_loss(outcome.graph, outcome.reports)
    if data is not None:
        outcome.accuracy = accuracy(outcome.graph, data.x, data.y)
    return outcome
