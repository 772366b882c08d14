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

import bisect
import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepx_sim.errors import ScenarioError

#: Mahimahi delivers one MTU-sized packet per line (Winstein et al., NSDI 2013, trace README).
MAHIMAHI_PACKET_BYTES = 1500


@dataclass(frozen=True)
class StepTrace:
    """``values[i]`` holds on ``[times_s[i], times_s[i + 1])``.

    After the last change the last value holds forever, unless ``period_s`` is
    set: then the trace repeats every ``period_s`` seconds.
    """

    times_s: tuple[float, ...]
    values: tuple[float, ...]
    period_s: float | None = None
    name: str = "trace"
    _cum: list[float] = field(init=False, repr=False, compare=False)  # integral at times_s[i]
    _cum_end: list[float] = field(init=False, repr=False, compare=False)  # at each segment's end

    def __post_init__(self) -> None:
        if not self.times_s or len(self.times_s) != len(self.values):
            raise ScenarioError(f"{self.name}: needs as many times as values, at least one; got "
                                f"{len(self.times_s)} times and {len(self.values)} values")
        if self.times_s[0] != 0:
            raise ScenarioError(f"{self.name}: must start at time 0, got {self.times_s[0]!r}")
        for a, b in zip(self.times_s, self.times_s[1:], strict=False):
            if not b > a:
                raise ScenarioError(f"{self.name}: times must increase, got {a!r} then {b!r}")
        for v in self.values:
            if not (v >= 0 and math.isfinite(v)):
                raise ScenarioError(f"{self.name}: values must be finite and >= 0, got {v!r}")
        if self.period_s is not None and not self.period_s > self.times_s[-1]:
            raise ScenarioError(f"{self.name}: period_s must be > the last time "
                                f"{self.times_s[-1]!r}, got {self.period_s!r}")
        ends = [*self.times_s[1:], self.period_s if self.period_s is not None else math.inf]
        cum, cum_end, total = [], [], 0.0
        for start, end, v in zip(self.times_s, ends, self.values, strict=True):
            cum.append(total)
            if v > 0:  # (a zero value over an endless last segment adds nothing)
                total += v * (end - start)
            cum_end.append(total)
        object.__setattr__(self, "_cum", cum)
        object.__setattr__(self, "_cum_end", cum_end)
        if self.period_s is not None and cum_end[-1] <= 0:
            raise ScenarioError(f"{self.name}: a repeating trace must have some value > 0")

    @classmethod
    def constant(cls, value: float, name: str = "constant") -> StepTrace:
        return cls((0.0,), (float(value),), name=name)

    def _fold(self, t: float) -> tuple[int, float]:
        """(whole periods before t, t within its period)."""
        if self.period_s is None:
            return 0, t
        k = math.floor(t / self.period_s)
        return k, t - k * self.period_s

    def value_at(self, t: float) -> float:
        if len(self.values) == 1:
            return self.values[0]
        _, local = self._fold(t)
        return self.values[bisect.bisect_right(self.times_s, local) - 1]

    def integral_to(self, t: float) -> float:
        """Integral of the value over [0, t]."""
        k, local = self._fold(t)
        i = bisect.bisect_right(self.times_s, local) - 1
        within = self._cum[i] + self.values[i] * (local - self.times_s[i])
        return within + (k * self._cum_end[-1] if k else 0.0)

    def mean(self, start: float, end: float) -> float:
        if end <= start:
            return self.value_at(start)
        return (self.integral_to(end) - self.integral_to(start)) / (end - start)

    def finish_time(self, start: float, amount: float) -> float:
        """Earliest time t >= start with integral over [start, t] equal to ``amount``;
        ``inf`` if the trace never delivers it (a value of 0 forever)."""
        if amount <= 0:
            return start
        if len(self.values) == 1:
            v = self.values[0]
            return start + amount / v if v > 0 else math.inf
        target = self.integral_to(start) + amount
        if self.period_s is None:
            i = bisect.bisect_left(self._cum_end, target)
            if i == len(self.values):  # the trace ends at 0 before delivering it
                return math.inf
            return self.times_s[i] + (target - self._cum[i]) / self.values[i]
        per_period = self._cum_end[-1]
        k = math.ceil(target / per_period) - 1
        rest = target - k * per_period
        i = min(bisect.bisect_left(self._cum_end, rest), len(self.values) - 1)
        while self.values[i] <= 0:  # only reachable through rounding at a boundary
            i -= 1
        return k * self.period_s + self.times_s[i] + (rest - self._cum[i]) / self.values[i]


# ----------------------------------------------------------------- readers
def read_csv_trace(path: Path, value_column: str, *, repeat: bool = False) -> StepTrace:
    """A CSV with a header holding ``time_s`` and ``value_column`` (other columns ignored).

    Raises ScenarioError naming the file, line and value on malformed rows."""
    try:
        handle = path.open(newline="")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read trace: {exc.strerror}") from None
    times: list[float] = []
    values: list[float] = []
    with handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        for needed in ("time_s", value_column):
            if needed not in header:
                raise ScenarioError(f"{path}: needs a column {needed!r}; the header has {header}")
        for row in reader:
            line = reader.line_num
            try:
                t, v = float(row["time_s"]), float(row[value_column])
            except (TypeError, ValueError):
                raise ScenarioError(f"{path}:{line}: time_s and {value_column} must be numbers, "
                                    f"got {row['time_s']!r}, {row[value_column]!r}") from None
            if times and not t > times[-1]:
                raise ScenarioError(f"{path}:{line}: time_s must increase, got {t} after {times[-1]}")
            if not (v >= 0 and math.isfinite(v)):
                raise ScenarioError(f"{path}:{line}: {value_column} must be >= 0, got {v}")
            times.append(t)
            values.append(v)
    if not times:
        raise ScenarioError(f"{path}: the trace has no rows")
    if times[0] < 0:
        raise ScenarioError(f"{path}: time_s must be >= 0, got {times[0]}")
    if times[0] > 0:  # the first value holds from time 0
        times[0] = 0.0
    period = None
    if repeat:
        step = times[-1] - times[-2] if len(times) > 1 else 1.0
        period = times[-1] + step
    return StepTrace(tuple(times), tuple(values), period, name=str(path))


