"""Matplotlib helpers shared by the CLI, the experiments and the notebooks."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from deepx_sim.errors import DeepxError
from deepx_sim.results import atomic_path, check_output_path

_FILTER = re.compile(r"^\s*([\w.\-]+)\s*(==|!=|<=|>=|=|<|>)\s*(.+?)\s*$")
_OPS = {"=": "__eq__", "==": "__eq__", "!=": "__ne__", "<": "__lt__", "<=": "__le__",
        ">": "__gt__", ">=": "__ge__"}


def _columns(table: pd.DataFrame, numeric: bool | None = None) -> str:
    names = [c for c in table.columns
             if numeric is None or numeric == _is_number_column(table[c])]
    return ", ".join(map(str, names)) or "none"


def _is_number_column(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _filter_value(expr: str, series: pd.Series, raw: str) -> Any:
    """``raw`` as the column's kind of value: a number, true/false, or text."""
    text = raw.strip("'\"")
    if pd.api.types.is_bool_dtype(series):
        if text.lower() not in ("true", "false"):
            raise DeepxError(f"filter {expr!r}: {series.name} holds true/false, got {raw!r}")
        return text.lower() == "true"
    if _is_number_column(series):
        try:
            return float(text)
        except ValueError:
            raise DeepxError(f"filter {expr!r}: {series.name} holds numbers; compare it with a "
                             f"number, got {raw!r}") from None
    return text


def apply_filters(table: pd.DataFrame, expressions: list[str]) -> pd.DataFrame:
    """Keep rows matching every ``field OP value`` (OP one of = == != < <= > >=).

    A number column compares with numbers, a text column with text (and with
    ``<``/``>`` in text order); raises DeepxError naming the filter otherwise."""
    for expr in expressions:
        match = _FILTER.match(expr)
        if not match:
            raise DeepxError(f"filter {expr!r}: write FIELD OP VALUE, OP one of = != < <= > >=")
        column, op, raw = match.groups()
        if column not in table.columns:
            raise DeepxError(f"filter {expr!r}: no column {column!r}; columns: {_columns(table)}")
        series = table[column]
        value = _filter_value(expr, series, raw)
        if isinstance(value, str):
            series = series.astype(str)  # mixed values (e.g. a grid of 1 and "a") compare as text
        table = table[getattr(series, _OPS[op])(value)]
    return table


def figure_formats() -> list[str]:
    """The file suffixes matplotlib can write (png, pdf, svg, ...)."""
    from matplotlib.figure import Figure

    return sorted(Figure().canvas.get_supported_filetypes())


def check_figure_path(path: str | Path, label: str = "output") -> Path:
    """Fail before any work on a figure name we cannot write: a suffix matplotlib
    does not know, or a place we cannot write to (see check_output_path)."""
    path = check_output_path(path, "file", label)
    formats = figure_formats()
    if path.suffix.lstrip(".").lower() not in formats:
        raise DeepxError(f"{label} {path}: unknown image format {path.suffix or '(no suffix)'!r}; "
                         f"end the name in one of: {', '.join('.' + f for f in formats)}")
    return path


def save_figure(figure: Any, path: str | Path, dpi: int = 120) -> Path:
    """Write ``figure`` atomically, in the format its suffix names."""
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".").lower())
    return path


def plot_metric(table: pd.DataFrame, x: str, y: str, hue: str | None = None, ax: Any = None,
                logx: bool = False) -> Any:
    """Mean of ``y`` against ``x`` (one line per ``hue`` value), with the spread
    (min to max over the other rows, e.g. repetitions) as a band.  Raises
    DeepxError for a missing column or a ``y`` that does not hold numbers."""
    import matplotlib.pyplot as plt

    for column in (x, y, hue):
        if column is not None and column not in table.columns:
            raise DeepxError(f"no column {column!r}; columns: {_columns(table)}")
    if not _is_number_column(table[y]):
        raise DeepxError(f"y column {y!r} holds text, not numbers; numeric columns: "
                         f"{_columns(table, numeric=True)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    groups = table.groupby(hue, sort=True) if hue else [(None, table)]
    for label, group in groups:
        stats = group.groupby(x)[y].agg(["mean", "min", "max"]).sort_index()
        line = ax.plot(stats.index, stats["mean"], marker="o", label=str(label) if hue else None)[0]
        ax.fill_between(stats.index, stats["min"], stats["max"], alpha=0.15, color=line.get_color())
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if logx:
        ax.set_xscale("log")
    if hue:
        ax.legend(title=hue)
    ax.grid(alpha=0.3)
    return ax
