"""Measured per-layer latencies that override the analytic cost model.

A user who timed each layer on a device (the way Neurosurgeon profiles one)
supplies rows of ``layer, processor, latency_s[, power_w]`` as CSV (with that
header) or JSON (a list of objects with those keys).  Names are checked
against the layer graph and the platform when the profile is loaded.

``deepx-sim profile`` adds optional columns: ``kernel_s`` (the kernel alone),
``spread_s`` (interquartile range over the timed runs) and ``group`` (layers the
runtime fused into one kernel share a group; their joint time was split between
them).  CSV lines starting with ``#`` before the header carry ``key: value``
metadata: model, host, CPU, threads, load, end-to-end time (see
:func:`read_profile_meta`).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx

from deepx_sim.config import read_text, text_lines
from deepx_sim.errors import ProfileError, closest_names
from deepx_sim.platform import Platform


@dataclass(frozen=True)
class ProfileEntry:
    latency_s: float
    power_w: float | None = None
    kernel_s: float | None = None
    spread_s: float | None = None
    group: str = ""


Profile = dict[tuple[str, str], ProfileEntry]

REQUIRED = ("layer", "processor", "latency_s")
OPTIONAL = ("power_w", "kernel_s", "spread_s", "group")
COMMENT = "#"
#: Largest latency (s) or power (W) a row may give: far beyond any layer, and small
#: enough that sums over a model stay finite.
MAX_MEASURED = 1e6


def _number(path: Path, row_label: str, field: str, value: object, *, required: bool,
            zero_ok: bool = False) -> float | None:
    if value is None or value == "":
        if required:
            raise ProfileError(f"{path}: {row_label}.{field} is required")
        return None
    try:
        number = math.nan if isinstance(value, bool) else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    low = number < 0 if zero_ok else number <= 0
    rule = ("must be a number" if math.isnan(number) else f"must be {'>=' if zero_ok else '>'} 0" if low
            else f"must be <= {MAX_MEASURED:g}" if not number <= MAX_MEASURED else "")
    if rule:
        raise ProfileError(f"{path}: {row_label}.{field} {rule}, got {value!r}")
    return number


def _rows(path: Path) -> tuple[Iterable[dict[Any, Any]], str]:
    """The profile's rows (CSV rows are streamed) and how to label one in messages."""
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(read_text(path, ProfileError))
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ProfileError(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ProfileError(f"{path}: must be a JSON list of objects with keys "
                               f"{', '.join(REQUIRED + OPTIONAL)}")
        return data, "[{}]"
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(line for line in text_lines(path, ProfileError)
                                if not line.startswith(COMMENT))
        try:
            header = reader.fieldnames or []
        except csv.Error as exc:
            raise ProfileError(f"{path}: not valid CSV: {exc}") from None
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise ProfileError(f"{path}: header must have columns {', '.join(REQUIRED)} "
                               f"(optional: {', '.join(OPTIONAL)}); missing {missing}")
        return reader, "row {}"
    raise ProfileError(f"{path}: profile must be .csv or .json, got {path.suffix!r}")


def _entry(path: Path, row_label: str, row: dict[Any, Any], graph: nx.DiGraph,
           platform: Platform, zero_ok: bool) -> tuple[tuple[str, str], ProfileEntry]:
    extra = sorted(str(k) for k in set(row) - set(REQUIRED) - set(OPTIONAL))
    if extra:
        raise ProfileError(f"{path}: {row_label} has unknown fields {extra}; "
                           f"allowed: {', '.join(REQUIRED + OPTIONAL)}")
    layer = str(row.get("layer", "")).strip()
    processor = str(row.get("processor", "")).strip()
    if layer not in graph:
        raise ProfileError(f"{path}: {row_label}.layer {layer!r} is not a layer of model "
                           f"{graph.graph.get('name')!r}: "
                           f"{closest_names(layer, list(graph.nodes))}")
    processors = [p.name for p in platform.processors]
    if processor not in processors:
        raise ProfileError(f"{path}: {row_label}.processor {processor!r} is not on platform "
                           f"{platform.name!r}: {closest_names(processor, processors)}")
    latency = _number(path, row_label, "latency_s", row.get("latency_s"), required=True,
                      zero_ok=zero_ok)
    power = _number(path, row_label, "power_w", row.get("power_w"), required=False)
    kernel = _number(path, row_label, "kernel_s", row.get("kernel_s"), required=False, zero_ok=True)
    spread = _number(path, row_label, "spread_s", row.get("spread_s"), required=False, zero_ok=True)
    return (layer, processor), ProfileEntry(  # type: ignore[arg-type]
        latency_s=latency, power_w=power, kernel_s=kernel, spread_s=spread,
        group=str(row.get("group") or "").strip())


def load_profile(path: str | Path, graph: nx.DiGraph, platform: Platform, *,
                 zero_latency_ok: bool = True) -> Profile:
    """Read and validate a profile file; raises ProfileError naming row and field.

    A latency of 0 is valid (views and inputs take no time) unless ``zero_latency_ok``
    is False (calibration fits log times)."""
    path = Path(path)
    if not path.is_file():
        raise ProfileError(f"{path}: no such profile file")
    rows, label = _rows(path)
    skipped = len(read_profile_meta(path))  # metadata lines above a CSV header
    profile: Profile = {}
    try:
        for i, row in enumerate(rows):
            row_label = label.format(i + 2 + skipped if label.startswith("row") else i)
            key, entry = _entry(path, row_label, row, graph, platform, zero_latency_ok)
            if key in profile:  # (so a file holds at most one row per pair: memory stays bounded)
                raise ProfileError(f"{path}: {row_label} repeats layer {key[0]!r} on {key[1]!r}")
            profile[key] = entry
    except csv.Error as exc:
        raise ProfileError(f"{path}: not valid CSV: {exc}") from None
    if not profile:
        raise ProfileError(f"{path}: the profile has no rows; give one per (layer, processor) measured")
    return profile


def read_profile_meta(path: str | Path) -> dict[str, str]:
    """The ``# key: value`` lines at the top of a CSV profile (empty for JSON or none)."""
    path = Path(path)
    meta: dict[str, str] = {}
    if path.suffix.lower() != ".csv":
        return meta
    for line in text_lines(path, ProfileError):
        if not line.startswith(COMMENT):
            break
        key, _, value = line[len(COMMENT):].partition(":")
        meta[key.strip()] = value.strip()
    return meta


def save_profile(path: str | Path, profile: Profile, meta: Mapping[str, str] | None = None) -> Path:
    """Write ``profile`` as CSV, ``meta`` as ``# key: value`` lines above the header."""
    path = Path(path)
    if path.suffix.lower() != ".csv":
        raise ProfileError(f"{path}: a profile is written as .csv, got {path.suffix!r}")
    try:
        with path.open("w", newline="") as handle:
            for key, value in (meta or {}).items():
                handle.write(f"{COMMENT} {key}: {value}\n")
            writer = csv.writer(handle)
            writer.writerow(REQUIRED + OPTIONAL)
            for (layer, processor), e in profile.items():
                numbers = ("" if v is None else f"{v:.6g}" for v in (e.power_w, e.kernel_s, e.spread_s))
                writer.writerow([layer, processor, f"{e.latency_s:.6g}", *numbers, e.group])
    except OSError as exc:
        raise ProfileError(f"{path}: cannot write: {exc.strerror or exc}") from None
    return path
