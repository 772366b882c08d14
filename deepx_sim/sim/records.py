"""One record per simulated request: its fields are the records table's columns.

:class:`RequestRecord` is the only place the columns are spelled.  The engine
makes one per request, :func:`records_frame` turns a list into the DataFrame
(``energy_by_processor_j`` becomes one ``energy_<processor>_j`` column per
local processor), and :func:`summarize` computes a run's headline numbers
from the records.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """What happened to one request; times in seconds from the start of the run."""

    request: int
    arrival_s: float
    start_s: float  # the first step began (after any queueing)
    finish_s: float
    latency_s: float  # finish - arrival
    wait_s: float  # time spent queued for processors and the radio
    deadline_s: float
    deadline_met: bool
    miss_reason: str  # empty when the deadline was met
    energy_j: float  # device energy charged to this request (processors + radio)
    energy_by_processor_j: Mapping[str, float]  # columns energy_<processor>_j
    energy_radio_j: float
    radio_promotion_j: float
    radio_transfer_j: float
    radio_tail_j: float  # tail and connected waiting charged to this request
    radio_state: str  # what the request found: idle, promoting or connected
    expected_gap_s: float | None  # the gap to the next arrival the policy planned for
    plan_id: str
    planner: str
    processors_used: str
    fallback_plan_id: str
    fallback: bool
    bytes_sent: int
    bytes_received: int
    replan_time_s: float
    predicted_latency_s: float
    predicted_energy_j: float
    accuracy_loss: float
    accuracy_source: str  # where the accuracy figure comes from: measured curves or the spectral estimate
    estimated_uplink_mbps: float | None
    true_uplink_mbps: float
    note: str


COLUMNS = tuple(f.name for f in fields(RequestRecord))


def records_frame(records: Sequence[RequestRecord], processors: Sequence[str] = ()) -> pd.DataFrame:
    """The records as a DataFrame, one column per field, column by column (fast).

    ``processors`` fixes the per-processor energy columns (needed when there
    are no records); by default they come from the first record."""
    if not processors and records:
        processors = list(records[0].energy_by_processor_j)
    data: dict[str, Any] = {}
    for name in COLUMNS:
        if name == "energy_by_processor_j":
            for proc in processors:
                data[f"energy_{proc}_j"] = [r.energy_by_processor_j.get(proc, 0.0) for r in records]
        else:
            data[name] = [getattr(r, name) for r in records]
    return pd.DataFrame(data)


def summarize(records: Sequence[RequestRecord], run_energy_j: Mapping[str, float], horizon_s: float,
              drain_pct_per_h: Callable[[float], float]) -> dict[str, Any]:
    """A run's headline numbers: latency percentiles, energy, misses, battery drain
    (``drain_pct_per_h``: share of the battery a steady power in W uses per hour)."""
    n = len(records)
    total_j = sum(run_energy_j.values())
    mean_power_w = total_j / horizon_s if horizon_s > 0 else 0.0
    inference_j = float(sum(r.energy_j for r in records))
    lat = np.array([r.latency_s for r in records], dtype=float)
    nan = math.nan

    def share(flags: list[bool]) -> float:
        return float(np.mean(flags)) if n else nan

    def quantile(q: float) -> float:
        return float(np.quantile(lat, q)) if n else nan

    return {
        "requests": n,
        "latency_p50_s": quantile(0.50),
        "latency_p95_s": quantile(0.95),
        "latency_p99_s": quantile(0.99),
        "latency_mean_s": float(lat.mean()) if n else nan,
        "energy_mean_j": inference_j / n if n else nan,
        "deadline_miss_rate": share([not r.deadline_met for r in records]),
        "fallback_rate": share([r.fallback for r in records]),
        "offload_rate": share([r.bytes_sent > 0 for r in records]),  # sent anything to the cloud
        "accuracy_loss_mean": float(np.mean([r.accuracy_loss for r in records])) if n else nan,
        "distinct_plans": len({r.plan_id for r in records}),
        "horizon_s": horizon_s,
        "inference_energy_j": inference_j,
        "run_energy_j": total_j,
        "mean_power_w": mean_power_w,
        "battery_drain_pct_per_h": drain_pct_per_h(mean_power_w),
        "inference_drain_pct_per_h": drain_pct_per_h(inference_j / horizon_s if horizon_s else 0.0),
    }
