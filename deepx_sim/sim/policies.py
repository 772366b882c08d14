"""How the simulator gets plans: compiled plans, condition estimates and policies.

The simulator asks a :class:`Policy` for a :class:`Decision` at each request's
arrival, passing what the request finds (:class:`Observation`: the radio's
state, the arrival gaps, our own backlog), and never talks to a planner
directly.  Policies put the radio state and the expected next gap into the
conditions they plan under, so the radio rule of :mod:`deepx_sim.costs`
charges promotion and tail as they will fall.

- ``static``: one plan, made at the link's nominal conditions with no load
  (scenarios: the run's average conditions).
- ``replan``: DeepX's behaviour; each request is planned from an estimate of
  the current conditions (the last periodic sample, an EWMA of samples, or
  the instantaneous value).  The ``deepx`` planner uses the fast path
  (:class:`~deepx_sim.plan.fastpath.FastReplanner`); other planners are
  called directly, memoised per estimate.
- ``oracle``: plans with the true conditions at arrival, with a full solve.

Every policy also answers :meth:`Policy.fallback`: the on-device plan a
request switches to when the cloud is lost mid-request.  When no plan meets
the constraints, a policy runs the fastest plan (the DeepX ILP minimising
latency) and says so in the decision's note.
"""

from __future__ import annotations

import hashlib
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from deepx_sim.costs import Conditions, RadioState, radio_charge
from deepx_sim.errors import InfeasibleError, PlanError, ScenarioError
from deepx_sim.plan import get_planner
from deepx_sim.plan.fastpath import DEFAULT_GAP_SHARES, FastReplanner
from deepx_sim.plan.ilp import DeepXPlanner
from deepx_sim.plan.problem import Constraints, Plan, Problem, transfers_of
from deepx_sim.sim.conditions import Outages, StepTrace

StepKind = Literal["compute", "copy", "uplink", "downlink", "cloud"]
#: Estimates below this are clamped: a planner needs a positive bandwidth.
MIN_ESTIMATE_MBPS = 0.01
MIN_FREE_FRACTION = 0.01
DEFAULT_SAMPLE_INTERVAL_S = 1.0
DEFAULT_EWMA_ALPHA = 0.3


# ----------------------------------------------------------------- compiled plans
@dataclass(frozen=True)
class Step:
    """One thing a request does: a block of layers on a processor, an on-chip
    copy, a radio transfer (possibly several tensors in a row), or cloud compute."""

    kind: StepKind
    processor: str  # processor held (compute, copy) or run on (cloud); the link for transfers
    work_s: float = 0.0  # busy seconds at full speed, stretched by background load
    fixed_s: float = 0.0  # then on-chip copies out of the processor (not stretched)
    energy_j: float = 0.0  # processor energy of compute and copy steps
    megabits: float = 0.0
    transfers: int = 0  # tensors moved: each pays rtt/2
    size_bytes: int = 0


@dataclass(frozen=True)
class CompiledPlan:
    plan_id: str
    plan: Plan
    steps: tuple[Step, ...]
    processors_used: str
    bytes_up: int
    bytes_down: int
    work_s: Mapping[str, float]  # busy seconds held per local processor (compute and copies)


