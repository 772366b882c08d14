"""Column generation over the instances of one accelerator class: a lower bound on
every plan, far tighter than the compact program's relaxation, and plans built
from its columns.

Scope: a platform of the sensor plus k interchangeable instances (``count: k``)
whose copies between instances go through the sensor's memory
(``copies_via_sensor``), one variant per layer and processor, nothing remote
and nothing queued: the profiled graphs of Tarnawski et al. (2020).

Why it is tighter.  With identical instances the compact program can spread a
layer and its neighbours fractionally over all instances, so its relaxation
pays for no copy at all.  Here a column is one instance's whole set S of
layers, priced as a block (Dantzig-Wolfe over the instances):

    c(S) = sum over v in S of (cost on an instance - cost on the sensor)
         + out(S) + in(S)

out(S): one copy to the sensor per producer in S with a consumer (or the
result) outside S; in(S): one copy from the sensor per producer outside S
with a consumer in S; each at the producer's smallest edge.  With copies via
the sensor, an instance-to-instance copy is exactly one copy out plus one in,
so sum c(S) + every layer on the sensor is at most the plan's cost (a copy to
several processors is counted once, and at the smallest size): the master LP

    min sum_S c(S) y_S   s.t.   sum_{S contains v} y_S <= 1,  sum_S y_S <= k

bounds every plan from below.  Its columns come from a pricing program (one
instance: binaries s_v, copy variables, the memory row), solved by HiGHS.
For any duals pi <= 0 of the layer rows, sum(pi) + k * min(0, r) bounds the
master's optimum, r being a lower bound on the least reduced cost
min_S c(S) - pi(S) (the pricing program's dual bound), so the bound is valid
at every iteration, not only at convergence, whichever duals are priced and
wherever a pricing solve is stopped.

Which duals.  The master is very degenerate: its vertex duals jump about and
the bound tails off.  After a few pricings at vertex duals (enough where the
cheap runs already hold the optimum), the duals priced are central ones (an
interior point without crossover), smoothed towards the best bound's.  Why
not a Lagrangian min-cut pricing: without the memory row the pricing is a
minimum cut, but the memory row binds in every shipped graph's columns and
its Lagrangian relaxation is weak there (least reduced cost at the same
duals, relaxed against exact: ResNet-50 -0.118 against -0.003, GNMT -0.0117
against -0.0002), so the exact program stays.
"""

from __future__ import annotations

import itertools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import highspy
import numpy as np

from deepx_sim.errors import DeepxError
from deepx_sim.model.fusion import fused_members
from deepx_sim.model.layers import LayerKind, colocation
from deepx_sim.plan.improve import POLISH_LIMIT_S, improve
from deepx_sim.plan.problem import Placement, Plan, Problem, evaluate, interchangeable

_INF = highspy.kHighsInf
#: Every this many exact pricings, an integer plan is sought among the columns (for at most
#: INTEGER_LIMIT_S): a better incumbent lets the search stop as soon as the gap closes.
HEURISTIC_EVERY = 5
INTEGER_LIMIT_S = 1.0
#: Weight of the best bound's duals when pricing (Wentges 1997's smoothing).
SMOOTHING = 0.5
#: Columns taken from one pricing solve: its best and the improving sets before it.
SAVED = 5
#: Runs of the order tried per iteration by the cheap pricing (_Segments).
CHEAP_COLUMNS = 20
#: Exact pricings at a vertex's duals before the master's duals turn central: a master
#: close to converged converges in a few at a vertex (GNMT: 3, against 10 with central
#: duals), a long tail gains from central ones (Inception-v3 after 48 s: bound 1.06-1.14 s
#: against 0.72-0.91 s at vertices; benchmarks/bench_profiled.py's cases, load 4-5).
CENTRAL_AFTER = 3
#: Time limit of one exact pricing solve: its dual bound is valid wherever it stops, and a
#: long solve at duals soon replaced delays every later bound (Inception-v3's take 1-4.5 s;
#: a 1 s limit gave a far weaker bound).
PRICING_LIMIT_S = 4.0
#: Exact pricings run at once, each in a thread of its own (HiGHS releases the GIL), where
#: the machine has the cores: one at the smoothed duals, one at the master's own.  On 2
#: cores, Inception-v3 after 48 s: bound 4.22 times the obvious bound, against 4.10 with
#: one pricing (the same two in turn: 3.83); converged it is 4.27 (219 s, one pricing).
PRICING_THREADS = 2
_EPS = 1e-9


