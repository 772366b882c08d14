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
serialises them), so base power is never counted twice.  :meth:`Radio.state`
tells a policy what a new request finds: idle, promoting, or connected with
so much tail left.  These are what really happened; the planner's radio rule
(:func:`deepx_sim.costs.radio_charge`) predicts them, exactly when requests
arrive evenly under constant conditions (tests/sim/test_prediction.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from deepx_sim.costs import RadioState, tail_energy_j
from deepx_sim.platform import RadioModel


@dataclass(slots=True)
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
    _sending: bool = False  # a transfer holds the radio
    _promoted_at_s: float = -math.inf  # when the last promotion ends

    @property
    def tail_s(self) -> float:
        return self.model.tail_s

    def state(self, now_s: float) -> tuple[RadioState, float]:
        """(state, tail_left_s) a request arriving at ``now_s`` finds."""
        if self._sending:
            return ("promoting", 0.0) if now_s < self._promoted_at_s else ("connected", math.inf)
        if self._tail_from_s is not None and now_s - self._tail_from_s < self.tail_s:
            return "connected", self.tail_s - (now_s - self._tail_from_s)
        return "idle", 0.0

    def connect(self, now_s: float, requester: RadioEnergy) -> float:
        """The radio is about to carry data at ``now_s``: settle the tail or the
        idle period before it; return the promotion delay (0 if still connected)."""
        self._sending = True
        tail_from = self._tail_from_s
        if tail_from is not None:
            in_tail_s = now_s - tail_from
            owner = self._tail_owner
            assert owner is not None
            if in_tail_s < self.tail_s:
                owner.tail_j += tail_energy_j(self.model, in_tail_s)
                self._tail_from_s = None
                return 0.0
            owner.tail_j += tail_energy_j(self.model, self.tail_s)
            self.idle_since_s = tail_from + self.tail_s
            self._tail_from_s = None
        self.idle_j += self.model.idle_power_mw / 1000.0 * max(0.0, now_s - self.idle_since_s)
        self.promotions += 1
        requester.promotion_j += self.model.promotion_energy_j
        self._promoted_at_s = now_s + self.model.promotion_s
        return self.model.promotion_s

    def transferred(self, requester: RadioEnergy, time_s: float, up_megabits: float,
                    down_megabits: float, end_s: float) -> None:
        """A transfer by ``requester`` ended at ``end_s``; the tail starts."""
        requester.transfer_j += self.model.transfer_energy_j(time_s, up_megabits, down_megabits)
        self._sending = False
        self._tail_from_s = end_s
        self._tail_owner = requester

    def finish(self, horizon_s: float) -> float:
        """Close the books at the end of a run: the last tail runs out, the radio
        idles until ``horizon_s`` (moved later if the tail runs past it); returns
        the horizon used."""
        if self._tail_from_s is not None:
            assert self._tail_owner is not None
            self._tail_owner.tail_j += tail_energy_j(self.model, self.tail_s)
            self.idle_since_s = self._tail_from_s + self.tail_s
            self._tail_from_s = None
        horizon_s = max(horizon_s, self.idle_since_s)
        self.idle_j += self.model.idle_power_mw / 1000.0 * (horizon_s - self.idle_since_s)
        self.idle_since_s = horizon_s
        return horizon_s