def plan_id(plan: Plan) -> str:
    """A short stable id of a plan's placements (same plan, same id, in any run)."""
    text = ";".join(f"{p.layer}@{p.processor}/{p.variant.label()}" for p in plan.placements)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def compile_plan(problem: Problem, plan: Plan) -> CompiledPlan:
    """The steps a request runs for ``plan``, in the planner's execution order.

    A tensor is sent just before the first layer that needs it on the other
    processor (a result computed on the device goes to the sensor at once);
    consecutive layers on one processor merge into one step, as do consecutive
    transfers over the same route.  Busy seconds come from
    ``problem``'s cost model without background load.
    """
    costs = problem.costs
    where = {p.layer: p.processor for p in plan.placements}
    pending: dict[tuple[str, str], int] = {}
    for producer, _src, dst, size in transfers_of(problem, where):
        pending[(producer, dst)] = size
    outputs = set(problem.output_layers())
    steps: list[Step] = []

    def push(step: Step) -> None:
        last = steps[-1] if steps else None
        same = last is not None and last.processor == step.processor
        # a copy right after compute on its processor joins that hold (work first, then the copy)
        if same and (last.kind == step.kind or (last.kind == "compute" and step.kind == "copy")) \
                and not (step.kind == "compute" and last.fixed_s > 0):
            steps[-1] = Step(last.kind, step.processor, last.work_s + step.work_s,
                             last.fixed_s + step.fixed_s, last.energy_j + step.energy_j,
                             last.megabits + step.megabits, last.transfers + step.transfers,
                             last.size_bytes + step.size_bytes)
        else:
            steps.append(step)

    def send(producer: str, dst: str) -> None:
        size = pending.pop((producer, dst))
        src = where[producer]
        t = costs.transfer_cost(size, src, dst)
        if t.route == "none":  # an empty tensor (a profiled graph's zero-cost edge) moves free
            return
        if t.route == "shared_memory":
            push(Step("copy", src, fixed_s=t.latency_s, energy_j=t.energy_j, size_bytes=size))
        else:
            assert costs.link is not None
            push(Step(t.route, costs.link.name, megabits=size * 8 / 1e6, transfers=1,  # type: ignore[arg-type]
                      size_bytes=size))

    for place in plan.placements:
        for pred in problem.graph.predecessors(place.layer):
            if (pred, place.processor) in pending:
                send(pred, place.processor)
        c = costs.layer_cost(place.layer, place.processor, place.variant)
        remote = problem.platform.processor(place.processor).is_remote
        if c.busy_s > 0:
            if remote:
                push(Step("cloud", place.processor, work_s=c.busy_s))
            else:
                push(Step("compute", place.processor, work_s=c.busy_s, energy_j=c.energy_j))
        if not remote and (place.layer, problem.sensor) in pending and place.layer in outputs:
            send(place.layer, problem.sensor)  # an on-chip result goes home at once, not after radio use
    for producer, dst in list(pending):  # results from the cloud
        send(producer, dst)
    return CompiledPlan(
        plan_id=plan_id(plan), plan=plan, steps=tuple(steps),
        processors_used="+".join(plan.processors_used),
        bytes_up=sum(s.size_bytes for s in steps if s.kind == "uplink"),
        bytes_down=sum(s.size_bytes for s in steps if s.kind == "downlink"),
        work_s=work_by_processor(steps),
    )


def work_by_processor(steps: tuple[Step, ...]) -> dict[str, float]:
    """Busy seconds (compute and on-chip copies) ``steps`` hold on each processor."""
    out: dict[str, float] = {}
    for s in steps:
        if s.kind in ("compute", "copy"):
            out[s.processor] = out.get(s.processor, 0.0) + s.work_s + s.fixed_s
    return out


# ----------------------------------------------------------------- the world
@dataclass(frozen=True)
class World:
    """The true conditions over time: link bandwidths, RTT, outages and the
    free fraction of each loaded processor (processors not listed are idle)."""

    link: str | None
    uplink_mbps: StepTrace
    downlink_mbps: StepTrace
    rtt_ms: float
    outages: Outages = field(default_factory=Outages)
    free_fraction: Mapping[str, StepTrace] = field(default_factory=dict)

    @classmethod
    def nominal(cls, problem: Problem) -> World:
        """Constant conditions at the link's nominal values (or no link at all)."""
        link = problem.costs.link
        if link is None:
            return cls(None, StepTrace.constant(1.0), StepTrace.constant(1.0), 0.0)
        return cls(link.name, StepTrace.constant(link.uplink_mbps), StepTrace.constant(link.downlink_mbps),
                   link.rtt_ms)

    def mean_conditions(self, start_s: float, end_s: float) -> Conditions:
        """Average bandwidths and free fractions over [start_s, end_s], cloud reachable."""
        free = {p: max(MIN_FREE_FRACTION, tr.mean(start_s, end_s)) for p, tr in self.free_fraction.items()}
        up = self.uplink_mbps.mean(start_s, end_s)
        down = self.downlink_mbps.mean(start_s, end_s)
        return Conditions(link=self.link, uplink_mbps=max(MIN_ESTIMATE_MBPS, up),
                          downlink_mbps=max(MIN_ESTIMATE_MBPS, down), rtt_ms=self.rtt_ms,
                          free_fraction=free)

    def conditions_at(self, t: float, uplink_mbps: float | None = None,
                      downlink_mbps: float | None = None,
                      free: Mapping[str, float] | None = None) -> Conditions:
        """Conditions at ``t``: the true values unless estimates are given."""
        up = self.uplink_mbps.value_at(t) if uplink_mbps is None else uplink_mbps
        down = self.downlink_mbps.value_at(t) if downlink_mbps is None else downlink_mbps
        if free is None:
            free = {p: max(MIN_FREE_FRACTION, tr.value_at(t)) for p, tr in self.free_fraction.items()}
        return Conditions(link=self.link, uplink_mbps=max(MIN_ESTIMATE_MBPS, up),
                          downlink_mbps=max(MIN_ESTIMATE_MBPS, down), rtt_ms=self.rtt_ms,
                          free_fraction=free, cloud_reachable=not self.outages.is_down(t))


