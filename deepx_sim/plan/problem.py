"""What a planner is asked (Problem) and what it answers (Plan), and the one
function that costs an assignment: :func:`evaluate`.

Execution model (shared by every planner and the simulator): one inference
runs its layers one at a time in the graph's execution order.  A layer's
output is sent once to each other processor that consumes it; the result
(outputs of layers with no successor) is delivered to the sensor processor,
where the input also starts.  Latency is the sum of layer latencies and
transfer times, plus the radio promotion delay when the request pays one,
plus the wait for our own queued work on the processors it uses (if the
conditions say any is queued).
Device energy is the sum of layer energies (cloud layers: the radio
waiting), transfer energies and, for a request using the radio, the
promotion and tail the radio rule charges it (:func:`deepx_sim.costs.radio_charge`:
promotion only from idle, the tail only for the part the next request will
not share).  The rule's ``first_use_s`` is the latency of the local layers
before the first remote one; its ``span_s`` the radio transfer time plus the
remote layers' latency.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Literal

import networkx as nx

from deepx_sim.accuracy import RANK_FRACTIONS, AccuracyModel, candidate_ranks
from deepx_sim.config import DEFAULT_DEADLINE_S, DEFAULT_MAX_ACCURACY_LOSS
from deepx_sim.costs import FULL, Conditions, CostModel, RadioCharge, Variant
from deepx_sim.errors import PlanError
from deepx_sim.model.fusion import fuse, fuse_profile, fused_members
from deepx_sim.model.layers import Layer, LayerKind, layers_in_order
from deepx_sim.model.profiles import Profile
from deepx_sim.platform import Platform

Objective = Literal["energy", "latency", "weighted"]
RADIO = "radio"


@dataclass(frozen=True)
class Constraints:
    """Limits on a plan and what it minimises.

    ``weighted`` minimises energy_j + latency_weight_j_per_s * latency_s.
    """

    deadline_s: float = DEFAULT_DEADLINE_S
    max_accuracy_loss: float = DEFAULT_MAX_ACCURACY_LOSS
    energy_budget_j: float | None = None
    objective: Objective = "energy"
    latency_weight_j_per_s: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.deadline_s < math.inf:  # (an infinite deadline breaks the ILP's bounds)
            raise PlanError(f"deadline_s must be a finite number > 0, got {self.deadline_s!r}")
        if not 0 <= self.max_accuracy_loss <= 1:
            raise PlanError(f"max_accuracy_loss must be in [0, 1], got {self.max_accuracy_loss!r}")
        if self.energy_budget_j is not None and not 0 < self.energy_budget_j < math.inf:
            raise PlanError(f"energy_budget_j must be a finite number > 0, got {self.energy_budget_j!r}")
        if self.objective not in ("energy", "latency", "weighted"):
            raise PlanError(f"objective must be energy, latency or weighted, got {self.objective!r}")

    def objective_value(self, energy_j: float, latency_s: float) -> float:
        if self.objective == "energy":
            return energy_j
        if self.objective == "latency":
            return latency_s
        return energy_j + self.latency_weight_j_per_s * latency_s


@dataclass(frozen=True)
class Placement:
    layer: str
    processor: str
    variant: Variant = FULL


@dataclass(frozen=True)
class Plan:
    """A decided plan with its predicted costs; a plain value."""

    planner: str
    model: str
    platform: str
    placements: tuple[Placement, ...]
    latency_s: float
    energy_j: float
    energy_breakdown_j: Mapping[str, float]
    memory_bytes: Mapping[str, int]
    accuracy_loss: float
    objective_value: float
    conditions: Conditions
    constraints: Constraints
    uses_radio: bool
    radio: RadioCharge | None = None  # the rule's promotion and tail (None: no radio use)
    status: str = "feasible"
    solver: str = ""
    solve_time_s: float = 0.0
    gap: float | None = None
    notes: tuple[str, ...] = ()
    accuracy_source: str = ""  # where accuracy_loss comes from (AccuracyModel.accuracy_source)
    units: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # fused unit -> its layers

    @property
    def assignment(self) -> dict[str, Placement]:
        return {p.layer: p for p in self.placements}

    @property
    def processors_used(self) -> list[str]:
        return sorted({p.processor for p in self.placements})

    def blocks(self) -> list[tuple[str, list[str]]]:
        """Consecutive layers (in execution order) on one processor: (processor, layers)."""
        out: list[tuple[str, list[str]]] = []
        for p in self.placements:
            if out and out[-1][0] == p.processor:
                out[-1][1].append(p.layer)
            else:
                out.append((p.processor, [p.layer]))
        return out

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (the ``deepx-sim plan --json`` output)."""
        return {
            "status": self.status,
            "planner": self.planner,
            "model": self.model,
            "platform": self.platform,
            "latency_s": self.latency_s,
            "energy_j": self.energy_j,
            "energy_breakdown_j": dict(self.energy_breakdown_j),
            "accuracy_loss": self.accuracy_loss,
            "objective": self.constraints.objective,
            "objective_value": self.objective_value,
            "solver": self.solver,
            "solve_time_s": self.solve_time_s,
            "gap": self.gap,
            "memory_bytes": dict(self.memory_bytes),
            "uses_radio": self.uses_radio,
            "deadline_s": self.constraints.deadline_s,
            "max_accuracy_loss": self.constraints.max_accuracy_loss,
            "conditions": {
                "link": self.conditions.link, "uplink_mbps": self.conditions.uplink_mbps,
                "downlink_mbps": self.conditions.downlink_mbps, "rtt_ms": self.conditions.rtt_ms,
                "free_fraction": dict(self.conditions.free_fraction),
                "cloud_reachable": self.conditions.cloud_reachable,
                "radio_state": self.conditions.radio_state,
                "tail_left_s": self.conditions.tail_left_s,
                "next_gap_s": self.conditions.next_gap_s,
            },
            "radio": None if self.radio is None else {
                "first_use_s": self.radio.first_use_s, "span_s": self.radio.span_s,
                "promotion_s": self.radio.promotion_s, "promotion_j": self.radio.promotion_j,
                "tail_j": self.radio.tail_j},
            "assignment": [
                {"layer": p.layer, "processor": p.processor, "rank": p.variant.rank,
                 "bits": p.variant.bits, "layers": list(self.units.get(p.layer, (p.layer,)))}
                for p in self.placements
            ],
            "notes": list(self.notes),
            "accuracy_source": self.accuracy_source,
        }


