"""Local search on a plan of a device-only problem: moves that keep it feasible and
lower its objective, for the planner's first incumbent.

The segment heuristic and the greedy each search a narrow family (cuts of the
execution order; one layer at a time).  On profiled graphs with many identical
accelerators the integer program's bound is often close to the optimum while
its incumbent is not (random 400-node graphs: root relaxation 2.4x the obvious
bound, best plan in 60 s 3.2x), so a better start shortens the search directly.

Moves, each priced incrementally (a layer's own cost and the copies of the
producers around it, as :func:`~deepx_sim.plan.problem.transfers_of` counts
them) and taken when it lowers the objective:

- *relocate* a unit (a layer, or a colocation class) to another processor;
- *swap* two units on different processors (memory is often full);
- *merge* everything on one processor into another.

Each unit keeps its variant (so the accuracy loss is unchanged); a move to a
processor that lacks that variant is not tried.  Memory, the deadline and an
energy budget are kept.  Problems with a remote processor (the radio's charge
is not additive) or with queued work are returned unchanged.  The result is
costed by :func:`~deepx_sim.plan.problem.evaluate` and returned only when that
confirms it is feasible and better.
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np

from deepx_sim.costs import Variant
from deepx_sim.errors import DeepxError
from deepx_sim.model.fusion import fused_members
from deepx_sim.model.layers import LayerKind, colocation
from deepx_sim.plan.problem import Placement, Plan, Problem, evaluate

#: Wall-time cap of one search (seconds): a start for a solver given about a minute.
TIME_LIMIT_S = 5.0
#: Share of a planner's time limit a search may use.
LIMIT_SHARE = 0.1
#: Wall-time cap of a search polishing a solver's plan (a plan the columns gave, or the
#: branch and bound's last incumbent, which is rarely a local optimum).
POLISH_LIMIT_S = 1.0
_TOLERANCE = 1e-12


class _Search:
    """The plan's state: where each layer runs, and its totals, updated move by move."""

    def __init__(self, problem: Problem, plan: Plan) -> None:
        self.problem = problem
        self.costs = problem.costs
        self.c = problem.constraints
        self.where = {pl.layer: pl.processor for pl in plan.placements}
        self.variant: dict[str, Variant] = {pl.layer: pl.variant for pl in plan.placements}
        self.units = _units(problem)
        self.unit_of = {name: i for i, unit in enumerate(self.units) for name in unit}
        self.outputs = set(problem.output_layers())
        self.latency_s, self.energy_j = plan.latency_s, plan.energy_j
        self.params: Counter[str] = Counter()
        self.acts: dict[str, Counter[int]] = {p: Counter() for p in problem.processors}
        for name, p in self.where.items():
            self._add_memory(name, p, +1)

    # ------------------------------------------------------------ costs
    def _layer(self, name: str, p: str) -> tuple[float, float] | None:
        v = self.variant[name]
        if v not in self.problem.variants(self.problem.graph.nodes[name]["layer"], p):
            return None
        lc = self.costs.layer_cost(name, p, v)
        return lc.latency_s, lc.energy_j

    def _copies(self, producer: str) -> tuple[float, float]:
        """Latency and energy of ``producer``'s copies under the current placement."""
        src, sizes = self.where[producer], {}
        for succ in self.problem.graph.successors(producer):
            dst = self.where[succ]
            if dst != src:
                sizes[dst] = max(sizes.get(dst, 0), self.costs.edge_bytes(producer, succ))
        if producer in self.outputs and src != self.problem.sensor:
            out = self.problem.graph.nodes[producer]["layer"].output_bytes(self.costs.activation_bits)
            sizes[self.problem.sensor] = max(sizes.get(self.problem.sensor, 0), out)
        lat = energy = 0.0
        for dst, size in sizes.items():
            t = self.costs.transfer_cost(size, src, dst)
            lat, energy = lat + t.latency_s, energy + t.energy_j
        return lat, energy

    def _price(self, names: list[str]) -> tuple[float, float] | None:
        """Latency and energy that depend on where ``names`` run: their own costs and
        the copies of them and of their producers (None if a variant is missing)."""
        graph = self.problem.graph
        producers = set(names).union(*(graph.predecessors(n) for n in names))
        lat = energy = 0.0
        for name in names:
            own = self._layer(name, self.where[name])
            if own is None:
                return None
            lat, energy = lat + own[0], energy + own[1]
        for u in producers:
            cl, ce = self._copies(u)
            lat, energy = lat + cl, energy + ce
        return lat, energy

    # ------------------------------------------------------------ memory
    def _add_memory(self, name: str, p: str, sign: int) -> None:
        lc = self.costs.layer_cost(name, p, self.variant[name])
        lay = self.problem.graph.nodes[name]["layer"]
        self.params[p] += sign * lc.param_bytes
        act = lay.input_bytes(self.costs.activation_bits) + lc.activation_bytes
        self.acts[p][act] += sign
        if not self.acts[p][act]:
            del self.acts[p][act]

    def _fits(self, procs: set[str]) -> bool:
        for p in procs:
            act = max(self.acts[p], default=0)
            if self.params[p] + act > self.problem.platform.processor(p).usable_memory_bytes:
                return False
        return True

    # ------------------------------------------------------------ moves
    def try_move(self, moves: dict[str, str]) -> bool:
        """Apply ``moves`` (layer -> new processor) if the plan stays feasible and gets
        cheaper; else leave it as it was."""
        names = list(moves)
        before = self._price(names)
        old = {n: self.where[n] for n in names}
        self._place(moves)
        after = self._price(names)
        if before is not None and after is not None and self._fits(set(moves.values())):
            latency = self.latency_s + after[0] - before[0]
            energy = self.energy_j + after[1] - before[1]
            value = self.c.objective_value
            gain = value(self.energy_j, self.latency_s) - value(energy, latency)
            budget = self.c.energy_budget_j
            if gain > _TOLERANCE * max(1.0, abs(self.c.objective_value(energy, latency))) and \
                    latency <= self.c.deadline_s and (budget is None or energy <= budget):
                self.latency_s, self.energy_j = latency, energy
                return True
        self._place(old)
        return False

    def _place(self, moves: dict[str, str]) -> None:
        for name, p in moves.items():
            self._add_memory(name, self.where[name], -1)
            self.where[name] = p
            self._add_memory(name, p, +1)

    def unit_on(self, i: int) -> str:
        return self.where[self.units[i][0]]