EstimatorKind = Literal["last", "ewma", "current"]


class Estimator:
    """What the device believes the conditions are: it samples the true
    bandwidths and loads every ``sample_interval_s`` and reports the last
    sample (``last``), an exponentially weighted average of samples (``ewma``,
    weight ``alpha`` on the newest), or the true value now (``current``).
    Link outages are seen at once (a failed connection is noticed)."""

    def __init__(self, world: World, kind: EstimatorKind = "last",
                 sample_interval_s: float = DEFAULT_SAMPLE_INTERVAL_S,
                 alpha: float = DEFAULT_EWMA_ALPHA) -> None:
        if kind not in ("last", "ewma", "current"):
            raise ScenarioError(f"policy.estimator must be last, ewma or current, got {kind!r}")
        if not sample_interval_s > 0:
            raise ScenarioError(f"policy.sample_interval_s must be > 0, got {sample_interval_s!r}")
        if not 0 < alpha <= 1:
            raise ScenarioError(f"policy.ewma_alpha must be in (0, 1], got {alpha!r}")
        self.world, self.kind = world, kind
        self.interval_s, self.alpha = sample_interval_s, alpha
        self._traces = {"up": world.uplink_mbps, "down": world.downlink_mbps,
                        **{f"free:{p}": tr for p, tr in world.free_fraction.items()}}
        self._next_sample = 0
        self._ewma: dict[str, float] = {}
        self._last: tuple[tuple[int, bool], Conditions] | None = None  # (sample, down), estimate

    def _sampled(self, now_s: float) -> dict[str, float]:
        last_index = math.floor(now_s / self.interval_s + 1e-12)
        if self.kind == "last":
            t = last_index * self.interval_s
            return {k: tr.value_at(t) for k, tr in self._traces.items()}
        while self._next_sample <= last_index:  # fold in every sample taken since the last call
            t = self._next_sample * self.interval_s
            for k, tr in self._traces.items():
                v = tr.value_at(t)
                prev = self._ewma.get(k)
                self._ewma[k] = v if prev is None else self.alpha * v + (1 - self.alpha) * prev
            self._next_sample += 1
        return self._ewma

    def estimate(self, now_s: float) -> Conditions:
        if self.kind == "current":
            return self.world.conditions_at(now_s)
        # the estimate changes only with a new sample or reachability: reuse it in between
        key = (math.floor(now_s / self.interval_s + 1e-12), self.world.outages.is_down(now_s))
        if self._last is None or self._last[0] != key:
            v = self._sampled(now_s)
            free = {k[5:]: min(1.0, max(MIN_FREE_FRACTION, x)) for k, x in v.items() if k.startswith("free:")}
            self._last = (key, self.world.conditions_at(now_s, uplink_mbps=v["up"], downlink_mbps=v["down"],
                                                        free=free))
        return self._last[1]


# ----------------------------------------------------------------- policies
@dataclass(frozen=True)
class Observation:
    """What a request finds when it arrives, besides the link and loads: the
    radio's state (:meth:`deepx_sim.sim.radio.Radio.state`) and the arrival gaps."""

    radio_state: RadioState = "idle"
    tail_left_s: float = 0.0  # connected: seconds before the radio would go idle
    last_gap_s: float | None = None  # since the previous arrival (None: the first request)
    next_gap_s: float | None = None  # the true gap to the next arrival: for oracles only
    backlog_s: Mapping[str, float] = field(default_factory=dict)  # our own work ahead, per processor


