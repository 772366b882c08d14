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
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np

from deepx_sim.costs import Conditions, radio_charge, radio_rule
from deepx_sim.errors import InfeasibleError
from deepx_sim.plan.ilp import DeepXPlanner
from deepx_sim.plan.problem import RADIO, Plan, Problem, evaluate, transfers_of

DEFAULT_UPLINKS_MBPS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
DEFAULT_FREE_FRACTIONS = (1.0, 0.4)
#: Arrival gaps the warm-up plans for, besides "no next request" (seconds).
DEFAULT_GAPS_S = (0.25, 1.0, 4.0)


@dataclass(frozen=True)
class _Features:
    plan: Plan
    busy_s: np.ndarray  # per local processor, in FastReplanner.local order
    prefix_busy_s: np.ndarray  # the same, for the layers before the first cloud layer
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
        self._arrays: tuple[np.ndarray, ...] | None = None
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
             gaps_s: Iterable[float] = DEFAULT_GAPS_S) -> FastReplanner:
        """Solve the ILP over a grid: uplink bandwidths x per-processor free
        fractions (for the processors in ``vary``, default all local ones) x radio
        states (idle with no next request; connected with the next request
        ``gaps_s`` away), and with the cloud unreachable; keep each distinct optimum."""
        vary = tuple(vary if vary is not None else self.local)
        base = self.problem.conditions
        loads = [dict(zip(vary, ff, strict=True))
                 for ff in itertools.product(free_fractions, repeat=len(vary))]
        grid = [replace(base, cloud_reachable=False, free_fraction=ff) for ff in loads]
        if self.link is not None:
            radios = [replace(base, radio_state="idle", tail_left_s=0.0, next_gap_s=None)]
            radios += [replace(base, radio_state="connected", tail_left_s=float("inf"), next_gap_s=g)
                       for g in gaps_s]
            grid += [replace(r, uplink_mbps=up, free_fraction=ff)
                     for r in radios for up in uplinks_mbps for ff in loads]
        for conditions in grid:
            try:
                self.solve(conditions)
            except InfeasibleError:
                continue
        return self

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
        fixed_energy = dict.fromkeys(self.local, 0.0)
        cloud_busy = fixed_latency = 0.0
        remote_seen = False
        for place in plan.placements:
            c = costs.layer_cost(place.layer, place.processor, place.variant)
            if place.processor in self.local:
                i = self.local.index(place.processor)
                busy[i] += c.busy_s
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
        return _Features(plan, busy, prefix, fixed_latency, fixed_energy, cloud_busy,
                         n_up, bytes_up, n_down, bytes_down)

    def _stack(self) -> tuple[np.ndarray, ...]:
        if self._arrays is None:
            c = self.candidates
            shape = (len(c), len(self.local))
            self._arrays = (
                np.array([f.busy_s for f in c]).reshape(shape).T.copy(),
                np.array([f.prefix_busy_s for f in c]).reshape(shape).T.copy(),
                np.array([f.fixed_latency_s for f in c]),
                np.array([sum(f.fixed_energy_j.values()) for f in c]),
                np.array([f.cloud_busy_s for f in c]),
                np.array([f.n_up for f in c], dtype=float),
                np.array([f.bytes_up * 8 / 1e6 for f in c]),  # megabits
                np.array([f.n_down for f in c], dtype=float),
                np.array([f.bytes_down * 8 / 1e6 for f in c]),
                np.array([f.plan.uses_radio for f in c]),
            )
        return self._arrays

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
        plan under ``conditions``."""
        busy, prefix, fixed_lat, fixed_en, cloud_busy, n_up, mb_up, n_down, mb_down, radio = self._stack()
        free = conditions.free_fraction
        inv = np.array([1.0 / free.get(p, 1.0) for p in self.local])
        latency = inv @ busy + fixed_lat
        first_use_s = inv @ prefix
        link = self.link
        if link is None:
            return latency, fixed_en, radio, first_use_s, 0.0 * fixed_en
        model = link.radio
        up = conditions.uplink_mbps or link.uplink_mbps
        down = conditions.downlink_mbps or link.downlink_mbps
        half_rtt_s = (conditions.rtt_ms if conditions.rtt_ms is not None else link.rtt_ms) / 2e3
        moving_s = (n_up + n_down) * half_rtt_s + mb_up / up + mb_down / down
        cloud_s = cloud_busy / free.get(link.remote, 1.0)
        span_s = moving_s + cloud_s
        promoted, tail_j = radio_rule(model, conditions, first_use_s, span_s)
        promoted &= radio
        energy = (fixed_en + model.transfer_energy_j(moving_s, up_megabits=mb_up, down_megabits=mb_down)
                  + cloud_s * model.connected_wait_power_w + promoted * model.promotion_energy_j
                  + radio * tail_j)
        latency = latency + span_s + promoted * model.promotion_s
        return latency, energy, radio, first_use_s, span_s

    def _best(self, conditions: Conditions) -> tuple[int, float, float, float, float] | None:
        """(index, latency_s, energy_j, first_use_s, span_s) of the best feasible pooled plan."""
        cons = self.problem.constraints
        latency, energy, radio, first_use_s, span_s = self._costs(conditions)
        ok = latency <= cons.deadline_s * (1 + 1e-9)
        if not conditions.cloud_reachable:
            ok &= ~radio
        if cons.energy_budget_j is not None:
            ok &= energy <= cons.energy_budget_j * (1 + 1e-9)
        if not ok.any():
            return None
        score = np.where(ok, cons.objective_value(energy, latency), np.inf)  # type: ignore[arg-type]
        i = int(np.argmin(score))
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

