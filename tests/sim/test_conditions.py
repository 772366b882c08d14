"""Traces, generators and outages against hand-computed values."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from deepx_sim.errors import ScenarioError
from deepx_sim.sim.conditions import (
    Outages,
    StepTrace,
    arrival_times,
    markov_two_state,
    random_walk,
    read_csv_trace,
    read_mahimahi,
)


def test_mahimahi_parser_on_a_hand_made_file(tmp_path: Path) -> None:
    f = tmp_path / "tiny.up"
    f.write_text("0\n0\n1\n999\n1000\n1500\n")  # 4 packets in second 0, 2 in second 1
    trace = read_mahimahi(f, bin_s=1.0)
    packet_mb = 1500 * 8 / 1e6
    assert trace.values == pytest.approx((4 * packet_mb, 2 * packet_mb))
    assert trace.period_s == 2.0  # mm-link loops the trace
    assert trace.value_at(2.5) == pytest.approx(4 * packet_mb)
    half = read_mahimahi(f, bin_s=0.5)
    assert half.values == pytest.approx(tuple(n * packet_mb / 0.5 for n in (3, 1, 1, 1)))


def test_mahimahi_mean_rate_over_a_shipped_trace() -> None:
    path = Path(__file__).parents[2] / "scenarios" / "traces" / "Verizon-LTE-short.up"
    lines = path.read_text().split()
    trace = read_mahimahi(path)
    expected_mbps = len(lines) * 1500 * 8 / 1e6 / trace.period_s
    assert trace.mean(0, trace.period_s) == pytest.approx(expected_mbps)


@pytest.mark.parametrize(("text", "fragment"), [
    ("", "no timestamps"), ("0\nabc\n", "tiny.up:2"),
    ("5\n3\n", "tiny.up:2: .*must not decrease, got 3 after 5"),
    ("0\n" + "9" * 20 + "\n", "must be in \\[0, 2\\*\\*53\\] ms"),
])
def test_mahimahi_bad_files(tmp_path: Path, text: str, fragment: str) -> None:
    f = tmp_path / "tiny.up"
    f.write_text(text)
    with pytest.raises(ScenarioError, match=fragment):
        read_mahimahi(f)


def test_piecewise_finish_time_over_a_step() -> None:
    trace = StepTrace((0.0, 1.0), (10.0, 2.0))  # 10 Mbps, then 2 Mbps from t = 1 s
    # 15 Mb from t = 0.5: 5 Mb by t = 1, the other 10 Mb at 2 Mbps take 5 s
    assert trace.finish_time(0.5, 15.0) == pytest.approx(6.0)
    assert trace.finish_time(0.2, 3.0) == pytest.approx(0.5)  # within one piece
    assert trace.integral_to(6.0) == pytest.approx(20.0)


def test_repeating_trace_wraps_and_skips_zero_pieces() -> None:
    trace = StepTrace((0.0, 1.0), (4.0, 0.0), period_s=3.0)  # 4 Mb per 3 s period
    assert trace.finish_time(0.0, 4.0) == pytest.approx(1.0)
    assert trace.finish_time(0.5, 4.0) == pytest.approx(3.5)  # waits out the dead 2 s
    assert trace.finish_time(0.0, 10.0) == pytest.approx(6.5)  # two periods + 0.5 s
    assert trace.value_at(7.5) == 0.0


def test_dead_link_never_finishes() -> None:
    assert math.isinf(StepTrace((0.0, 1.0), (5.0, 0.0)).finish_time(0.5, 10.0))


def test_finish_time_inverts_the_integral_on_random_traces() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        n = int(rng.integers(1, 8))
        times = tuple(np.concatenate([[0.0], np.cumsum(rng.uniform(0.1, 2, n - 1))]))
        values = tuple(rng.choice([0.0, 1.0, 3.0, 7.5], size=n))
        period = times[-1] + 1.0 if rng.random() < 0.5 else None
        if sum(values) == 0 or (period is None and values[-1] == 0):
            continue
        trace = StepTrace(times, values, period)
        start, amount = float(rng.uniform(0, 10)), float(rng.uniform(0.01, 30))
        end = trace.finish_time(start, amount)
        assert trace.integral_to(end) - trace.integral_to(start) == pytest.approx(amount, rel=1e-9)
        assert trace.integral_to(end - 1e-6) - trace.integral_to(start) < amount  # the earliest time


def test_csv_trace(tmp_path: Path) -> None:
    f = tmp_path / "bw.csv"
    f.write_text("time_s,mbps\n0,5\n10,1.5\n")
    trace = read_csv_trace(f, "mbps")
    assert trace.value_at(9.99) == 5 and trace.value_at(100) == 1.5
    f.write_text("time_s,mbps\n0,5\n10,-1\n")
    with pytest.raises(ScenarioError, match=r"bw.csv:3: mbps must be a finite number >= 0, got '-1'"):
        read_csv_trace(f, "mbps")
    f.write_text("time_s,rate\n0,5\n")
    with pytest.raises(ScenarioError, match="needs a column 'mbps'"):
        read_csv_trace(f, "mbps")


def test_generators_are_seeded_and_bounded() -> None:
    a = markov_two_state(np.random.default_rng(1), 500, 20.0, 1.0, 30.0, 10.0)
    b = markov_two_state(np.random.default_rng(1), 500, 20.0, 1.0, 30.0, 10.0)
    assert a == b and set(a.values) == {20.0, 1.0}
    good_share = a.mean(0, 500)
    assert 1.0 < good_share < 20.0
    walk = random_walk(np.random.default_rng(2), 100, 0.5, 0.3, 0.0, 0.9, 1.0)
    assert min(walk.values) >= 0.0 and max(walk.values) <= 0.9 and len(walk.values) == 100


def test_markov_channel_time_share_matches_the_stationary_law() -> None:
    trace = markov_two_state(np.random.default_rng(5), 200_000, 1.0, 0.0, 30.0, 10.0)
    assert trace.mean(0, 200_000) == pytest.approx(30 / 40, abs=0.02)  # mean_good / (mean_good + mean_bad)


def test_outages() -> None:
    out = Outages(((10.0, 20.0), (30.0, 31.0)))
    assert out.is_down(10.0) and not out.is_down(20.0) and not out.is_down(5)
    assert out.first_down(0.0, 9.0) is None
    assert out.first_down(0.0, 12.0) == 10.0
    assert out.first_down(15.0, 16.0) == 15.0
    assert out.first_down(25.0, 40.0) == 30.0
    with pytest.raises(ScenarioError, match="overlaps"):
        Outages(((10.0, 20.0), (15.0, 25.0)))


def test_arrivals() -> None:
    assert arrival_times("periodic", 1.0, np.random.default_rng(0), interval_s=0.25) == [0, 0.25, 0.5, 0.75]
    poisson = arrival_times("poisson", 10_000, np.random.default_rng(0), rate_per_s=2.0)
    assert len(poisson) == pytest.approx(20_000, rel=0.03)
    assert arrival_times("trace", 5, np.random.default_rng(0), timestamps_s=[1, 1, 4]) == [1, 1, 4]
    with pytest.raises(ScenarioError, match="must not decrease, got 1.0 after 4.0"):
        arrival_times("trace", 5, np.random.default_rng(0), timestamps_s=[4, 1])
    with pytest.raises(ScenarioError, match=r"must lie in \[0, duration_s = 5\)"):
        arrival_times("trace", 5, np.random.default_rng(0), timestamps_s=[1, 7])


# ----------------------------------------------------------------- bounded memory
def _dense_mahimahi(stamps_ms: list[int], bin_s: float) -> tuple[np.ndarray, float]:
    """The straightforward reading (one value per bin, empty bins included): the oracle."""
    bin_ms = bin_s * 1000.0
    n_bins = max(1, math.ceil((stamps_ms[-1] + 1) / bin_ms))
    counts = np.bincount((np.asarray(stamps_ms) // bin_ms).astype(int), minlength=n_bins)
    return counts * 1500 * 8 / bin_s / 1e6, n_bins * bin_s


@pytest.mark.parametrize("bin_s", [0.001, 0.25, 1.0, 3.0])
def test_sparse_mahimahi_equals_the_dense_reading(tmp_path: Path, bin_s: float) -> None:
    rng = np.random.default_rng(int(bin_s * 1000))
    gaps = rng.choice([0, 0, 1, 7, 400, 5_000], size=300)  # bursts and long silences
    stamps = np.cumsum(gaps).tolist()
    f = tmp_path / "gappy.up"
    f.write_text("".join(f"{s}\n" for s in stamps))
    trace = read_mahimahi(f, bin_s)
    dense, period = _dense_mahimahi(stamps, bin_s)
    assert trace.period_s == pytest.approx(period)
    assert len(trace.values) < len(dense) or bin_s >= 1.0  # only changes are stored
    for t in rng.uniform(0, 2 * period, size=500):
        local = t % period
        assert trace.value_at(t) == pytest.approx(dense[min(int(local // bin_s), len(dense) - 1)])
    assert trace.integral_to(period) == pytest.approx(len(stamps) * 1500 * 8 / 1e6)


def test_a_huge_gap_in_a_mahimahi_trace_costs_no_memory(tmp_path: Path) -> None:
    f = tmp_path / "gap.up"
    f.write_text(f"0\n{10**12}\n")  # one packet now, one in 31 years; 1 ms bins
    trace = read_mahimahi(f, bin_s=0.001)
    assert len(trace.values) == 3  # packet, 31 years of silence, packet
    # (times near 1e9 s carry about 1e-7 s of rounding, so compare to 1e-4)
    assert trace.integral_to(trace.period_s) == pytest.approx(2 * 1500 * 8 / 1e6, rel=1e-4)


def test_chunked_markov_equals_one_draw_at_a_time() -> None:
    def oracle(rng: np.random.Generator, duration_s: float) -> list[float]:
        times, t, good = [], 0.0, True
        while t < duration_s or not times:
            times.append(t)
            t += float(rng.exponential(3.0 if good else 1.0))
            good = not good
        return times

    for duration_s in (0.5, 40.0, 20_000.0):  # inside one chunk, and across several
        trace = markov_two_state(np.random.default_rng(9), duration_s, 5.0, 1.0, 3.0, 1.0)
        assert trace.times_s.tolist() == oracle(np.random.default_rng(9), duration_s)
        assert trace.values.tolist() == [5.0 if i % 2 == 0 else 1.0 for i in range(len(trace.values))]


@pytest.mark.parametrize(("make", "words"), [
    (lambda: random_walk(np.random.default_rng(0), 600, 0.5, 0.1, 0, 1, 1e-6),
     "steps (duration_s / interval_s) would be 600,000,000; at most 2,000,000"),
    (lambda: markov_two_state(np.random.default_rng(0), 1e12, 1, 0, 1, 1),
     "state changes would be 1,000,000,000,000; at most 2,000,000"),
    (lambda: Outages.markov(np.random.default_rng(0), 1e9, 1, 1), "outages would be 500,000,000"),
    (lambda: arrival_times("periodic", 1e9, np.random.default_rng(0), interval_s=1e-3),
     "requests (duration_s / interval_s) would be 1,000,000,000,000; at most 1,000,000"),
    (lambda: arrival_times("poisson", 60, np.random.default_rng(0), rate_per_s=1e300),
     "requests (duration_s x rate_per_s) would be 6e+301"),
    (lambda: StepTrace(np.arange(2_000_001.0), np.ones(2_000_001)), "segments would be 2,000,001"),
])
def test_sizes_beyond_the_limits_are_refused_before_allocating(make: object, words: str) -> None:
    with pytest.raises(ScenarioError) as err:
        make()  # type: ignore[operator]
    assert words in str(err.value)


@pytest.mark.parametrize(("times", "values", "words"), [
    ((0.0, math.inf), (1.0, 2.0), "times must increase and be finite"),
    ((0.0, 1.0), (1.0, math.nan), "values must be finite and >= 0, got nan"),
    ((0.0, 1.0), (1.0, math.inf), "values must be finite and >= 0, got inf"),
    ((0.0, 1.0), (1e308, 1e308), "integral overflows"),
])
def test_non_finite_traces_are_refused(times: tuple, values: tuple, words: str) -> None:
    with pytest.raises(ScenarioError, match=words):
        StepTrace(times, values, period_s=5.0)


@pytest.mark.parametrize(("content", "words"), [
    (b"time_s,mbps\n", "the trace has a header but no rows"),
    (b"time_s,mbps\n0,5\n\xff,1\n", "bw.csv:3: not UTF-8 text (byte 0xff at column 1)"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "bw.csv: a binary file, not text"),
    (b"time_s,mbps\n0,inf\n", "mbps must be a finite number >= 0, got 'inf'"),
])
def test_bad_csv_traces_name_the_file(tmp_path: Path, content: bytes, words: str) -> None:
    f = tmp_path / "bw.csv"
    f.write_bytes(content)
    with pytest.raises(ScenarioError) as err:
        read_csv_trace(f, "mbps")
    assert words in str(err.value) and str(f) in str(err.value)