IDLE = Observation()


class GapEstimator:
    """The expected gap to the next arrival: an EWMA of the observed gaps (weight
    ``alpha`` on the newest), starting from ``prior_s`` (e.g. the workload's mean)."""

    def __init__(self, prior_s: float | None = None, alpha: float = DEFAULT_EWMA_ALPHA) -> None:
        self.value, self.alpha = prior_s, alpha

    def observe(self, gap_s: float | None) -> float | None:
        if gap_s is not None and gap_s > 0:
            self.value = gap_s if self.value is None else self.alpha * gap_s + (1 - self.alpha) * self.value
        return self.value


@dataclass(frozen=True, slots=True)
class Decision:
    compiled: CompiledPlan
    predicted_latency_s: float
    predicted_energy_j: float
    planning_s: float  # wall-clock time the planner took (0 when reused)
    conditions: Conditions
    note: str = ""


def _conditions_key(c: Conditions, deadline_s: float) -> tuple[object, ...]:
    """What a plan depends on.  Tail left beyond the deadline is as good as any
    longer tail (a feasible plan reaches the radio before its deadline), and the
    gap counts to 4 significant digits, so that steady runs reuse their solves."""
    return (c.link, c.uplink_mbps, c.downlink_mbps, c.rtt_ms, tuple(sorted(c.free_fraction.items())),
            c.cloud_reachable, c.radio_state, min(c.tail_left_s, deadline_s),
            tuple(sorted(c.queued_s.items())), None if c.next_gap_s is None else float(f"{c.next_gap_s:.4g}"))


