"""Replanning fast path: re-rank a pool of optimal plans under new conditions.

DeepX replans every inference, faster than an ILP solve allows.  A plan's
costs depend on the conditions only through a few sums, so each candidate
plan is reduced once to features:

- busy seconds per processor (latency scales by 1 / free fraction), and the
  same for the layers before its first cloud layer (the radio rule's
  ``first_use_s``),
- condition-free energy (layer work, on-chip copies),
- number and bytes of uplink and downlink transfers, cloud busy seconds,
- whether it uses the radio.

Under new conditions every candidate's latency and energy follow in closed
form (numpy, tens of microseconds), with the radio rule of
:mod:`deepx_sim.costs` (promotion from idle, the unshared tail) applied to
the whole pool at once, and the best one meeting the deadline and energy
budget is returned.  The pool holds the ILP optima the warm-up solved
(:meth:`FastReplanner.warm`), and grows: every full solve (when no candidate
is feasible, a caller's periodic check, a fallback plan passed to
:meth:`FastReplanner.add`) joins it.  The warm-up proves the pool within
:data:`CERTIFIED_LOSS` over boxes of conditions (:mod:`deepx_sim.plan.boxes`):
loads and our own queue on the device alone, and loads and bandwidths with
the cloud reachable (the radio idle; optionally every radio state and next
arrival); given a budget (wall time or solves) it may leave cells unproven,
and a replan there falls back to a full solve (:meth:`FastReplanner.coverage`).
``benchmarks/bench_planner.py`` measures the loss against a full solve and
the warm-up (``--warm-up``).
"""

from __future__ import annotations

import collections
import contextlib
import copy
import functools
import heapq
import itertools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import numpy as np

from deepx_sim.costs import Conditions, radio_charge, radio_rule
from deepx_sim.errors import InfeasibleError, PlanError
from deepx_sim.plan.boxes import CELL_RESOLUTION, CertifiedBox, cloud_box, device_boxes, gap_s, tail_credit_j
from deepx_sim.plan.ilp import DeepXPlanner
from deepx_sim.plan.problem import RADIO, Plan, Problem, evaluate, transfers_of

DEFAULT_UPLINKS_MBPS = (0.25, 4.0, 64.0)
#: The queue scan with the radio connected bisects between neighbours down to this
#: ratio of the deadline share.
SCAN_RESOLUTION = 1.2
#: The boxes' lowest free fraction and share of the deadline our queue leaves.
MIN_FREE_FRACTION = 0.2
MIN_DEADLINE_SHARE = 0.3
#: The loss against a full solve the warm-up proves over its boxes (issue 15's
#: target for the fast path).
CERTIFIED_LOSS = 0.01
#: Solves the cloud box gets when the warm-up has no budget.
CLOUD_BOX_SOLVES = 40
#: Pieces a cell's gap axis is cut into for the tail credit (pool evaluations, no solves).
GAP_PIECES = 16
#: Arrival gaps the radio scans plan for with the radio connected: these shares of
#: the link's tail (a gap beyond the tail costs a whole one, like no next request).
DEFAULT_GAP_SHARES = (0.1, 0.5)
#: Load levels of the radio scans: these free fractions on every processor varied.
DEFAULT_FREE_FRACTIONS = (1.0, 0.4)


@dataclass(frozen=True)
class _Features:
    plan: Plan
    busy_s: np.ndarray  # per local processor, in FastReplanner.local order
    prefix_busy_s: np.ndarray  # the same, for the layers before the first cloud layer
    uses: np.ndarray  # per local processor: whether any layer runs there
    fixed_latency_s: float  # on-chip copies (condition-free)
    fixed_energy_j: dict[str, float]  # per processor, layer work + on-chip copies
    cloud_busy_s: float
    n_up: int
    bytes_up: int
    n_down: int
    bytes_down: int


class _BudgetSpent(Exception):
    """The warm-up's budget leaves no time for another solve."""


_Line = tuple[Callable[[float], Plan | None], Callable[[float], Conditions], list[float]]


class _UndiagnosedPlanner(DeepXPlanner):
    """The DeepX planner without the diagnosis of an infeasible problem."""

    def diagnose(self, problem: Problem) -> str:
        return "infeasible (the warm-up does not ask why)"


def _warm_copy(planner: DeepXPlanner) -> DeepXPlanner:
    """A copy of ``planner`` for warm-up solves, whose time limit the budget sets; an
    infeasible corner only needs to be known as such, so the diagnosis (one or two
    more solves) is skipped, unless ``planner`` is a subclass."""
    if type(planner) is not DeepXPlanner:
        return copy.copy(planner)
    quiet = _UndiagnosedPlanner.__new__(_UndiagnosedPlanner)
    quiet.__dict__.update(vars(planner))
    return quiet


def _with_uplink(conditions: Conditions, uplink_mbps: float) -> Conditions:
    return replace(conditions, uplink_mbps=uplink_mbps)


def _same_costs(c: Conditions) -> tuple[object, ...]:
    """A key equal for conditions under which every plan costs the same (the link and
    radio ignored when the cloud is unreachable)."""
    free = tuple(sorted((p, f) for p, f in c.free_fraction.items() if f < 1.0))
    queued = tuple(sorted((p, q) for p, q in c.queued_s.items() if q > 0))
    if not c.cloud_reachable:
        return free, queued
    return (free, queued, c.link, c.uplink_mbps, c.downlink_mbps, c.rtt_ms, c.radio_state, c.tail_left_s,
            c.next_gap_s)


