"""Where a measured accuracy figure comes from, and what it measures.

Three sources, each named in every figure printed from it:

- ``labels``: inputs ``x`` with class labels ``y`` (``--data F.npz``); a change costs
  its *accuracy loss*, the original model's accuracy minus the changed one's;
- ``inputs``: unlabelled inputs (``--inputs F.npy``); a change costs its *fidelity
  loss*, 1 - top-1 agreement with the original model on those inputs;
- ``synthetic``: no data at all; inputs drawn i.i.d. from a standard normal
  distribution (one value per input element, seeded), and the same fidelity
  loss.  It is an estimate of fidelity on real inputs, and says so.

A budget is read in the unit of the source used.  :class:`Reference` holds the
original model's outputs on a source's inputs, against which every changed
model is scored (:meth:`Reference.score`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import networkx as nx
import numpy as np

from deepx_sim.errors import ModelError
from deepx_sim.model.execute import run
from deepx_sim.model.layers import LayerKind, layers_in_order

SourceKind = Literal["labels", "inputs", "synthetic"]

#: Synthetic inputs drawn when no data is given (rows, seed); a big model gets fewer
#: rows, so that one run over them costs at most RUN_MACS (never under MIN_SYNTHETIC_ROWS).
SYNTHETIC_ROWS = 768
SYNTHETIC_SEED = 0
RUN_MACS = 5e10
MIN_SYNTHETIC_ROWS = 64
#: Rows run through the model at once (bounds the executor's memory).
BATCH_ROWS = 1024

#: The unit a budget and a loss are read in, per source, and what it means.
UNITS = {"labels": "accuracy loss", "inputs": "fidelity loss", "synthetic": "estimated fidelity loss"}
MEANINGS = {
    "labels": "the original model's accuracy minus the changed model's, on labelled rows",
    "inputs": "1 - top-1 agreement with the original model, on unlabelled rows",
    "synthetic": "1 - top-1 agreement with the original model on synthetic inputs, an estimate of "
                 "fidelity on real inputs",
}


@dataclass(frozen=True)
class Source:
    """Inputs (and labels) a change is judged on; ``origin`` names the file or the draw."""

    kind: SourceKind
    x: np.ndarray
    y: np.ndarray | None
    origin: str
    part: str = ""  # which part of the origin this is ("70 % chosen on", ...)
    #: rows with the same group id are correlated (e.g. distortions of one image): splits keep
    #: a group whole, and standard errors are taken over groups
    groups: np.ndarray | None = None

    @property
    def unit(self) -> str:
        return UNITS[self.kind]

    @property
    def meaning(self) -> str:
        return MEANINGS[self.kind]

    @property
    def rows(self) -> int:
        return len(self.x)

    def describe(self) -> str:
        """E.g. ``data.npz, 378 labelled rows (the 70 % chosen on)``."""
        what = {"labels": "labelled rows", "inputs": "unlabelled rows", "synthetic": "synthetic rows"}
        part = f" ({self.part})" if self.part else ""
        return f"{self.origin}, {self.rows} {what[self.kind]}{part}"

    def split(self, held_share: float, seed: int = 0) -> tuple[Source, Source]:
        """(the part to choose on, the part held apart), rows (or whole groups, when there are
        groups) drawn by a seeded permutation."""
        if not 0 < held_share < 1:
            raise ModelError(f"held-apart share must be in (0, 1), got {held_share!r}")
        units, unit_of_row = (np.arange(self.rows), np.arange(self.rows)) if self.groups is None \
            else np.unique(self.groups, return_inverse=True)
        order = np.random.default_rng(seed).permutation(len(units))
        held = max(1, round(len(units) * held_share))
        if len(units) - held < 1:
            what = "rows" if self.groups is None else "groups"
            raise ModelError(f"{self.origin}: {len(units)} {what} cannot be split into a part to choose on "
                             f"and a part held apart; give at least 2 {what}")
        held_rows = np.isin(unit_of_row, order[:held])
        share = round(100 * (1 - held_share))
        return (self._take(np.flatnonzero(~held_rows), f"the {share} % chosen on"),
                self._take(np.flatnonzero(held_rows), f"the {100 - share} % held apart"))

    def _take(self, rows: np.ndarray, part: str) -> Source:
        rows = np.sort(rows)
        return replace(self, x=self.x[rows], y=None if self.y is None else self.y[rows], part=part,
                       groups=None if self.groups is None else self.groups[rows])


def mean_se(values: np.ndarray, groups: np.ndarray | None = None) -> float:
    """The standard error of ``values``' mean; with ``groups``, rows of one group taken as
    correlated: the cluster-robust (sandwich) estimate over groups, which is the ordinary
    one when every row is its own group."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float("nan")
    if groups is None:
        return float(values.std(ddof=1) / np.sqrt(len(values)))
    _, group = np.unique(groups, return_inverse=True)
    sums = np.bincount(group, weights=values - values.mean())
    g = len(sums)
    if g < 2:
        return float("nan")
    return float(np.sqrt((sums**2).sum() * g / (g - 1)) / len(values))


