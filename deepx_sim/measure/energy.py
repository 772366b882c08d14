"""Package energy from RAPL counters under /sys/class/powercap, where readable.

RAPL (Intel, and AMD since Zen through the same ``intel-rapl`` powercap driver)
counts micro-joules per package; the counter wraps at ``max_energy_range_uj``.
It covers the whole package and updates about every millisecond, so it cannot
split one layer from the next: a profile attributes each layer the average
package power over the timed runs.  Many virtual machines and containers expose
no counters, or make them readable by root only; :func:`open_meter` then says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

POWERCAP = Path("/sys/class/powercap")


@dataclass(frozen=True)
class Domain:
    """One top-level RAPL domain (a package): its counter file and wrap range."""

    name: str
    energy_file: Path
    max_range_uj: int


@dataclass(frozen=True)
class EnergyMeter:
    """Readable RAPL package domains, or the reason there are none."""

    domains: tuple[Domain, ...]
    unavailable: str = ""

    @property
    def available(self) -> bool:
        return bool(self.domains)

    def read_uj(self) -> tuple[int, ...]:
        return tuple(int(d.energy_file.read_text().strip()) for d in self.domains)

    def joules_between(self, start: tuple[int, ...], end: tuple[int, ...]) -> float:
        """Energy between two readings, allowing each counter to wrap once."""
        total_uj = 0
        for domain, a, b in zip(self.domains, start, end, strict=True):
            total_uj += b - a if b >= a else b + domain.max_range_uj - a
        return total_uj / 1e6


def open_meter(root: Path = POWERCAP) -> EnergyMeter:
    """The package domains under ``root`` whose counters this process can read."""
    if not root.is_dir():
        return EnergyMeter((), f"{root} does not exist (no RAPL driver, or a virtual machine)")
    domains, refused = [], []
    for zone in sorted(root.glob("intel-rapl:*")):
        if zone.name.count(":") != 1:  # sub-zones (core, uncore, dram) are inside the package
            continue
        energy = zone / "energy_uj"
        try:
            name = (zone / "name").read_text().strip() if (zone / "name").is_file() else zone.name
            int(energy.read_text().strip())
            max_range = int((zone / "max_energy_range_uj").read_text().strip())
        except PermissionError:
            refused.append(str(energy))
            continue
        except (OSError, ValueError):
            continue
        domains.append(Domain(name, energy, max_range))
    if domains:
        return EnergyMeter(tuple(domains))
    if refused:
        return EnergyMeter((), f"{', '.join(refused)} not readable by this user (needs root)")
    return EnergyMeter((), f"{root} has no readable RAPL package counters (intel-rapl:N)")
