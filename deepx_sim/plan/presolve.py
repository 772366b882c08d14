"""Presolve: drop layer options no optimal plan needs.

An option (processor p, variant v) of a layer is dominated when another option
(p', v') of the same layer is no slower, costs no more energy, loses no more
accuracy, and stores no more parameters where memory could bind, even after
charging the worst change in the layer's transfers that moving from p to p'
can cause.  Replacing p by p' in any plan then gives a plan that is feasible
and no worse, so some optimum avoids every dominated option and the integer
program can leave them out.  Only moves between local processors are
considered: a move onto or off the cloud changes the radio's promotion and tail
(see :func:`deepx_sim.costs.radio_charge`), which this bound does not cover,
and a move onto a processor with our own queued work makes the request wait.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepx_sim.costs import Variant
from deepx_sim.model.layers import Layer
from deepx_sim.plan.problem import Problem


@dataclass(frozen=True)
class Option:
    processor: str
    variant: Variant
    latency_s: float
    energy_j: float
    loss: float
    param_bytes: int


def _moves(problem: Problem, layer: Layer, src: str, dst: str) -> tuple[float, float]:
    """An upper bound on the (latency_s, energy_j) the layer's transfers can grow by when
    it moves from ``src`` to ``dst``: an input only it reads now comes to ``dst``
    instead of ``src``; one that others read too may have to come to ``dst`` as
    well; its output goes out from ``dst`` instead of ``src`` to every processor
    that may need it."""
    costs, graph = problem.costs, problem.graph
    procs = problem.processors
    lat = en = 0.0
    for u in graph.predecessors(layer.name):
        size = costs.edge_bytes(u, layer.name)
        if graph.out_degree(u) == 1:  # u's output now goes r -> dst instead of r -> src
            moved = [(costs.transfer_cost(size, r, dst), costs.transfer_cost(size, r, src)) for r in procs]
            lat += max(new.latency_s - old.latency_s for new, old in moved)
            en += max(new.energy_j - old.energy_j for new, old in moved)
            continue
        # other consumers may keep src in need of it: dst may be a new destination
        worst = [costs.transfer_cost(size, r, dst) for r in procs if r != dst]
        lat += max((t.latency_s for t in worst), default=0.0)
        en += max((t.energy_j for t in worst), default=0.0)
    sizes = [costs.edge_bytes(layer.name, v) for v in graph.successors(layer.name)]
    if graph.out_degree(layer.name) == 0:
        sizes.append(layer.output_bytes(costs.activation_bits))
    size = max(sizes, default=0)
    for q in procs:
        new, old = costs.transfer_cost(size, dst, q), costs.transfer_cost(size, src, q)
        lat += max(0.0, new.latency_s - old.latency_s)
        en += max(0.0, new.energy_j - old.energy_j)
    return lat, en


def kept_options(problem: Problem, layer: Layer, options: list[Option],
                 movable: set[str], memory_binds: dict[str, bool]) -> list[Option]:
    """``options`` without the dominated ones.  ``movable`` lists the processors a layer may
    move between (local, no queued work).  An option is dropped only when an option that
    nothing dominates dominates it, so no chain of moves is assumed; of equal options
    the first stays."""
    n = len(options)
    if n < 2:
        return options
    lat, en, loss, par = np.array([(o.latency_s, o.energy_j, o.loss, o.param_bytes) for o in options]).T
    procs = sorted({o.processor for o in options})
    where = np.array([procs.index(o.processor) for o in options])
    binds = np.array([memory_binds[o.processor] for o in options])
    mobile = np.array([o.processor in movable for o in options])
    # beaten[b, a]: option a is at least as good as b before any transfer is priced, and
    # on b's processor or one b may move to
    beaten = ((lat[None, :] <= lat[:, None]) & (en[None, :] <= en[:, None]) & (loss[None, :] <= loss[:, None])
              & (~binds[None, :] | (par[None, :] <= par[:, None]))
              & ((where[:, None] == where[None, :]) | (mobile[:, None] & mobile[None, :])))
    np.fill_diagonal(beaten, False)
    one_hot = where[:, None] == np.arange(len(procs))[None, :]
    # processor pairs (src, dst) with some option on src beaten by one on dst
    across = (one_hot.T.astype(int) @ beaten.astype(int) @ one_hot.astype(int)) > 0
    np.fill_diagonal(across, False)
    for b, a in zip(*np.nonzero(across), strict=True):
        pair = one_hot[:, b][:, None] & one_hot[:, a][None, :]
        move_lat, move_en = _moves(problem, layer, procs[b], procs[a])
        fits = (lat[None, :] + move_lat <= lat[:, None]) & (en[None, :] + move_en <= en[:, None])
        beaten &= ~pair | fits
    mutual = beaten & beaten.T  # equal options: the first one stays
    beaten &= ~mutual | (np.arange(n)[None, :] < np.arange(n)[:, None])
    top = ~beaten.any(axis=1)
    keep = top | ~beaten[:, top].any(axis=1)
    return [o for o, k in zip(options, keep, strict=True) if k]


def _surroundings(problem: Problem, layer: Layer) -> tuple[object, ...]:
    """All that :func:`_moves` reads of a layer's place in the graph."""
    costs, graph, name = problem.costs, problem.graph, layer.name
    inputs = sorted((costs.edge_bytes(u, name), graph.out_degree(u) == 1) for u in graph.predecessors(name))
    outputs = sorted(costs.edge_bytes(name, v) for v in graph.successors(name))
    result = layer.output_bytes(costs.activation_bits) if graph.out_degree(name) == 0 else 0
    return tuple(inputs), tuple(outputs), result


def presolved(problem: Problem, options: dict[str, list[Option]], movable: set[str],
              memory_binds: dict[str, bool], untouched: set[str]) -> dict[str, list[Option]]:
    """:func:`kept_options` for every layer but those in ``untouched``.  Layers with the same
    options and surroundings (a transformer's repeated blocks) keep the same ones, so
    each such kind is presolved once."""
    done: dict[tuple[object, ...], list[int]] = {}
    out = {}
    for lay in problem.layers:
        opts = options[lay.name]
        if lay.name in untouched:
            out[lay.name] = opts
            continue
        key = (tuple(opts), _surroundings(problem, lay))
        if key not in done:
            kept = {id(o) for o in kept_options(problem, lay, opts, movable, memory_binds)}
            done[key] = [i for i, o in enumerate(opts) if id(o) in kept]
        out[lay.name] = [opts[i] for i in done[key]]
    return out
