"""The radio as a state machine: idle, promotion, active, tail (Huang et al., MobiSys 2012).

Energy is integrated state by state and attributed to requests:

- promotion (idle -> connected): the request whose transfer needs it;
- active (a transfer): the transferring request, ``a * megabits + base * time``;
- tail (connected, no data) after a transfer: the request that sent last.  A
  tail cut short by another transfer is charged up to that moment, so
  back-to-back requests share one tail while sparse ones each pay a full one;
  the cloud's compute time is spent in this state too;
- idle (DRX paging): nobody's; it is reported per run.

The radio carries one transfer at a time (the link resource in the engine
serialises them), so base power is never counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from deepx_sim.platform import RadioModel


@dataclass
class RadioEnergy:
    """Radio energy charged to one request, by state."""

    promotion_j: float = 0.0
    transfer_j: float = 0.0
    tail_j: float = 0.0

    @property
    def total_j(self) -> float:
        return self.promotion_j + self.transfer_j + self.tail_j


@dataclass
class Radio:
    model: RadioModel
    idle_since_s: float = 0.0
    idle_j: float = 0.0  # DRX energy while idle: the run's, not a request's
    promotions: int = 0
    _tail_from_s: float | None = None  # when the current tail began; None when idle
    _tail_owner: RadioEnergy | None = None
    _bounds_s: list[float] = field(default_factory=list)  # tail stage ends, from tail start
    _stage_w: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        elapsed = 0.0
        for stage in self.model.tail:
            elapsed += stage.duration_ms / 1000.0
            self._bounds_s.append(elapsed)
            self._stage_w.append(stage.power_mw / 1000.0)

    @property
    def tail_s(self) -> float:
        return self._bounds_s[-1] if self._bounds_s else 0.0

    def tail_energy_j(self, duration_s: float) -> float:
        """Energy of the first ``duration_s`` seconds of a tail (capped at its length)."""
        energy, start = 0.0, 0.0
        for end, power in zip(self._bounds_s, self._stage_w, strict=True):
            if duration_s <= start:
                break
            energy += power * (min(duration_s, end) - start)
            start = end
        return energy

    def connect(self, now_s: float, requester: RadioEnergy) -> float:
        """The radio is about to carry data at ``now_s``: settle the tail or the
        idle period before it; return the promotion delay (0 if still connected)."""
        tail_from = self._tail_from_s
        if tail_from is not None:
            in_tail_s = now_s - tail_from
            owner = self._tail_owner
            assert owner is not None
            if in_tail_s < self.tail_s:
                owner.tail_j += self.tail_energy_j(in_tail_s)
                self._tail_from_s = None
                return 0.0
            owner.tail_j += self.tail_energy_j(self.tail_s)
            self.idle_since_s = tail_from + self.tail_s
            self._tail_from_s = None
        self.idle_j += self.model.idle_power_mw / 1000.0 * max(0.0, now_s - self.idle_since_s)
        self.promotions += 1
        requester.promotion_j += self.model.promotion_energy_j
        return self.model.promotion_s

    def transferred(self, requester: RadioEnergy, time_s: float, up_megabits: float,
                    down_megabits: float, end_s: float) -> None:
        """A transfer by ``requester`` ended at ``end_s``; the tail starts."""
        requester.transfer_j += self.model.transfer_energy_j(time_s, up_megabits, down_megabits)
        self._tail_from_s = end_s
        self._tail_owner = requester

    def finish(self, horizon_s: float) -> float:
        """Close the books at the end of a run: the last tail runs out, the radio
        idles until ``horizon_s`` (moved later if the tail runs past it); returns
        the horizon used."""
        if self._tail_from_s is not None:
            assert self._tail_owner is not None
            self._tail_owner.tail_j += self.tail_energy_j(self.tail_s)
            self.idle_since_s = self._tail_from_s + self.tail_s
            self._tail_from_s = None
        horizon_s = max(horizon_s, self.idle_since_s)
        self.idle_j += self.model.idle_power_mw / 1000.0 * (horizon_s - self.idle_since_s)
        self.idle_since_s = horizon_s
        return horizon_s
