"""Conditions over time: bandwidth and load traces, generators and link outages.

A :class:`StepTrace` is a piecewise-constant value (Mbps of a link, free
fraction of a processor) that either holds its last value forever or repeats
with a period (Mahimahi traces repeat).  Work that spans a change is computed
piecewise by :meth:`StepTrace.finish_time`: the time at which the integral of
the value from a start reaches an amount (megabits at a rate in Mbps, busy
seconds at a free fraction).

Readers: CSV ``time_s,<value>`` files and Mahimahi packet-delivery files
(one line per 1500-byte delivery opportunity, timestamps in ms).  Generators:
a two-state good/bad Markov channel and a bounded random walk, both seeded.
"""

from __future__ import annotations

import array
import bisect
import csv
import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepx_sim.config import (
    MAX_OUTAGES,
    MAX_REQUESTS_PER_RUN,
    MAX_TRACE_SEGMENTS,
    check_value,
    count_within,
    finite_range,
    text_lines,
)
from deepx_sim.errors import ScenarioError

#: Mahimahi delivers one MTU-sized packet per line (Winstein et al., NSDI 2013, trace README).
MAHIMAHI_PACKET_BYTES = 1500
#: Mahimahi timestamps above this (ms, about 285,000 years) do not fit a float exactly.
_MAX_STAMP_MS = 2**53
#: Mahimahi timestamps are whole milliseconds: a finer bin holds nothing new.
MahimahiBin = finite_range(ge=0.001, le=1e9)


def _first_bad(mask: np.ndarray) -> int | None:
    bad = np.flatnonzero(mask)
    return int(bad[0]) if bad.size else None


