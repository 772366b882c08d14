"""Brute force: every processor for every layer and every variant combination.

The oracle the ILP is tested against on small graphs.  For each processor
assignment that keeps every colocation class on one processor it costs the
transfers once, then scores all variant combinations
at once with numpy (variants change layer costs, memory and accuracy, never
tensor sizes).
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np

from deepx_sim.costs import radio_rule
from deepx_sim.errors import InfeasibleError, PlanError
from deepx_sim.model.fusion import fused_members
from deepx_sim.model.layers import LayerKind, colocation
from deepx_sim.plan.base import Planner
from deepx_sim.plan.problem import Placement, Plan, Problem, evaluate, transfers_of

MAX_COMBINATIONS = 5_000_000


class BruteForcePlanner(Planner):
    name = "oracle"

    def plan(self, problem: Problem) -> Plan:
        start = time.perf_counter()
        costs, c = problem.costs, problem.constraints
        layers = problem.layers
        proc_options = [[problem.sensor] if lay.kind == LayerKind.INPUT else problem.processors
                        for lay in layers]
        size = math.prod(len(o) for o in proc_options) * max(
            math.prod(len(problem.variants(lay, p)) for lay in layers) for p in problem.processors)
        if size > MAX_COMBINATIONS:
            raise PlanError(f"oracle: {size:,} combinations exceed {MAX_COMBINATIONS:,}; "
                            f"brute force is for small graphs")
        remote = {p for p in problem.processors if problem.platform.processor(p).is_remote}
        unit_of = {m: lay.name for lay in layers for m in fused_members(lay)}
        together = [{unit_of[m] for m in members if m in unit_of}
                    for members in colocation(problem.graph).values()]
        best: tuple[float, dict[str, Placement]] | None = None
        for procs in itertools.product(*proc_options):
            where = {lay.name: p for lay, p in zip(layers, procs, strict=True)}
            if any(len({where[u] for u in units}) > 1 for units in together):
                continue  # a colocation class split over processors
            t_lat = t_en = t_radio = 0.0
            for _, src, dst, nbytes in transfers_of(problem, where):
                t = costs.transfer_cost(nbytes, src, dst)
                t_lat += t.latency_s
                t_en += t.energy_j
                t_radio += t.latency_s if t.route in ("uplink", "downlink") else 0.0
            first_remote = next((i for i, p in enumerate(procs) if p in remote), None)
            t_lat += costs.queue_wait_s(procs)
            options = [problem.variants(lay, p) for lay, p in zip(layers, procs, strict=True)]
            combos = list(itertools.product(*options))
            lat = np.full(len(combos), t_lat)
            en = np.full(len(combos), t_en)
            loss = np.zeros(len(combos))
            first_use = np.zeros(len(combos))  # local latency before the first remote layer
            span = np.full(len(combos), t_radio)  # radio transfers and remote latency
            mem = {p: np.zeros(len(combos)) for p in set(procs)}
            act = {p: 0 for p in set(procs)}
            for i, (lay, p) in enumerate(zip(layers, procs, strict=True)):
                per = [costs.layer_cost(lay.name, p, v) for v in options[i]]
                index = {v: j for j, v in enumerate(options[i])}
                pick = np.array([index[combo[i]] for combo in combos])
                layer_lat = np.array([x.latency_s for x in per])[pick]
                lat += layer_lat
                if p in remote:
                    span += layer_lat
                elif first_remote is not None and i < first_remote:
                    first_use += layer_lat
                en += np.array([x.energy_j for x in per])[pick]
                loss += np.array([problem.loss(lay, v) for v in options[i]])[pick]
                mem[p] += np.array([x.param_bytes for x in per])[pick]
                act[p] = max(act[p], lay.input_bytes(costs.activation_bits)
                             + lay.output_bytes(costs.activation_bits))
            if first_remote is not None:
                self._charge_radio(problem, first_use, span, lat, en)
            ok = (lat <= c.deadline_s * (1 + 1e-9)) & (loss <= c.max_accuracy_loss + 1e-9)
            if c.energy_budget_j is not None:
                ok &= en <= c.energy_budget_j * (1 + 1e-9)
            for p in mem:
                ok &= mem[p] + act[p] <= problem.platform.processor(p).usable_memory_bytes
            if not ok.any():
                continue
            score = np.where(ok, c.objective_value(en, lat), np.inf)  # type: ignore[arg-type]
            j = int(np.argmin(score))
            if best is None or score[j] < best[0]:
                best = (float(score[j]), {lay.name: Placement(lay.name, p, combos[j][i])
                                          for i, (lay, p) in enumerate(zip(layers, procs,
                                                                           strict=True))})
        if best is None:
            raise InfeasibleError("oracle: no assignment meets the constraints")
        return evaluate(problem, best[1], self.name, solve_time_s=time.perf_counter() - start,
                        status="optimal", gap=0.0)

    @staticmethod
    def _charge_radio(problem: Problem, first_use_s: np.ndarray, span_s: np.ndarray, lat: np.ndarray,
                      en: np.ndarray) -> None:
        """Add the radio rule's promotion and tail to every combination (in place)."""
        radio = problem.costs.link.radio  # type: ignore[union-attr]
        conditions = problem.conditions
        promoted, tail_j = radio_rule(radio, conditions, first_use_s, span_s)
        lat += np.where(promoted, radio.promotion_s, 0.0)
        en += np.where(promoted, radio.promotion_energy_j, 0.0) + tail_j