def input_shape(graph: nx.DiGraph) -> tuple[int, ...]:
    """The one input's shape after the batch axis (measurement takes one-input models)."""
    inputs = [lay for lay in layers_in_order(graph) if lay.kind == LayerKind.INPUT]
    if len(inputs) != 1:
        raise ModelError(
            f"model {graph.graph.get('name')!r}: accuracy measurement takes models with one input, "
            f"this has {[lay.name for lay in inputs]}"
        )
    return inputs[0].output_shape[1:]


def _array_file(path: Path, what: str) -> object:
    if not path.is_file():
        raise ModelError(f"{path}: no such {what} file")
    if path.stat().st_size == 0:
        raise ModelError(f"{path}: the file is empty; expected a NumPy {what} file")
    try:
        return np.load(path, allow_pickle=False)
    except Exception:  # numpy raises several types, with misleading texts, for a foreign file
        raise ModelError(f"{path}: not a NumPy .npy or .npz file; save one with numpy.save / numpy.savez") \
            from None


def checked_inputs(path: Path | str, x: np.ndarray, graph: nx.DiGraph) -> np.ndarray:
    """``x`` as float32 rows of the model's input shape, or a ModelError naming ``path``."""
    shape = input_shape(graph)
    expected = f"(N, {', '.join(map(str, shape))})"
    if x.dtype.kind not in "fiu":
        raise ModelError(f"{path}: x has dtype {x.dtype}; expected numbers (float32) of shape {expected}")
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        raise ModelError(f"{path}: x has shape {x.shape}; the model takes {expected}")
    if len(x) == 0:
        raise ModelError(f"{path}: x has no rows; expected at least 2 rows of shape {expected}")
    finite = np.isfinite(x)
    if not finite.all():
        rows = int((~finite.reshape(len(x), -1)).any(axis=1).sum())
        raise ModelError(f"{path}: x holds NaN or infinite values in {rows} of {len(x)} rows; "
                         "inputs must be finite")
    return x.astype(np.float32)


def load_labelled(path: str | Path, graph: nx.DiGraph) -> Source:
    """Labelled inputs from an ``.npz`` with arrays ``x`` (N, *input shape) and ``y`` (N,) ints,
    and optionally ``groups`` (N,) ints: rows sharing a source, kept on one side of a split."""
    path = Path(path)
    arrays = _array_file(path, "data (.npz)")
    if not isinstance(arrays, np.lib.npyio.NpzFile):
        raise ModelError(f"{path}: not a NumPy .npz archive; save one with numpy.savez(path, x=inputs, "
                         "y=labels)")
    missing = sorted({"x", "y"} - set(arrays.files))
    if missing:
        raise ModelError(f"{path}: missing array {missing[0]!r}; a data file holds x (inputs) and "
                         f"y (labels), found {sorted(arrays.files)}")
    x = checked_inputs(path, arrays["x"], graph)
    y = arrays["y"]
    if y.ndim != 1 or len(y) != len(x):
        raise ModelError(f"{path}: y has shape {y.shape}; expected ({len(x)},), one label per row of x")
    if not np.issubdtype(y.dtype, np.integer):
        raise ModelError(f"{path}: y must hold integer class labels, got dtype {y.dtype}")
    classes = output_classes(graph)
    if y.min() < 0 or y.max() >= classes:
        bad = int(y.min() if y.min() < 0 else y.max())
        raise ModelError(f"{path}: y holds class {bad}; the model has {classes} outputs "
                         f"(classes 0..{classes - 1})")
    return Source("labels", x, y.astype(np.int64), str(path), groups=_groups(path, arrays, len(x)))


