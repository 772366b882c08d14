"""Who measured: the host's name, its CPU model (as ``lscpu`` reports it) and load."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess


def host_name() -> str:
    """This machine's host name, reduced to a valid processor identifier."""
    name = re.sub(r"[^A-Za-z0-9_\-]", "_", socket.gethostname().split(".")[0]).strip("_-")
    return name or "host"


def cpu_model() -> str:
    """The CPU's model name from ``lscpu`` (or /proc/cpuinfo); ``"unknown"`` if neither says."""
    if shutil.which("lscpu"):
        try:
            out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                                 env={**os.environ, "LC_ALL": "C"}).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model name" and value.strip():
                return value.strip()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    return value.strip()
    except OSError:
        pass
    return "unknown"


def load_average() -> tuple[float, float, float]:
    """1, 5 and 15 minute load averages (zeros where the OS has none)."""
    try:
        return os.getloadavg()
    except OSError:
        return (0.0, 0.0, 0.0)


def cpu_jiffies() -> tuple[int, int]:
    """(steal, total) CPU time of the whole machine so far, in clock ticks, from /proc/stat;
    (0, 0) where there is none.  Steal is time the hypervisor ran something else while
    this guest had work: on a VM, the share of it over a measurement says how much of
    the measurement's noise came from outside the guest."""
    try:
        with open("/proc/stat") as handle:
            fields = handle.readline().split()
    except OSError:
        return (0, 0)
    if not fields or fields[0] != "cpu":
        return (0, 0)
    ticks = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return (ticks[7] if len(ticks) > 7 else 0, sum(ticks))


def steal_share(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """Share of the machine's CPU time stolen by the hypervisor between two readings."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else None
