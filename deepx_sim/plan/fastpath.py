"""Replanning fast path: re-rank a pool of optimal plans under new conditions.

DeepX replans every inference, faster than an ILP solve allows.  A plan's
costs depend on the conditions only through a few sums, so each candidate
plan is reduced once to features:

- busy seconds per processor (latency scales by 1 / free fraction),
- condition-free energy (layer work, on-chip copies),
- number and bytes of uplink and downlink transfers, cloud busy seconds,
- whether it uses the radio (promotion and tail).

Under new conditions every candidate's latency and energy follow in closed
form (numpy, microseconds), and the best one meeting the deadline and energy
budget is returned.  The pool is the set of ILP optima over a grid of
conditions (``warm``); when no candidate is feasible the full ILP runs and its
plan joins the pool.  ``benchmarks/bench_planner.py`` measures the loss
against a full solve.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, replace

import numpy as np

from deepx_sim.costs import Conditions
from deepx_sim.errors import InfeasibleError
from deepx_sim.plan.ilp import DeepXPlanner
from deepx_sim.plan.problem import RADIO, Plan, Problem, evaluate, transfers_of

DEFAULT_UPLINKS_MBPS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
DEFAULT_FREE_FRACTIONS = (1.0, 0.4)


@dataclass(frozen=True)
class _Features:
    plan: Plan
    busy_s: np.ndarray  # per local processor, in FastReplanner.local order
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

    # ------------------------------------------------------------ pool
    def warm(self, uplinks_mbps: tuple[float, ...] = DEFAULT_UPLINKS_MBPS,
             free_fractions: tuple[float, ...] = DEFAULT_FREE_FRACTIONS,
             vary: tuple[str, ...] | None = None) -> FastReplanner:
        """Solve the ILP over a grid of uplink bandwidths x per-processor free
        fractions (for the processors in ``vary``, default all local ones)
        and with the cloud unreachable; keep each distinct optimum."""
        vary = tuple(vary if vary is not None else self.local)
        base = self.problem.conditions
        loads = list(itertools.product(free_fractions, repeat=len(vary)))
        grid = [replace(base, uplink_mbps=up, free_fraction=dict(zip(vary, ff, strict=True)))
                for up in (uplinks_mbps if self.link else (None,)) for ff in loads]
        grid += [replace(base, cloud_reachable=False, free_fraction=dict(zip(vary, ff, strict=True)))
                 for ff in loads] if self.link else []
        for conditions in grid:
            try:
                self._solve(conditions)
            except InfeasibleError:
                continue
        return self

    def _solve(self, conditions: Conditions) -> Plan:
        plan = self.planner.plan(self.problem.with_conditions(conditions))
        self.full_solves += 1
        self._add(plan)
        return plan

    def _add(self, plan: Plan) -> None:
        key = tuple((p.layer, (p.processor, p.variant)) for p in plan.placements)
        if key in self._keys:
            return
        self._keys.add(key)
        nominal = self._nominal
        costs = nominal.costs
        busy = np.zeros(len(self.local))
        fixed_energy = {p: 0.0 for p in self.local}
        cloud_busy = fixed_latency = 0.0
        for place in plan.placements:
            c = costs.layer_cost(place.layer, place.processor, place.variant)
            if place.processor in self.local:
                busy[self.local.index(place.processor)] += c.busy_s
                fixed_energy[place.processor] += c.energy_j
            else:
                cloud_busy += c.busy_s
        n_up = n_down = bytes_up = bytes_down = 0
        where = {p.layer: p.processor for p in plan.placements}
        for _, src, dst, size in transfers_of(nominal, where):
            if src in self.local and dst in self.local:
                t = costs.transfer_cost(size, src, dst)
                fixed_latency += t.latency_s
                fixed_energy[src] += t.energy_j
            elif dst in self.local:
                n_down, bytes_down = n_down + 1, bytes_down + size
            else:
                n_up, bytes_up = n_up + 1, bytes_up + size
        self.candidates.append(_Features(plan, busy, fixed_latency, fixed_energy, cloud_busy,
                                         n_up, bytes_up, n_down, bytes_down))
        self._arrays = None

    def _stack(self) -> tuple[np.ndarray, ...]:
        if self._arrays is None:
            c = self.candidates
            self._arrays = (
                np.array([f.busy_s for f in c]).reshape(len(c), len(self.local)),
                np.array([f.fixed_latency_s for f in c]),
                np.array([sum(f.fixed_energy_j.values()) for f in c]),
                np.array([f.cloud_busy_s for f in c]),
                np.array([f.n_up for f in c], dtype=float),
                np.array([f.bytes_up for f in c], dtype=float),
                np.array([f.n_down for f in c], dtype=float),
                np.array([f.bytes_down for f in c], dtype=float),
                np.array([f.plan.uses_radio for f in c]),
            )
        return self._arrays

    # ------------------------------------------------------------ replan
    def plan(self, conditions: Conditions) -> Plan:
        """The best pooled plan under ``conditions``; a full solve if none fits."""
        start = time.perf_counter()
        if self.candidates:
            best = self._best(conditions)
            if best is not None:
                index, lat, energy, radio_j = best
                return self._as_plan(self.candidates[index], conditions, lat, energy, radio_j,
                                     time.perf_counter() - start)
        return self._solve(conditions)

    def choose(self, conditions: Conditions) -> tuple[Plan, float, float]:
        """Like :meth:`plan` but returns the pooled Plan object itself (its costs are
        those of the conditions it was solved under) with the predicted latency_s
        and energy_j under ``conditions``: the simulator's per-request call."""
        best = self._best(conditions) if self.candidates else None
        if best is None:
            plan = self._solve(conditions)
            return plan, plan.latency_s, plan.energy_j
        index, latency_s, energy_j, _ = best
        return self.candidates[index].plan, latency_s, energy_j

    def _best(self, conditions: Conditions) -> tuple[int, float, float, float] | None:
        busy, fixed_lat, fixed_en, cloud_busy, n_up, b_up, n_down, b_down, radio = self._stack()
        cons = self.problem.constraints
        free = np.array([conditions.free_fraction.get(p, 1.0) for p in self.local])
        latency = busy @ (1.0 / free) + fixed_lat
        energy = fixed_en.copy()
        radio_j = np.zeros(len(energy))
        if self.link is not None:
            up = conditions.uplink_mbps or self.link.uplink_mbps
            down = conditions.downlink_mbps or self.link.downlink_mbps
            rtt_s = (conditions.rtt_ms if conditions.rtt_ms is not None else self.link.rtt_ms) / 1e3
            up_s = n_up * rtt_s / 2 + b_up * 8 / (up * 1e6)
            down_s = n_down * rtt_s / 2 + b_down * 8 / (down * 1e6)
            cloud_s = cloud_busy / conditions.free_fraction.get(self.link.remote, 1.0)
            radio_model = self.link.radio
            radio_j = (radio_model.transfer_energy_j(up_s + down_s, up_megabits=b_up * 8 / 1e6,
                                                     down_megabits=b_down * 8 / 1e6)
                       + cloud_s * radio_model.connected_wait_power_w
                       + radio * (radio_model.promotion_energy_j + radio_model.tail_energy_j))
            latency = latency + up_s + down_s + cloud_s + radio * radio_model.promotion_s
            energy = energy + radio_j
        ok = latency <= cons.deadline_s * (1 + 1e-9)
        if not conditions.cloud_reachable:
            ok &= ~radio
        if cons.energy_budget_j is not None:
            ok &= energy <= cons.energy_budget_j * (1 + 1e-9)
        if not ok.any():
            return None
        score = np.where(ok, cons.objective_value(energy, latency), np.inf)  # type: ignore[arg-type]
        i = int(np.argmin(score))
        return i, float(latency[i]), float(energy[i]), float(radio_j[i])

    def _as_plan(self, f: _Features, conditions: Conditions, latency: float, energy: float,
                 radio_j: float, elapsed: float) -> Plan:
        breakdown = {p: e for p, e in f.fixed_energy_j.items() if e != 0.0 or p in f.plan.memory_bytes}
        if radio_j:
            breakdown[RADIO] = radio_j
        return replace(f.plan, planner=self.name, latency_s=latency, energy_j=energy,
                       energy_breakdown_j=breakdown,
                       objective_value=self.problem.constraints.objective_value(energy, latency),
                       conditions=conditions, solver="pool", solve_time_s=elapsed, gap=None,
                       status="feasible")

    def check(self, plan: Plan) -> Plan:
        """The same placements costed by :func:`evaluate` (for tests and audits)."""
        return evaluate(self.problem.with_conditions(plan.conditions), plan.assignment, "check")
