"""The pooled bound: the instances of the accelerator class pooled into one processor
with their total memory, solved exactly by dynamic programming over the execution
order.  A lower bound on every plan that sees the memory, and a plan built from it.

Scope: that of plan/columns.py (the sensor plus k identical instances, copies via
the sensor's memory, one variant per layer, nothing remote or queued).

Why.  Where memory forces some layers onto the sensor (the random operator graphs of
benchmarks/bench_profiled.py), the compact program's relaxation mixes "every layer
on the instances" with "every layer on the sensor" in the memory row's proportions
and so pays for few copies.  Here the memory used is a dimension of the state, so
no such mix exists, and the DP's pooled set is a good first plan (random 400 nodes
on 8 instances: 2.52 times the obvious bound after local search, against 2.78 from
the ILP's other starts after 60 s).  As a bound it is no stronger than that
relaxation there (2.27 against 2.37 at a window of 2; about level when the window
sees every edge), since neither sees how the layers split among the instances; so
the planner takes only the plan, and bench_profiled.py prints the bound.

The relaxation.  Each layer runs on the sensor or on "an instance" (which one is
forgotten), and the instances' memory is pooled: their layers' parameters take at
most k times one instance's usable memory (activations and the split among the
instances dropped).  A producer pays its copy out of an instance when it runs on one
and its result or a consumer is on the sensor, and its copy in when it runs on the
sensor and a consumer is on an instance; a plan pays at least that (a copy between
two instances pays both, here nothing).  The state holds the places of the last
``window`` layers, so only consumers that close behind their producer in the order
are seen; the others' copies are dropped.  Sizes are rounded down to 1/2^20 of the
pooled memory, so every plan's pooled set fits.  Hence the optimum is at most every
plan's objective.

The plan.  The same program with sizes rounded up gives a pooled set that fits; it is
cut into at most k runs of the order, one per instance, each within its memory (a DP
over the cuts, a cut priced by the copies that cross it), and costed by ``evaluate``:
a first plan for the planner, which improves it by local search (plan/improve.py).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from deepx_sim.plan.columns import InstanceData, in_scope, instance_data
from deepx_sim.plan.problem import Placement, Plan, Problem, evaluate

#: Layers behind a consumer whose place the state holds: 2 sees every edge of a chain and
#: its skips of one layer (4 states).  The plan looks further: on the random 400-node graph
#: on 8 instances, 4 against 2 gave 2.52 against 2.62 times the obvious bound after local
#: search (800 nodes on 8: 2.62 against 2.66), at 4 against 0.8 s.
WINDOW = 2
PLAN_WINDOW = 4
#: The plan's work (layers x memory steps x states) given a minute: 800 layers at a window
#: of 4 take about 7 s here.
PLAN_WORK = 1e9
#: Steps of the pooled memory for the bound (sizes rounded down) and for the plan (rounded
#: up): 2^20 loses at most n/2^20 of the memory to rounding (0.08 % for 800 layers), 2^16
#: at most 1.2 % for the plan (which local search then repairs).
BOUND_STEPS = 1 << 20
PLAN_STEPS = 1 << 16


@dataclass
class _Chain:
    """The problem along its execution order, as the DP sees it."""

    names: list[str]
    movable: np.ndarray  # may run on an instance
    delta: np.ndarray  # cost on an instance - cost on the sensor
    params: np.ndarray
    acts: np.ndarray
    consumers: list[list[int]]  # positions of each position's consumers
    copy_cost: np.ndarray  # a copy out plus a copy in (between two instances), per producer
    tables: list[np.ndarray | None]  # copies paid at each position, per state (None: none)
    base: float  # every layer on the sensor
    capacity: float  # one instance's usable memory (0: unlimited)
    count: int
    magnitude: float  # the largest |partial objective|, for rounding


def pooled_bound(problem: Problem, window: int = WINDOW) -> float | None:
    """The pooled bound of the module docstring (None out of scope)."""
    instances = in_scope(problem)
    if instances is None:
        return None
    chain = _chain(problem, instance_data(problem, instances[0]), len(instances), window)
    steps, sizes = _steps(chain, chain.capacity * chain.count, BOUND_STEPS, np.floor)
    value = float(_optimum(chain, sizes, steps, window, keep=False)[0].min())
    # each of the n additions may round by eps of the largest partial sum
    return chain.base + value - 2 * len(chain.names) * np.finfo(float).eps * chain.magnitude


def pooled_plan(problem: Problem, time_limit_s: float | None = None) -> Plan | None:
    """The plan of the module docstring, not yet improved (None out of scope, with
    colocation, or where no pooled set can be cut into runs that fit).  Its window is the
    widest up to PLAN_WINDOW whose work fits the time limit's share (PLAN_WORK a minute)."""
    instances = in_scope(problem)
    if instances is None:
        return None
    data = instance_data(problem, instances[0])
    if data.together:
        return None
    chain = _chain(problem, data, len(instances), PLAN_WINDOW)
    steps, _ = _steps(chain, chain.capacity * chain.count, PLAN_STEPS, np.ceil)
    work = PLAN_WORK * (1.0 if time_limit_s is None else min(time_limit_s / 60.0, 1.0))
    window = next((w for w in range(PLAN_WINDOW, 0, -1) if len(chain.names) * (steps + 1) << w <= work), 0)
    if window < 1:
        return None
    if window < PLAN_WINDOW:  # the copies' tables for the narrower window
        chain = _chain(problem, data, len(instances), window)
    return _plan(problem, chain, instances, window)


