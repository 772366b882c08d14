"""On-CPU time of one thread over any wall-clock interval, by sampling its CPU clock.

On a shared machine the OS takes the processor away from a running layer for
whole scheduler slices (a few ms), so wall-clock kernel times mix the layer's
own time with other processes'.  A second thread reads the inference thread's
CPU clock (``pthread_getcpuclockid``) with a wall-clock stamp every
``interval_s``.  A layer whose surrounding samples show the thread on the core
throughout ran uninterrupted: its wall time is its CPU time.  Otherwise the
clock's rise over the layer's interval is interpolated between samples.
onnxruntime releases the GIL while it runs, so the sampler keeps its pace
(about 4 samples a millisecond).
"""

from __future__ import annotations

import threading
import time

import numpy as np

#: share of wall time on the core above which the thread counts as not preempted
#: (the sampler's own reads and timer jitter keep an idle-machine share near, not at, 1)
CLEAN_SHARE = 0.95
#: Reading another thread's CPU clock makes the kernel bring that thread's runtime up to
#: date, which slows it: at this interval its kernels ran about 11 % slower (the profiler
#: divides that out, see deepx_sim.measure.profiling).  Sparser or lower-priority sampling
#: disturbs less but smears each preemption over many short layers: per-layer medians fell
#: 30-40 % below the truth at one sample a millisecond on a loaded machine.
SAMPLE_INTERVAL_S = 2e-4


class ThreadCpuSampler:
    """Samples (wall ns since the epoch, CPU ns) of the thread that creates it."""

    def __init__(self, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.clock = time.pthread_getcpuclockid(threading.get_ident())
        self.interval_s = interval_s
        self._samples: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="cpu-clock-sampler")

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._samples.append((time.time_ns(), time.clock_gettime_ns(self.clock)))
            time.sleep(self.interval_s)

    def __enter__(self) -> ThreadCpuSampler:
        self._samples.append((time.time_ns(), time.clock_gettime_ns(self.clock)))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._samples.append((time.time_ns(), time.clock_gettime_ns(self.clock)))
        samples = np.array(sorted(self._samples), dtype=np.float64)
        self.wall_ns, self.cpu_ns = samples[:, 0], samples[:, 1]

    def cpu_s(self, start_ns: np.ndarray, end_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """On-CPU seconds of the thread within each wall interval [start_ns, end_ns], and
        whether the interval is *clean*: the samples around it show the thread on the core
        throughout (at least ``CLEAN_SHARE`` of the time), so its wall time is its CPU time.

        Elsewhere the clock's rise is interpolated between samples: that keeps the
        total right, but spreads a preemption over the short intervals near it.
        """
        start_ns, end_ns = np.asarray(start_ns, np.float64), np.asarray(end_ns, np.float64)
        rise = np.interp(end_ns, self.wall_ns, self.cpu_ns) - np.interp(start_ns, self.wall_ns, self.cpu_ns)
        before = np.searchsorted(self.wall_ns, start_ns, side="right") - 1
        after = np.searchsorted(self.wall_ns, end_ns, side="left")
        known = (before >= 0) & (after < len(self.wall_ns))
        before, after = np.where(known, before, 0), np.where(known, after, 0)
        span = np.maximum(self.wall_ns[after] - self.wall_ns[before], 1.0)
        clean = known & ((self.cpu_ns[after] - self.cpu_ns[before]) / span >= CLEAN_SHARE)
        length = end_ns - start_ns
        return np.clip(np.where(clean, length, rise), 0.0, length) / 1e9, clean
