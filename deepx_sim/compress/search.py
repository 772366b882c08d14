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

import numpy as np

from deepx_sim.compress.network import Network, Op
from deepx_sim.compress.optimizers import (
    OPTIMIZERS,
    Report,
    conv_separation,
    parameter_cleaning,
    precision_scaling,
    sparse_factorization,
    weight_factorization,
)
from deepx_sim.errors import ModelError

ORDER = ("pc", "sf", "wf", "cs", "ps")
SF_SETTINGS = ((0.1, 4), (0.2, 8), (0.3, 16))  # (atoms as a share of min(m, n), nonzeros per column)


@dataclass
class LabelledData:
    x: np.ndarray
    y: np.ndarray
    source: str


@dataclass
class Outcome:
    network: Network
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
        raise ModelError(f"--optimizers: {bad[0] if bad else text!r} is not an optimiser; choose from "
                         + ", ".join(f"{k} ({v})" for k, v in OPTIMIZERS.items()))
    return names


def load_data(path: str | Path, net: Network) -> LabelledData:
    """Labelled inputs from an ``.npz`` with arrays ``x`` (N, *input shape) and ``y`` (N,) ints."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such data file")
    try:
        arrays = np.load(path, allow_pickle=False)
        files = set(arrays.files)
    except Exception:  # numpy raises several types, with misleading texts, for a non-archive
        raise ModelError(f"{path}: not a NumPy .npz archive; save one with numpy.savez(path, x=inputs, "
                         "y=labels)") from None
    missing = sorted({"x", "y"} - files)
    if missing:
        raise ModelError(f"{path}: missing array {missing[0]!r}; a data file holds x (inputs) and "
                         f"y (labels), found {sorted(files)}")
    x, y = arrays["x"], arrays["y"]
    expected = ("N", *net.input_shape)
    if x.ndim != len(expected) or tuple(x.shape[1:]) != net.input_shape:
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


def _separable(op: Op) -> bool:
    """A conv convolution separation applies to: a square d x d kernel with d > 1."""
    assert op.weight is not None
    return op.weight.shape[2] == op.weight.shape[3] > 1


def _break_even(op_weight: np.ndarray, optimizer: str) -> int:
    """Largest rank that still saves parameters: below mn/(m+n), or NCd/(C+N) for a conv."""
    if optimizer == "wf":
        m, n = op_weight.shape
        return int(np.ceil(m * n / (m + n))) - 1
    n_out, c_in, d = op_weight.shape[:3]
    return int(np.ceil(n_out * c_in * d / (c_in + n_out))) - 1


def _lowest_ranks(net: Network, optimizer: str,
                  within: Callable[[Network, list[Report]], bool]) -> tuple[Network, Report]:
    """Per layer (largest first), the lowest rank on a geometric ladder within the budget."""
    apply = weight_factorization if optimizer == "wf" else conv_separation
    kind = "dense" if optimizer == "wf" else "conv"
    report = Report(optimizer)
    for op in sorted(net.weighted_ops(kind), key=lambda o: -o.params()):
        top = _break_even(op.float_weight(), optimizer)
        if op.origin or top < 1:
            continue
        ladder = sorted({int(r) for r in np.geomspace(1, top, 24).round()})
        base, done = net, list(report.changes)

        def ok(k: int, base: Network = base, name: str = op.name, done: list = done) -> bool:  # type: ignore[type-arg]
            trial, step = apply(base, ranks={name: k})
            return bool(step.changes) and within(trial, [Report(optimizer, [*done, *step.changes])])

        chosen = _search(ladder, ok)
        if chosen is None:
            report.notes.append(f"{op.name}: no rank within the budget; left whole")
            continue
        net, step = apply(net, ranks={op.name: chosen})
        report.changes.extend(step.changes)
    return net, report


def compress(net: Network, optimizers: list[str], max_accuracy_loss: float,
             data: LabelledData | None = None) -> Outcome:
    """Apply ``optimizers`` within ``max_accuracy_loss`` (fraction, e.g. 0.05)."""
    from deepx_sim.compress.calibration import estimate_loss

    if not 0 <= max_accuracy_loss < 1:
        raise ModelError(f"--max-accuracy-loss must be in [0, 1), got {max_accuracy_loss!r}")
    if not net.weighted_ops("dense") and not net.weighted_ops("conv"):
        raise ModelError(f"model {net.name!r} has no fully connected or convolution layers to optimise")
    layers_for = {"wf": net.weighted_ops("dense"), "sf": net.weighted_ops("dense"),
                  "cs": [op for op in net.weighted_ops("conv") if _separable(op)]}
    unusable = [n for n in optimizers if n in layers_for and not layers_for[n]]
    if unusable and not [n for n in optimizers if n not in unusable]:
        raise ModelError(f"model {net.name!r} has no layers {', '.join(unusable)} can change: "
                         + "; ".join(f"{n} ({OPTIMIZERS[n]}) needs "
                                     + ("square d x d convolutions with d > 1" if n == "cs"
                                        else "fully connected layers") for n in unusable))
    base = None if data is None else net.accuracy(data.x, data.y)
    outcome = Outcome(net, base_accuracy=base)

    def within(candidate: Network, reports: list[Report]) -> bool:
        if data is not None:
            assert base is not None
            return base - candidate.accuracy(data.x, data.y) <= max_accuracy_loss + 1e-12
        return estimate_loss(candidate, [*outcome.reports, *reports]) <= max_accuracy_loss

    for name in [n for n in ORDER if n in optimizers]:
        if name in unusable:
            outcome.reports.append(Report(name, notes=[f"{name}: the model has no layers it applies to"]))
            continue
        current = outcome.network
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
        else:  # sf
            report = Report("sf")
            for op in sorted(current.weighted_ops("dense"), key=lambda o: -o.params()):
                if op.origin:
                    continue
                for atoms_fraction, nonzeros in SF_SETTINGS:
                    trial, step = sparse_factorization(current, atoms_fraction, nonzeros, layers=[op.name])
                    if step.changes and within(trial, [Report("sf", [*report.changes, *step.changes])]):
                        current = trial
                        report.changes.extend(step.changes)
                        break
                else:
                    report.notes.append(f"{op.name}: no sparse setting within the budget; left whole")
        outcome.network = current
        outcome.reports.append(report)
    lossy = [r for r in outcome.reports if r.optimizer in ("wf", "sf", "cs", "ps")
             and r.optimizer not in unusable]
    if lossy and not any(r.changes for r in lossy) and not [n for n in optimizers if n == "pc"]:
        judged = "measured on " + data.source if data is not None else "estimated"
        raise ModelError(f"no setting of {', '.join(r.optimizer for r in lossy)} keeps the accuracy loss "
                         f"within --max-accuracy-loss {max_accuracy_loss:g} ({judged}); raise the budget or "
                         "add other optimisers")
    outcome.estimated_loss = estimate_loss(outcome.network, outcome.reports)
    if data is not None:
        outcome.accuracy = outcome.network.accuracy(data.x, data.y)
    return outcome
