"""On-CPU time of one thread over any wall-clock interval, by sampling its CPU clock.

On a shared machine the OS takes the processor away from a running layer for
whole scheduler slices (a few ms), so wall-clock kernel times mix the layer's
own time with other processes'.  A second thread reads the inference thread's
CPU clock (``pthread_getcpuclockid``) with a wall-clock stamp every
``interval_s``; the layer's on-CPU time is the clock's rise over its wall-clock
interval, interpolated between samples.  onnxruntime releases the GIL while it
runs, so the sampler keeps its pace (about 4 samples per ms).
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
        """On-CPU seconds of the thread within each wall interval [start_ns, end_ns]."""
        rise = np.interp(end_ns, self.wall_ns, self.cpu_ns) - np.interp(start_ns, self.wall_ns, self.cpu_ns)
        return np.clip(rise, 0.0, np.asarray(end_ns) - np.asarray(start_ns)) / 1e9