def search_limit_s(planner_limit_s: float | None) -> float:
    """The search's wall-time cap under a planner given ``planner_limit_s`` (None: none)."""
    return TIME_LIMIT_S if planner_limit_s is None else min(TIME_LIMIT_S, LIMIT_SHARE * planner_limit_s)


def _units(problem: Problem) -> list[list[str]]:
    """Layers that move together: a colocation class's units, else each layer alone;
    inputs (fixed on the sensor) are left out."""
    unit_of = {m: lay.name for lay in problem.layers for m in fused_members(lay)}
    grouped: list[list[str]] = []
    taken: set[str] = set()
    for members in colocation(problem.graph).values():
        names = list(dict.fromkeys(unit_of[m] for m in members if m in unit_of))
        if len(names) > 1 and not taken.intersection(names):
            grouped.append(names)
            taken.update(names)
    singles = [[lay.name] for lay in problem.layers
               if lay.name not in taken and lay.kind != LayerKind.INPUT]
    return grouped + singles


def improve(problem: Problem, plan: Plan, time_limit_s: float = TIME_LIMIT_S) -> Plan:
    """``plan`` after local search (module docstring); ``plan`` itself when the problem
    is out of scope, the plan is infeasible, or nothing better is found."""
    platform = problem.platform
    if plan.status != "feasible" and plan.status != "optimal":
        return plan
    if any(platform.processor(p).is_remote for p in problem.processors) or \
            any(s > 0 for s in problem.conditions.queued_s.values()):
        return plan
    search = _Search(problem, plan)
    stop = time.perf_counter() + time_limit_s
    while time.perf_counter() < stop:
        improved = _relocations(search, stop) + _swaps(search, stop) + _merges(search)
        if not improved:
            break
    where = {name: Placement(name, p, search.variant[name]) for name, p in search.where.items()}
    try:
        better = evaluate(problem, where, plan.planner)
    except DeepxError:
        return plan
    ok = better.status == "feasible" and better.objective_value < plan.objective_value
    return better if ok else plan


def _relocations(search: _Search, stop: float) -> int:
    done = 0
    for i, unit in enumerate(search.units):
        if time.perf_counter() > stop:
            break
        here = search.unit_on(i)
        for p in search.problem.processors:
            if p != here and search.try_move(dict.fromkeys(unit, p)):
                done += 1
                break
    return done


def _swaps(search: _Search, stop: float, tries: int = 8) -> int:
    """Swap units between processors: with each unit, the units on other processors
    that neighbour it, and the ``tries`` whose own costs gain most from the swap (the
    swaps a full memory needs)."""
    done = 0
    own = _own_costs(search)
    for i, unit in enumerate(search.units):
        if time.perf_counter() > stop:
            break
        here = search.unit_on(i)
        for j in _swap_candidates(search, i, own, tries):
            there = search.unit_on(j)
            moves = dict.fromkeys(unit, there) | dict.fromkeys(search.units[j], here)
            if there != here and search.try_move(moves):
                done += 1
                break
    return done


def _swap_candidates(search: _Search, i: int, own: np.ndarray, tries: int) -> list[int]:
    graph, unit = search.problem.graph, search.units[i]
    index = {p: k for k, p in enumerate(search.problem.processors)}
    on = np.array([index[search.unit_on(j)] for j in range(len(search.units))])
    here = on[i]
    near = {search.unit_of[m] for n in unit for m in (*graph.predecessors(n), *graph.successors(n))
            if m in search.unit_of}
    gain = own[i, here] + own[np.arange(len(on)), on] - own[i, on] - own[np.arange(len(on)), here]
    gain[(on == here) | ~np.isfinite(gain)] = -np.inf
    best = np.argsort(-gain)[:tries]
    return [int(j) for j in best if gain[j] > 0] + [j for j in near if on[j] != here]


def _own_costs(search: _Search) -> np.ndarray:
    """own[unit, processor]: the objective of the unit's layers alone there (inf where
    a variant is missing)."""
    procs, c = search.problem.processors, search.c
    own = np.zeros((len(search.units), len(procs)))
    for i, unit in enumerate(search.units):
        for k, p in enumerate(procs):
            for name in unit:
                cost = search._layer(name, p)
                own[i, k] += np.inf if cost is None else c.objective_value(cost[1], cost[0])
    return own


def _merges(search: _Search) -> int:
    """Move everything on one processor to another, where it fits and pays."""
    done = 0
    for p in search.problem.processors:
        for q in search.problem.processors:
            names = [n for unit in search.units for n in unit if search.where[n] == p]
            if p != q and names and search.try_move(dict.fromkeys(names, q)):
                done += 1
    return done