@dataclass(frozen=True, eq=False)
class StepTrace:
    """``values[i]`` holds on ``[times_s[i], times_s[i + 1])``.

    After the last change the last value holds forever, unless ``period_s`` is
    set: then the trace repeats every ``period_s`` seconds.  Times and values are
    read-only numpy arrays (8 bytes a number), at most
    :data:`~deepx_sim.config.MAX_TRACE_SEGMENTS` of them.
    """

    times_s: np.ndarray
    values: np.ndarray
    period_s: float | None = None
    name: str = "trace"

    def __post_init__(self) -> None:
        times = np.array(self.times_s, dtype=float).reshape(-1)
        values = np.array(self.values, dtype=float).reshape(-1)
        if not times.size or times.size != values.size:
            raise ScenarioError(f"{self.name}: needs as many times as values, at least one; got "
                                f"{times.size} times and {values.size} values")
        count_within(f"{self.name}: segments", times.size, MAX_TRACE_SEGMENTS,
                     "use coarser steps or a shorter trace", ScenarioError)
        if times[0] != 0:
            raise ScenarioError(f"{self.name}: must start at time 0, got {float(times[0])!r}")
        i = _first_bad(~(np.diff(times) > 0) | ~np.isfinite(times[1:]))
        if i is not None:
            raise ScenarioError(f"{self.name}: times must increase and be finite, got "
                                f"{float(times[i])!r} then {float(times[i + 1])!r}")
        i = _first_bad(~((values >= 0) & np.isfinite(values)))
        if i is not None:
            raise ScenarioError(f"{self.name}: values must be finite and >= 0, got {float(values[i])!r}")
        period = self.period_s
        if period is not None and not (period > times[-1] and math.isfinite(period)):
            raise ScenarioError(f"{self.name}: period_s must be finite and > the last time "
                                f"{float(times[-1])!r}, got {period!r}")
        ends = np.append(times[1:], period if period is not None else math.inf)
        with np.errstate(invalid="ignore", over="ignore"):  # (a zero value over an endless last
            parts = np.where(values > 0, values * (ends - times), 0.0)  # segment adds nothing)
        cum = np.concatenate(([0.0], np.cumsum(parts[:-1])))  # integral at times_s[i]
        per_period = cum[-1] + parts[-1]  # (inf without a period: the last value holds forever)
        if not math.isfinite(cum[-1]) or (period is not None and not math.isfinite(per_period)):
            raise ScenarioError(f"{self.name}: values too large: their integral overflows")
        if period is not None and not per_period > 0:
            raise ScenarioError(f"{self.name}: a repeating trace must have some value > 0")
        # Stored once, as C doubles: array.array for the lookups (bisect reads it as fast
        # as a list), with read-only numpy views on the same memory as the public fields.
        for key, arr in (("times_s", times), ("values", values), ("_cum", cum), ("_cum_end", cum + parts)):
            store = array.array("d", arr.tobytes())
            view = np.frombuffer(store)
            view.flags.writeable = False
            object.__setattr__(self, key, view)
            object.__setattr__(self, "_" + key.strip("_"), store)
        object.__setattr__(self, "_first", float(values[0]) if values.size == 1 else None)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StepTrace):
            return NotImplemented
        return (self.period_s == other.period_s and self.name == other.name
                and np.array_equal(self.times_s, other.times_s) and np.array_equal(self.values, other.values))

    __hash__ = None  # type: ignore[assignment]  # (equal by content, and mutable-array backed)

    @classmethod
    def constant(cls, value: float, name: str = "constant") -> StepTrace:
        return cls((0.0,), (float(value),), name=name)

    def _fold(self, t: float) -> tuple[int, float]:
        """(whole periods before t, t within its period)."""
        if self.period_s is None:
            return 0, t
        k = math.floor(t / self.period_s)
        return k, t - k * self.period_s

    def _segment(self, local: float) -> int:
        return bisect.bisect_right(self._times_s, local) - 1  # type: ignore[attr-defined]

    def value_at(self, t: float) -> float:
        if self._first is not None:  # type: ignore[attr-defined]
            return self._first  # type: ignore[attr-defined]
        return self._values[self._segment(self._fold(t)[1])]  # type: ignore[attr-defined]

    def integral_to(self, t: float) -> float:
        """Integral of the value over [0, t]."""
        k, local = self._fold(t)
        i = self._segment(local)
        times, values, cum = self._times_s, self._values, self._cum  # type: ignore[attr-defined]
        within = cum[i] + values[i] * (local - times[i])
        return within + (k * self._cum_end[-1] if k else 0.0)  # type: ignore[attr-defined]

    def mean(self, start: float, end: float) -> float:
        if end <= start:
            return self.value_at(start)
        return (self.integral_to(end) - self.integral_to(start)) / (end - start)

    def finish_time(self, start: float, amount: float) -> float:
        """Earliest time t >= start with integral over [start, t] equal to ``amount``;
        ``inf`` if the trace never delivers it (a value of 0 forever)."""
        if amount <= 0:
            return start
        if self._first is not None:  # type: ignore[attr-defined]
            v = self._first  # type: ignore[attr-defined]
            return start + amount / v if v > 0 else math.inf
        times, values = self._times_s, self._values  # type: ignore[attr-defined]
        cum, cum_end = self._cum, self._cum_end  # type: ignore[attr-defined]
        target = self.integral_to(start) + amount
        if self.period_s is None:
            i = bisect.bisect_left(cum_end, target)
            if i == len(values):  # the trace ends at 0 before delivering it
                return math.inf
            return times[i] + (target - cum[i]) / values[i]
        per_period = cum_end[-1]
        k = math.ceil(target / per_period) - 1
        rest = target - k * per_period
        i = min(bisect.bisect_left(cum_end, rest), len(values) - 1)
        while values[i] <= 0:  # only reachable through rounding at a boundary
            i -= 1
        return k * self.period_s + times[i] + (rest - cum[i]) / values[i]


# ----------------------------------------------------------------- readers
def _csv_rows(path: Path, needed: Sequence[str]) -> csv.DictReader:
    """A CSV reader over a streamed UTF-8 file whose header must hold ``needed``."""
    reader = csv.DictReader(text_lines(path, ScenarioError))
    try:
        header = reader.fieldnames or []
    except csv.Error as exc:
        raise ScenarioError(f"{path}: not a valid CSV header: {exc}") from None
    for column in needed:
        if column not in header:
            raise ScenarioError(f"{path}: needs a column {column!r}; the header has {header}")
    return reader