def _chain(problem: Problem, data: InstanceData, count: int, window: int) -> _Chain:
    names = [lay.name for lay in problem.layers]
    pos = {name: i for i, name in enumerate(names)}
    n = len(names)
    movable, delta, params, acts = np.zeros(n, bool), np.zeros(n), np.zeros(n), np.zeros(n)
    for i, name in enumerate(data.units):
        p = pos[name]
        delta[p], params[p], acts[p] = data.delta[i], data.param_bytes[i], data.act_bytes[i]
        # a layer no instance can hold runs on the sensor in every plan
        movable[p] = data.capacity <= 0 or params[p] + acts[p] <= data.capacity
    consumers = [sorted(pos[v] for v in problem.graph.successors(name)) for name in names]
    copy_cost = np.zeros(n)
    charged: dict[int, list[tuple[int, list[int], float, float, bool]]] = defaultdict(list)
    for u, out in data.out_cost.items():
        into, at_u = data.in_cost[u], pos[u]
        copy_cost[at_u] = out + into
        near = [v for v in consumers[at_u] if v - at_u <= window]
        at = max(near, default=at_u)
        charged[at].append((at - at_u, [at - v for v in near], out, into, u in data.outputs))
    states = np.arange(1 << (window + 1))
    tables: list[np.ndarray | None] = [None] * n
    for at, producers in charged.items():
        table = np.zeros(len(states))
        for du, dvs, out, into, is_output in producers:
            on_instance = (states >> du) & 1 == 1
            any_on_instance, any_on_sensor = np.zeros(len(states), bool), np.full(len(states), is_output)
            for dv in dvs:
                there = (states >> dv) & 1 == 1
                any_on_instance |= there
                any_on_sensor |= ~there
            table += np.where(on_instance, out * any_on_sensor, into * any_on_instance)
        tables[at] = table if table.any() else None
    magnitude = float(np.abs(delta).sum() + copy_cost.sum())
    return _Chain(names, movable, delta, params, acts, consumers, copy_cost, tables, data.base,
                  data.capacity, count, magnitude)