@dataclass
class ColumnResult:
    """The bound (in objective units), the best plan built from the columns (or None),
    and how the search went."""

    bound: float
    plan: Plan | None
    iterations: int
    columns: int
    converged: bool


@dataclass
class InstanceData:
    """Per layer an instance may run, its gain over the sensor and its memory; per producer,
    its copies out of and into an instance; the objective's value with every layer on the sensor."""

    units: list[str]  # layers an instance may run, in execution order
    delta: np.ndarray  # cost on an instance - cost on the sensor, per unit
    base: float  # every layer on the sensor
    out_cost: dict[str, float]  # producer -> its copy out of an instance
    in_cost: dict[str, float]  # producer -> its copy into an instance
    param_bytes: np.ndarray
    act_bytes: np.ndarray
    capacity: float
    together: list[list[int]]  # colocation classes among the units
    outputs: set[str]  # the model's output layers (their result goes to the sensor)


def in_scope(problem: Problem) -> list[str] | None:
    """The instances when ``problem`` is in this module's scope (docstring), else None."""
    groups = interchangeable(problem)
    platform = problem.platform
    if len(groups) != 1 or set(problem.processors) != {problem.sensor, *groups[0]} or len(groups[0]) < 2:
        return None
    if not platform.copies_via_sensor or any(s > 0 for s in problem.conditions.queued_s.values()):
        return None
    if any(len(problem.variants(lay, p)) > 1 for lay in problem.layers for p in problem.processors):
        return None
    if any(not problem.variants(lay, problem.sensor) for lay in problem.layers):
        return None
    return list(groups[0])


def instance_data(problem: Problem, instance: str) -> InstanceData:
    """What a set of layers on ``instance`` costs against the sensor: c(S) of the module docstring."""
    costs, c, sensor, graph = problem.costs, problem.constraints, problem.sensor, problem.graph
    bits = costs.activation_bits

    def objective(lc: object) -> float:
        return c.objective_value(lc.energy_j, lc.latency_s)  # type: ignore[attr-defined]

    units, delta, params, acts, base = [], [], [], [], 0.0
    for lay in problem.layers:
        home = objective(costs.layer_cost(lay.name, sensor, problem.variants(lay, sensor)[0]))
        base += home
        there = problem.variants(lay, instance)
        if lay.kind == LayerKind.INPUT or not there:
            continue
        lc = costs.layer_cost(lay.name, instance, there[0])
        units.append(lay.name)
        delta.append(objective(lc) - home)
        params.append(lc.param_bytes)
        acts.append(lay.input_bytes(bits) + lc.activation_bytes)
    outputs = set(problem.output_layers())
    out_cost, in_cost = {}, {}
    for u in graph.nodes:
        sizes = [costs.edge_bytes(u, v) for v in graph.successors(u)]
        if u in outputs:
            sizes.append(graph.nodes[u]["layer"].output_bytes(bits))
        if sizes:
            out_cost[u] = objective(costs.transfer_cost(min(sizes), instance, sensor))
            in_cost[u] = objective(costs.transfer_cost(min(sizes), sensor, instance))
    index = {name: i for i, name in enumerate(units)}
    unit_of = {m: lay.name for lay in problem.layers for m in fused_members(lay)}
    together = [sorted({index[unit_of[m]] for m in members if unit_of.get(m) in index})
                for members in colocation(graph).values()]
    capacity = float(problem.platform.processor(instance).usable_memory_bytes)
    return InstanceData(units, np.array(delta, float), base, out_cost, in_cost, np.array(params, float),
                        np.array(acts, float), capacity, [t for t in together if len(t) > 1], outputs)


