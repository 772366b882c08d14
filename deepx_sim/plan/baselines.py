"""Baseline planners DeepX is compared with.

Fixed strategies (one processor, cloud-only) return their plan even when it
breaks a constraint; the Plan's ``status`` then says which.  Searching
planners (Neurosurgeon, DADS, greedy) raise InfeasibleError when nothing in
their search space meets the constraints.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial

import networkx as nx

from deepx_sim.errors import InfeasibleError, PlanError
from deepx_sim.model.layers import LayerKind
from deepx_sim.plan.base import Planner
from deepx_sim.plan.problem import Placement, Plan, Problem, evaluate, placements
from deepx_sim.platform import ProcessorKind


def _timed(planner: Planner, problem: Problem, where: dict[str, str], start: float,
           **extra: object) -> Plan:
    return evaluate(problem, placements(problem, where), planner.name,
                    solve_time_s=time.perf_counter() - start, **extra)  # type: ignore[arg-type]


def _split_processors(problem: Problem) -> tuple[list[str], list[str]]:
    """The available (local, remote) processor names."""
    remote = [p for p in problem.processors if problem.platform.processor(p).is_remote]
    return [p for p in problem.processors if p not in remote], remote


class SingleProcessorPlanner(Planner):
    """Every layer on the first processor of one kind (the input stays on the sensor)."""

    def __init__(self, kinds: tuple[ProcessorKind, ...], name: str) -> None:
        self.kinds = kinds
        self.name = name

    def plan(self, problem: Problem) -> Plan:
        start = time.perf_counter()
        target = next((p for p in problem.processors
                       if problem.platform.processor(p).kind in self.kinds), None)
        if target is None:
            kinds = "/".join(k.value for k in self.kinds)
            raise PlanError(f"{self.name}: platform {problem.platform.name!r} has no available "
                            f"{kinds} processor (it has {', '.join(problem.processors)})")
        where = {lay.name: (problem.sensor if lay.kind == LayerKind.INPUT else target)
                 for lay in problem.layers}
        return _timed(self, problem, where, start)


class NeurosurgeonPlanner(Planner):
    """Kang et al. (ASPLOS 2017): the best single split point in execution order,
    layers before it on one device processor, the rest in the cloud."""

    name = "neurosurgeon"

    def plan(self, problem: Problem) -> Plan:
        start = time.perf_counter()
        local, remote = _split_processors(problem)
        best: Plan | None = None
        n = len(problem.layers)
        for device in local:
            for split in range(1, n + 1):  # layers [1, split) local, [split, n) remote
                if split < n and not remote:
                    continue
                where = {}
                for i, lay in enumerate(problem.layers):
                    if lay.kind == LayerKind.INPUT:
                        where[lay.name] = problem.sensor
                    else:
                        where[lay.name] = device if i < split else remote[0]
                plan = evaluate(problem, placements(problem, where), self.name)
                if plan.status == "feasible" and (best is None
                                                  or plan.objective_value < best.objective_value):
                    best = plan
        if best is None:
            raise InfeasibleError("neurosurgeon: no split point meets the constraints")
        return _timed(self, problem, {p.layer: p.processor for p in best.placements}, start)


class DADSPlanner(Planner):
    """Hu et al. (INFOCOM 2019): device/cloud partition of the DAG by minimum s-t
    cut, minimising latency; exact for one device processor and the cloud."""

    name = "dads"

    def plan(self, problem: Problem) -> Plan:
        start = time.perf_counter()
        local, remote = _split_processors(problem)
        best: Plan | None = None
        for device in local:
            candidates = [{lay.name: (problem.sensor if lay.kind == LayerKind.INPUT else device)
                           for lay in problem.layers}]
            if remote:
                candidates.append(self._cut(problem, device, remote[0]))
            for where in candidates:
                plan = evaluate(problem, placements(problem, where), self.name)
                if plan.status == "feasible" and (best is None or plan.latency_s < best.latency_s):
                    best = plan
        if best is None:
            raise InfeasibleError("dads: no device/cloud cut meets the constraints")
        return _timed(self, problem, {p.layer: p.processor for p in best.placements}, start)

    @staticmethod
    def _cut(problem: Problem, device: str, cloud: str) -> dict[str, str]:
        costs = problem.costs
        g = nx.DiGraph()
        inf = math.inf
        outputs = set(problem.output_layers())
        g.add_edge("_s", "_result", capacity=inf)
        for lay in problem.layers:
            name = lay.name
            if lay.kind == LayerKind.INPUT:
                g.add_edge("_s", name, capacity=inf)
            else:
                for side, proc in (("_s", cloud), ("_t", device)):
                    variant = problem.variants(lay, proc)[0]
                    cap = costs.layer_cost(name, proc, variant).latency_s
                    g.add_edge(*((side, name) if side == "_s" else (name, side)), capacity=cap)
            consumers = list(problem.graph.successors(name))
            sizes = [costs.edge_bytes(name, v) for v in consumers]
            if consumers:
                up = ("_up", name)
                g.add_edge(name, up, capacity=costs.transfer_cost(max(sizes), device,
                                                                  cloud).latency_s)
                for v in consumers:
                    g.add_edge(up, v, capacity=inf)
            down_size = max(sizes + ([lay.output_bytes(costs.activation_bits)]
                                     if name in outputs else []), default=0)
            if down_size:
                down = ("_down", name)
                g.add_edge(down, name, capacity=costs.transfer_cost(down_size, cloud,
                                                                    device).latency_s)
                for v in consumers:
                    g.add_edge(v, down, capacity=inf)
                if name in outputs:
                    g.add_edge("_result", down, capacity=inf)
        _, (source_side, _) = nx.minimum_cut(g, "_s", "_t")
        return {lay.name: (problem.sensor if lay.kind == LayerKind.INPUT
                           else device if lay.name in source_side else cloud)
                for lay in problem.layers}


class GreedyPlanner(Planner):
    """Layer by layer in execution order, the processor and variant that add the
    least to the objective given where the inputs are; if the result misses the
    deadline, again minimising latency."""

    name = "greedy"

    def plan(self, problem: Problem) -> Plan:
        start = time.perf_counter()
        for objective in (problem.constraints.objective, "latency"):
            plan = self._greedy(problem, objective)
            if plan.status == "feasible":
                return evaluate(problem, plan.assignment, self.name,
                                solve_time_s=time.perf_counter() - start)
        raise InfeasibleError(f"greedy: its plan is not feasible ({plan.status})")

    @staticmethod
    def _greedy(problem: Problem, objective: str) -> Plan:
        costs = problem.costs
        c = problem.constraints
        chosen: dict[str, Placement] = {}
        loss_left = c.max_accuracy_loss

        def score(latency: float, energy: float) -> float:
            if objective == "latency":
                return latency
            return c.objective_value(energy, latency)

        for lay in problem.layers:
            options = []
            procs = [problem.sensor] if lay.kind == LayerKind.INPUT else problem.processors
            for p in procs:
                moved = 0.0, 0.0
                for pred in problem.graph.predecessors(lay.name):
                    t = costs.transfer_cost(costs.edge_bytes(pred, lay.name),
                                            chosen[pred].processor, p)
                    moved = moved[0] + t.latency_s, moved[1] + t.energy_j
                for v in problem.variants(lay, p):
                    loss = problem.loss(lay, v)
                    if loss > loss_left + 1e-12:
                        continue
                    lc = costs.layer_cost(lay.name, p, v)
                    options.append((score(lc.latency_s + moved[0], lc.energy_j + moved[1]),
                                    loss, Placement(lay.name, p, v)))
            if not options:
                raise PlanError(f"greedy: no option for layer {lay.name!r}")
            best = min(options, key=lambda o: (o[0], o[1]))
            chosen[lay.name] = best[2]
            loss_left -= best[1]
        return evaluate(problem, chosen, "greedy")


#: The baselines by name, as factories (each call makes a new planner).
BASELINES: dict[str, Callable[[], Planner]] = {
    "cpu-only": partial(SingleProcessorPlanner, (ProcessorKind.CPU, ProcessorKind.MCU), "cpu-only"),
    "gpu-only": partial(SingleProcessorPlanner, (ProcessorKind.GPU,), "gpu-only"),
    "lowpower-only": partial(SingleProcessorPlanner, (ProcessorKind.LPC, ProcessorKind.DSP),
                             "lowpower-only"),
    "npu-only": partial(SingleProcessorPlanner, (ProcessorKind.NPU,), "npu-only"),
    "cloud-only": partial(SingleProcessorPlanner, (ProcessorKind.CLOUD,), "cloud-only"),
    "neurosurgeon": NeurosurgeonPlanner,
    "dads": DADSPlanner,
    "greedy": GreedyPlanner,
}