def read_timestamps(path: Path) -> list[float]:
    """Request arrival times from a CSV with a ``time_s`` column (seconds, >= 0)."""
    try:
        handle = path.open(newline="")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read timestamps: {exc.strerror}") from None
    out: list[float] = []
    with handle:
        reader = csv.DictReader(handle)
        if "time_s" not in (reader.fieldnames or []):
            raise ScenarioError(f"{path}: needs a column 'time_s'; the header has {reader.fieldnames}")
        for row in reader:
            try:
                t = float(row["time_s"])
            except (TypeError, ValueError):
                t = math.nan
            if not (t >= 0 and math.isfinite(t)):
                raise ScenarioError(f"{path}:{reader.line_num}: time_s must be a number >= 0, "
                                    f"got {row['time_s']!r}")
            if out and t < out[-1]:
                raise ScenarioError(f"{path}:{reader.line_num}: time_s must not decrease (a negative "
                                    f"inter-arrival time), got {t:g} after {out[-1]:g}")
            out.append(t)
    return out


def read_mahimahi(path: Path, bin_s: float = 1.0) -> StepTrace:
    """Mbps per ``bin_s`` bin of a Mahimahi trace; it repeats, as mm-link replays it."""
    if not bin_s > 0:
        raise ScenarioError(f"{path}: bin_s must be > 0, got {bin_s!r}")
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read trace: {exc.strerror}") from None
    stamps_ms: list[int] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        try:
            stamp = int(line)
        except ValueError:
            raise ScenarioError(f"{path}:{line_no}: a Mahimahi line is one integer timestamp in ms, "
                                f"got {line!r}") from None
        if stamp < 0 or (stamps_ms and stamp < stamps_ms[-1]):
            raise ScenarioError(f"{path}:{line_no}: timestamps must be >= 0 and non-decreasing, "
                                f"got {stamp} after {stamps_ms[-1] if stamps_ms else 'start'}")
        stamps_ms.append(stamp)
    if not stamps_ms:
        raise ScenarioError(f"{path}: the trace has no timestamps")
    bin_ms = bin_s * 1000.0
    n_bins = max(1, math.ceil((stamps_ms[-1] + 1) / bin_ms))
    counts = np.bincount((np.asarray(stamps_ms) // bin_ms).astype(int), minlength=n_bins)
    mbps = counts * MAHIMAHI_PACKET_BYTES * 8 / bin_s / 1e6
    times = tuple(float(i * bin_s) for i in range(n_bins))
    return StepTrace(times, tuple(float(v) for v in mbps), period_s=n_bins * bin_s, name=str(path))


# ----------------------------------------------------------------- generators
def markov_two_state(rng: np.random.Generator, duration_s: float, good: float, bad: float,
                     mean_good_s: float, mean_bad_s: float, name: str = "markov") -> StepTrace:
    """Gilbert-Elliott style channel: exponential sojourns in a good and a bad
    state, starting in the good one; the state at ``duration_s`` holds after."""
    times, values, t, is_good = [], [], 0.0, True
    while t < duration_s or not times:
        times.append(t)
        values.append(good if is_good else bad)
        t += float(rng.exponential(mean_good_s if is_good else mean_bad_s))
        is_good = not is_good
    return StepTrace(tuple(times), tuple(values), name=name)


def random_walk(rng: np.random.Generator, duration_s: float, start: float, step_sd: float,
                low: float, high: float, interval_s: float, name: str = "random walk") -> StepTrace:
    """Gaussian steps every ``interval_s``, clipped to [low, high]."""
    n = max(1, math.ceil(duration_s / interval_s))
    steps = rng.normal(0.0, step_sd, size=n)
    value, out = min(max(start, low), high), []
    for i, s in enumerate(steps):
        value = value if i == 0 else min(max(value + float(s), low), high)
        out.append(value)
    return StepTrace(tuple(i * interval_s for i in range(n)), tuple(out), name=name)


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
        out, t = [], 0.0
        while True:
            t += float(rng.exponential(mean_up_s))
            if t >= duration_s:
                return cls(tuple(out))
            down = float(rng.exponential(mean_down_s))
            out.append((t, t + down))
            t += down


def arrival_times(kind: str, duration_s: float, rng: np.random.Generator, *,
                  interval_s: float | None = None, rate_per_s: float | None = None,
                  timestamps_s: Sequence[float] = ()) -> list[float]:
    """Request arrival times in [0, duration_s): periodic, Poisson or a given trace."""
    if kind == "periodic":
        assert interval_s is not None
        n = math.ceil(duration_s / interval_s)
        return [i * interval_s for i in range(n) if i * interval_s < duration_s]
    if kind == "poisson":
        assert rate_per_s is not None
        expected = int(duration_s * rate_per_s * 1.2) + 20
        times = np.cumsum(rng.exponential(1.0 / rate_per_s, size=expected))
        while times[-1] < duration_s:
            more = times[-1] + np.cumsum(rng.exponential(1.0 / rate_per_s, size=expected))
            times = np.concatenate([times, more])
        return [float(t) for t in times if t < duration_s]
    if kind == "trace":
        return sorted(float(t) for t in timestamps_s if 0 <= t < duration_s)
    raise ScenarioError(f"unknown arrival process {kind!r}; use periodic, poisson or trace")