@dataclass
class Problem:
    """A model on a platform under conditions and constraints: a planner's input.

    ``precisions`` lists the weight precisions planners may choose among; by
    default each processor runs 32-bit, or its widest precision if it has no
    32-bit support.  ``rank_fractions`` sets the SVD rank grid (fractions of
    the break-even rank); empty disables Runtime Layer Compression.  With
    ``fuse`` (the default) layers are planned as the units runtimes fuse them
    into (:mod:`deepx_sim.model.fusion`); plans then name units by their first layer.
    """

    graph: nx.DiGraph
    platform: Platform
    conditions: Conditions = field(default_factory=Conditions)
    constraints: Constraints = field(default_factory=Constraints)
    profile: Profile | None = None
    precisions: tuple[int, ...] | None = None
    rank_fractions: tuple[float, ...] = RANK_FRACTIONS
    accuracy: AccuracyModel | None = None
    fuse: bool = True

    def __post_init__(self) -> None:
        if self.accuracy is None:  # on the layers as they are: accuracy is measured by running them
            self.accuracy = AccuracyModel(self.graph)
        if self.fuse and "fused" not in self.graph.graph:
            self.graph = fuse(self.graph)
            if self.profile:
                self.profile = fuse_profile(self.profile, self.graph)

    def with_conditions(self, conditions: Conditions) -> Problem:
        """The same problem under other conditions (costs are recomputed lazily)."""
        new = replace(self, conditions=conditions)
        new.accuracy = self.accuracy  # keep the cached spectra
        return new

    def with_constraints(self, constraints: Constraints) -> Problem:
        new = replace(self, constraints=constraints)
        new.accuracy = self.accuracy
        return new

    @cached_property
    def costs(self) -> CostModel:
        return CostModel(self.graph, self.platform, self.conditions, self.profile)

    @cached_property
    def layers(self) -> list[Layer]:
        return layers_in_order(self.graph)

    @property
    def model_name(self) -> str:
        return str(self.graph.graph.get("name", "model"))

    @property
    def sensor(self) -> str:
        return self.platform.sensor

    @cached_property
    def processors(self) -> list[str]:
        """Processors a plan may use now (the cloud only when reachable)."""
        return [p.name for p in self.costs.available_processors()]

    def bits_for(self, processor: str) -> list[int]:
        proc = self.platform.processor(processor)
        if self.precisions is not None:
            return [b for b in self.precisions if proc.supports(b)]
        if proc.supports(32):
            return [32]
        widest = max(b for b in (64, 32, 16, 8) if proc.supports(b))
        return [widest]

    def variants(self, layer: Layer, processor: str) -> list[Variant]:
        """Candidate variants of ``layer`` on ``processor`` (full rank first)."""
        key = (layer.name, processor)
        if key not in self._variants:
            self._variants[key] = self._candidate_variants(layer, processor)
        return self._variants[key]

    @cached_property
    def _variants(self) -> dict[tuple[str, str], list[Variant]]:
        return {}

    @cached_property
    def _losses(self) -> dict[tuple[str, Variant], float]:
        return {}

    def _candidate_variants(self, layer: Layer, processor: str) -> list[Variant]:
        bits = self.bits_for(processor)
        if layer.params == 0:  # no weights: precision only changes the peak used
            return [Variant(bits=bits[0])] if bits else []
        ranks: list[int | None] = [None]
        if layer.kind == LayerKind.FC and self.rank_fractions:
            ranks += candidate_ranks(layer, self.rank_fractions)
        return [Variant(bits=b, rank=k) for b in bits for k in ranks]

    def loss(self, layer: Layer, variant: Variant) -> float:
        """The accuracy model's loss of ``variant`` (asked once per layer and variant:
        the planner's builder, presolve and starting heuristics all ask)."""
        key = (layer.name, variant)
        if key not in self._losses:
            assert self.accuracy is not None
            self._losses[key] = self.accuracy.loss(layer, variant)
        return self._losses[key]

    def output_layers(self) -> list[str]:
        return [lay.name for lay in self.layers if self.graph.out_degree(lay.name) == 0]


