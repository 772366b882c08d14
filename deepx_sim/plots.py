"""Matplotlib helpers shared by the CLI, the experiments and the notebooks."""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from deepx_sim.errors import DeepxError

_FILTER = re.compile(r"^\s*([\w.\-]+)\s*(==|!=|<=|>=|=|<|>)\s*(.+?)\s*$")


def _value(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text.strip("'\"")


def apply_filters(table: pd.DataFrame, expressions: list[str]) -> pd.DataFrame:
    """Keep rows matching every ``field OP value`` (OP one of = == != < <= > >=)."""
    ops = {"=": "__eq__", "==": "__eq__", "!=": "__ne__", "<": "__lt__", "<=": "__le__",
           ">": "__gt__", ">=": "__ge__"}
    for expr in expressions:
        match = _FILTER.match(expr)
        if not match:
            raise DeepxError(f"filter {expr!r}: write FIELD OP VALUE, OP one of = != < <= > >=")
        column, op, raw = match.groups()
        if column not in table.columns:
            raise DeepxError(f"filter {expr!r}: no column {column!r}; columns: {', '.join(table.columns)}")
        value = _value(raw)
        series = table[column]
        if isinstance(value, float) and not pd.api.types.is_numeric_dtype(series):
            value = raw.strip("'\"")
        table = table[getattr(series, ops[op])(value)]
    return table


def plot_metric(table: pd.DataFrame, x: str, y: str, hue: str | None = None, ax: Any = None,
                logx: bool = False) -> Any:
    """Mean of ``y`` against ``x`` (one line per ``hue`` value), with the spread
    (min to max over the other rows, e.g. repetitions) as a band."""
    import matplotlib.pyplot as plt

    for column in (x, y, hue):
        if column is not None and column not in table.columns:
            raise DeepxError(f"no column {column!r}; columns: {', '.join(table.columns)}")
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