def _csv_number(path: Path, line: int, row: dict[str, str | None], column: str) -> float:
    try:
        value = float(row[column])  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = math.nan
    if not (value >= 0 and math.isfinite(value)):
        raise ScenarioError(f"{path}:{line}: {column} must be a finite number >= 0, got {row[column]!r}")
    return value


def _numeric_rows(path: Path, columns: tuple[str, ...], limit: int,
                  what: str) -> Iterator[tuple[int, list[float]]]:
    """(line number, the columns' values) of each row of a CSV file, streamed; every
    value a finite number >= 0, at most ``limit`` rows and at least one."""
    reader = _csv_rows(path, columns)
    count = 0
    try:
        for row in reader:
            count = count_within(f"{path}: rows", count + 1, limit, f"use a shorter {what}", ScenarioError)
            yield reader.line_num, [_csv_number(path, reader.line_num, row, c) for c in columns]
    except csv.Error as exc:
        raise ScenarioError(f"{path}:{reader.line_num}: not valid CSV: {exc}") from None
    if not count:
        raise ScenarioError(f"{path}: the {what} has a header but no rows")


def read_csv_trace(path: Path, value_column: str, *, repeat: bool = False) -> StepTrace:
    """A CSV with a header holding ``time_s`` and ``value_column`` (other columns ignored).

    Raises ScenarioError naming the file, line and value on malformed rows."""
    times, values = array.array("d"), array.array("d")
    for line, (t, v) in _numeric_rows(path, ("time_s", value_column), MAX_TRACE_SEGMENTS, "trace"):
        if times and not t > times[-1]:
            raise ScenarioError(f"{path}:{line}: time_s must increase, got {t} after {times[-1]}")
        times.append(t)
        values.append(v)
    times[0] = 0.0  # the first value holds from time 0
    period = None
    if repeat:
        step = times[-1] - times[-2] if len(times) > 1 else 1.0
        period = times[-1] + step
    return StepTrace(np.frombuffer(times), np.frombuffer(values), period, name=str(path))


def read_timestamps(path: Path, end_s: float = math.inf) -> list[float]:
    """Request arrival times from a CSV with a ``time_s`` column: seconds in
    ``[0, end_s)``, in order (equal times are simultaneous arrivals)."""
    out: list[float] = []
    for line, (t,) in _numeric_rows(path, ("time_s",), MAX_REQUESTS_PER_RUN, "arrivals file"):
        if out and t < out[-1]:
            raise ScenarioError(f"{path}:{line}: time_s must not decrease, got {t:g} after {out[-1]:g}")
        if t >= end_s:
            raise ScenarioError(f"{path}:{line}: time_s {t:g} is past the run's end "
                                f"(duration_s {end_s:g}); arrivals must lie in [0, duration_s)")
        out.append(t)
    return out


