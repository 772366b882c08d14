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