class Policy(ABC):
    """Chooses a plan for each request; see the module docstring.

    ``radio_aware`` (default) plans with the radio state a request finds and
    the gap expected to the next arrival (the radio rule of
    :mod:`deepx_sim.costs`); otherwise every request is planned as if it found
    the radio idle and had no successor (promotion and the whole tail).
    ``expected_gap_s`` (the workload's mean gap, if known) starts the gap estimate.
    ``see_queue`` also plans with our own earlier requests' work still ahead on
    each processor (the backlog the request finds, stretched by the load).
    """

    kind: str = "policy"
    replans: bool = False  # whether planning happens per request (its time can be charged)

    def __init__(self, problem: Problem, world: World, planner: str = "deepx", *,
                 radio_aware: bool = True, expected_gap_s: float | None = None,
                 see_queue: bool = False) -> None:
        self.problem = problem
        self.world = world
        self.planner_name = planner
        self.planner = get_planner(planner)
        self.radio_aware = radio_aware and problem.costs.link is not None
        self.gaps = GapEstimator(expected_gap_s)
        self.see_queue = see_queue
        self._compiled: dict[int, CompiledPlan] = {}
        self._memo: dict[tuple[object, ...], tuple[Plan, str]] = {}
        self._solves = 0

    @property
    def full_solves(self) -> int:
        """Planner calls made so far (the fast path's pool solves included)."""
        return self._solves

    @property
    def pool_size(self) -> int:
        """Distinct plans in the replanning fast path's pool (0 without one)."""
        return 0

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.planner_name}"

    def compiled(self, plan: Plan) -> CompiledPlan:
        found = self._compiled.get(id(plan))
        if found is None or found.plan is not plan:
            found = compile_plan(self.problem, plan)
            self._compiled[id(plan)] = found
        return found

    def with_radio(self, conditions: Conditions, seen: Observation, next_gap_s: float | None) -> Conditions:
        """``conditions`` with the radio state ``seen``, the expected next gap and,
        with ``see_queue``, our own queued work."""
        changes: dict[str, Any] = {}
        if self.radio_aware:
            changes.update(radio_state=seen.radio_state, tail_left_s=seen.tail_left_s,
                           next_gap_s=next_gap_s)
        if self.see_queue:
            free = conditions.free_fraction
            changes["queued_s"] = {p: b / free.get(p, 1.0) for p, b in seen.backlog_s.items() if b > 1e-12}
        if not changes:
            return conditions
        # per request, so without re-validating: the engine's radio states and gaps are valid
        new = object.__new__(Conditions)
        new.__dict__.update(conditions.__dict__, **changes)
        return new

    def _solve(self, conditions: Conditions, for_fallback: bool = False) -> tuple[Plan, str]:
        """A full planner call under ``conditions`` (memoised), or the fastest
        plan when none meets the constraints.  A planner that does not apply
        (e.g. npu-only without an NPU) raises, except when a fallback is needed."""
        deadline_s = self.problem.constraints.deadline_s
        key = _conditions_key(conditions, deadline_s)
        if key not in self._memo:
            gap = key[-1]
            conditions = replace(conditions, tail_left_s=min(conditions.tail_left_s, deadline_s),
                                 next_gap_s=gap)  # type: ignore[arg-type]
            problem = self.problem.with_conditions(conditions)
            self._solves += 1
            try:
                self._memo[key] = (self.planner.plan(problem), "")
            except PlanError as exc:
                if not (for_fallback or isinstance(exc, InfeasibleError)):
                    raise
                note = f"{self.planner_name}: {exc}; ran the fastest plan"
                self._memo[key] = (self._fastest(problem), note)
        return self._memo[key]

    def _fastest(self, problem: Problem) -> Plan:
        c = problem.constraints
        relaxed = Constraints(deadline_s=1e9, max_accuracy_loss=c.max_accuracy_loss, objective="latency")
        return DeepXPlanner().plan(problem.with_constraints(relaxed))

    def predicted(self, plan: Plan, conditions: Conditions) -> tuple[float, float]:
        """(latency_s, energy_j) of ``plan`` with its radio charged for ``conditions``'
        radio state and gap (the plan's other costs as planned)."""
        charged = plan.radio
        link = self.problem.costs.link
        if charged is None or link is None:
            return plan.latency_s, plan.energy_j
        now = radio_charge(link.radio, conditions, charged.first_use_s, charged.span_s)
        return (plan.latency_s - charged.promotion_s + now.promotion_s,
                plan.energy_j - (charged.promotion_j + charged.tail_j) + (now.promotion_j + now.tail_j))

    def _decision(self, plan: Plan, conditions: Conditions, started: float, note: str = "",
                  latency_s: float | None = None, energy_j: float | None = None) -> Decision:
        if latency_s is None or energy_j is None:
            latency_s, energy_j = self.predicted(plan, conditions)
        return Decision(self.compiled(plan), latency_s, energy_j, time.perf_counter() - started,
                        conditions, note)

    @abstractmethod
    def decide(self, now_s: float, seen: Observation = IDLE) -> Decision:
        """The plan for a request arriving at ``now_s`` that finds ``seen``."""

    def fallback(self, now_s: float) -> Decision:
        """The on-device plan for a request that lost the cloud at ``now_s``."""
        started = time.perf_counter()
        conditions = replace(self.world.conditions_at(now_s), cloud_reachable=False)
        plan, note = self._solve(conditions, for_fallback=True)
        return self._decision(plan, conditions, started, note)


class StaticPolicy(Policy):
    """One plan for every request, made under ``plan_at`` (default: the link's
    nominal values, no load; scenarios pass the run's average conditions) with
    the radio as the plan would keep it: connected when requests come within a
    tail of each other, else idle.  Each prediction charges the radio for the
    state the request finds."""

    kind = "static"

    def __init__(self, problem: Problem, world: World, planner: str = "deepx",
                 plan_at: Conditions | None = None, **options: Any) -> None:
        super().__init__(problem, world, planner, **options)
        self.nominal = plan_at or Conditions(link=world.link)
        gap = self.gaps.value
        link = problem.costs.link
        if self.radio_aware and gap is not None and link is not None and gap < link.radio.tail_s:
            steady = Observation("connected", math.inf)
        else:
            steady = IDLE
        started = time.perf_counter()
        self.planned_at = self.with_radio(self.nominal, steady, gap)
        self.plan, self.note = self._solve(self.planned_at)
        self.planning_s = time.perf_counter() - started

    def decide(self, now_s: float, seen: Observation = IDLE) -> Decision:
        conditions = self.with_radio(self.planned_at, seen, self.gaps.observe(seen.last_gap_s))
        latency_s, energy_j = self.predicted(self.plan, conditions)
        return Decision(self.compiled(self.plan), latency_s, energy_j, self.planning_s, conditions,
                        self.note)

    def fallback(self, now_s: float) -> Decision:
        started = time.perf_counter()
        conditions = replace(self.nominal, cloud_reachable=False)
        plan, note = self._solve(conditions, for_fallback=True)
        return self._decision(plan, conditions, started, note)