def _optimum(chain: _Chain, sizes: np.ndarray, steps: int, window: int,
             keep: bool) -> tuple[np.ndarray, list[np.ndarray]]:
    """The DP over the order: f[s, m] = least cost of the layers so far with the last
    ``window`` places s (bit j: position t-j on an instance) and pooled memory at most m
    steps.  Returns f[:, steps] and, with ``keep``, per position the predecessor chosen
    (bit-packed)."""
    count = 1 << window
    f = np.full((count, steps + 1), np.inf)
    f[0] = 0.0
    picks: list[np.ndarray] = []
    for t in range(len(chain.names)):
        table = chain.tables[t]
        new = np.full_like(f, np.inf)
        pick = np.zeros((count, (steps + 8) // 8), np.uint8) if keep else None
        for s_new in range(count):
            on = s_new & 1
            if on and (not chain.movable[t] or sizes[t] > steps):
                continue
            s0, s1 = s_new >> 1, (s_new >> 1) | (1 << (window - 1))
            a, b = f[s0], f[s1]
            if table is not None:
                a, b = a + table[(s0 << 1) | on], b + table[(s1 << 1) | on]
            best = np.minimum(a, b)
            if pick is not None:
                pick[s_new] = np.packbits(b < a)
            if on:
                z = int(sizes[t])
                new[s_new, z:] = best[:steps + 1 - z] + chain.delta[t]
            else:
                new[s_new] = best
        f = new
        if pick is not None:
            picks.append(pick)
    return f[:, steps], picks


def _places(chain: _Chain, sizes: np.ndarray, steps: int, window: int) -> np.ndarray | None:
    """Which positions the pooled optimum puts on an instance (None: no set fits)."""
    values, picks = _optimum(chain, sizes, steps, window, keep=True)
    if not np.isfinite(values.min()):
        return None
    s, m = int(np.argmin(values)), steps
    on = np.zeros(len(chain.names), bool)
    for t in reversed(range(len(chain.names))):
        on[t] = bool(s & 1)
        if on[t]:
            m -= int(sizes[t])
        b = (picks[t][s, m >> 3] >> (7 - (m & 7))) & 1
        s = (s >> 1) | (int(b) << (window - 1))
    return on


def _steps(chain: _Chain, pooled_bytes: float, steps: int, rounding: np.ufunc) -> tuple[int, np.ndarray]:
    """The memory's steps and each layer's size in them (none where memory cannot bind)."""
    if chain.capacity <= 0 or chain.params[chain.movable].sum() <= pooled_bytes:
        return 0, np.zeros(len(chain.names), np.int64)
    return steps, rounding(chain.params * steps / pooled_bytes).astype(np.int64)


#: Tries of the plan: each leaves more memory free per instance (in largest layers), for
#: the runs' fragmentation when the pooled set cannot be cut into k runs that fit.
SPARE_LAYERS = (0.0, 0.25, 0.5, 1.0, 2.0)


def _plan(problem: Problem, chain: _Chain, instances: list[str], window: int) -> Plan | None:
    """The pooled set cut into runs, with more memory spare each try until it can be."""
    largest = float(chain.params[chain.movable].max(initial=0.0))
    for spare in SPARE_LAYERS:
        pooled_bytes = chain.count * (chain.capacity - spare * largest)
        if chain.capacity > 0 and pooled_bytes <= 0:
            break
        steps, sizes = _steps(chain, pooled_bytes, PLAN_STEPS, np.ceil)
        on = _places(chain, sizes, steps, window)
        if on is None:
            break
        runs = _split(chain, on)
        if runs is not None:
            return _assigned(problem, instances, runs)
    return None


def _assigned(problem: Problem, instances: list[str], runs: np.ndarray) -> Plan:
    assignment = {}
    for lay, run in zip(problem.layers, runs, strict=True):
        proc = problem.sensor if run < 0 else instances[run]
        assignment[lay.name] = Placement(lay.name, proc, problem.variants(lay, proc)[0])
    return evaluate(problem, assignment, "pooled")


def _split(chain: _Chain, on: np.ndarray) -> np.ndarray | None:
    """The instance of each position (-1: the sensor) that cuts the positions ``on`` into at
    most k runs of the order, each within one instance's memory, with the least copies
    crossing the cuts (None: no such cut)."""
    runs = np.full(len(on), -1)
    items = np.flatnonzero(on)
    r = len(items)
    if r == 0:
        return runs
    index = {int(p): i for i, p in enumerate(items)}
    crossing = np.zeros(r + 1)  # crossing[i]: copies over a cut just before item i
    for i, p in enumerate(items):
        later = [index[v] for v in chain.consumers[p] if v in index]
        if later:
            crossing[i + 1:max(later) + 1] += chain.copy_cost[p]
    first = _first_fitting(chain, items)
    best = np.full((chain.count + 1, r + 1), np.inf)
    best[0, 0] = 0.0
    came = np.zeros((chain.count + 1, r + 1), np.int64)
    for b in range(1, chain.count + 1):
        for j in range(1, r + 1):
            lo = first[j]
            if lo < j:
                cand = best[b - 1, lo:j] + crossing[lo:j]
                came[b, j] = lo + int(np.argmin(cand))
                best[b, j] = cand[came[b, j] - lo]
    b = int(np.argmin(best[:, r]))
    if not np.isfinite(best[b, r]):
        return None
    j = r
    while j > 0:
        i = int(came[b, j])
        runs[items[i:j]] = b - 1
        j, b = i, b - 1
    return runs


def _first_fitting(chain: _Chain, items: np.ndarray) -> np.ndarray:
    """first[j]: the least i such that items[i:j] fit on one instance (j if none does)."""
    params, acts = chain.params[items], chain.acts[items]
    total = np.concatenate([[0.0], np.cumsum(params)])
    first = np.zeros(len(items) + 1, np.int64)
    i = 0
    for j in range(1, len(items) + 1):
        while i < j and chain.capacity > 0 and total[j] - total[i] + acts[i:j].max() > chain.capacity:
            i += 1
        first[j] = i
    return first