def _groups(path: Path, arrays: np.lib.npyio.NpzFile, rows: int) -> np.ndarray | None:
    """The optional ``groups`` array: one integer per row naming its source (e.g. the image a
    distorted row was made from); compress then holds whole groups apart."""
    if "groups" not in arrays.files:
        return None
    groups = arrays["groups"]
    if groups.ndim != 1 or len(groups) != rows or not np.issubdtype(groups.dtype, np.integer):
        raise ModelError(f"{path}: groups has shape {groups.shape} and dtype {groups.dtype}; expected "
                         f"({rows},) integers, one source id per row of x")
    if len(np.unique(groups)) < 2:
        raise ModelError(f"{path}: groups names {len(np.unique(groups))} source; expected at least 2, "
                         "so that whole groups can be held apart")
    return groups.astype(np.int64)


def load_inputs(path: str | Path, graph: nx.DiGraph) -> Source:
    """Unlabelled inputs from an ``.npy`` array (or an ``.npz`` holding ``x``)."""
    path = Path(path)
    loaded = _array_file(path, "inputs (.npy)")
    if isinstance(loaded, np.lib.npyio.NpzFile):
        if "x" not in loaded.files:
            raise ModelError(f"{path}: an inputs archive must hold an array 'x', "
                             f"found {sorted(loaded.files)}")
        loaded = loaded["x"]
    return Source("inputs", checked_inputs(path, np.asarray(loaded), graph), None, str(path))


def synthetic_rows(graph: nx.DiGraph) -> int:
    """How many synthetic rows the model gets: SYNTHETIC_ROWS, fewer for a big model."""
    per_row = sum(lay.macs / max(1, lay.output_shape[0]) for lay in layers_in_order(graph))
    return int(min(SYNTHETIC_ROWS, max(MIN_SYNTHETIC_ROWS, RUN_MACS // max(per_row, 1.0))))


def synthetic(graph: nx.DiGraph, rows: int | None = None, seed: int = SYNTHETIC_SEED) -> Source:
    """``rows`` inputs (default :func:`synthetic_rows`) drawn i.i.d. from N(0, 1), one value
    per input element (seeded)."""
    rows = synthetic_rows(graph) if rows is None else rows
    x = np.random.default_rng(seed).standard_normal((rows, *input_shape(graph))).astype(np.float32)
    return Source("synthetic", x, None, f"synthetic inputs (i.i.d. N(0, 1) per element, seed {seed})")


def output_classes(graph: nx.DiGraph) -> int:
    """Values per row of the model's output (classes of a classifier)."""
    last = layers_in_order(graph)[-1]
    return int(np.prod(last.output_shape[1:]))


def outputs(graph: nx.DiGraph, x: np.ndarray) -> np.ndarray:
    """The model's outputs on ``x`` as (N, values) float32, run in batches."""
    parts = [run(graph, x[i : i + BATCH_ROWS]) for i in range(0, len(x), BATCH_ROWS)]
    return np.concatenate([p.reshape(len(p), -1) for p in parts])


@dataclass(frozen=True)
class Score:
    """How a changed model compares with the original on one source."""

    loss: float  # in the source's unit
    agreement: float  # share of rows with the original's top-1 class
    output_error: float  # ||out - out_original||_F / ||out_original||_F
    accuracy: float | None  # with labels only


@dataclass(frozen=True)
class Reference:
    """The original model's outputs on a source: what changed models are scored against."""

    source: Source
    outputs: np.ndarray
    top1: np.ndarray
    accuracy: float | None

    def score(self, changed: np.ndarray) -> Score:
        """Score the changed model's outputs (N, ...) on the same rows."""
        changed = changed.reshape(len(changed), -1)
        top1 = changed.argmax(axis=1)
        agreement = float((top1 == self.top1).mean())
        norm = float(np.linalg.norm(self.outputs))
        error = float(np.linalg.norm(changed - self.outputs)) / norm if norm else 0.0
        if self.source.y is None:
            return Score(1.0 - agreement, agreement, error, None)
        accuracy = float((top1 == self.source.y).mean())
        assert self.accuracy is not None
        return Score(self.accuracy - accuracy, agreement, error, accuracy)

    def score_model(self, graph: nx.DiGraph) -> Score:
        return self.score(outputs(graph, self.source.x))


def reference(graph: nx.DiGraph, source: Source) -> Reference:
    out = outputs(graph, source.x)
    top1 = out.argmax(axis=1)
    acc = None if source.y is None else float((top1 == source.y).mean())
    return Reference(source, out, top1, acc)
