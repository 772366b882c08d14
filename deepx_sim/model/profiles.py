"""Measured per-layer latencies that override the analytic cost model.

A user who timed each layer on a device (the way Neurosurgeon profiles one)
supplies rows of ``layer, processor, latency_s[, power_w]`` as CSV (with that
header) or JSON (a list of objects with those keys).  Names are checked
against the layer graph and the platform when the profile is loaded.

``deepx-sim profile`` adds optional columns: ``kernel_s`` (the kernel alone,
without the executor's time between kernels), ``spread_s`` (interquartile range
over the timed runs) and ``group`` (layers the runtime fused into one kernel
share a group; their joint time was split between them).  CSV lines starting
with ``#`` before the header carry ``key: value`` metadata: model, host, CPU,
threads, load, end-to-end time (see :func:`read_profile_meta`).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

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


def _number(path: Path, row_label: str, field: str, value: object, *, required: bool,
            zero_ok: bool = False) -> float | None:
    if value is None or value == "":
        if required:
            raise ProfileError(f"{path}: {row_label}.{field} is required")
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ProfileError(f"{path}: {row_label}.{field} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0 or (number == 0 and not zero_ok):
        raise ProfileError(f"{path}: {row_label}.{field} must be {'>=' if zero_ok else '>'} 0, "
                           f"got {value!r}")
    return number


def load_profile(path: str | Path, graph: nx.DiGraph, platform: Platform) -> Profile:
    """Read and validate a profile file; raises ProfileError naming row and field."""
    path = Path(path)
    if not path.is_file():
        raise ProfileError(f"{path}: no such profile file")
    rows: list[dict[str, object]]
    skipped = 0  # metadata lines above a CSV header, for the row numbers in messages
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ProfileError(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ProfileError(f"{path}: must be a JSON list of objects with keys "
                               f"{', '.join(REQUIRED + OPTIONAL)}")
        rows = data
        label = "[{}]"
    elif path.suffix.lower() == ".csv":
        with path.open(newline="") as handle:
            lines = [line for line in handle if not line.startswith(COMMENT)]
            skipped = len(read_profile_meta(path))
            reader = csv.DictReader(lines)
            missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise ProfileError(f"{path}: header must have columns {', '.join(REQUIRED)} "
                                   f"(optional: {', '.join(OPTIONAL)}); missing {missing}")
            rows = list(reader)
        label = "row {}"
    else:
        raise ProfileError(f"{path}: profile must be .csv or .json, got {path.suffix!r}")

    processors = [p.name for p in platform.processors]
    profile: Profile = {}
    for i, row in enumerate(rows):
        row_label = label.format(i + 2 + skipped if label.startswith("row") else i)
        extra = set(row) - set(REQUIRED) - set(OPTIONAL)
        if extra:
            raise ProfileError(f"{path}: {row_label} has unknown fields {sorted(extra)}; "
                               f"allowed: {', '.join(REQUIRED + OPTIONAL)}")
        layer = str(row.get("layer", "")).strip()
        processor = str(row.get("processor", "")).strip()
        if layer not in graph:
            raise ProfileError(f"{path}: {row_label}.layer {layer!r} is not a layer of model "
                               f"{graph.graph.get('name')!r}: "
                               f"{closest_names(layer, list(graph.nodes))}")
        if processor not in processors:
            raise ProfileError(f"{path}: {row_label}.processor {processor!r} is not on platform "
                               f"{platform.name!r}: {closest_names(processor, processors)}")
        latency = _number(path, row_label, "latency_s", row.get("latency_s"), required=True)
        power = _number(path, row_label, "power_w", row.get("power_w"), required=False)
        kernel = _number(path, row_label, "kernel_s", row.get("kernel_s"), required=False, zero_ok=True)
        spread = _number(path, row_label, "spread_s", row.get("spread_s"), required=False, zero_ok=True)
        if (layer, processor) in profile:
            raise ProfileError(f"{path}: {row_label} repeats layer {layer!r} on {processor!r}")
        profile[(layer, processor)] = ProfileEntry(  # type: ignore[arg-type]
            latency_s=latency, power_w=power, kernel_s=kernel, spread_s=spread,
            group=str(row.get("group") or "").strip())
    return profile


def read_profile_meta(path: str | Path) -> dict[str, str]:
    """The ``# key: value`` lines at the top of a CSV profile (empty for JSON or none)."""
    path = Path(path)
    meta: dict[str, str] = {}
    if path.suffix.lower() != ".csv":
        return meta
    with path.open() as handle:
        for line in handle:
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
    with path.open("w", newline="") as handle:
        for key, value in (meta or {}).items():
            handle.write(f"{COMMENT} {key}: {value}\n")
        writer = csv.writer(handle)
        writer.writerow(REQUIRED + OPTIONAL)
        for (layer, processor), e in profile.items():
            writer.writerow([layer, processor, f"{e.latency_s:.6g}",
                             *("" if v is None else f"{v:.6g}" for v in (e.power_w, e.kernel_s, e.spread_s)),
                             e.group])
    return path