class ReplanPolicy(Policy):
    """Plans every request from the estimated conditions, the radio state it finds
    and the gap expected to the next arrival (an EWMA of the observed gaps).

    With the ``deepx`` planner it uses the fast path: a pool of ILP optima warmed
    over loads, our own queue, bandwidths and radio states (proven within 1 % on
    the device alone, in a world with outages, and, the radio idle, with the cloud
    reachable), re-ranked
    per request.  Plans made by full solves join the pool: when no pooled plan is feasible or the
    conditions lie in a cell the warm-up left unproven (noted in the decision),
    fallbacks, and a full solve every ``full_solve_every`` requests (0: never).
    """

    kind = "replan"
    replans = True

    def __init__(self, problem: Problem, world: World, planner: str = "deepx",
                 estimator: Estimator | None = None, full_solve_every: int = 0, **options: Any) -> None:
        super().__init__(problem, world, planner, **options)
        if full_solve_every < 0:
            raise ScenarioError(f"policy.full_solve_every must be >= 0, got {full_solve_every!r}")
        self.estimator = estimator or Estimator(world)
        self.full_solve_every = full_solve_every
        self._requests = 0
        self.fast: FastReplanner | None = None
        if planner == "deepx":
            local = {p.name for p in problem.platform.local_processors}
            loaded = tuple(p for p in world.free_fraction if p in local)
            self.fast = FastReplanner(problem.with_conditions(Conditions(link=world.link)))
            link = problem.costs.link
            gaps = [share * link.radio.tail_s for share in DEFAULT_GAP_SHARES] if link else []
            if self.gaps.value is not None:
                gaps.append(self.gaps.value)  # the workload's
            # the boxes on the device alone only where replans can find the cloud unreachable
            # (the flagship: 62 -> 24 full solves, the same plans chosen)
            alone = world.link is None or bool(world.outages.intervals)
            self.fast.warm(vary=loaded, gaps_s=gaps if self.radio_aware else (), device_alone=alone)

    @property
    def full_solves(self) -> int:
        return self._solves + (self.fast.full_solves if self.fast is not None else 0)

    @property
    def pool_size(self) -> int:
        return self.fast.pool_size if self.fast is not None else 0

    def decide(self, now_s: float, seen: Observation = IDLE) -> Decision:
        started = time.perf_counter()
        conditions = self.with_radio(self.estimator.estimate(now_s), seen, self.gaps.observe(seen.last_gap_s))
        fast = self.fast
        if fast is None:
            plan, note = self._solve(conditions)
            return self._decision(plan, conditions, started, note)
        self._requests += 1
        if self.full_solve_every and self._requests % self.full_solve_every == 0:
            try:  # a periodic check: the optimum here joins the pool
                return self._decision(fast.solve(conditions), conditions, started)
            except InfeasibleError:
                pass
        fell_back = fast.fallbacks
        best = fast.choose(conditions)
        if best is None:
            plan, note = self._solve(conditions)
            if not note and fast.fallbacks > fell_back:  # choose() found the cell unproven
                note = "fast path: conditions in a cell its warm-up left unproven; full solve"
            if note:  # (not the optimum under its conditions: no bound to learn)
                fast.add(plan)
            else:
                fast.learn(plan)
            return self._decision(plan, conditions, started, note)
        plan, latency_s, energy_j = best
        return self._decision(plan, conditions, started, "", latency_s, energy_j)

    def fallback(self, now_s: float) -> Decision:
        decision = super().fallback(now_s)
        if self.fast is not None:
            self.fast.add(decision.compiled.plan)
        return decision


class OraclePolicy(Policy):
    """Plans every request with a full solve under the true conditions at its
    arrival, the radio state it finds and the true gap to the next arrival."""

    kind = "oracle"
    replans = True

    def decide(self, now_s: float, seen: Observation = IDLE) -> Decision:
        started = time.perf_counter()
        conditions = self.with_radio(self.world.conditions_at(now_s), seen, seen.next_gap_s)
        plan, note = self._solve(conditions)
        return self._decision(plan, conditions, started, note)