class _Pricing:
    """One instance's best set of layers at given duals: a small MIP built once, whose
    layer costs change per call."""

    def __init__(self, problem: Problem, data: InstanceData) -> None:
        self.data = data
        index = {name: i for i, name in enumerate(data.units)}
        n = len(data.units)
        cols_cost = list(data.delta)
        upper = [1.0] * n
        rows: list[tuple[float, float, dict[int, float]]] = []

        def col(cost: float) -> int:
            cols_cost.append(cost)
            upper.append(1.0)
            return len(cols_cost) - 1

        outputs = data.outputs
        for u in problem.graph.nodes:
            consumers = list(problem.graph.successors(u))
            if u in index:
                leaves = u in outputs or any(v not in index for v in consumers)
                out = col(data.out_cost[u]) if u in data.out_cost and (leaves or consumers) else None
                if out is not None and leaves:
                    rows.append((0.0, _INF, {out: 1.0, index[u]: -1.0}))
                for v in (v for v in consumers if v in index):
                    if out is not None:
                        rows.append((0.0, _INF, {out: 1.0, index[u]: -1.0, index[v]: 1.0}))
                inside = [v for v in consumers if v in index]
                if inside:
                    into = col(data.in_cost[u])
                    rows += [(0.0, _INF, {into: 1.0, index[u]: 1.0, index[v]: -1.0}) for v in inside]
            elif any(v in index for v in consumers):
                into = col(data.in_cost[u])
                rows += [(0.0, _INF, {into: 1.0, index[v]: -1.0}) for v in consumers if v in index]
        self._memory(rows, col, upper)
        for members in data.together:
            rows += [(0.0, 0.0, {a: 1.0, b: -1.0}) for a, b in itertools.pairwise(members)]
        self.h = _highs()
        self.h.addCols(len(cols_cost), np.array(cols_cost), np.zeros(len(cols_cost)), np.array(upper),
                       0, np.array([], np.int32), np.array([], np.int32), np.array([], float))
        self.h.changeColsIntegrality(n, np.arange(n, dtype=np.int32),
                                     np.full(n, highspy.HighsVarType.kInteger))
        _add_rows(self.h, rows)
        self.n = n

    def _memory(self, rows: list, col: object, upper: list[float]) -> None:
        data = self.data
        if data.capacity <= 0 or data.param_bytes.sum() + data.act_bytes.max(initial=0) <= data.capacity:
            return
        share = {i: b / data.capacity for i, b in enumerate(data.param_bytes) if b > 0}
        if data.act_bytes.max(initial=0) > 0:
            m = col(0.0)  # type: ignore[operator]
            share[m] = 1.0
            rows += [(0.0, _INF, {m: 1.0, i: -a / data.capacity})
                     for i, a in enumerate(data.act_bytes) if a > 0]
        rows.append((-_INF, 1.0, share))

    def solve(self, duals: np.ndarray, time_limit_s: float) -> tuple[list[np.ndarray], float]:
        """(the sets found, best last, each improving the one before; a lower bound on the
        least reduced cost without the count row's dual)."""
        h = self.h
        h.changeColsCost(self.n, np.arange(self.n, dtype=np.int32), self.data.delta - duals)
        h.setOptionValue("time_limit", max(time_limit_s, 0.05))
        h.run()
        info = h.getInfo()
        if info.primal_solution_status != 2:  # no feasible set found: only the empty one
            return [], min(0.0, float(info.mip_dual_bound))
        found = [np.array(sol.col_value[:self.n]) > 0.5 for sol in h.getSavedMipSolutions()[-SAVED:]]
        found.append(np.array(h.getSolution().col_value[:self.n]) > 0.5)
        return found, float(info.mip_dual_bound)


def _highs() -> highspy.Highs:
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    h.setOptionValue("mip_rel_gap", 1e-4)
    h.setOptionValue("mip_improving_solution_save", True)
    # branch on pseudo-costs from the start, without strong branching first: 3/4 of a
    # pricing's simplex iterations went to strong branching; over 12 saved duals each (two
    # rounds), Inception-v3's pricings took 17.7-19.9 s against 23.6-25.2 s, ResNet-50's
    # 6.8 s against 7.8 s, with the same optima (the integer choice among columns gets it too)
    h.setOptionValue("mip_pscost_minreliable", 0)
    return h


def _add_rows(h: highspy.Highs, rows: list[tuple[float, float, dict[int, float]]]) -> None:
    starts, index, value = [], [], []
    for _, _, terms in rows:
        starts.append(len(index))
        index += list(terms)
        value += list(terms.values())
    h.addRows(len(rows), np.array([r[0] for r in rows]), np.array([r[1] for r in rows]), len(index),
              np.array(starts, np.int32), np.array(index, np.int32), np.array(value, float))


