"""On-CPU time of one thread over any wall-clock interval, by sampling its CPU clock.

On a shared machine the OS takes the processor away from a running layer for
whole scheduler slices (a few ms), so wall-clock kernel times mix the layer's
own time with other processes'.  A second thread reads the inference thread's
CPU clock (``pthread_getcpuclockid``) with a wall-clock stamp every
``interval_s``; a layer's on-CPU time is its wall time less the off-CPU time
the samples inside it show.  onnxruntime releases the GIL while it runs, so
the sampler keeps its pace (about 4 samples per ms on an idle machine, fewer
when it too waits for a core).
"""

from __future__ import annotations

import threading
import time

import numpy as np


class ThreadCpuSampler:
    """Samples (wall ns since the epoch, CPU ns) of the thread that creates it."""

    def __init__(self, interval_s: float = 2e-4) -> None:
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

    def cpu_s(self, start_ns: np.ndarray, end_ns: np.ndarray) -> np.ndarray:
        """On-CPU seconds of the thread within each wall interval [start_ns, end_ns]:
        its length minus the off-CPU time between the first and last samples inside it.

        Off-CPU time in the stretches before the first and after the last sample is
        not seen; spreading it evenly would charge every short layer near a
        preemption a share of it, and a short layer is seldom preempted itself,
        so it keeps its wall time (the median over runs then drops the rare hit).
        """
        start_ns, end_ns = np.asarray(start_ns, np.float64), np.asarray(end_ns, np.float64)
        first = np.searchsorted(self.wall_ns, start_ns, side="left")
        last = np.searchsorted(self.wall_ns, end_ns, side="right") - 1
        inside = last > first
        first, last = np.where(inside, first, 0), np.where(inside, last, 0)
        off = (self.wall_ns[last] - self.wall_ns[first]) - (self.cpu_ns[last] - self.cpu_ns[first])
        length = end_ns - start_ns
        return np.clip(length - np.where(inside, off, 0.0), 0.0, length) / 1e9
