"""Measured per-layer latencies that override the analytic cost model.

A user who timed each layer on a device (the way Neurosurgeon profiles one)
supplies rows of ``layer, processor, latency_s[, power_w]`` as CSV (with that
header) or JSON (a list of objects with those keys).  Names are checked
against the layer graph and the platform when the profile is loaded.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

from deepx_sim.errors import ProfileError, closest_names
from deepx_sim.platform import Platform


@dataclass(frozen=True)
class ProfileEntry:
    latency_s: float
    power_w: float | None = None


Profile = dict[tuple[str, str], ProfileEntry]

REQUIRED = ("layer", "processor", "latency_s")
OPTIONAL = ("power_w",)


def _number(path: Path, row_label: str, field: str, value: object, *, required: bool) -> float | None:
    if value is None or value == "":
        if required:
            raise ProfileError(f"{path}: {row_label}.{field} is required")
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ProfileError(f"{path}: {row_label}.{field} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise ProfileError(f"{path}: {row_label}.{field} must be > 0, got {value!r}")
    return number


def load_profile(path: str | Path, graph: nx.DiGraph, platform: Platform) -> Profile:
    """Read and validate a profile file; raises ProfileError naming row and field."""
    path = Path(path)
    if not path.is_file():
        raise ProfileError(f"{path}: no such profile file")
    rows: list[dict[str, object]]
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
            reader = csv.DictReader(handle)
            missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise ProfileError(f"{path}: header must have columns {', '.join(REQUIRED)} "
                                   f"(power_w optional); missing {missing}")
            rows = list(reader)
        label = "row {}"
    else:
        raise ProfileError(f"{path}: profile must be .csv or .json, got {path.suffix!r}")

    processors = [p.name for p in platform.processors]
    profile: Profile = {}
    for i, row in enumerate(rows):
        row_label = label.format(i + 2 if label.startswith("row") else i)
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
        if (layer, processor) in profile:
            raise ProfileError(f"{path}: {row_label} repeats layer {layer!r} on {processor!r}")
        profile[(layer, processor)] = ProfileEntry(latency_s=latency, power_w=power)  # type: ignore[arg-type]
    return profile