def _column_cost(problem: Problem, data: InstanceData, mask: np.ndarray) -> float:
    """c(S) of the module docstring for the units in ``mask``."""
    inside = {data.units[i] for i in np.flatnonzero(mask)}
    outputs = data.outputs
    cost = float(data.delta[mask].sum())
    for u in problem.graph.nodes:
        consumers = list(problem.graph.successors(u))
        if u in inside and (u in outputs or any(v not in inside for v in consumers)):
            cost += data.out_cost[u]
        elif u not in inside and any(v in inside for v in consumers):
            cost += data.in_cost[u]
    return cost


class _Segments:
    """Cheap pricing: every contiguous run of the units (execution order) priced at once in
    O(n^2) arrays; good columns for the chain-like graphs of real models.  A heuristic:
    it finds columns, never the bound (that is the pricing program's)."""

    def __init__(self, problem: Problem, data: InstanceData) -> None:
        n = len(data.units)
        pos = {name: i for i, name in enumerate(data.units)}
        outputs = data.outputs
        ends = np.arange(n + 1)
        out_at = np.zeros((n + 1, n + 1))  # [u, b]: u's copy out when a run holding u ends at b
        for name, u in pos.items():
            consumers = [pos.get(v, n) for v in problem.graph.successors(name)]
            if name in outputs:
                consumers.append(n)
            if consumers and name in data.out_cost:
                out_at[u] = np.where((ends > u) & (max(consumers) >= ends), data.out_cost[name], 0.0)
        self.copies = np.cumsum(out_at[::-1], axis=0)[::-1]  # [a, b]: summed over u >= a
        for name in problem.graph.nodes:
            consumers = sorted(pos[v] for v in problem.graph.successors(name) if v in pos)
            previous = pos.get(name, -1)
            for c in consumers:  # runs starting after the last consumer, up to c, that reach c
                self.copies[previous + 1:c + 1, c + 1:] += data.in_cost[name]
                previous = c
        self.copies[np.tril_indices(n + 1)] = np.inf
        fits = np.zeros((n + 1, n + 1), bool)
        for a in range(n):
            need = np.cumsum(data.param_bytes[a:]) + np.maximum.accumulate(data.act_bytes[a:])
            fits[a, a + 1:] = need <= data.capacity
        for members in data.together:  # no run may split a colocation class
            lo, hi = members[0], members[-1]
            fits[:lo + 1, lo + 1:hi + 1] = False
            fits[lo + 1:hi + 1, hi + 1:] = False
        self.copies[~fits] = np.inf
        self.delta = data.delta
        self.n = n

    def solve(self, duals: np.ndarray, count: int) -> list[tuple[np.ndarray, float, float]]:
        """Up to ``count`` runs of least reduced cost (module docstring): (mask, reduced
        cost without the count row's dual, column cost) each."""
        prefix = np.concatenate([[0.0], np.cumsum(self.delta - duals)])
        reduced = prefix[None, :] - prefix[:, None] + self.copies
        runs = []
        for flat in np.argsort(reduced, axis=None)[:count]:
            a, b = divmod(int(flat), self.n + 1)
            if np.isfinite(reduced[a, b]):
                mask = np.zeros(self.n, bool)
                mask[a:b] = True
                runs.append((mask, float(reduced[a, b]), float(self.delta[a:b].sum() + self.copies[a, b])))
        return runs