def interchangeable(problem: Problem) -> list[list[str]]:
    """Groups of processors any plan may swap at no change in cost: instances of one class
    (``count: k``) under the same load and queue, the sensor excluded."""
    c = problem.conditions
    classes: dict[tuple[str, float, float], list[str]] = {}
    for p in problem.processors:
        proc = problem.platform.processor(p)
        if not proc.is_remote and proc.klass != p and p != problem.sensor:
            key = (proc.klass, c.free_fraction.get(p, 1.0), c.queued_s.get(p, 0.0))
            classes.setdefault(key, []).append(p)
    return [members for members in classes.values() if len(members) > 1]


def transfers_of(problem: Problem, where: Mapping[str, str]) -> Iterable[tuple[str, str, str, int]]:
    """(producer layer, from processor, to processor, bytes) for every transfer a
    placement implies: one per producer and distinct consuming processor."""
    graph = problem.graph
    outputs = set(problem.output_layers())
    for lay in problem.layers:
        src = where[lay.name]
        sizes: dict[str, int] = {}
        for succ in graph.successors(lay.name):
            dst = where[succ]
            if dst != src:
                sizes[dst] = max(sizes.get(dst, 0), problem.costs.edge_bytes(lay.name, succ))
        if lay.name in outputs and src != problem.sensor:
            sizes[problem.sensor] = max(sizes.get(problem.sensor, 0),
                                        lay.output_bytes(problem.costs.activation_bits))
        for dst, size in sizes.items():
            yield lay.name, src, dst, size


