"""Segment heuristic: the execution order cut into blocks, each on the sensor or on an
instance of its own.

When a model's parameters outgrow one accelerator and the platform has k
interchangeable instances of it (``count: k``), good plans cut the execution
order into blocks that fit one instance each, or leave a block on the sensor
(the CPU) where the copies in and out would cost more than the accelerator
saves.  The best such cut is a shortest path over cut positions, found by
dynamic programming over (position, instances used, kind of the last block) in
O(n^2 k): the planner's first incumbent (:meth:`DeepXPlanner.plan`) beside the
greedy, which decides layer by layer and cannot see that a cut a few layers
later is cheaper.

The family it searches: inputs (and layers no instance can run) on the sensor;
each other layer at its full variant in the block its position falls in; the
j-th instance block of the order on the j-th instance.  Block costs are exact
for chains; an edge that skips over a whole block is priced as if its producer
sat on the kind of the block just before (the plan is then costed exactly by
:func:`~deepx_sim.plan.problem.evaluate`).  Colocation classes stay in one block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepx_sim.costs import Variant
from deepx_sim.errors import DeepxError
from deepx_sim.model.layers import LayerKind, colocation
from deepx_sim.plan.problem import Placement, Plan, Problem, evaluate, interchangeable

SENSOR, INSTANCE = 0, 1  # kinds of block
Blocks = list[tuple[int, int, int]]  # (start, end, kind) in chain positions


@dataclass
class _Chain:
    """The layers the blocks cover (execution order) and their costs by kind of block."""

    names: list[str]
    variant: list[dict[str, Variant]]  # by kind: layer -> its full variant there
    score: np.ndarray  # (2, n) objective of the layer in a block of each kind, copies out included
    param_bytes: np.ndarray  # on an instance
    act_bytes: np.ndarray


def segment_plan(problem: Problem) -> Plan | None:
    """The best plan of the segment family (module docstring), or None when the
    problem has no interchangeable instances or no such plan fits."""
    groups = interchangeable(problem)
    if not groups:
        return None
    members = max(groups, key=len)
    devices = (problem.sensor, members[0])
    chain = _chain(problem, devices)
    if chain is None or not chain.names:
        return None
    sources = (problem.sensor, members[1])
    candidates = [_best_blocks(_block_costs(problem, chain, sources, devices), len(members))]
    # the bound's blocks (neighbour edges priced only) are a plan too when few enough
    relaxed = _relaxed(problem, chain, members)
    ok = _cuttable(problem, chain, len(chain.names))
    if relaxed is not None and sum(kind for *_, kind in relaxed[1]) <= len(members) and \
            all(ok[a] for a, *_ in relaxed[1]):  # (the relaxation may split a colocation class)
        candidates.append(relaxed[1])
    plans = [p for blocks in candidates if blocks is not None
             for p in [_plan(problem, chain, members, blocks)] if p is not None and p.status == "feasible"]
    return min(plans, key=lambda p: p.objective_value, default=None)


def _plan(problem: Problem, chain: _Chain, members: list[str],
          blocks: list[tuple[int, int, int]]) -> Plan | None:
    where = {lay.name: Placement(lay.name, problem.sensor, problem.variants(lay, problem.sensor)[0])
             for lay in problem.layers}
    used = 0
    for a, b, kind in blocks:
        device = problem.sensor if kind == SENSOR else members[used]
        used += kind == INSTANCE
        for name in chain.names[a:b]:
            where[name] = Placement(name, device, chain.variant[kind][name])
    try:
        return evaluate(problem, where, "segments")
    except DeepxError:
        return None


def segment_bound(problem: Problem) -> float | None:
    """A lower bound on the objective of every plan, where the platform is the sensor
    plus one group of identical instances and each layer has one variant on each; else None.

    The relaxation: only the edges between neighbours in the execution order cost
    anything, colocation is dropped and instances are unlimited.  On that graph any plan
    can be rebuilt, at the same cost, as maximal runs of the order each on the sensor or
    a fresh instance (a run uses a subset of its device's memory, and every priced edge
    joins two neighbouring runs on different devices, whose copy depends only on their
    kinds), so the segment DP's optimum over runs is the relaxation's optimum.
    """
    groups = interchangeable(problem)
    if len(groups) != 1 or set(problem.processors) != {problem.sensor, *groups[0]}:
        return None
    if len(groups[0]) < 2 or any(len(problem.variants(lay, p)) > 1
                                 for lay in problem.layers for p in problem.processors):
        return None
    members = groups[0]
    chain = _chain(problem, (problem.sensor, members[0]))
    relaxed = None if chain is None else _relaxed(problem, chain, members)
    if relaxed is None:
        return None
    fixed = 0.0  # inputs and layers no instance runs: on the sensor in every plan
    for lay in problem.layers:
        if lay.name not in chain.variant[SENSOR]:
            lc = problem.costs.layer_cost(lay.name, problem.sensor, problem.variants(lay, problem.sensor)[0])
            fixed += problem.constraints.objective_value(lc.energy_j, lc.latency_s)
    return relaxed[0] + fixed


def _relaxed(problem: Problem, chain: _Chain, members: list[str]) -> tuple[float, Blocks] | None:
    """The segment DP on the relaxation of :func:`segment_bound`: its value and blocks."""
    devices, sources = (problem.sensor, members[0]), (problem.sensor, members[1])
    return _unlimited(_block_costs(problem, chain, sources, devices, relaxed=True))


def _chain(problem: Problem, devices: tuple[str, str]) -> _Chain | None:
    costs, c = problem.costs, problem.constraints
    bits = costs.activation_bits
    outputs = set(problem.output_layers())
    chain = _Chain([], [{}, {}], np.zeros((2, 0)), np.zeros(0), np.zeros(0))
    score: list[list[float]] = [[], []]
    params, act = [], []
    for lay in problem.layers:
        options = [problem.variants(lay, d) for d in devices]
        if not options[SENSOR]:
            return None  # the family puts every layer the sensor may need there
        if lay.kind == LayerKind.INPUT or not options[INSTANCE]:
            continue
        back = [costs.edge_bytes(lay.name, s) for s in problem.graph.successors(lay.name)
                if _fixed(problem, s, devices[INSTANCE])]
        if lay.name in outputs:
            back.append(lay.output_bytes(bits))
        home = costs.transfer_cost(max(back, default=0), devices[INSTANCE], problem.sensor)
        chain.names.append(lay.name)
        for kind, device in enumerate(devices):
            v = options[kind][0]
            lc = costs.layer_cost(lay.name, device, v)
            chain.variant[kind][lay.name] = v
            score[kind].append(c.objective_value(lc.energy_j, lc.latency_s))
        score[INSTANCE][-1] += c.objective_value(home.energy_j, home.latency_s)  # its copy back
        params.append(lc.param_bytes)  # (lc: the instance's, the last of the loop)
        act.append(lay.input_bytes(bits) + lc.activation_bytes)
    chain.score = np.array(score, float).reshape(2, -1)
    chain.param_bytes, chain.act_bytes = np.array(params, float), np.array(act, float)
    return chain


def _fixed(problem: Problem, name: str, instance: str) -> bool:
    """Whether ``name`` stays on the sensor in every plan of the family."""
    lay = problem.graph.nodes[name]["layer"]
    return lay.kind == LayerKind.INPUT or not problem.variants(lay, instance)


def _block_costs(problem: Problem, chain: _Chain, sources: tuple[str, str],
                 devices: tuple[str, str], relaxed: bool = False) -> np.ndarray:
    """cost[before, kind, a, b]: objective of chain layers a..b-1 as one block of ``kind``
    after a block of kind ``before`` (inf where it does not fit or splits a colocation
    class).  A producer in an earlier block sits on ``sources[before]``.  ``relaxed``
    prices only the edges between neighbours in the order and ignores colocation."""
    n = len(chain.names)
    prefix = np.concatenate([np.zeros((2, 1)), np.cumsum(chain.score, axis=1)], axis=1)
    compute = prefix[:, None, :] - prefix[:, :, None]  # [kind, a, b]
    enter = _entering(problem, chain, sources, devices, relaxed)
    ok = np.ones(n + 1, bool) if relaxed else _cuttable(problem, chain, n)
    valid = np.triu(np.ones((n + 1, n + 1), bool), 1) & ok[:, None] & ok[None, :]
    fits = valid & _fits(problem, chain, devices[INSTANCE])
    cost = np.full((2, 2, n + 1, n + 1), np.inf)
    for before in (SENSOR, INSTANCE):
        cost[before, SENSOR] = np.where(valid, compute[SENSOR] + enter[before, SENSOR], np.inf)
        cost[before, INSTANCE] = np.where(fits, compute[INSTANCE] + enter[before, INSTANCE], np.inf)
    return cost


def _entering(problem: Problem, chain: _Chain, sources: tuple[str, str],
              devices: tuple[str, str], relaxed: bool) -> np.ndarray:
    """enter[before, kind, a, b]: copies into block a..b-1: one per producer outside it
    (before a) with a consumer inside, of its largest edge into the block's kind.
    ``relaxed`` counts only edges between neighbours in the order."""
    costs, c = problem.costs, problem.constraints
    n = len(chain.names)
    pos = {name: i for i, name in enumerate(chain.names)}
    step = np.zeros((2, 2, n + 1, n + 2))
    for producer in problem.graph.nodes:
        consumers = sorted(pos[s] for s in problem.graph.successors(producer) if s in pos)
        if relaxed:
            consumers = [q for q in consumers if q == pos.get(producer, -2) + 1]
        if not consumers:
            continue
        size = max(costs.edge_bytes(producer, chain.names[q]) for q in consumers)
        home = pos.get(producer, -1)
        for before in (SENSOR, INSTANCE):
            src = sources[before] if producer in pos else problem.sensor
            for kind, dst in enumerate(devices):
                t = costs.transfer_cost(size, src, dst)
                w = c.objective_value(t.energy_j, t.latency_s)
                if w == 0.0:
                    continue
                last = home  # blocks starting in (last, q] meet consumer q first
                for q in consumers:
                    if q > home:
                        step[before, kind, last + 1:q + 1, q + 1] += w
                        last = q
    return np.cumsum(step, axis=3)[..., :n + 1]


def _fits(problem: Problem, chain: _Chain, instance: str) -> np.ndarray:
    """fits[a, b]: layers a..b-1 fit one instance (parameters plus largest activation)."""
    n = len(chain.names)
    cap = problem.platform.processor(instance).usable_memory_bytes
    fits = np.zeros((n + 1, n + 1), bool)
    for a in range(n):
        need = np.cumsum(chain.param_bytes[a:]) + np.maximum.accumulate(chain.act_bytes[a:])
        fits[a, a + 1:] = need <= cap
    return fits


def _cuttable(problem: Problem, chain: _Chain, n: int) -> np.ndarray:
    """Whether a block may start (or end) before chain position i: not inside the span
    of a colocation class."""
    pos = {name: i for i, name in enumerate(chain.names)}
    ok = np.ones(n + 1, bool)
    for members in colocation(problem.graph).values():
        spots = sorted(pos[m] for m in members if m in pos)
        if spots:
            ok[spots[0] + 1:spots[-1] + 1] = False
    return ok


def _unlimited(cost: np.ndarray) -> tuple[float, list[tuple[int, int, int]]] | None:
    """The least summed cost of blocks covering the chain with any number of instances,
    and those blocks: a shortest path over (position, kind of the last block)."""
    n = cost.shape[-1] - 1
    reach = np.full((2, n + 1), np.inf)
    reach[SENSOR, 0] = 0.0
    back = np.zeros((2, n + 1, 2), int)
    for b in range(1, n + 1):
        for kind in (SENSOR, INSTANCE):
            total = reach[:, :b] + cost[:, kind, :b, b]  # [before, a]
            before, a = np.unravel_index(np.argmin(total), total.shape)
            reach[kind, b], back[kind, b] = total[before, a], (a, before)
    kind = int(np.argmin(reach[:, n]))
    if not np.isfinite(reach[kind, n]):
        return None
    blocks, b = [], n
    while b > 0:
        a, before = back[kind, b]
        blocks.append((int(a), b, kind))
        kind, b = int(before), int(a)
    return float(np.min(reach[:, n])), blocks[::-1]


def _best_blocks(cost: np.ndarray, instances: int) -> list[tuple[int, int, int]] | None:
    """Blocks (a, b, kind) covering 0..n with at most ``instances`` of kind INSTANCE,
    minimising the summed costs: a shortest path over (position, instances used, kind)."""
    n = cost.shape[-1] - 1
    reach, back = _shortest(cost, instances)
    used, kind = np.unravel_index(np.argmin(reach[:, :, n]), reach.shape[:2])
    if not np.isfinite(reach[used, kind, n]):
        return None
    blocks, b = [], n
    while b > 0:
        a, before = back[used, kind, b]
        blocks.append((int(a), b, int(kind)))
        used, kind, b = used - (kind == INSTANCE), before, int(a)
    return blocks[::-1]


def _shortest(cost: np.ndarray, instances: int) -> tuple[np.ndarray, np.ndarray]:
    """reach[used, kind, b]: least cost of blocks covering 0..b-1 with ``used`` instance
    blocks, the last of ``kind``; back: that last block's (start, kind before it)."""
    n = cost.shape[-1] - 1
    reach = np.full((instances + 1, 2, n + 1), np.inf)
    reach[0, SENSOR, 0] = 0.0  # before the first block only fixed (sensor) layers ran
    back = np.zeros((instances + 1, 2, n + 1, 2), int)  # (a, kind before) of the last block
    for used in range(instances + 1):
        for kind in (INSTANCE, SENSOR):  # a sensor block may follow this level's instance block
            came = used - (kind == INSTANCE)
            if came < 0:
                continue
            for before in (SENSOR, INSTANCE):
                total = reach[came, before][:, None] + cost[before, kind]
                arg = np.argmin(total, axis=0)
                best = total[arg, np.arange(n + 1)]
                better = best < reach[used, kind]
                reach[used, kind][better] = best[better]
                back[used, kind][better] = np.stack([arg, np.full(n + 1, before)], axis=1)[better]
    return reach, back