class _Master:
    """The master LP (module docstring) over the columns found so far."""

    def __init__(self, n: int, instances: int) -> None:
        self.h = _highs()
        self.h.setOptionValue("run_crossover", "off")
        self.n = n
        self.h.addRows(n + 1, np.full(n + 1, -_INF), np.concatenate([np.ones(n), [instances]]), 0,
                       np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0))
        self.columns: list[np.ndarray] = []
        self.costs: list[float] = []
        self.seen: set[bytes] = set()

    def add(self, mask: np.ndarray, cost: float) -> bool:
        key = np.packbits(mask).tobytes()
        if key in self.seen or not mask.any():
            return False
        self.seen.add(key)
        rows = np.concatenate([np.flatnonzero(mask), [self.n]]).astype(np.int32)
        self.h.addCol(cost, 0.0, _INF, len(rows), rows, np.ones(len(rows)))
        self.columns.append(mask)
        self.costs.append(cost)
        return True

    def solve(self, central: bool = True) -> tuple[float, np.ndarray, float]:
        """The LP's value, the layer rows' duals (<= 0) and the count row's dual (<= 0):
        central duals (interior point, no crossover), which jump about far less than a
        vertex's in this degenerate LP (Gondzio et al. 2013's primal-dual column
        generation), or with ``central=False`` a vertex's (simplex), the only ones that
        prove convergence when nothing prices out."""
        self.h.setOptionValue("solver", "ipm" if central else "simplex")
        self.h.run()
        duals = np.minimum(np.array(self.h.getSolution().row_dual), 0.0)
        return float(self.h.getInfo().objective_function_value), duals[:self.n], float(duals[self.n])

    def integer(self, time_limit_s: float) -> list[np.ndarray]:
        """The best integer choice of columns found within ``time_limit_s`` (in a program of
        its own: HiGHS gives no duals for a model once marked integer)."""
        lp = self.h.getLp()
        h = _highs()
        h.passModel(lp)
        k = len(self.columns)
        h.changeColsIntegrality(k, np.arange(k, dtype=np.int32), np.full(k, highspy.HighsVarType.kInteger))
        h.setOptionValue("time_limit", max(time_limit_s, 0.1))
        h.run()
        if h.getInfo().primal_solution_status != 2:
            return []
        values = h.getSolution().col_value
        return [self.columns[j] for j in range(k) if values[j] > 0.5]


def column_generation(problem: Problem, starts: list[Plan], time_limit_s: float,
                      gap: float = 1e-2) -> ColumnResult | None:
    """The column bound and the best plan from the columns (None out of scope): stops when
    the bound is within ``gap`` of the best plan known, at convergence, or at the limit."""
    instances = in_scope(problem)
    if instances is None:
        return None
    search = _Generation(problem, instances, starts, time.perf_counter() + time_limit_s)
    converged = False
    while search.left_s() > 0:
        value = search.master_value()
        if search.bound >= value - _EPS * max(1.0, abs(value)):
            converged = True
            break
        if search.bound >= search.best * (1 - gap):
            break
        if search.bound >= value * (1 - gap) and search.integer_due():
            continue  # the master is proven within the gap, the best plan is not: seek one
        if search.cheap_columns():
            continue
        if search.exact_step():
            converged = True
            break
    plan = search.integer_plan(max(search.left_s(), INTEGER_LIMIT_S / 10))
    return ColumnResult(search.bound, plan, search.iterations, len(search.master.columns), converged)


