"""Boxes of conditions over which the fast path proves its pool near-optimal.

A box maps conditions to coordinates x in [bottom, top] along which every
plan, feasible or not, only gets slower and costlier (monotone), so that over
a cell [lo, hi] the optimum is at least the optimum at lo and the best pooled
plan at hi is feasible in the whole cell at no more than its cost at hi
(:meth:`deepx_sim.plan.fastpath.FastReplanner.warm`).  Three kinds:

- ``load``: x = log 1 / free fraction of each processor varied, the cloud
  unreachable.  Latency is busy time / free fraction; energy does not change.
- ``queue``: x = -log of the share of the deadline our own queue on each local
  processor leaves, the cloud unreachable.  A plan waits for its longest queue.
- ``cloud``: the cloud reachable: the loads as above; log(top / uplink) and
  log(top / downlink) Mbps; the radio's tail left when a request arrives
  (``radio_state`` idle counts as none left, promoting or connected while
  another request sends as endless; the box with the radio idle holds none
  left, the one of radio states with no next arrival every tail left > 0, its
  top end the limit at 0: :func:`cloud_box`), x = log((D + s) / (tail left + s)) with
  D the deadline and s = :data:`RADIO_TIME_SCALE_S`; the next arrival's gap,
  x = log(1 + gap / s), up to the tail plus D (no next arrival).  The RTT and
  the cloud's own load are held at the box's values.

Why the cloud box is monotone, per coordinate, with the radio rule of
:mod:`deepx_sim.costs` (a radio plan pays a promotion when the tail left is
at most its local work before the first cloud layer, ``first_use_s``, and the
tail up to the next request's first radio use, ``next_gap_s - busy_s``, busy
being its transfers, cloud time and promotion):

- a lower bandwidth lengthens transfers: latency grows; energy gains the
  radio's base power over the extra time and loses at most the tail's
  highest power over it (the tail shortens): it grows if ``base_mw`` is at
  least every tail stage's power;
- a higher load lengthens local work: latency grows, the local energy does
  not change, and ``first_use_s`` grows, which can only add a promotion;
- less tail left can only add a promotion: latency grows by its duration and
  energy by its energy, less at most the tail's highest power over that
  duration: it grows if ``promotion_power_mw`` is at least every tail stage's;
- a later next arrival charges more of the tail: energy grows, always.

So with a radio meeting those two power conditions (:func:`radio_monotone`:
the LTE and WiFi presets do; 3G's promotion, 659 mW against an 804 mW tail,
does not) the box spans every tail left and gap.  Otherwise the
gap is held at "no next arrival", where the whole tail is charged whatever the
busy time, and the two other coordinates need no condition.  Feasible plans
have ``first_use_s`` and busy time within the deadline D, so a tail left
beyond D never promotes and a gap beyond tail + D charges the whole tail: the
box's ends stand for those.  A tail left or gap of the conditions beyond them
maps to the end.

The gap also earns a credit (:func:`tail_credit_j`): between a point s below
and a point x above along the box, every radio plan's energy grows by at least
the tail energy between the two gaps (its busy time at s shifting both), since
the extra busy time its own energy pays for costs at least the tail it saves.
Plans on the device alone gain nothing, and are bounded apart by the optimum
with the cloud unreachable at the loads of s.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from deepx_sim.costs import Conditions, tail_energy_j
from deepx_sim.platform import Link, RadioModel

#: Time scale of the radio coordinates (tail left, next gap): their cells are
#: split down to ratios of (time + this); it sets no bound, only the resolution.
RADIO_TIME_SCALE_S = 1e-3
#: Cells narrower than this ratio (of free fraction, bandwidth, share of the deadline
#: left, radio time + scale) on every side are not split further.
CELL_RESOLUTION = 1.25
#: A gap of the next arrival this short stands for "at once" (conditions need a gap > 0).
MIN_GAP_S = 1e-9
_TOLERANCE = 1e-9


@dataclass
class CertifiedBox:
    """A box of conditions, coordinates x in [``bottom``, ``top``] (an axis with
    bottom = top held fixed), along which every plan gets slower and costlier
    as x grows (module docstring); ``at`` maps a point to its conditions,
    ``where`` conditions to their point (None: not of this box's kind)."""

    kind: str
    processors: tuple[str, ...]
    bottom: np.ndarray
    top: np.ndarray
    at: Callable[[np.ndarray], Conditions]
    where: Callable[[Conditions], np.ndarray | None]
    #: the axis of the next arrival's gap, where the tail credit applies (None: no credit)
    gap_axis: int | None = None
    #: axes (the bandwidths) along which every plan's costs are affine in 1 / bandwidth,
    #: where ``flat_axis`` (the gap) is at its top (no next arrival: the whole tail)
    affine_axes: tuple[int, ...] = ()
    flat_axis: int | None = None
    #: what the box spans, for reports (default its kind)
    name: str = ""
    #: the share of the box's volume proven
    proven_share: float = 0.0
    #: cells left unproven, as (lo, hi) corners
    unproven: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    #: points solved and the lower bound on the optimum each gave (inf: infeasible)
    solved: list[tuple[np.ndarray, float]] = field(default_factory=list)
    #: the same without deadline and energy budget
    relaxed: list[tuple[np.ndarray, float]] = field(default_factory=list)
    #: whether each of :attr:`relaxed`'s optima uses the radio (None: not known)
    relaxed_radio: list[bool | None] = field(default_factory=list)
    #: a box whose relaxed bounds, less ``carry_cost``, bound this one's optimum at
    #: the same loads and bandwidths (:meth:`inherit`), with the map of a point here
    #: to that box's face
    carried_from: CertifiedBox | None = None
    carry_cost: float = 0.0
    #: the bounds taken from it (they bound the optimum with and without the deadline)
    carried: list[tuple[np.ndarray, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.name = self.name or self.kind

    def point(self, conditions: Conditions) -> np.ndarray | None:
        """The coordinates of ``conditions`` in the box, or None outside it."""
        x = self.where(conditions)
        if x is None:
            return None
        slack = _TOLERANCE * (1 + np.abs(self.top))
        inside = bool(((self.bottom - slack <= x) & (x <= self.top + slack)).all())
        return np.clip(x, self.bottom, self.top) if inside else None

    def holds_unproven(self, x: np.ndarray) -> bool:
        """Whether ``x`` lies in a cell left unproven (its boundary included)."""
        return any(bool(((lo <= x) & (x <= hi)).all()) for lo, hi in self.unproven)

    def affine_at(self, x: np.ndarray) -> bool:
        """Whether costs are affine along :attr:`affine_axes` at ``x``'s other coordinates."""
        flat = self.flat_axis
        return bool(self.affine_axes) and (flat is None or x[flat] >= self.top[flat] * (1 - _TOLERANCE))

    def corners(self, rest: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> list[np.ndarray]:
        """``rest`` with the affine axes at each combination of ``lo`` and ``hi`` (all lo first)."""
        points = []
        for choice in itertools.product((False, True), repeat=len(self.affine_axes)):
            point = rest.copy()
            for axis, upper in zip(self.affine_axes, choice, strict=True):
                point[axis] = hi[axis] if upper else lo[axis]
            points.append(point)
        return points

    def widths(self) -> np.ndarray:
        return self.top - self.bottom

    def bound_below(self, x: np.ndarray) -> tuple[float, np.ndarray] | None:
        """The best lower bound on the optimum at ``x`` from the points solved at or
        below it (the optimum only grows along the box), with that point; None if none."""
        return _best_below(self.solved + self.carried, x)

    def relaxed_below(self, x: np.ndarray) -> tuple[float, np.ndarray] | None:
        """The same for the optimum without deadline and energy budget."""
        return _best_below(self.relaxed + self.carried, x)

    def solved_at(self, x: np.ndarray) -> bool:
        return any(bool((np.abs(point - x) <= _TOLERANCE).all()) for point, _ in self.solved)

    def inherit(self) -> None:
        """Take :attr:`carried_from`'s relaxed bounds not taken yet, less :attr:`carry_cost`,
        as bounds (relaxed and not) at the same point with the radio axes at this box's
        bottom: they hold everywhere above it (see :func:`cloud_box`)."""
        if self.carried_from is None:
            return
        for point, bound in self.carried_from.relaxed[len(self.carried):]:
            here = point.copy()
            here[-2:] = self.bottom[-2:]
            self.carried.append((here, max(bound - self.carry_cost, 0.0)))  # (objectives are >= 0)

    def on_face(self, x: np.ndarray) -> np.ndarray:
        """``x`` with the radio axes at :attr:`carried_from`'s (its face)."""
        assert self.carried_from is not None
        face = x.copy()
        face[-2:] = self.carried_from.bottom[-2:]
        return face


def _best_below(solved: list[tuple[np.ndarray, float]], x: np.ndarray) -> tuple[float, np.ndarray] | None:
    best: tuple[float, np.ndarray] | None = None
    for point, bound in solved:
        if bool((point <= x + _TOLERANCE).all()) and (best is None or bound > best[0]):
            best = (bound, point)
    return best


def radio_monotone(model: RadioModel) -> bool:
    """Whether every plan's cost grows with the tail it may be charged cut shorter by
    longer busy time: the radio's base and promotion powers at least every tail stage's."""
    highest_mw = max((stage.power_mw for stage in model.tail), default=0.0)
    return model.base_mw >= highest_mw and model.promotion_power_mw >= highest_mw


def tail_credit_j(model: RadioModel, from_gap_s: float, to_gap_s: float, busy_max_s: float) -> float:
    """The least growth of the tail energy charged, tail(gap - busy), from gap
    ``from_gap_s`` to ``to_gap_s`` over busy times in [0, ``busy_max_s``]: the
    difference is piecewise linear in busy, so its minimum is at an end or where
    either gap less busy crosses a stage's boundary."""
    if to_gap_s <= from_gap_s:
        return 0.0
    busy_max_s = min(busy_max_s, to_gap_s + 1.0)  # beyond the later gap both tails are empty
    bounds = np.cumsum([0.0] + [stage.duration_ms / 1000.0 for stage in model.tail])
    busy = np.concatenate(([0.0, busy_max_s], from_gap_s - bounds, to_gap_s - bounds))
    busy = busy[(busy >= 0.0) & (busy <= busy_max_s)]
    gain = tail_energy_j(model, to_gap_s - busy) - tail_energy_j(model, from_gap_s - busy)
    return max(0.0, float(gain.min()))


def gap_s(x: float) -> float:
    """The next arrival's gap at gap coordinate ``x``."""
    return max(RADIO_TIME_SCALE_S * math.expm1(x), MIN_GAP_S)


def device_boxes(local_only: Conditions, vary: tuple[str, ...], local: tuple[str, ...], deadline_s: float,
                 link: Link | None, min_free_fraction: float,
                 min_deadline_share: float) -> list[CertifiedBox]:
    """The load box on ``vary`` (down to ``min_free_fraction``) and the queue box on every
    local processor (leaving down to ``min_deadline_share`` of the deadline), on the device alone."""

    def alone(conditions: Conditions) -> bool:
        return link is None or not conditions.cloud_reachable

    def queue_point(c: Conditions) -> np.ndarray | None:
        queued = {p: s for p, s in c.queued_s.items() if s > 0}
        if not alone(c) or any(f < 1.0 for f in c.free_fraction.values()) or not set(queued) <= set(local):
            return None
        left = np.array([1.0 - queued.get(p, 0.0) / deadline_s for p in local])
        return -np.log(left) if left.min() > 0 else None

    top = -math.log(min_deadline_share)
    boxes = [CertifiedBox("queue", local, np.zeros(len(local)), np.full(len(local), top),
                          lambda x: replace(local_only, queued_s=dict(zip(
                              local, (-deadline_s * np.expm1(-x)).tolist(), strict=True))),
                          queue_point)]
    if vary:
        def load_point(c: Conditions) -> np.ndarray | None:
            return None if not alone(c) or any(s > 0 for s in c.queued_s.values()) else _loads(c, vary)

        boxes.insert(0, CertifiedBox("load", vary, np.zeros(len(vary)),
                                     np.full(len(vary), -math.log(min_free_fraction)),
                                     lambda x: replace(local_only, free_fraction=_free(vary, x)), load_point))
    return boxes


def _loads(conditions: Conditions, vary: tuple[str, ...]) -> np.ndarray | None:
    """log 1 / free fraction of each of ``vary`` (None: a load elsewhere)."""
    free = {p: f for p, f in conditions.free_fraction.items() if f < 1.0}
    if not set(free) <= set(vary):
        return None
    return -np.log([free.get(p, 1.0) for p in vary])


def _free(vary: tuple[str, ...], x: np.ndarray) -> dict[str, float]:
    return {p: f for p, f in zip(vary, np.exp(-x).tolist(), strict=True) if f < 1.0}


@dataclass(frozen=True)
class _CloudAxes:
    """The cloud box's coordinate maps (see the module docstring)."""

    link: Link
    vary: tuple[str, ...]
    uplink_top_mbps: float
    downlink_top_mbps: float
    rtt_ms: float
    deadline_s: float
    #: the tails left the box holds: ``none`` (the radio idle), ``some`` (every tail left
    #: > 0, its top end open: the limit of a tail left shrinking to 0, where a plan that
    #: first uses the radio at once is not promoted) or ``any`` (both)
    tails: str = "any"

    @property
    def idle_x(self) -> float:
        return math.log((self.deadline_s + RADIO_TIME_SCALE_S) / RADIO_TIME_SCALE_S)

    @property
    def no_next_x(self) -> float:
        return math.log1p((self.link.radio.tail_s + self.deadline_s) / RADIO_TIME_SCALE_S)

    def point(self, c: Conditions) -> np.ndarray | None:
        rtt_ms = c.rtt_ms if c.rtt_ms is not None else self.link.rtt_ms
        if (not c.cloud_reachable or c.link not in (None, self.link.name)
                or any(s > 0 for s in c.queued_s.values())
                or abs(rtt_ms - self.rtt_ms) > _TOLERANCE * (1 + self.rtt_ms)):
            return None
        loads = _loads(c, self.vary)
        if loads is None:
            return None
        up = c.uplink_mbps or self.link.uplink_mbps
        down = c.downlink_mbps or self.link.downlink_mbps
        tail_left_s = {"idle": 0.0, "promoting": math.inf}.get(c.radio_state, c.tail_left_s)
        if (self.tails == "none" and tail_left_s > 0) or (self.tails == "some" and tail_left_s <= 0):
            return None
        scale = RADIO_TIME_SCALE_S
        tail_x = math.log((self.deadline_s + scale) / (min(tail_left_s, self.deadline_s) + scale))
        gap_x = (self.no_next_x if c.next_gap_s is None
                 else min(math.log1p(c.next_gap_s / scale), self.no_next_x))
        return np.array([*loads, math.log(self.uplink_top_mbps / up), math.log(self.downlink_top_mbps / down),
                         tail_x, gap_x])

    def at(self, base: Conditions, x: np.ndarray) -> Conditions:
        k = len(self.vary)
        radio: dict[str, object] = {"radio_state": "idle", "tail_left_s": 0.0}
        if self.tails == "some" or x[k + 2] < self.idle_x * (1 - _TOLERANCE):
            left_s = (self.deadline_s + RADIO_TIME_SCALE_S) * math.exp(-x[k + 2]) - RADIO_TIME_SCALE_S
            # the least tail left > 0: a plan is promoted there iff it first uses the radio after 0 s
            least_s = math.ulp(0.0) if self.tails == "some" else 0.0
            radio = {"radio_state": "connected", "tail_left_s": max(left_s, least_s)}
        gap = None if x[k + 3] >= self.no_next_x * (1 - _TOLERANCE) else gap_s(float(x[k + 3]))
        return replace(base, free_fraction=_free(self.vary, x[:k]), rtt_ms=self.rtt_ms,
                       uplink_mbps=self.uplink_top_mbps * math.exp(-x[k]),
                       downlink_mbps=self.downlink_top_mbps * math.exp(-x[k + 1]),
                       next_gap_s=gap, **radio)  # type: ignore[arg-type]


def cloud_box(base: Conditions, link: Link, vary: tuple[str, ...], uplinks_mbps: tuple[float, ...],
              deadline_s: float, min_free_fraction: float, radio_states: bool,
              next_gaps: bool = False, idle: CertifiedBox | None = None,
              promotion_cost: float = 0.0) -> CertifiedBox:
    """The box of conditions with the cloud reachable: loads on ``vary``, uplinks over the
    range of ``uplinks_mbps`` and downlinks over the same range scaled to the link's
    downlink; every tail left if ``radio_states`` (else the radio idle, as a policy that
    does not look at the radio plans); every next gap if ``next_gaps`` and the radio is
    monotone (else no next arrival).

    Given ``idle`` (the box with the radio idle) and ``promotion_cost`` (the objective of
    a promotion, its energy and time), a box of radio states with no next arrival holds
    every tail left > 0 (idle's box holds none) and takes idle's relaxed bounds less the
    promotion (:meth:`CertifiedBox.inherit`): with no next arrival the whole tail is
    charged in every state, so a plan on the device costs the same in every state, and
    a radio plan differs from its cost with the radio idle (always promoted) only by
    the promotion it may save; its time too, which is why only bounds without the
    deadline carry over."""
    scale = link.downlink_mbps / link.uplink_mbps
    gaps = radio_states and next_gaps and radio_monotone(link.radio)
    carried = idle if radio_states and not gaps else None
    tails = "none" if not radio_states else "some" if carried is not None else "any"
    axes = _CloudAxes(link, vary, max(uplinks_mbps), max(uplinks_mbps) * scale,
                      base.rtt_ms if base.rtt_ms is not None else link.rtt_ms, deadline_s, tails)
    span = math.log(max(uplinks_mbps) / min(uplinks_mbps))
    bottom = np.array([0.0] * len(vary) + [0.0, 0.0, 0.0 if radio_states else axes.idle_x,
                                            0.0 if gaps else axes.no_next_x])
    top = np.array([-math.log(min_free_fraction)] * len(vary) + [span, span, axes.idle_x, axes.no_next_x])
    start = replace(base, cloud_reachable=True, queued_s={})
    k = len(vary)
    name = "cloud, radio " + ("idle" if not radio_states else "any state, " + (
        "any next arrival" if gaps else "no next arrival"))
    return CertifiedBox("cloud", vary, bottom, top, lambda x: axes.at(start, x), axes.point,
                        gap_axis=k + 3 if gaps else None, affine_axes=(k, k + 1), flat_axis=k + 3, name=name,
                        carried_from=carried, carry_cost=promotion_cost if carried is not None else 0.0)
