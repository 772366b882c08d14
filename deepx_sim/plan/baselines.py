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
from dataclasses import replace
from functools import partial

import networkx as nx

from deepx_sim.costs import Variant
from deepx_sim.errors import InfeasibleError, PlanError
from deepx_sim.model.layers import LayerKind, colocation
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


class _MemoryLedger:
    """What a partial plan holds on each processor, counted as :func:`evaluate` does:
    the parameters of its layers plus its largest activation (inputs + output)."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.params: dict[str, int] = {}
        self.act: dict[str, int] = {}

    def need(self, layer_name: str, proc: str, variant: Variant) -> tuple[int, int]:
        """(parameter bytes, activation bytes) of ``layer_name`` on ``proc``."""
        costs = self.problem.costs
        c = costs.layer_cost(layer_name, proc, variant)
        lay = self.problem.graph.nodes[layer_name]["layer"]
        return c.param_bytes, lay.input_bytes(costs.activation_bits) + c.activation_bytes

    def fits(self, proc: str, items: list[tuple[str, Variant]]) -> bool:
        params, act = self._after(proc, items)
        return params + act <= self.problem.platform.processor(proc).usable_memory_bytes

    def add(self, proc: str, items: list[tuple[str, Variant]]) -> None:
        self.params[proc], self.act[proc] = self._after(proc, items)

    def _after(self, proc: str, items: list[tuple[str, Variant]]) -> tuple[int, int]:
        params, act = self.params.get(proc, 0), self.act.get(proc, 0)
        for name, variant in items:
            p, a = self.need(name, proc, variant)
            params, act = params + p, max(act, a)
        return params, act


class GreedyPlanner(Planner):
    """Layer by layer in execution order, the processor and variant that add the
    least to the objective given where the inputs are, among those whose memory
    still fits there (else the next best); if the result misses the deadline,
    again minimising latency.  The layers of a colocation class
    (``graph.graph["colocation"]``) follow the first one placed, whose processor
    must hold the whole class.  Its plans never claim optimality (status feasible)."""

    name = "greedy"

    def plan(self, problem: Problem) -> Plan:
        start = time.perf_counter()
        for objective in (problem.constraints.objective, "latency"):
            plan = self._greedy(problem, objective)
            if plan.status == "feasible":  # (already costed: only its name and time change)
                return replace(plan, planner=self.name, solve_time_s=time.perf_counter() - start)
        raise InfeasibleError(f"greedy: its plan is not feasible ({plan.status})")

    @staticmethod
    def _greedy(problem: Problem, objective: str) -> Plan:
        costs = problem.costs
        c = problem.constraints
        chosen: dict[str, Placement] = {}
        loss_left = c.max_accuracy_loss
        memory = _MemoryLedger(problem)
        klass = {n: members for members in colocation(problem.graph).values() for n in members}
        pinned: dict[str, str] = {}  # a placed class's other layers -> its processor

        def score(latency: float, energy: float) -> float:
            if objective == "latency":
                return latency
            return c.objective_value(energy, latency)

        for lay in problem.layers:
            options = []
            for p in _candidates(problem, lay.name, klass, pinned):
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
            best = _first_fitting(problem, memory, sorted(options, key=lambda o: (o[0], o[1])),
                                  klass, pinned)
            chosen[lay.name] = best[2]
            loss_left -= best[1]
        return evaluate(problem, chosen, "greedy")


def _candidates(problem: Problem, name: str, klass: dict[str, list[str]],
                pinned: dict[str, str]) -> list[str]:
    """Processors ``name`` may go to: its class's, the sensor for an input (or a class
    holding one), else every available processor."""
    if name in pinned:
        return [pinned[name]]
    members = klass.get(name, [name])
    if any(problem.graph.nodes[m]["layer"].kind == LayerKind.INPUT for m in members):
        return [problem.sensor]
    return problem.processors


def _first_fitting(problem: Problem, memory: _MemoryLedger, options: list, klass: dict[str, list[str]],
                   pinned: dict[str, str]) -> tuple:  # type: ignore[type-arg]
    """The best option whose memory fits (for a class's first layer: the whole class,
    the others at their full variant); books it.  InfeasibleError if none fits."""
    for option in options:
        place: Placement = option[2]
        if place.layer in pinned:  # booked with its class
            return option
        others = [m for m in klass.get(place.layer, []) if m != place.layer]
        items = [(place.layer, place.variant),
                 *((m, problem.variants(problem.graph.nodes[m]["layer"], place.processor)[0])
                   for m in others)]
        if memory.fits(place.processor, items):
            memory.add(place.processor, items)
            pinned.update(dict.fromkeys(others, place.processor))
            return option
    if not options:
        raise PlanError("greedy: no option for a layer (no processor offers a variant within "
                        "the accuracy budget)")
    raise InfeasibleError(f"greedy: layer {options[0][2].layer!r} (with its colocation class, if "
                          "any) fits in the memory left on no processor")


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
