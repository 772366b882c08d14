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
budget is returned.  The pool holds the ILP optima over a grid of conditions
and radio states (:meth:`FastReplanner.warm`), and grows: every full solve
(when no candidate is feasible, a caller's periodic check, a fallback plan
passed to :meth:`FastReplanner.add`) joins it.  On the device alone the
warm-up proves the pool within :data:`CERTIFIED_LOSS` over boxes of loads and
of our own queue; given a budget (wall time or solves) it may leave cells
unproven, and a replan there falls back to a full solve
(:meth:`FastReplanner.coverage`).  ``benchmarks/bench_planner.py`` measures
the loss against a full solve.
"""

from __future__ import annotations

import collections
import copy
import functools
import heapq
import itertools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import numpy as np

from deepx_sim.costs import Conditions, radio_charge, radio_rule
from deepx_sim.errors import InfeasibleError, PlanError
from deepx_sim.plan.ilp import DeepXPlanner
from deepx_sim.plan.problem import RADIO, Plan, Problem, evaluate, transfers_of

DEFAULT_UPLINKS_MBPS = (0.25, 4.0, 64.0)
#: Warm-up scans bisect between neighbours down to this ratio (bandwidth, free
#: fraction, deadline share), from these lowest free fraction and deadline share.
SCAN_RESOLUTION = 1.2
MIN_FREE_FRACTION = 0.2
MIN_DEADLINE_SHARE = 0.3
#: Loads on several processors: random load vectors until this many solves in a
#: row add nothing (at most MAX_SATURATION_SOLVES).
SATURATION_PATIENCE = 20
MAX_SATURATION_SOLVES = 300
DEFAULT_FREE_FRACTIONS = (1.0, 0.4)
#: The loss against a full solve the warm-up proves over the load box on the
#: device alone (issue 15's target for the fast path).
CERTIFIED_LOSS = 0.01
#: Cells narrower than this ratio (of free fraction, or of the share of the
#: deadline left) are not split further: they hug the edge where no plan is feasible.
CELL_RESOLUTION = 1.25
#: Arrival gaps the warm-up plans for, besides "no next request": these shares
#: of the link's tail (a gap beyond the tail costs a whole one, like no next request).
DEFAULT_GAP_SHARES = (0.1, 0.5)


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


@dataclass
class CertifiedBox:
    """A box of conditions on the device alone whose coordinates x in [0, ``top``] make
    every plan slower and costlier as they grow: ``kind`` "load" (x = log 1 / free
    fraction of each of ``processors``) or "queue" (x = -log of the share of the
    deadline our own queue on each leaves); ``at`` maps a point to its conditions."""

    kind: str
    processors: tuple[str, ...]
    top: np.ndarray
    at: Callable[[np.ndarray], Conditions]
    #: the share of the box's volume proven
    proven_share: float = 0.0
    #: cells left unproven, as (lo, hi) corners
    unproven: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def point(self, conditions: Conditions, deadline_s: float) -> np.ndarray | None:
        """The coordinates of ``conditions`` (the cloud taken as unreachable) in the box,
        or None outside it (load or queue off its processors, both at once, beyond the top)."""
        free = {p: f for p, f in conditions.free_fraction.items() if f < 1.0}
        queued = {p: s for p, s in conditions.queued_s.items() if s > 0}
        on, other = (free, queued) if self.kind == "load" else (queued, free)
        if other or not set(on) <= set(self.processors):
            return None
        if self.kind == "load":
            x = -np.log([free.get(p, 1.0) for p in self.processors])
        else:
            left = np.array([1.0 - queued.get(p, 0.0) / deadline_s for p in self.processors])
            if left.min() <= 0:
                return None
            x = -np.log(left)
        return x if bool((x <= self.top * (1 + 1e-12)).all()) else None

    def holds_unproven(self, x: np.ndarray) -> bool:
        """Whether ``x`` lies in a cell left unproven (its boundary included)."""
        return any(bool(((lo <= x) & (x <= hi)).all()) for lo, hi in self.unproven)


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


def _lower_bound(plan: Plan | None) -> float:
    """A lower bound on the optimum from a solve's plan (None: infeasible): its objective
    less its gap; 0 when the solver gave no gap."""
    if plan is None:
        return math.inf
    return 0.0 if plan.gap is None else plan.objective_value * (1 - plan.gap)


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
        self._bounds: dict[tuple[object, ...], float] = {}  # lower bounds solved, per load and queue
        self._stop_at = math.inf  # the warm-up's budget: perf_counter time and solves
        self._last_solve: float = math.inf
        self._solve_s = 0.0  # seconds spent in full solves
        self._fastest_s = math.inf  # the quickest full solve: about the time outside the solver
        #: whether the last warm-up stopped on its budget (scans and saturation cut short)
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
             free_fractions: tuple[float, ...] = DEFAULT_FREE_FRACTIONS,
             vary: tuple[str, ...] | None = None,
             gaps_s: Iterable[float] | None = None,
             budget_s: float | None = None, max_solves: int | None = None) -> FastReplanner:
        """Solve the ILP over the conditions a request may meet and keep each
        distinct optimum, in this order:

        - with a link, the nominal conditions in each radio state (below);
        - on the device alone, the whole box of loads on the processors in
          ``vary`` (default all local ones; free fractions from
          :data:`MIN_FREE_FRACTION` to 1), and the box of our own queue on each
          processor (leaving down to :data:`MIN_DEADLINE_SHARE` of the deadline),
          with the pool proven within :data:`CERTIFIED_LOSS` of the optimum
          (:meth:`_certify`);
        - with a link, scans over uplink bandwidths for each radio state (idle with
          no next request; connected with the next request ``gaps_s`` away, default
          :data:`DEFAULT_GAP_SHARES` of the tail) and load level (each of
          ``free_fractions`` on every processor in ``vary``), and over the share of
          the deadline left with the radio connected (scanned, not proven: the
          radio's tail is not monotone in the delay);
        - with several processors in ``vary``, random load vectors until the pool
          is good enough where it is tried (:meth:`_saturate`).

        ``budget_s`` bounds the warm-up's wall time: no solve starts that would
        end after it (judged by the mean solve so far); ``max_solves`` bounds its
        solves (the same pool on any machine).  Cells of the boxes not yet proven
        then stay unproven, where a replan falls back to a full solve
        (:meth:`coverage`), and the scans stop; :attr:`proven_share` says how much
        of the boxes is proven."""
        self._stop_at = math.inf if budget_s is None else time.perf_counter() + budget_s
        self.budget_spent = False
        self._last_solve = math.inf if max_solves is None else self.full_solves + max_solves
        vary = tuple(vary if vary is not None else self.local)
        base = self.problem.conditions
        radios = self._radio_states(base, gaps_s) if self.link is not None else []
        try:  # the nominal optimum in each radio state first: the commonest conditions
            for radio in radios:
                self._try(radio)
        except _BudgetSpent:
            pass
        self.boxes = []
        self._certify(self._boxes(replace(base, cloud_reachable=False), vary))
        if self.link is None:
            return self
        levels = [dict.fromkeys(vary, f) for f in free_fractions] if vary else [{}]
        lines: list[_Line] = []
        for i, ff in enumerate(levels):
            for radio in radios:
                at = functools.partial(_with_uplink, replace(radio, free_fraction=ff))
                lines.append((lambda up, at=at: self._try(at(up)), at, sorted(uplinks_mbps)))
            if i == 0:  # our own queue with the radio connected, as the share of the deadline left
                lines.append((functools.partial(self._solve_within, radios[-1]), lambda _s: radios[-1],
                              [MIN_DEADLINE_SHARE, 1.0]))
        try:
            self._scan(lines)
            if len(vary) > 1:
                self._saturate(radios, vary)
        except _BudgetSpent:
            pass
        return self

    def _radio_states(self, base: Conditions, gaps_s: Iterable[float] | None) -> list[Conditions]:
        """Idle with no next request, then connected with the next request each of ``gaps_s`` away."""
        tail_s = self.link.radio.tail_s  # type: ignore[union-attr]
        if gaps_s is None:
            gaps_s = [share * tail_s for share in DEFAULT_GAP_SHARES if tail_s]
        radios = [replace(base, radio_state="idle", tail_left_s=0.0, next_gap_s=None)]
        return radios + [replace(base, radio_state="connected", tail_left_s=float("inf"), next_gap_s=g)
                         for g in gaps_s]

    def _boxes(self, local_only: Conditions, vary: tuple[str, ...]) -> list[CertifiedBox]:
        """The load box on ``vary`` (coordinates log 1 / free fraction) and the queue box on
        every local processor (-log share of the deadline left), on the device alone."""
        deadline_s = self.problem.constraints.deadline_s
        local = tuple(self.local)
        boxes = [CertifiedBox("queue", local, np.full(len(local), -math.log(MIN_DEADLINE_SHARE)),
                              lambda x: replace(local_only, queued_s=dict(zip(
                                  local, (-deadline_s * np.expm1(-x)).tolist(), strict=True))))]
        if vary:
            boxes.insert(0, CertifiedBox("load", vary, np.full(len(vary), -math.log(MIN_FREE_FRACTION)),
                                         lambda x: replace(local_only, free_fraction=dict(zip(
                                             vary, np.exp(-x).tolist(), strict=True)))))
        return boxes

    def _saturate(self, radios: list[Conditions], vary: tuple[str, ...]) -> None:
        """Loads on several processors at once: solve at random load vectors (free
        fractions uniform in [MIN_FREE_FRACTION, 1], each radio state in turn) until
        :data:`SATURATION_PATIENCE` solves in a row find the pool already within
        :data:`CERTIFIED_LOSS` of the optimum there (a plan the pool lacks but that
        gains less is no reason to go on)."""
        rng = np.random.default_rng(0)  # the same pool every time
        quiet = 0
        for i in range(MAX_SATURATION_SOLVES):
            if quiet >= SATURATION_PATIENCE:
                return
            conditions = replace(radios[i % len(radios)],
                                 free_fraction={p: float(rng.uniform(MIN_FREE_FRACTION, 1.0)) for p in vary})
            pooled = self._pooled_objective(conditions)
            plan = self._try(conditions)
            quiet = quiet + 1 if pooled <= _lower_bound(plan) * (1 + CERTIFIED_LOSS) else 0

    def _certify(self, boxes: list[CertifiedBox]) -> None:
        """Prove the pool within :data:`CERTIFIED_LOSS` of the optimum over each box of
        coordinates that make every plan slower and costlier as they grow.

        Over a cell the optimum is at least the optimum at its easiest corner (less
        the solve's gap), and the best pooled plan at its hardest corner is
        feasible in the whole cell at no more than its cost there.  Where that
        cost is within the tolerance of the bound the cell is proven; otherwise
        solve at the corners (the plans join the pool) and, if still unproven,
        split the cell where the pool gains most (:meth:`_split_axis`).  Cells
        are taken largest first, so a budget that runs out proves the most it
        can; cells narrower than :data:`CELL_RESOLUTION` on every side, or left
        when the budget is spent, stay unproven."""
        self.boxes += boxes
        order = itertools.count()
        heap = [(-1.0, next(order), box, np.zeros(len(box.top)), box.top, 0.0) for box in boxes]
        while heap:
            neg_share, _, box, lo, hi, bound = heapq.heappop(heap)
            bound = self._cell_bound(box, lo, hi, bound)
            if bound is None:
                box.proven_share -= neg_share
                continue
            axis = self._split_axis(box, lo, hi)
            if axis is None or self._spent():
                box.unproven.append((lo, hi))
                continue
            mid = (lo[axis] + hi[axis]) / 2
            upper_lo, lower_hi = lo.copy(), hi.copy()
            upper_lo[axis] = lower_hi[axis] = mid
            for cell in ((lo, lower_hi), (upper_lo, hi)):
                heapq.heappush(heap, (neg_share / 2, next(order), box, *cell, bound))

    def _cell_bound(self, box: CertifiedBox, lo: np.ndarray, hi: np.ndarray, bound: float) -> float | None:
        """None if the cell [lo, hi] is proven (or nothing is feasible in it), else the best
        lower bound on its optimum found; solves at its corners as needed."""
        hardest = box.at(hi)
        for corner in (lo, hi):
            if math.isinf(bound) or self._pooled_objective(hardest) <= bound * (1 + CERTIFIED_LOSS):
                return None
            solved = self._solved_bound(box.at(corner))
            if corner is lo and solved is not None:
                bound = max(bound, solved)
        return None if math.isinf(bound) or self._pooled_objective(hardest) <= bound * (1 + CERTIFIED_LOSS) \
            else bound

    def _solved_bound(self, conditions: Conditions) -> float | None:
        """The optimum under ``conditions`` less the solve's gap (inf if infeasible; None if
        the budget allows no solve).  Solved once per point."""
        key = (tuple(sorted((p, f) for p, f in conditions.free_fraction.items() if f < 1.0)),
               tuple(sorted((p, s) for p, s in conditions.queued_s.items() if s > 0)))
        if key not in self._bounds:
            try:
                plan = self._try(conditions)
            except _BudgetSpent:
                return None
            self._bounds[key] = _lower_bound(plan)
        return self._bounds[key]

    def _split_axis(self, box: CertifiedBox, lo: np.ndarray, hi: np.ndarray) -> int | None:
        """The side to halve: of those wider than :data:`CELL_RESOLUTION`, the one whose
        halving lowers the best pooled objective at the hardest corner most (the
        widest among equals); None if every side is narrow."""
        wide = [i for i in range(len(lo)) if hi[i] - lo[i] >= math.log(CELL_RESOLUTION)]
        if not wide:
            return None

        def gain(i: int) -> tuple[float, float]:
            corner = hi.copy()
            corner[i] = (lo[i] + hi[i]) / 2
            return self._pooled_objective(box.at(corner)), lo[i] - hi[i]

        return min(wide, key=gain)

    def _spent(self) -> bool:
        """Whether the warm-up's budget leaves no time (or solve) for another solve."""
        return (self.full_solves >= self._last_solve
                or time.perf_counter() + self._mean_solve_s() > self._stop_at)

    def _mean_solve_s(self) -> float:
        return self._solve_s / self.full_solves if self.full_solves else 0.0

    def _count(self, began: float) -> None:
        """Count a full solve that began at ``began`` (perf_counter seconds)."""
        took = time.perf_counter() - began
        self.full_solves += 1
        self._solve_s += took
        self._fastest_s = min(self._fastest_s, took)

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
        :data:`CERTIFIED_LOSS` (or nothing feasible), ``unproven`` inside a cell it
        left unproven, ``unchecked`` outside every box (e.g. the cloud reachable,
        or load and queue together)."""
        if self.link is not None and conditions.cloud_reachable:
            return "unchecked"
        for box in self.boxes:
            x = box.point(conditions, self.problem.constraints.deadline_s)
            if x is not None:
                return "unproven" if box.holds_unproven(x) else "proven"
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
        solver); its plan joins the pool."""
        began = time.perf_counter()
        try:
            plan = (planner or self.planner).plan(self.problem.with_conditions(conditions), start=start)
        finally:
            self._count(began)
        self.add(plan)
        return plan

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