def evaluate(problem: Problem, assignment: Mapping[str, Placement], planner: str,
             **info: object) -> Plan:
    """Cost ``assignment`` (layer -> Placement) with the cost model; checks that
    every layer is placed once on an available processor and the input sits on
    the sensor.  Constraints are reported (``status``), not enforced."""
    costs = problem.costs
    missing = [lay.name for lay in problem.layers if lay.name not in assignment]
    if missing:
        raise PlanError(f"{planner}: layers not placed: {missing[:5]}")
    available = set(problem.processors)
    where = {name: p.processor for name, p in assignment.items()}
    latency = first_use_s = span_s = 0.0
    remote_seen = False
    energy: dict[str, float] = {p: 0.0 for p in available}
    energy[RADIO] = 0.0
    memory_params: dict[str, int] = {}
    memory_act: dict[str, int] = {}
    loss = 0.0
    for lay in problem.layers:
        place = assignment[lay.name]
        if place.processor not in available:
            raise PlanError(f"{planner}: layer {lay.name!r} on unavailable processor "
                            f"{place.processor!r}; available: {sorted(available)}")
        if lay.kind == LayerKind.INPUT and place.processor != problem.sensor:
            raise PlanError(f"{planner}: input {lay.name!r} must stay on the sensor processor "
                            f"{problem.sensor!r}")
        c = costs.layer_cost(lay.name, place.processor, place.variant)
        latency += c.latency_s
        proc = problem.platform.processor(place.processor)
        remote_seen |= proc.is_remote
        if proc.is_remote:
            span_s += c.latency_s
        elif not remote_seen:
            first_use_s += c.latency_s
        energy[RADIO if proc.is_remote else place.processor] += c.energy_j
        memory_params[place.processor] = memory_params.get(place.processor, 0) + c.param_bytes
        act = lay.input_bytes(costs.activation_bits) + c.activation_bytes
        memory_act[place.processor] = max(memory_act.get(place.processor, 0), act)
        loss += problem.loss(lay, place.variant)
    for _, src, dst, size in transfers_of(problem, where):
        t = costs.transfer_cost(size, src, dst)
        latency += t.latency_s
        if t.route in ("uplink", "downlink"):
            span_s += t.latency_s
            energy[RADIO] += t.energy_j
        else:
            energy[src] += t.energy_j
    latency += costs.queue_wait_s(memory_params)  # the processors the plan uses
    radio = costs.radio_charge(first_use_s, span_s) if remote_seen else None
    if radio is not None:
        latency += radio.promotion_s
        energy[RADIO] += radio.promotion_j + radio.tail_j
    total_energy = sum(energy.values())
    memory = {p: memory_params[p] + memory_act[p] for p in memory_params}
    c = problem.constraints
    status = str(info.pop("status", "feasible"))
    problems = []
    if latency > c.deadline_s * (1 + 1e-9):
        problems.append("deadline")
    if loss > c.max_accuracy_loss + 1e-9:
        problems.append("accuracy")
    if c.energy_budget_j is not None and total_energy > c.energy_budget_j * (1 + 1e-9):
        problems.append("energy")
    for p, used in memory.items():
        if used > problem.platform.processor(p).usable_memory_bytes:
            problems.append(f"memory:{p}")
    if problems:
        status = "violates " + ",".join(problems)
    ordered = tuple(assignment[lay.name] for lay in problem.layers)
    conditions = problem.conditions
    if costs.link is not None:  # report the values used, not "nominal"
        conditions = replace(conditions, link=costs.link.name, uplink_mbps=costs.uplink_mbps,
                             downlink_mbps=costs.downlink_mbps, rtt_ms=costs.rtt_s * 1000)
    return Plan(
        planner=planner, model=problem.model_name, platform=problem.platform.name,
        placements=ordered, latency_s=latency, energy_j=total_energy,
        energy_breakdown_j={k: v for k, v in energy.items() if v != 0.0 or k in memory},
        memory_bytes=memory, accuracy_loss=loss,
        accuracy_source=problem.accuracy.accuracy_source if problem.accuracy else "",
        objective_value=c.objective_value(total_energy, latency),
        conditions=conditions, constraints=c, uses_radio=radio is not None, radio=radio, status=status,
        units={lay.name: fused_members(lay) for lay in problem.layers if len(fused_members(lay)) > 1},
        **info,  # type: ignore[arg-type]
    )


def placements(problem: Problem, where: Mapping[str, str],
               variants: Mapping[str, Variant] | None = None) -> dict[str, Placement]:
    """Build an assignment from layer -> processor (and optional variants)."""
    out = {}
    for lay in problem.layers:
        proc = where[lay.name]
        variant = (variants or {}).get(lay.name) or problem.variants(lay, proc)[0]
        out[lay.name] = Placement(lay.name, proc, variant)
    return out
