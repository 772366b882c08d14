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
passed to :meth:`FastReplanner.add`) joins it.  ``benchmarks/bench_planner.py``
measures the loss against a full solve.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import numpy as np

from deepx_sim.costs import Conditions, radio_charge, radio_rule
from deepx_sim.errors import InfeasibleError
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


class FastReplanner:
    """Plans for one problem (model, platform, constraints) under changing conditions."""

    name = "deepx-fast"

    def __init__(self, problem: Problem, planner: DeepXPlanner | None = None) -> None:
        self.problem = problem
        self.planner = planner or DeepXPlanner()
        self.local = [p.name for p in problem.platform.local_processors]
        self.link = problem.costs.link
        self.candidates: list[_Features] = []
        self._keys: set[tuple[tuple[str, object], ...]] = set()
        self.full_solves = 0
        #: cells of the load box (or of our own queue) the warm-up could not prove,
        #: next to where no plan is feasible, as (easiest, hardest) conditions
        self.unproven_cells: list[tuple[Conditions, Conditions]] = []
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
             gaps_s: Iterable[float] | None = None) -> FastReplanner:
        """Solve the ILP over the conditions a request may meet and keep each
        distinct optimum:

        - loads (each of ``free_fractions`` on every processor in ``vary``,
          default all local ones) x radio states (idle with no next
          request; connected with the next request ``gaps_s`` away, default
          :data:`DEFAULT_GAP_SHARES` of the tail) x uplink bandwidths, and the
          same loads with the cloud unreachable;
        - on the device alone, the whole box of loads on the processors in
          ``vary`` (free fractions from :data:`MIN_FREE_FRACTION` to 1), with the
          pool proven within :data:`CERTIFIED_LOSS` of the optimum (:meth:`_certify`);
        - our own queue on each processor, leaving down to :data:`MIN_DEADLINE_SHARE`
          of the deadline: proven on the device alone (:meth:`_certify`), and as
          a share of the deadline left scanned with the radio connected;
        - with several processors in ``vary``, random load vectors until the pool
          stops growing (:meth:`_saturate`).

        Every scan starts from a few points and bisects between neighbours whose
        optima differ, down to :data:`SCAN_RESOLUTION` (a ratio): where both ends
        share an optimum, the plans in between rarely beat it."""
        vary = tuple(vary if vary is not None else self.local)
        base = self.problem.conditions
        local_only = replace(base, cloud_reachable=False)
        # every processor in vary at each level: linear in the processors, where a
        # product of levels would be exponential (the box is covered on the device
        # alone by _certify, with the radio by _saturate)
        loads = [dict.fromkeys(vary, f) for f in free_fractions] if vary else [{}]
        if vary:
            self.unproven_cells += self._certify(
                lambda x: replace(local_only, free_fraction=dict(zip(vary, np.exp(-x).tolist(),
                                                                     strict=True))),
                np.full(len(vary), -math.log(MIN_FREE_FRACTION)))
        else:
            self._try(local_only)
        # our own queue on each processor, as the share of the deadline it leaves
        deadline_s = self.problem.constraints.deadline_s
        self.unproven_cells += self._certify(
            lambda x: replace(local_only, queued_s=dict(zip(self.local, (-deadline_s * np.expm1(-x)).tolist(),
                                                            strict=True))),
            np.full(len(self.local), -math.log(MIN_DEADLINE_SHARE)))
        radios = [local_only]
        if self.link is not None:
            tail_s = self.link.radio.tail_s
            if gaps_s is None:
                gaps_s = [share * tail_s for share in DEFAULT_GAP_SHARES if tail_s]
            radios = [replace(base, radio_state="idle", tail_left_s=0.0, next_gap_s=None)]
            radios += [replace(base, radio_state="connected", tail_left_s=float("inf"), next_gap_s=g)
                       for g in gaps_s]
            for radio, ff in itertools.product(radios, loads):
                loaded = replace(radio, free_fraction=ff)
                self._scan(lambda up, c=loaded: self._try(replace(c, uplink_mbps=up)),
                           sorted(uplinks_mbps))
        if self.link is not None:  # the radio's tail is not monotone in the delay: scanned, not proven
            self._scan(lambda share: self._solve_within(radios[-1], share), [MIN_DEADLINE_SHARE, 1.0])
        if len(vary) > 1:
            self._saturate(radios, vary)
        return self

    def _saturate(self, radios: list[Conditions], vary: tuple[str, ...]) -> None:
        """Loads on several processors at once: solve at random load vectors (free
        fractions uniform in [MIN_FREE_FRACTION, 1], each radio state in turn) until
        :data:`SATURATION_PATIENCE` solves in a row find no plan the pool lacks."""
        rng = np.random.default_rng(0)  # the same pool every time
        quiet = 0
        for i in range(MAX_SATURATION_SOLVES):
            if quiet >= SATURATION_PATIENCE:
                return
            free = {p: float(rng.uniform(MIN_FREE_FRACTION, 1.0)) for p in vary}
            before = self.pool_size
            self._try(replace(radios[i % len(radios)], free_fraction=free))
            quiet = quiet + 1 if self.pool_size == before else 0

    def _certify(self, at: Callable[[np.ndarray], Conditions], top: np.ndarray
                 ) -> list[tuple[Conditions, Conditions]]:
        """Prove the pool within :data:`CERTIFIED_LOSS` of the optimum over the box
        [0, ``top``] of coordinates that make every plan slower and costlier as
        they grow (log 1 / free fraction, -log share of the deadline left);
        ``at`` maps a point to its conditions.  Returns the cells left unproven,
        as (easiest, hardest) conditions (see :attr:`unproven_cells`).

        Over a cell the optimum is at least the optimum at its easiest corner (less
        the solve's gap), and the best pooled plan at its hardest corner is
        feasible in the whole cell at no more than its cost there.  Where that
        cost is within the tolerance of the bound the cell is proven; otherwise
        solve at the corners (the plans join the pool) and, if still unproven,
        split the cell in the middle of its widest side."""
        solved: dict[tuple[float, ...], float] = {}

        def optimum(x: np.ndarray) -> float:
            """A lower bound on the optimum there: the solve's objective less its gap."""
            key = tuple(x)
            if key not in solved:
                plan = self._try(at(x))
                solved[key] = math.inf if plan is None else plan.objective_value * (1 - (plan.gap or 0.0))
            return solved[key]

        lo = np.zeros(len(top))
        cells = [(lo, top, optimum(lo))]
        unproven = []
        while cells:
            lo, hi, bound = cells.pop()
            if math.isinf(bound):  # not even the easiest corner is feasible
                continue
            if self._pooled_objective(at(hi)) > bound * (1 + CERTIFIED_LOSS):
                bound = optimum(lo)
                optimum(hi)
            if self._pooled_objective(at(hi)) <= bound * (1 + CERTIFIED_LOSS):
                continue
            widest = int(np.argmax(hi - lo))
            if hi[widest] - lo[widest] < math.log(CELL_RESOLUTION):
                unproven.append((at(lo), at(hi)))
                continue
            mid = (lo[widest] + hi[widest]) / 2
            upper_lo, lower_hi = lo.copy(), hi.copy()
            upper_lo[widest] = lower_hi[widest] = mid
            cells += [(lo, lower_hi, bound), (upper_lo, hi, bound)]
        return unproven

    def _pooled_objective(self, conditions: Conditions) -> float:
        """The objective of the best pooled plan under ``conditions`` (inf if none fits)."""
        best = self._best(conditions) if self.candidates else None
        return math.inf if best is None else self.problem.constraints.objective_value(best[2], best[1])

    def _try(self, conditions: Conditions) -> Plan | None:
        try:
            return self.solve(conditions)
        except InfeasibleError:
            return None

    def _solve_within(self, conditions: Conditions, share: float) -> Plan | None:
        """The optimum when only ``share`` of the deadline is left, costed for the
        real deadline (None if there is none)."""
        c = self.problem.constraints
        tight = self.problem.with_conditions(conditions).with_constraints(
            replace(c, deadline_s=c.deadline_s * share))
        try:
            plan = self.planner.plan(tight)
        except InfeasibleError:
            return None
        self.full_solves += 1
        plan = evaluate(self.problem.with_conditions(conditions), plan.assignment, plan.planner,
                        solver=plan.solver, solve_time_s=plan.solve_time_s, gap=plan.gap)
        self.add(plan)
        return plan

    @staticmethod
    def _scan(optimum: Callable[[float], Plan | None], points: list[float]) -> None:
        """``optimum`` at ``points`` (increasing), then at geometric midpoints of
        neighbours whose optima differ, down to :data:`SCAN_RESOLUTION`."""
        found = [optimum(x) for x in points]
        todo = list(zip(points, points[1:], found, found[1:], strict=False))
        while todo:
            lo, hi, a, b = todo.pop()
            same = (a is None and b is None) or (a is not None and b is not None
                                                 and a.placements == b.placements)
            if same or hi / lo < SCAN_RESOLUTION:
                continue
            mid = (lo * hi) ** 0.5
            m = optimum(mid)
            todo += [(lo, mid, a, m), (mid, hi, m, b)]

    def solve(self, conditions: Conditions) -> Plan:
        """A full ILP solve under ``conditions``; its plan joins the pool."""
        plan = self.planner.plan(self.problem.with_conditions(conditions))
        self.full_solves += 1
        self.add(plan)
        return plan

    def add(self, plan: Plan) -> None:
        """Put ``plan`` (any plan for this problem) in the pool, unless it is there."""
        key = tuple((p.layer, (p.processor, p.variant)) for p in plan.placements)
        if key in self._keys:
            return
        self._keys.add(key)
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
        solve if none fits."""
        start = time.perf_counter()
        if self.candidates:
            best = self._best(conditions)
            if best is not None:
                return self._as_plan(self.candidates[best[0]], conditions, best,
                                     time.perf_counter() - start)
        return self.solve(conditions)

    def choose(self, conditions: Conditions) -> tuple[Plan, float, float] | None:
        """The best pooled Plan object itself (its costs are those of the conditions
        it was solved under) with its latency_s and energy_j under ``conditions``,
        or None if no pooled plan is feasible: the simulator's per-request call."""
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

    def _best(self, conditions: Conditions) -> tuple[int, float, float, float, float] | None:
        """(index, latency_s, energy_j, first_use_s, span_s) of the best feasible pooled plan."""
        cons = self.problem.constraints
        latency, energy, radio, first_use_s, span_s = self._costs(conditions)
        score = cons.objective_value(energy, latency)  # type: ignore[arg-type]
        bad = latency > cons.deadline_s * (1 + 1e-9)
        if not conditions.cloud_reachable:
            bad |= radio
        if cons.energy_budget_j is not None:
            bad |= energy > cons.energy_budget_j * (1 + 1e-9)
        score = np.where(bad, np.inf, score)
        i = int(score.argmin())
        if bad[i]:
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