def _mahimahi_bins(path: Path, bin_ms: float) -> tuple[array.array, array.array, int]:
    """(non-empty bin indices, packets in each, last timestamp in ms), streamed."""
    bins, counts, last = array.array("q"), array.array("q"), -1
    for line_no, line in enumerate(text_lines(path, ScenarioError), start=1):
        line = line.strip()
        if not line:
            continue
        try:
            stamp = int(line)
        except ValueError:
            raise ScenarioError(f"{path}:{line_no}: a Mahimahi line is one integer timestamp in ms, "
                                f"got {line[:40]!r}") from None
        if not last <= stamp <= _MAX_STAMP_MS:
            raise ScenarioError(f"{path}:{line_no}: timestamps must be in [0, 2**53] ms and must not "
                                f"decrease, got {stamp} after {last if last >= 0 else 'start'}")
        last = stamp
        index = int(stamp // bin_ms)
        if bins and bins[-1] == index:
            counts[-1] += 1
            continue
        bins.append(index)
        counts.append(1)
        count_within(f"{path}: non-empty bins of {bin_ms / 1000:g} s", 2 * len(bins), MAX_TRACE_SEGMENTS,
                     "raise bin_s or use a shorter trace", ScenarioError)
    if last < 0:
        raise ScenarioError(f"{path}: the trace has no timestamps")
    return bins, counts, last


def read_mahimahi(path: Path, bin_s: float = 1.0) -> StepTrace:
    """Mbps per ``bin_s`` bin of a Mahimahi trace; it repeats, as mm-link replays it.

    Only non-empty bins and the gaps between them become segments, so memory
    follows the file's length, not its time span over ``bin_s``."""
    check_value(MahimahiBin, bin_s, f"{path}: bin_s", ScenarioError)
    bin_ms = bin_s * 1000.0
    bins, counts, last = _mahimahi_bins(path, bin_ms)
    n_bins = max(1, math.ceil((last + 1) / bin_ms))
    times, values = array.array("d"), array.array("d")
    if bins[0] > 0:
        times.append(0.0)
        values.append(0.0)
    for j, (index, count) in enumerate(zip(bins, counts, strict=True)):
        times.append(float(index * bin_s))
        values.append(count * MAHIMAHI_PACKET_BYTES * 8 / bin_s / 1e6)
        following = bins[j + 1] if j + 1 < len(bins) else n_bins
        if following > index + 1:  # empty bins until the next packet (or the period's end)
            times.append(float((index + 1) * bin_s))
            values.append(0.0)
    return StepTrace(np.frombuffer(times), np.frombuffer(values), period_s=n_bins * bin_s, name=str(path))


# ----------------------------------------------------------------- generators
def markov_two_state(rng: np.random.Generator, duration_s: float, good: float, bad: float,
                     mean_good_s: float, mean_bad_s: float, name: str = "markov") -> StepTrace:
    """Gilbert-Elliott style channel: exponential sojourns in a good and a bad
    state, starting in the good one; the state at ``duration_s`` holds after.

    Sojourns are drawn in chunks; a run expected to need more than
    :data:`~deepx_sim.config.MAX_TRACE_SEGMENTS` changes is refused up front."""
    advice = "raise mean_good_s and mean_bad_s or shorten duration_s"
    count_within(f"{name}: state changes", 2 * duration_s / (mean_good_s + mean_bad_s), MAX_TRACE_SEGMENTS,
                 advice, ScenarioError)
    starts, t = [np.zeros(1)], 0.0
    chunk = np.tile([mean_good_s, mean_bad_s], 2048)
    total = 1
    while t < duration_s:
        # sequential sums from t, so the times equal those of one-at-a-time draws
        more = np.cumsum(np.concatenate(([t], rng.exponential(chunk))))[1:]
        keep = more[more < duration_s]
        starts.append(keep)
        total += keep.size
        t = float(more[-1]) if keep.size == more.size else duration_s
        count_within(f"{name}: state changes", total, MAX_TRACE_SEGMENTS, advice, ScenarioError)
    times = np.concatenate(starts)
    values = np.where(np.arange(times.size) % 2 == 0, good, bad)
    return StepTrace(times, values, name=name)


def random_walk(rng: np.random.Generator, duration_s: float, start: float, step_sd: float,
                low: float, high: float, interval_s: float, name: str = "random walk") -> StepTrace:
    """Gaussian steps every ``interval_s``, clipped to [low, high]."""
    n = max(1, count_within(f"{name}: steps (duration_s / interval_s)", duration_s / interval_s,
                            MAX_TRACE_SEGMENTS, "raise interval_s or shorten duration_s", ScenarioError))
    steps = rng.normal(0.0, step_sd, size=n).tolist()
    value, out = min(max(start, low), high), array.array("d")
    for i, s in enumerate(steps):
        value = value if i == 0 else min(max(value + s, low), high)
        out.append(value)
    return StepTrace(np.arange(n) * interval_s, np.frombuffer(out), name=name)


# ----------------------------------------------------------------- outages
@dataclass(frozen=True)
class Outages:
    """Intervals [start_s, end_s) during which the cloud cannot be reached."""

    intervals: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        last_end = -math.inf
        for start, end in self.intervals:
            if not (0 <= start < end):
                raise ScenarioError(f"outage [{start}, {end}]: needs 0 <= start < end")
            if start < last_end:
                raise ScenarioError(f"outage [{start}, {end}] overlaps or precedes the one before; "
                                    f"list outages in time order without overlap")
            last_end = end
        object.__setattr__(self, "_starts", [s for s, _ in self.intervals])

    def is_down(self, t: float) -> bool:
        i = bisect.bisect_right(self._starts, t) - 1  # type: ignore[attr-defined]
        return i >= 0 and t < self.intervals[i][1]

    def first_down(self, start: float, end: float) -> float | None:
        """The first time in [start, end) at which the link is down, or None."""
        if not self.intervals:
            return None
        if self.is_down(start):
            return start
        i = bisect.bisect_right(self._starts, start)  # type: ignore[attr-defined]
        if i < len(self.intervals) and self.intervals[i][0] < end:
            return self.intervals[i][0]
        return None

    @classmethod
    def markov(cls, rng: np.random.Generator, duration_s: float, mean_up_s: float,
               mean_down_s: float) -> Outages:
        """Alternating exponential up and down periods, starting up."""
        advice = "raise mean_up_s or shorten duration_s"
        count_within("conditions.outages: outages", duration_s / (mean_up_s + mean_down_s), MAX_OUTAGES,
                     advice, ScenarioError)
        out, t = [], 0.0
        while True:
            t += float(rng.exponential(mean_up_s))
            if t >= duration_s:
                return cls(tuple(out))
            down = float(rng.exponential(mean_down_s))
            out.append((t, t + down))
            t += down
            count_within("conditions.outages: outages", len(out), MAX_OUTAGES, advice, ScenarioError)


_TOO_MANY = "shorten duration_s or space the requests out; or split the run into a sweep"


def arrival_times(kind: str, duration_s: float, rng: np.random.Generator, *,
                  interval_s: float | None = None, rate_per_s: float | None = None,
                  timestamps_s: Sequence[float] = ()) -> list[float]:
    """Request arrival times in [0, duration_s): periodic, Poisson or a given trace.

    At most :data:`~deepx_sim.config.MAX_REQUESTS_PER_RUN`; a larger run is
    refused before anything is drawn."""
    if kind == "periodic":
        assert interval_s is not None
        n = count_within("requests (duration_s / interval_s)", duration_s / interval_s,
                         MAX_REQUESTS_PER_RUN, _TOO_MANY, ScenarioError)
        times = np.arange(n) * interval_s
        return times[times < duration_s].tolist()
    if kind == "poisson":
        assert rate_per_s is not None
        expected = count_within("requests (duration_s x rate_per_s)", duration_s * rate_per_s,
                                MAX_REQUESTS_PER_RUN, _TOO_MANY, ScenarioError)
        del expected  # (checked above; the chunk size below keeps earlier versions' draws)
        chunk = int(duration_s * rate_per_s * 1.2) + 20
        times = np.cumsum(rng.exponential(1.0 / rate_per_s, size=chunk))
        while times[-1] < duration_s:
            more = times[-1] + np.cumsum(rng.exponential(1.0 / rate_per_s, size=chunk))
            times = np.concatenate([times, more])
        times = times[times < duration_s]
        count_within("requests drawn", times.size, MAX_REQUESTS_PER_RUN, _TOO_MANY, ScenarioError)
        return times.tolist()
    if kind == "trace":
        stamps = [float(t) for t in timestamps_s]
        for a, b in itertools.pairwise(stamps):
            if not a <= b:
                raise ScenarioError(f"arrival times must not decrease, got {b!r} after {a!r}")
        if stamps and not (stamps[0] >= 0 and stamps[-1] < duration_s):
            raise ScenarioError(f"arrival times must lie in [0, duration_s = {duration_s:g}), got "
                                f"{stamps[0]!r} .. {stamps[-1]!r}")
        count_within("requests", len(stamps), MAX_REQUESTS_PER_RUN, _TOO_MANY, ScenarioError)
        return stamps
    raise ScenarioError(f"unknown arrival process {kind!r}; use periodic, poisson or trace")