def _lower_bound(plan: Plan | None) -> float:
    """A lower bound on the optimum from a solve's plan (None: infeasible): its objective
    less its gap; 0 when the solver gave no gap."""
    if plan is None:
        return math.inf
    return 0.0 if plan.gap is None else plan.objective_value * (1 - plan.gap)


def _ratio(cost: float, bound: float) -> float:
    """cost / bound for a lower bound ``bound`` >= 0 (1 when both are 0)."""
    if bound > 0:
        return cost / bound
    return 1.0 if cost <= 0 else math.inf


def _key(plan: Plan) -> tuple[tuple[str, object], ...]:
    return tuple((p.layer, (p.processor, p.variant)) for p in plan.placements)


class FastReplanner:
    """Plans for one problem (model, platform, constraints) under changing conditions."""

    name = "deepx-fast"

    def __init__(self, problem: Problem, planner: DeepXPlanner | None = None) -> None:
        self.problem = problem
        self.planner = planner or DeepXPlanner()
        self.local = [p.name for p in problem.platform.local_processors]
        self.link = problem.costs.link
        self.candidates: list[_Features] = []
        self._keys: dict[tuple[tuple[str, object], ...], int] = {}  # placements -> index in candidates
        self.full_solves = 0
        #: replans that fell back to a full solve because their conditions lie in a
        #: cell the warm-up left unproven (:meth:`coverage`)
        self.fallbacks = 0
        #: the boxes of conditions the warm-up proved, with their unproven cells
        self.boxes: list[CertifiedBox] = []
        #: lower bounds solved with the cloud unreachable, per point of loads on self.local
        self._alone: list[tuple[np.ndarray, float]] = []
        self._uplinks: tuple[float, ...] = DEFAULT_UPLINKS_MBPS
        self._solved_bounds: dict[tuple[object, ...], float] = {}  # see _bound_at
        self._ceilings_s: dict[tuple[float, ...], float] = {}  # see _latency_ceiling_s, per uplinks
        self._stop_at = math.inf  # the warm-up's budget: perf_counter time and solves
        self._last_solve: float = math.inf
        self._solve_s = 0.0  # seconds spent in full solves
        self._fastest_s = math.inf  # the quickest full solve: about the time outside the solver
        self._longest_s = 0.0  # the longest full solve
        #: whether the last warm-up stopped on its budget (cells left unproven, the scan cut short)
        self.budget_spent = False
        self._warm_planner = _warm_copy(self.planner)
        self._arrays: tuple[np.ndarray, np.ndarray, np.ndarray, bool] | None = None
        # features are taken once under nominal, unloaded conditions (one cost model, cached)
        self._nominal = problem.with_conditions(replace(problem.conditions, free_fraction={},
                                                        uplink_mbps=None, downlink_mbps=None,
                                                        rtt_ms=None, cloud_reachable=True))

    @property
    def pool_size(self) -> int:
        """Distinct plans in the pool."""
        return len(self.candidates)

    # ------------------------------------------------------------ pool
    def warm(self, uplinks_mbps: tuple[float, ...] = DEFAULT_UPLINKS_MBPS,
             vary: tuple[str, ...] | None = None,
             gaps_s: Iterable[float] | None = None,
             budget_s: float | None = None, max_solves: int | None = None,
             radio_box: bool = False, device_alone: bool = True) -> FastReplanner:
        """Solve the ILP over the conditions a request may meet, keeping each distinct
        optimum, until the pool is proven within :data:`CERTIFIED_LOSS` of the optimum
        (:meth:`_certify`) over these boxes (:mod:`deepx_sim.plan.boxes`):

        - on the device alone (unless ``device_alone`` is False, for a caller that
          always reaches the cloud, and there is a link), the loads on the
          processors in ``vary`` (default all local ones; free fractions from
          :data:`MIN_FREE_FRACTION` to 1), and our own queue on each local
          processor (leaving down to :data:`MIN_DEADLINE_SHARE` of the deadline);
        - then, with a link and ``uplinks_mbps``, the cloud reachable: the same
          loads, uplinks over the range of ``uplinks_mbps`` (downlinks over it
          scaled to the link's), the radio idle with no next arrival (a lone
          request, or a policy blind to the radio), proven first; with
          ``radio_box`` then in every radio state with a tail left and no next
          arrival (proven mostly from the first box's bounds less a promotion:
          :func:`~deepx_sim.plan.boxes.cloud_box`), and in every radio state and
          next arrival.  Without a budget these boxes get at most
          :data:`CLOUD_BOX_SOLVES` solves.  (The box of next arrivals is sound
          but weak where a second of radio time costs little against the tail,
          as WiFi's: over BERT-base its cells' margins stay at 2-4 along the gap,
          ``benchmarks/bench_planner.py``.)

        Then, unless ``gaps_s`` is empty, scans over radio states, uplinks, load
        levels and our own queue with the radio connected (:meth:`_radio_lines`):
        tried, not proven, for the conditions outside the boxes.

        ``budget_s`` bounds the warm-up's wall time: no solve starts that would
        end after it (judged by the longest solve so far); ``max_solves`` bounds its
        solves (the same pool on any machine).  Cells not yet proven then stay
        unproven, where a replan falls back to a full solve unless the point
        itself is proven (:meth:`coverage`); :attr:`proven_share` says how much
        of the boxes is proven."""
        self._stop_at = math.inf if budget_s is None else time.perf_counter() + budget_s
        self.budget_spent = False
        self._last_solve = math.inf if max_solves is None else self.full_solves + max_solves
        vary = tuple(vary if vary is not None else self.local)
        gaps = None if gaps_s is None else list(gaps_s)
        base = self.problem.conditions
        deadline_s = self.problem.constraints.deadline_s
        self.boxes = []
        self._uplinks = tuple(uplinks_mbps)
        if device_alone or self.link is None:
            self._certify(device_boxes(replace(base, cloud_reachable=False), vary, tuple(self.local),
                                       deadline_s, self.link, MIN_FREE_FRACTION, MIN_DEADLINE_SHARE))
        if self.link is not None and uplinks_mbps:
            if budget_s is None and max_solves is None:
                self._last_solve = self.full_solves + CLOUD_BOX_SOLVES
            box = functools.partial(cloud_box, base, self.link, vary, tuple(uplinks_mbps), deadline_s,
                                    MIN_FREE_FRACTION)
            idle = box(radio_states=False)
            self._certify([idle])  # first: the radio states' box carries its bounds over
            if radio_box:
                model = self.link.radio
                cons = self.problem.constraints
                promotion = cons.objective_value(model.promotion_energy_j, model.promotion_s)
                self._certify([box(radio_states=True, idle=idle, promotion_cost=promotion),
                               box(radio_states=True, next_gaps=True)])
            if budget_s is None and max_solves is None:
                self._last_solve, self.budget_spent = math.inf, False
        if self.link is not None and gaps != []:
            with contextlib.suppress(_BudgetSpent):
                self._scan(self._radio_lines(tuple(uplinks_mbps) or (self.link.uplink_mbps,), vary, gaps))
        return self

    def _radio_lines(self, uplinks_mbps: tuple[float, ...], vary: tuple[str, ...],
                     gaps: list[float] | None) -> list[_Line]:
        """Scans (tried, not proven) over uplinks for each radio state (idle with no next
        request; connected with the next request each of ``gaps`` away, default
        :data:`DEFAULT_GAP_SHARES` of the tail) and load level (each of
        :data:`DEFAULT_FREE_FRACTIONS` on every processor in ``vary``), and over the
        share of the deadline our own queue leaves with the radio connected."""
        base = self.problem.conditions
        tail_s = self.link.radio.tail_s  # type: ignore[union-attr]
        if gaps is None:
            gaps = [share * tail_s for share in DEFAULT_GAP_SHARES if tail_s]
        radios = [replace(base, radio_state="idle", tail_left_s=0.0, next_gap_s=None)]
        radios += [replace(base, radio_state="connected", tail_left_s=math.inf, next_gap_s=g) for g in gaps]
        lines: list[_Line] = [(functools.partial(self._solve_within, radios[-1]), lambda _s: radios[-1],
                               [MIN_DEADLINE_SHARE, 1.0])]
        for f in DEFAULT_FREE_FRACTIONS if vary else (1.0,):
            for radio in radios:
                at = functools.partial(_with_uplink, replace(radio, free_fraction=dict.fromkeys(vary, f)))
                lines.append((lambda up, at=at: self._try(at(up)), at, sorted(uplinks_mbps)))
        return lines

    def _certify(self, boxes: list[CertifiedBox]) -> None:
        """Prove the pool within :data:`CERTIFIED_LOSS` of the optimum over each box.

        Over a cell [lo, hi] the optimum is at least a lower bound solved at or
        below lo (plus, along the next arrival's gap, the tail credit:
        :meth:`_margin`), and the best pooled plan at hi is feasible in the whole
        cell at no more than its cost there.  Where that cost is within the
        tolerance of the bound the cell is proven; otherwise solve at lo, at lo's
        loads with the cloud unreachable (for the credit), and at hi (the plans
        join the pool), and if still unproven split the cell where the pool
        gains most (:meth:`_split_axis`).  Cells are taken largest first, every
        box weighing the same, so a budget that runs out proves the most it can;
        cells narrower than :data:`CELL_RESOLUTION` on every side, or left when
        the budget is spent, stay unproven."""
        self.boxes += boxes
        order = itertools.count()
        heap = [(-1.0, next(order), box, box.bottom.copy(), box.top.copy()) for box in boxes]
        while heap:
            neg_share, _, box, lo, hi = heapq.heappop(heap)
            if self._cell_proven(box, lo, hi):
                box.proven_share -= neg_share
                continue
            axis = None if self._spent() else self._split_axis(box, lo, hi)
            if axis is None:
                box.unproven.append((lo, hi))
                continue
            mid = (lo[axis] + hi[axis]) / 2
            upper_lo, lower_hi = lo.copy(), hi.copy()
            upper_lo[axis] = lower_hi[axis] = mid
            for cell in ((lo, lower_hi), (upper_lo, hi)):
                heapq.heappush(heap, (neg_share / 2, next(order), box, *cell))

    def _cell_proven(self, box: CertifiedBox, lo: np.ndarray, hi: np.ndarray) -> bool:
        """Whether the cell [lo, hi] is proven (or nothing is feasible in it), solving
        as needed (none once the budget is spent): where the costs are affine in the
        bandwidths, first without the deadline at the cell's bandwidth corners
        (:meth:`_affine_margin`), while those optima meet the constraints; then at
        lo, at lo's loads with the cloud unreachable (for the tail credit), at hi."""
        box.inherit()
        steps: list[tuple[str, Callable[[], object]]] = [("check", lambda: None)]
        if box.affine_at(lo):
            corners = box.corners(lo, lo, hi)
            if box.carried_from is not None:  # first the bounds it carries over (cheaper solves)
                steps += [("carried", functools.partial(self._solve_carried, box, c)) for c in corners]
            steps += [("relaxed", functools.partial(self._solve_relaxed, box, c)) for c in corners]
        steps += [("point", lambda: self._solve_at(box, lo)), ("point", lambda: self._solve_alone(box, lo)),
                  ("point", lambda: self._solve_at(box, hi))]
        # a relaxed step returns False where the deadline binds at lo (relaxed solves bound
        # the optimum poorly), a carried one where the plan it carries is not a radio plan
        # (the promotion it takes off is then not saved): skip the rest of that kind
        stopped: set[str] = set()
        for kind, step in steps:
            if kind in stopped:
                continue
            try:
                if step() is False:
                    stopped.add(kind)
            except _BudgetSpent:
                return False
            if min(self._margin(box, lo, hi), self._affine_margin(box, lo, hi)) <= 1 + CERTIFIED_LOSS:
                return True
        return False

    def _solve_relaxed(self, box: CertifiedBox, x: np.ndarray) -> bool:
        """Solve at point ``x`` of ``box`` (once) with no deadline a plan in the box could
        reach (:attr:`_latency_ceiling_s`) and no energy budget, keeping the lower bound;
        whether that optimum meets the real constraints (then it is also the optimum)."""
        return self._relaxed_plan(box, x)[0]

    def _relaxed_plan(self, box: CertifiedBox, x: np.ndarray) -> tuple[bool, bool | None]:
        """:meth:`_solve_relaxed`'s answer, and whether the optimum there uses the radio
        (None if infeasible, or carried over)."""
        for (p, _), radio in zip(box.relaxed, box.relaxed_radio, strict=True):
            if bool((np.abs(p - x) <= 1e-12).all()):
                return True, radio
        self._limit_time()
        c = self.problem.constraints
        conditions = box.at(x)
        loose = self.problem.with_conditions(conditions).with_constraints(
            replace(c, deadline_s=max(c.deadline_s, self._latency_ceiling_s), energy_budget_j=None))
        best = self._best(conditions) if self.candidates else None  # a warm start: 5.5 -> 0.7 s on
        plan = self._warm_plan(loose, start=None if best is None else self.candidates[best[0]].plan)  # BERT
        box.relaxed.append((x.copy(), _lower_bound(plan)))
        box.relaxed_radio.append(None if plan is None else plan.uses_radio)
        if plan is None:
            return False, None
        self.add(plan)
        meets = plan.latency_s <= c.deadline_s * (1 + 1e-9) and (
            c.energy_budget_j is None or plan.energy_j <= c.energy_budget_j * (1 + 1e-9))
        if meets and not box.solved_at(x):
            box.solved.append((x.copy(), _lower_bound(plan)))
        return meets, plan.uses_radio

    def _solve_carried(self, box: CertifiedBox, x: np.ndarray) -> bool:
        """The relaxed solve at the face of :attr:`~CertifiedBox.carried_from` under point
        ``x`` of ``box``, whose bound ``box`` then takes (:meth:`CertifiedBox.inherit`);
        False if its optimum is a plan on the device alone."""
        assert box.carried_from is not None
        radio = self._relaxed_plan(box.carried_from, box.on_face(x))[1]
        box.inherit()
        return radio is not False

    @property
    def _latency_ceiling_s(self) -> float:
        if self._uplinks not in self._ceilings_s:
            self._ceilings_s[self._uplinks] = self._latency_ceiling()
        return self._ceilings_s[self._uplinks]

    def _latency_ceiling(self) -> float:
        """More than any plan's latency anywhere in the cloud box: every layer at its
        slowest (processor, variant) at the lowest free fraction, every producer sending
        its largest output to every other processor at the lowest bandwidth, a
        promotion; doubled, plus a second."""
        problem, costs = self._nominal, self._nominal.costs
        link = self.link
        assert link is not None
        slowest_mbps = min(self._uplinks) * min(1.0, link.downlink_mbps / link.uplink_mbps)
        total_s = link.radio.promotion_s
        for lay in problem.layers:
            total_s += max(costs.layer_cost(lay.name, p, v).busy_s for p in problem.processors
                           for v in problem.variants(lay, p)) / MIN_FREE_FRACTION
            sizes = [costs.edge_bytes(lay.name, succ) for succ in problem.graph.successors(lay.name)]
            largest = max([*sizes, lay.output_bytes(costs.activation_bits)])
            per_copy_s = (largest * 8e-6 / slowest_mbps + link.rtt_s
                          + 2 * largest / (problem.platform.shared_memory_gbps * 1e9))
            total_s += len(problem.processors) * per_copy_s
        return 2 * total_s + 1.0

    def _affine_margin(self, box: CertifiedBox, lo: np.ndarray, hi: np.ndarray) -> float:
        """As :meth:`_margin`, where every plan's costs and latency are affine in
        1 / bandwidth (the next arrival beyond the tail; otherwise inf).

        The optimum without deadline and budget is then a minimum of affine
        functions: concave, so over the cell's bandwidths (loads, radio held at
        lo) at least the interpolation of its lower bounds at the bandwidth
        corners (solved there or below), and the optimum is at least that.  A
        pooled plan feasible at every bandwidth corner with the rest at hi is
        feasible over the cell, at a cost at most the interpolation of its costs
        there; so the cell holds if one plan is within the tolerance at every
        corner."""
        if not box.affine_at(lo):
            return math.inf
        lows, highs = box.corners(lo, lo, hi), box.corners(hi, lo, hi)
        bounds = []
        for corner in lows:
            below = box.relaxed_below(corner)
            if below is None:
                return math.inf
            bounds.append(below[0])
        if any(math.isinf(b) for b in bounds):
            return 0.0  # no plan meets accuracy and memory: nothing is feasible anywhere
        if not self.candidates:
            return math.inf
        scores = np.array([self._scores(box.at(corner))[0] for corner in highs])
        worst = np.max([[_ratio(v, b) for v in row] for row, b in zip(scores, bounds, strict=True)], axis=0)
        return float(worst.min())

    def _solve_at(self, box: CertifiedBox, x: np.ndarray) -> None:
        """Solve at point ``x`` of ``box`` (once) and keep its lower bound."""
        if box.solved_at(x):
            return
        conditions = box.at(x)
        bound = self._bound_at(conditions)
        box.solved.append((x.copy(), bound))
        if box.kind == "load":
            self._alone.append((self._load_point(conditions), bound))

    def _solve_alone(self, box: CertifiedBox, x: np.ndarray) -> None:
        """For the tail credit: the optimum with the cloud unreachable at the loads of ``x``."""
        if box.gap_axis is None:
            return
        conditions = replace(self.problem.conditions, cloud_reachable=False,
                             free_fraction=box.at(x).free_fraction, queued_s={})
        point = self._load_point(conditions)
        if any(bool((np.abs(p - point) <= 1e-12).all()) for p, _ in self._alone):
            return
        self._alone.append((point, self._bound_at(conditions)))

    def _bound_at(self, conditions: Conditions) -> float:
        """The lower bound on the optimum a solve under ``conditions`` gives, solved once
        for conditions that cost every plan the same (the boxes share their corners)."""
        key = _same_costs(conditions)
        if key not in self._solved_bounds:
            self._solved_bounds[key] = _lower_bound(self._try(conditions))
        return self._solved_bounds[key]

    def _load_point(self, conditions: Conditions) -> np.ndarray:
        return -np.log([conditions.free_fraction.get(p, 1.0) for p in self.local])

    def _alone_bound(self, conditions: Conditions) -> float | None:
        """The best lower bound on the optimum with the cloud unreachable at the loads of
        ``conditions``, from solves at or below them (None: none)."""
        point = self._load_point(conditions)
        bounds = [b for p, b in self._alone if bool((p <= point + 1e-12).all())]
        return max(bounds) if bounds else None

    def _margin(self, box: CertifiedBox, lo: np.ndarray, hi: np.ndarray) -> float:
        """The largest ratio, over the cell [lo, hi], of the best pooled objective to a
        lower bound on the optimum (the cell is proven when it is within 1 +
        :data:`CERTIFIED_LOSS`; 0 when nothing is feasible at lo, inf without a bound).

        The pooled objective at a point is at most that at the cell's top; the
        optimum at least the bound solved at a point s at or below lo.  Along the
        gap axis (the cell cut in :data:`GAP_PIECES`) a radio plan's cost grows
        from s by at least the tail credit (:func:`~deepx_sim.plan.boxes.tail_credit_j`)
        for busy times up to the top's pooled objective over the least rate at
        which busy time costs (a plan busier costs more than the pool there), and
        a plan on the device alone costs at least the optimum with the cloud
        unreachable at s's loads: the optimum is at least the smaller of the two."""
        below = box.bound_below(lo)
        if below is None:
            return math.inf
        bound, source = below
        if math.isinf(bound):
            return 0.0
        top = self._pooled_objective(box.at(hi))
        k = box.gap_axis
        easy = k is None or top <= bound * (1 + CERTIFIED_LOSS)
        alone = None if easy else self._alone_bound(box.at(source))
        if k is None or alone is None:
            return _ratio(top, bound)
        model = self.link.radio  # type: ignore[union-attr]
        busy_max_s = top / self._busy_rate if self._busy_rate > 0 else math.inf
        energy_weight = self.problem.constraints.objective_value(1.0, 0.0)
        edges = np.linspace(lo[k], hi[k], GAP_PIECES + 1) if hi[k] > lo[k] else np.array([lo[k], hi[k]])
        worst = 0.0
        for start, end in itertools.pairwise(edges):
            corner = hi.copy()
            corner[k] = end
            credit = energy_weight * tail_credit_j(model, gap_s(source[k]), gap_s(start), busy_max_s)
            low = max(bound, min(alone, bound + credit, top))
            worst = max(worst, _ratio(self._pooled_objective(box.at(corner)), low))
        return worst

    @functools.cached_property
    def _busy_rate(self) -> float:
        """The least objective a radio plan pays per second of busy time (transfers at the
        radio's base power, cloud time at its connected power, promotion at its power),
        plus the latency's weight: a plan busy this long costs at least that much."""
        if self.link is None:
            return 0.0
        model = self.link.radio
        least_w = min(model.base_mw, model.promotion_power_mw, model.connected_wait_power_w * 1000.0) / 1000.0
        return self.problem.constraints.objective_value(least_w, 1.0)

    def _split_axis(self, box: CertifiedBox, lo: np.ndarray, hi: np.ndarray) -> int | None:
        """The side to halve: of those wider than :data:`CELL_RESOLUTION`, the one whose
        halving lowers the lower half's margin most (among equals the widest relative to
        the box, so that sides are halved in turn); None if every side is narrow."""
        wide = [i for i in range(len(lo)) if hi[i] - lo[i] >= math.log(CELL_RESOLUTION)]
        if not wide:
            return None

        widths = box.widths()

        def gain(i: int) -> tuple[float, float]:
            corner = hi.copy()
            corner[i] = (lo[i] + hi[i]) / 2
            margin = min(self._margin(box, lo, corner), self._affine_margin(box, lo, corner))
            return margin, (lo[i] - hi[i]) / widths[i]  # among equals the widest for its box

        return min(wide, key=gain)

    def _spent(self) -> bool:
        """Whether the warm-up's budget leaves no time (or solve) for another solve, judged
        by the longest so far (the mean, weighed down by quick solves on the device alone,
        lets a slower one with the cloud reachable start too late)."""
        return (self.full_solves >= self._last_solve
                or time.perf_counter() + self._longest_s > self._stop_at)

    def _count(self, began: float) -> None:
        """Count a full solve that began at ``began`` (perf_counter seconds)."""
        took = time.perf_counter() - began
        self.full_solves += 1
        self._solve_s += took
        self._fastest_s = min(self._fastest_s, took)
        self._longest_s = max(self._longest_s, took)

    @property
    def proven_share(self) -> float:
        """The share of the boxes' volume (in their coordinates, each box weighing the
        same) the warm-up proved; 0 before :meth:`warm`."""
        return float(np.mean([box.proven_share for box in self.boxes])) if self.boxes else 0.0

    @property
    def unproven_cells(self) -> list[tuple[Conditions, Conditions]]:
        """Cells of the boxes the warm-up left unproven, as (easiest, hardest) conditions."""
        return [(box.at(lo), box.at(hi)) for box in self.boxes for lo, hi in box.unproven]

    def coverage(self, conditions: Conditions) -> str:
        """``proven`` inside a box where the warm-up proved the pool within
        :data:`CERTIFIED_LOSS` (or nothing feasible), or at a point of a cell it left
        unproven where the pooled objective is within the tolerance of a bound
        solved below it (:meth:`_margin` at the point itself); ``unproven`` elsewhere
        in such a cell; ``unchecked`` outside every box (e.g. load and queue
        together, our queue with the cloud reachable, loads beyond the box)."""
        for box in self.boxes:
            x = box.point(conditions)
            if x is not None:
                margin = 0.0 if not box.holds_unproven(x) else min(self._margin(box, x, x),
                                                                   self._affine_margin(box, x, x))
                proven = margin <= 1 + CERTIFIED_LOSS
                return "proven" if proven else "unproven"
        return "unchecked"

    def _pooled_objective(self, conditions: Conditions) -> float:
        """The objective of the best pooled plan under ``conditions`` (inf if none fits)."""
        if not self.candidates:
            return math.inf
        return float(self._scores(conditions)[0].min())

    def _try(self, conditions: Conditions) -> Plan | None:
        """A warm-up solve (None if infeasible), warm-started from the best pooled plan;
        raises _BudgetSpent when the budget leaves no time for it or runs out during it
        without a plan (a plan found by then comes with its gap, which the proofs
        subtract)."""
        self._limit_time()
        best = self._best(conditions) if self.candidates else None
        plan = self._warm_plan(self.problem.with_conditions(conditions),
                               start=None if best is None else self.candidates[best[0]].plan)
        if plan is not None:
            self.add(plan)
        return plan

    def _warm_plan(self, problem: Problem, start: Plan | None = None) -> Plan | None:
        """The warm-up planner's plan (None if infeasible), counted; _BudgetSpent when its
        time limit came before any plan (nothing learnt)."""
        began = time.perf_counter()
        try:
            return self._warm_planner.plan(problem, start=start)
        except InfeasibleError:
            return None
        except PlanError as exc:
            self.budget_spent = True
            raise _BudgetSpent from exc
        finally:
            self._count(began)

    def _limit_time(self) -> None:
        """Raise _BudgetSpent if no solve fits the budget; else give the next solve the
        time left as its solver's limit (the planner's own limit if that is shorter),
        less the quickest solve so far for building the program and costing the plan."""
        left = self._stop_at - time.perf_counter() - (0.0 if math.isinf(self._fastest_s) else self._fastest_s)
        if self._spent() or left <= 0:
            self.budget_spent = True
            raise _BudgetSpent
        own = self.planner.time_limit_s
        self._warm_planner.time_limit_s = own if math.isinf(left) else min(own or math.inf, left)

    def _solve_within(self, conditions: Conditions, share: float) -> Plan | None:
        """The optimum when only ``share`` of the deadline is left, costed for the
        real deadline (None if there is none)."""
        self._limit_time()
        c = self.problem.constraints
        tight = self.problem.with_conditions(conditions).with_constraints(
            replace(c, deadline_s=c.deadline_s * share))
        plan = self._warm_plan(tight)
        if plan is None:
            return None
        plan = evaluate(self.problem.with_conditions(conditions), plan.assignment, plan.planner,
                        solver=plan.solver, solve_time_s=plan.solve_time_s, gap=plan.gap)
        self.add(plan)
        return plan

    def _scan(self, lines: list[_Line]) -> None:
        """Each line's optimum at its points (increasing), then, breadth first over all
        lines, at geometric midpoints of neighbours whose optima are not close (each
        within :data:`CERTIFIED_LOSS` of the other's at both ends), down to
        :data:`SCAN_RESOLUTION`: between close ends the plans in between rarely gain."""
        todo: collections.deque[tuple[_Line, float, float, Plan | None, Plan | None]] = collections.deque()
        for line in lines:
            found = [line[0](x) for x in line[2]]
            todo.extend((line, lo, hi, a, b) for lo, hi, a, b
                        in zip(line[2], line[2][1:], found, found[1:], strict=False))
        while todo:
            line, lo, hi, a, b = todo.popleft()
            if hi / lo < SCAN_RESOLUTION or self._close(line[1](lo), line[1](hi), a, b):
                continue
            mid = (lo * hi) ** 0.5
            m = line[0](mid)
            todo += [(line, lo, mid, a, m), (line, mid, hi, m, b)]

    def _close(self, at_a: Conditions, at_b: Conditions, a: Plan | None, b: Plan | None) -> bool:
        """Whether plans ``a`` (optimal at ``at_a``) and ``b`` (at ``at_b``) are each within
        :data:`CERTIFIED_LOSS` of the other at the other's conditions (both None: both infeasible)."""
        if a is None or b is None:
            return a is None and b is None
        ia, ib = self._keys[_key(a)], self._keys[_key(b)]
        for c in (at_a, at_b):
            scores = self._scores(c)[0]
            if max(scores[ia], scores[ib]) > min(scores[ia], scores[ib]) * (1 + CERTIFIED_LOSS):
                return False
        return True

    def solve(self, conditions: Conditions, start: Plan | None = None,
              planner: DeepXPlanner | None = None) -> Plan:
        """A full ILP solve under ``conditions`` (``start``: a first solution for the
        solver); its plan joins the pool, its bound the boxes (:meth:`learn`)."""
        began = time.perf_counter()
        try:
            plan = (planner or self.planner).plan(self.problem.with_conditions(conditions), start=start)
        finally:
            self._count(began)
        self.learn(plan)
        return plan

    def learn(self, plan: Plan) -> None:
        """Put ``plan``, a full solve's under its own conditions and this problem's
        constraints, in the pool, and its lower bound on the optimum (its objective less
        its gap) in every box holding those conditions: later replans at conditions above
        it in a cell left unproven may then be proven from it (:meth:`coverage`)."""
        self.add(plan)
        bound = _lower_bound(plan)
        for box in self.boxes:
            x = box.point(plan.conditions)
            if x is not None and bound > 0 and not box.solved_at(x):
                box.solved.append((x, bound))

    def add(self, plan: Plan) -> None:
        """Put ``plan`` (any plan for this problem) in the pool, unless it is there."""
        key = _key(plan)
        if key in self._keys:
            return
        self._keys[key] = len(self.candidates)
        self.candidates.append(self._features(plan))
        self._arrays = None

    def _features(self, plan: Plan) -> _Features:
        costs = self._nominal.costs
        busy = np.zeros(len(self.local))
        prefix = np.zeros(len(self.local))
        uses = np.zeros(len(self.local), dtype=bool)
        fixed_energy = dict.fromkeys(self.local, 0.0)
        cloud_busy = fixed_latency = 0.0
        remote_seen = False
        for place in plan.placements:
            c = costs.layer_cost(place.layer, place.processor, place.variant)
            if place.processor in self.local:
                i = self.local.index(place.processor)
                busy[i] += c.busy_s
                uses[i] = True
                prefix[i] += 0.0 if remote_seen else c.busy_s
                fixed_energy[place.processor] += c.energy_j
            else:
                remote_seen = True
                cloud_busy += c.busy_s
        n_up = n_down = bytes_up = bytes_down = 0
        where = {p.layer: p.processor for p in plan.placements}
        for _, src, dst, size in transfers_of(self._nominal, where):
            if src in self.local and dst in self.local:
                t = costs.transfer_cost(size, src, dst)
                fixed_latency += t.latency_s
                fixed_energy[src] += t.energy_j
            elif dst in self.local:
                n_down, bytes_down = n_down + 1, bytes_down + size
            else:
                n_up, bytes_up = n_up + 1, bytes_up + size
        return _Features(plan, busy, prefix, uses, fixed_latency, fixed_energy, cloud_busy,
                         n_up, bytes_up, n_down, bytes_down)

    def _stack(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """(M, uses radio, uses each local processor, any uses radio).  Every pooled plan's latency,
        radio span, first radio use and energy (before queueing, promotion and
        tail) are ``theta @ M``, four blocks of one column per plan, with
        ``theta`` the conditions' parameters (:meth:`_theta`): all are linear in them."""
        if self._arrays is None:
            rows = [self._coefficients(f) for f in self.candidates]
            m = np.array(rows).transpose(2, 1, 0).reshape(len(rows[0][0]), -1)
            radio = np.array([f.plan.uses_radio for f in self.candidates])
            self._arrays = (m, radio, np.array([f.uses for f in self.candidates]).T.copy(),
                            bool(radio.any()))
        return self._arrays

    def _coefficients(self, f: _Features) -> list[list[float]]:
        """One plan's [latency, span, first use, energy] coefficients on theta."""
        zeros = [0.0] * len(self.local)
        n_moves = float(f.n_up + f.n_down)
        mb_up, mb_down = f.bytes_up * 8 / 1e6, f.bytes_down * 8 / 1e6
        fixed_j = sum(f.fixed_energy_j.values())
        if self.link is None:
            return [[*f.busy_s, f.fixed_latency_s], [*zeros, 0.0], [*f.prefix_busy_s, 0.0], [*zeros, fixed_j]]
        model = self.link.radio
        base_w = model.base_mw / 1000.0
        moved_j = model.transfer_energy_j(0.0, up_megabits=mb_up, down_megabits=mb_down)
        return [[*f.busy_s, f.cloud_busy_s, n_moves, mb_up, mb_down, f.fixed_latency_s],
                [*zeros, f.cloud_busy_s, n_moves, mb_up, mb_down, 0.0],
                [*f.prefix_busy_s, 0.0, 0.0, 0.0, 0.0, 0.0],
                [*zeros, f.cloud_busy_s * model.connected_wait_power_w, base_w * n_moves,
                 base_w * mb_up, base_w * mb_down, fixed_j + moved_j]]

    def _theta(self, conditions: Conditions) -> np.ndarray:
        """1 / free fraction of each local processor (then the cloud), rtt / 2,
        1 / uplink and 1 / downlink Mbps, and 1."""
        free = conditions.free_fraction
        theta = [1.0 / free.get(p, 1.0) for p in self.local]
        link = self.link
        if link is not None:
            theta += [1.0 / free.get(link.remote, 1.0),
                      (conditions.rtt_ms if conditions.rtt_ms is not None else link.rtt_ms) / 2e3,
                      1.0 / (conditions.uplink_mbps or link.uplink_mbps),
                      1.0 / (conditions.downlink_mbps or link.downlink_mbps)]
        theta.append(1.0)
        return np.array(theta)

    # ------------------------------------------------------------ replan
    def plan(self, conditions: Conditions) -> Plan:
        """The best pooled plan under ``conditions``, with its costs there; a full
        solve if none fits, or if ``conditions`` lie in a cell the warm-up left
        unproven (counted in :attr:`fallbacks`)."""
        start = time.perf_counter()
        if self._falls_back(conditions):
            return self.solve(conditions)
        if self.candidates:
            best = self._best(conditions)
            if best is not None:
                return self._as_plan(self.candidates[best[0]], conditions, best,
                                     time.perf_counter() - start)
        return self.solve(conditions)

    def choose(self, conditions: Conditions) -> tuple[Plan, float, float] | None:
        """The best pooled Plan object itself (its costs are those of the conditions
        it was solved under) with its latency_s and energy_j under ``conditions``,
        or None if no pooled plan is feasible or ``conditions`` lie in a cell the
        warm-up left unproven (then the caller solves in full; counted in
        :attr:`fallbacks`): the simulator's per-request call."""
        if self._falls_back(conditions):
            return None
        best = self._best(conditions) if self.candidates else None
        if best is None:
            return None
        index, latency_s, energy_j, _, _ = best
        return self.candidates[index].plan, latency_s, energy_j

    def _costs(self, conditions: Conditions) -> tuple[np.ndarray, ...]:
        """(latency_s, energy_j, uses the radio, first_use_s, span_s) of every pooled
        plan under ``conditions``: one product, then the radio rule on all at once."""
        m, radio, uses, any_radio = self._stack()
        latency, span_s, first_use_s, energy = (self._theta(conditions) @ m).reshape(4, -1)
        if conditions.queued_s:  # wait for the longest of our own queues among the processors used
            queued = np.array([conditions.queued_s.get(p, 0.0) for p in self.local])
            latency = latency + (queued[:, None] * uses).max(axis=0)
        if not any_radio:
            return latency, energy, radio, first_use_s, span_s
        model = self.link.radio  # type: ignore[union-attr]
        promoted, tail_j = radio_rule(model, conditions, first_use_s, span_s)
        promoted = promoted & radio
        latency = latency + promoted * model.promotion_s
        energy = energy + promoted * model.promotion_energy_j + radio * tail_j
        return latency, energy, radio, first_use_s, span_s

    def _falls_back(self, conditions: Conditions) -> bool:
        """Whether a replan under ``conditions`` must solve in full (counted)."""
        if not self.boxes:
            return False
        unproven = self.coverage(conditions) == "unproven"
        self.fallbacks += unproven
        return unproven

    def _scores(self, conditions: Conditions) -> tuple[np.ndarray, ...]:
        """(objective, latency_s, energy_j, first_use_s, span_s) of every pooled plan
        under ``conditions``, the objective inf where a plan is infeasible."""
        cons = self.problem.constraints
        latency, energy, radio, first_use_s, span_s = self._costs(conditions)
        score = cons.objective_value(energy, latency)  # type: ignore[arg-type]
        bad = latency > cons.deadline_s * (1 + 1e-9)
        if not conditions.cloud_reachable:
            bad |= radio
        if cons.energy_budget_j is not None:
            bad |= energy > cons.energy_budget_j * (1 + 1e-9)
        return np.where(bad, np.inf, score), latency, energy, first_use_s, span_s

    def _best(self, conditions: Conditions) -> tuple[int, float, float, float, float] | None:
        """(index, latency_s, energy_j, first_use_s, span_s) of the best feasible pooled plan."""
        score, latency, energy, first_use_s, span_s = self._scores(conditions)
        i = int(score.argmin())
        if math.isinf(score[i]):
            return None
        return i, float(latency[i]), float(energy[i]), float(first_use_s[i]), float(span_s[i])

    def _as_plan(self, f: _Features, conditions: Conditions, best: tuple[int, float, float, float, float],
                 elapsed: float) -> Plan:
        _, latency, energy, first_use_s, span_s = best
        breakdown = {p: e for p, e in f.fixed_energy_j.items() if e != 0.0 or p in f.plan.memory_bytes}
        charge = None
        if f.plan.uses_radio:
            breakdown[RADIO] = energy - sum(f.fixed_energy_j.values())
            charge = radio_charge(self.link.radio, conditions, first_use_s, span_s)  # type: ignore[union-attr]
        return replace(f.plan, planner=self.name, latency_s=latency, energy_j=energy,
                       energy_breakdown_j=breakdown, radio=charge,
                       objective_value=self.problem.constraints.objective_value(energy, latency),
                       conditions=conditions, solver="pool", solve_time_s=elapsed, gap=None,
                       status="feasible")

    def check(self, plan: Plan) -> Plan:
        """The same placements costed by :func:`evaluate` (for tests and audits)."""
        return evaluate(self.problem.with_conditions(plan.conditions), plan.assignment, "check")

