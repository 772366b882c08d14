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
    it moves from ``src`` to ``dst``: each input may now have to come to ``dst``
    from wherever its producer runs, and its output goes out from ``dst`` instead
    of ``src`` to every processor that may need it."""
    costs, graph = problem.costs, problem.graph
    procs = problem.processors
    lat = en = 0.0
    for u in graph.predecessors(layer.name):
        size = costs.edge_bytes(u, layer.name)
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


def _dominates(a: Option, b: Option, move: tuple[float, float], memory_binds: bool) -> bool:
    """Whether option ``a`` is at least as good as ``b`` after paying ``move``."""
    return (a.latency_s + move[0] <= b.latency_s and a.energy_j + move[1] <= b.energy_j
            and a.loss <= b.loss and (not memory_binds or a.param_bytes <= b.param_bytes))


def kept_options(problem: Problem, layer: Layer, options: list[Option],
                 movable: set[str], memory_binds: dict[str, bool]) -> list[Option]:
    """``options`` without the dominated ones.  ``movable`` lists the processors a layer may
    move between (local, no queued work).  An option is dropped only when an option that
    nothing dominates dominates it, so no chain of moves is assumed; of equal options
    the first stays."""
    moves: dict[tuple[str, str], tuple[float, float]] = {}

    def beats(j: int, i: int) -> bool:
        a, b = options[j], options[i]
        if a.processor != b.processor and not {a.processor, b.processor} <= movable:
            return False
        if not _dominates(a, b, (0.0, 0.0), memory_binds[a.processor]):
            return False  # (cheap test first: most pairs fail before any move is priced)
        key = (b.processor, a.processor)
        if key not in moves:
            moves[key] = (0.0, 0.0) if key[0] == key[1] else _moves(problem, layer, *key)
        if not _dominates(a, b, moves[key], memory_binds[a.processor]):
            return False
        return j < i or not beats(i, j)  # mutual: the two are equal, the first stays

    n = len(options)
    top = [i for i in range(n) if not any(beats(j, i) for j in range(n) if j != i)]
    return [options[i] for i in range(n) if i in top or not any(beats(j, i) for j in top)]