class _Generation:
    """The state of one column generation: master, pricers, bound, duals, best plan."""

    def __init__(self, problem: Problem, instances: list[str], starts: list[Plan], stop: float) -> None:
        self.problem, self.instances, self.stop = problem, instances, stop
        self.data = data = instance_data(problem, instances[0])
        self.master = _Master(len(data.units), len(instances))
        self.pricers = [_Pricing(problem, data) for _ in range(_threads())]
        self.segments = _Segments(problem, data)
        for plan in starts:
            self.add_plan(plan)
        self.best_plan = min(starts, key=lambda p: p.objective_value, default=None)
        self.best = np.inf if self.best_plan is None else self.best_plan.objective_value
        self.bound = -np.inf
        self.center: np.ndarray | None = None  # the duals of the best bound so far
        self.mispriced = False
        self.iterations = self.exact = 0
        self.duals, self.mu = np.zeros(len(data.units)), 0.0
        self.tried = -1  # the number of columns at the last integer choice

    def add_plan(self, plan: Plan) -> None:
        """Each instance's set of layers in ``plan``, as columns."""
        index = {name: i for i, name in enumerate(self.data.units)}
        for p in self.instances:
            mask = np.zeros(len(self.data.units), bool)
            mask[[index[pl.layer] for pl in plan.placements
                  if pl.processor == p and pl.layer in index]] = True
            self.add(mask)

    def left_s(self) -> float:
        return self.stop - time.perf_counter()

    def add(self, mask: np.ndarray, cost: float | None = None) -> bool:
        if cost is None:
            cost = _column_cost(self.problem, self.data, mask)
        return self.master.add(mask, cost)

    def master_value(self, central: bool | None = None) -> float:
        """The master's value; its duals a vertex's for the first CENTRAL_AFTER exact
        pricings, central after (None)."""
        self.iterations += 1
        if central is None:
            central = self.exact >= CENTRAL_AFTER
        value, self.duals, self.mu = self.master.solve(central)
        return value + self.data.base

    def cheap_columns(self) -> bool:
        """Runs of the order priced at the master's duals: True if any entered."""
        threshold = self.mu - _EPS * max(1.0, abs(self.mu))
        entered = False
        for mask, reduced, cost in self.segments.solve(self.duals, CHEAP_COLUMNS):
            if reduced < threshold:
                entered |= self.add(mask, cost)
        return entered

    def exact_step(self) -> bool:
        """The pricing program at duals between the best bound's and the master's (Wentges
        smoothing: far fewer iterations than the master's own duals, which jump about):
        the bound; True when nothing new enters at the master's own duals (converged)."""
        self.exact += 1
        if self.exact % HEURISTIC_EVERY == 0:  # a plan from the columns so far
            self.integer_plan(INTEGER_LIMIT_S)
        own = self.center is None or self.mispriced
        if self.mispriced:  # nothing entered at the smoothed duals: price at a vertex's
            self.master_value(central=False)
        # smoothed duals, and (with a second pricer) the master's own as well
        trials = [self.duals] if own else \
            [SMOOTHING * self.center + (1 - SMOOTHING) * self.duals, self.duals][:len(self.pricers)]
        priced = _price(self.pricers, trials, min(self.left_s(), PRICING_LIMIT_S))
        entered = False
        for trial, (masks, floor) in zip(trials, priced, strict=True):
            candidate = self.data.base + trial.sum() + len(self.instances) * min(0.0, floor)
            if candidate > self.bound:
                self.bound, self.center = candidate, trial
            entered |= any([self.add(mask) for mask in masks])
        self.mispriced = not entered
        return self.mispriced and own

    def integer_due(self) -> bool:
        """An integer choice among the columns, when columns came in since the last: True
        when one was made."""
        if self.tried == len(self.master.columns):
            return False
        self.integer_plan(INTEGER_LIMIT_S)
        return True

    def integer_plan(self, time_limit_s: float) -> Plan | None:
        """The best plan known after an integer choice among the columns."""
        self.tried = len(self.master.columns)
        plan = _integer_plan(self.problem, self.data, self.master, self.instances, time_limit_s)
        if plan is not None and plan.objective_value < self.best:
            # the columns' plan, polished: moves across its sets that no column offers
            plan = improve(self.problem, plan, min(POLISH_LIMIT_S, max(self.left_s(), 0.0)))
            self.best_plan, self.best = plan, plan.objective_value
            self.add_plan(plan)
        return self.best_plan


def _threads() -> int:
    """Pricers to run at once: PRICING_THREADS, at most the cores this process may use."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(PRICING_THREADS, cores))


def _price(pricers: list[_Pricing], trials: list[np.ndarray], limit_s: float
           ) -> list[tuple[list[np.ndarray], float]]:
    """Each pricer at its duals, at once when there are several (sets found, floor) each."""
    if len(trials) == 1:
        return [pricers[0].solve(trials[0], limit_s)]
    with ThreadPoolExecutor(len(trials)) as pool:
        return list(pool.map(lambda pricer, duals: pricer.solve(duals, limit_s), pricers, trials))


def _integer_plan(problem: Problem, data: InstanceData, master: _Master, instances: list[str],
                  time_limit_s: float) -> Plan | None:
    chosen = master.integer(time_limit_s)
    where = {lay.name: problem.sensor for lay in problem.layers}
    for mask, p in zip(chosen, instances, strict=False):
        for i in np.flatnonzero(mask):
            where[data.units[i]] = p
    layers = {lay.name: lay for lay in problem.layers}
    assignment = {n: Placement(n, p, problem.variants(layers[n], p)[0]) for n, p in where.items()}
    try:
        plan = evaluate(problem, assignment, "deepx")
    except DeepxError:
        return None
    return plan if plan.status == "feasible" else None
