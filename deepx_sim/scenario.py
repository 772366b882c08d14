"""Scenario files: one YAML file describes one simulation run.

Validated once at load (unknown fields are errors); relative paths are taken
from the scenario file's folder.  Example (every field; most have defaults)::

    name: alexnet-lte                # default: the file's stem
    model: alexnet                   # zoo name or path to an .onnx file
    platform: tegra_k1               # shipped name or path to a hardware YAML
    seed: 1
    duration_s: 600                  # arrivals happen in [0, duration_s)
    conditions:
      link: lte                      # default: the platform's first link
      bandwidth_mbps: 5              # shortcut: constant uplink and downlink
      uplink: {trace: traces/Verizon-LTE-short.up, format: mahimahi, bin_s: 1}
      downlink: {markov: {good: 20, bad: 1, mean_good_s: 30, mean_bad_s: 10}}
      rtt_ms: 70                     # default: the link's
      outages: [[120, 150]]          # or {markov: {mean_up_s: 300, mean_down_s: 20}}
      load:                          # share of a processor taken by other work
        gpu: {random_walk: {start: 0.2, step_sd: 0.1, low: 0, high: 0.9, interval_s: 5}}
      radio: {tail: [{power_mw: 1060, duration_ms: 3000}]}  # fields of the link's radio to change
    workload: {arrivals: poisson, rate_per_s: 2}   # or periodic + interval_s, trace + timestamps_s
    # static: one plan made at the run's average conditions; replan: per request
    # from an estimate; oracle: per request from the true conditions
    policy: {kind: replan, planner: deepx, estimator: ewma, ewma_alpha: 0.3,
             sample_interval_s: 1, replan_overhead_s: 0,
             radio_aware: true,              # plan with the radio state and the next gap
             full_solve_every: 0,            # replan: a full solve joins the pool every N
             see_queue: false}               # plan with our own queued work too
    constraints: {deadline_ms: 5000, max_accuracy_loss: 0.05, objective: energy}
    battery: {capacity_mah: 3000, voltage_v: 3.85}

A signal (``uplink``, ``downlink``, each ``load`` entry) is exactly one of
``constant``, ``trace`` (CSV ``time_s,<column>`` or Mahimahi), ``markov`` or
``random_walk``.
"""

from __future__ import annotations

import itertools
import zlib
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, ValidationError, field_validator, model_validator

from deepx_sim import config
from deepx_sim.config import (
    DEFAULT_BATTERY_CAPACITY_MAH,
    DEFAULT_BATTERY_VOLTAGE_V,
    DEFAULT_DEADLINE_S,
    DEFAULT_MAX_ACCURACY_LOSS,
    MAX_TRACE_SEGMENTS,
    Count,
    Flag,
    Fraction,
    Mbps,
    Millis,
    NonNegative,
    Positive,
    Seconds,
    StrictModel,
    UnitInterval,
    count_within,
    validation_message,
)
from deepx_sim.costs import Conditions
from deepx_sim.errors import DeepxError, ScenarioError, closest_names
from deepx_sim.plan import planner_names
from deepx_sim.plan.problem import Constraints, Problem
from deepx_sim.platform import Platform, RadioModel
from deepx_sim.sim.conditions import (
    MahimahiBin,
    Outages,
    StepTrace,
    arrival_times,
    markov_two_state,
    random_walk,
    read_csv_trace,
    read_mahimahi,
    read_timestamps,
)
from deepx_sim.sim.engine import Battery, Simulation, SimulationResult
from deepx_sim.sim.policies import Policy, World
from deepx_sim.sim.registry import PolicySettings, make_policy, policy_names


class MarkovSpec(StrictModel):
    good: NonNegative
    bad: NonNegative
    mean_good_s: Positive
    mean_bad_s: Positive


class RandomWalkSpec(StrictModel):
    start: NonNegative
    step_sd: NonNegative
    low: NonNegative
    high: NonNegative
    interval_s: Positive = 1.0

    @model_validator(mode="after")
    def _bounds(self) -> RandomWalkSpec:
        if not self.low <= self.high:
            raise ValueError(f"needs low <= high, got low={self.low}, high={self.high}")
        return self


class Signal(StrictModel):
    """A value over time: exactly one of constant, trace, markov, random_walk."""

    constant: NonNegative | None = None
    trace: str | None = None
    format: Literal["csv", "mahimahi"] | None = None  # default: csv for *.csv, else mahimahi
    column: str | None = None  # csv value column (default mbps, or load for loads)
    bin_s: MahimahiBin = 1.0  # mahimahi bin width
    repeat: Flag = False  # csv: loop the trace (Mahimahi traces always loop)
    scale: Positive = 1.0  # multiply every value
    markov: MarkovSpec | None = None
    random_walk: RandomWalkSpec | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Signal:
        given = [k for k in ("constant", "trace", "markov", "random_walk") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of constant, trace, markov, random_walk; "
                             f"got {given or 'none'}")
        return self


class OutageMarkov(StrictModel):
    mean_up_s: Positive
    mean_down_s: Positive


class OutageSpec(StrictModel):
    markov: OutageMarkov


class ConditionsSpec(StrictModel):
    link: str | None = None
    bandwidth_mbps: Mbps | None = None
    uplink: Signal | None = None
    downlink: Signal | None = None
    rtt_ms: Millis | None = None
    outages: list[tuple[NonNegative, NonNegative]] | OutageSpec = Field(default_factory=list)
    load: dict[str, Signal] = Field(default_factory=dict)
    # fields of the link's radio model to change for this run (e.g. a shorter tail)
    radio: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _shortcut(self) -> ConditionsSpec:
        if self.bandwidth_mbps is not None and (self.uplink is not None or self.downlink is not None):
            raise ValueError("bandwidth_mbps sets both directions: give it or uplink/downlink, not both")
        return self


class WorkloadSpec(StrictModel):
    arrivals: Literal["periodic", "poisson", "trace"] = "periodic"
    interval_s: Positive | None = None
    rate_per_s: Positive | None = None
    timestamps_s: list[NonNegative] | None = None
    timestamps_file: str | None = None  # CSV with a time_s column (relative to the scenario file)

    @field_validator("timestamps_s")
    @classmethod
    def _in_order(cls, stamps: list[float] | None) -> list[float] | None:
        for i, (a, b) in enumerate(itertools.pairwise(stamps or ())):
            if b < a:
                raise ValueError(f"must not decrease, got {b!r} after {a!r} at [{i + 1}]")
        return stamps

    @model_validator(mode="after")
    def _needs(self) -> WorkloadSpec:
        if self.arrivals == "trace":
            if (self.timestamps_s is None) == (self.timestamps_file is None):
                raise ValueError("arrivals trace needs exactly one of timestamps_s, timestamps_file")
            return self
        needed = {"periodic": "interval_s", "poisson": "rate_per_s"}[self.arrivals]
        if getattr(self, needed) is None:
            raise ValueError(f"arrivals {self.arrivals} needs {needed}")
        return self


class PolicySpec(StrictModel):
    kind: str = "replan"  # a registered policy: static, replan, oracle or your own
    planner: str = "deepx"
    estimator: Literal["last", "ewma", "current"] = "last"
    sample_interval_s: Positive = 1.0
    ewma_alpha: Fraction = 0.3
    replan_overhead_s: Annotated[NonNegative, Field(le=1e9)] | Literal["measured"] = 0.0
    radio_aware: bool = True  # plan with the radio state found and the gap expected next
    full_solve_every: Annotated[int, Field(ge=0, le=1_000_000)] = 0  # every N requests a full solve joins
    see_queue: bool = False  # plan with our own earlier requests' work still ahead


class ConstraintsSpec(StrictModel):
    deadline_ms: Positive = DEFAULT_DEADLINE_S * 1000.0
    max_accuracy_loss: UnitInterval = DEFAULT_MAX_ACCURACY_LOSS
    energy_budget_j: Positive | None = None
    objective: Literal["energy", "latency", "weighted"] = "energy"
    latency_weight_j_per_s: NonNegative = 1.0


class BatterySpec(StrictModel):
    capacity_mah: Positive = DEFAULT_BATTERY_CAPACITY_MAH
    voltage_v: Positive = DEFAULT_BATTERY_VOLTAGE_V


class Scenario(StrictModel):
    name: str = "scenario"
    model: str
    platform: str
    fusion: bool = True  # plan the units runtimes fuse layers into (False: single operators)
    seed: Count = 0
    duration_s: Seconds = 60.0
    conditions: ConditionsSpec = Field(default_factory=ConditionsSpec)
    workload: WorkloadSpec = Field(default_factory=lambda: WorkloadSpec(interval_s=1.0))
    policy: PolicySpec = Field(default_factory=PolicySpec)
    constraints: ConstraintsSpec = Field(default_factory=ConstraintsSpec)
    battery: BatterySpec = Field(default_factory=BatterySpec)

    @model_validator(mode="after")
    def _stamps_within_run(self) -> Scenario:
        late = [t for t in self.workload.timestamps_s or () if t >= self.duration_s]
        if late:
            raise ValueError(f"workload.timestamps_s has {len(late)} past the run's end "
                             f"(duration_s {self.duration_s:g}), the first {late[0]!r}; "
                             f"arrivals must lie in [0, duration_s)")
        return self


# ------------------------------------------------------------------ loading
def parse_scenario(data: Any, source: str = "scenario") -> Scenario:
    """Validate a mapping as a scenario; errors name ``source`` and the field path."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: a scenario must be a mapping of fields, got {type(data).__name__}")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(validation_message(source, exc, data, Scenario)) from None


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """A scenario or sweep file's fields (ScenarioError naming the file on any problem)."""
    return config.read_yaml_mapping(path, ScenarioError)


def load_scenario(path: str | Path) -> tuple[Scenario, Path]:
    """(scenario, folder its relative paths start from)."""
    path = Path(path)
    data = read_yaml_mapping(path)
    data.setdefault("name", path.stem)
    return parse_scenario(data, str(path)), path.parent


# ------------------------------------------------------------------ building a run
def _rng(seed: int, stream: str) -> np.random.Generator:
    """An independent, reproducible stream per purpose (order of use does not matter)."""
    return np.random.default_rng([seed, zlib.crc32(stream.encode())])


class _Builder:
    def __init__(self, scenario: Scenario, base_dir: Path, source: str) -> None:
        self.s, self.base_dir, self.source = scenario, base_dir, source

    def fail(self, field: str, message: str) -> ScenarioError:
        return ScenarioError(f"{self.source}: {field}: {message}")

    def signal(self, spec: Signal, field: str, default_column: str) -> StepTrace:
        try:
            return self._signal(spec, field, default_column)
        except ScenarioError as exc:  # (a trace file's error names that file; add the scenario)
            where = f"{field}.trace: " if spec.trace is not None else ""
            raise ScenarioError(f"{self.source}: {where}{exc}") from None

    def _signal(self, spec: Signal, field: str, default_column: str) -> StepTrace:
        s = self.s
        if spec.constant is not None:
            trace = StepTrace.constant(spec.constant, name=field)
        elif spec.trace is not None:
            path = Path(spec.trace)
            path = path if path.is_absolute() else self.base_dir / path
            if not path.is_file():
                raise self.fail(f"{field}.trace", f"no such file {str(path)!r}")
            fmt = spec.format or ("csv" if path.suffix == ".csv" else "mahimahi")
            if fmt == "csv":
                trace = read_csv_trace(path, spec.column or default_column, repeat=spec.repeat)
            else:
                trace = read_mahimahi(path, spec.bin_s)
        elif spec.markov is not None:
            m = spec.markov
            trace = markov_two_state(_rng(s.seed, field), s.duration_s, m.good, m.bad,
                                     m.mean_good_s, m.mean_bad_s, name=field)
        else:
            w = spec.random_walk
            assert w is not None
            trace = random_walk(_rng(s.seed, field), s.duration_s, w.start, w.step_sd, w.low, w.high,
                                w.interval_s, name=field)
        if spec.scale != 1.0:
            trace = StepTrace(trace.times_s, trace.values * spec.scale, trace.period_s, trace.name)
        return trace

    def problem(self) -> Problem:
        from deepx_sim.model import load_model
        from deepx_sim.platform import load_platform

        s = self.s
        model = s.model
        if model.endswith(".onnx") and not Path(model).is_absolute():
            model = str(self.base_dir / model)
        try:
            graph = load_model(model)
        except DeepxError as exc:
            raise self.fail("model", str(exc)) from None
        platform_ref = s.platform
        if platform_ref.endswith((".yaml", ".yml")) and not Path(platform_ref).is_absolute():
            platform_ref = str(self.base_dir / platform_ref)
        try:
            platform = load_platform(platform_ref)
        except DeepxError as exc:
            raise self.fail("platform", str(exc)) from None
        link = s.conditions.link
        if link is not None and link not in {lk.name for lk in platform.links}:
            raise self.fail("conditions.link", f"unknown link {link!r} on {platform.name}: "
                            f"{closest_names(link, [lk.name for lk in platform.links])}")
        if link is None and platform.links:
            link = platform.links[0].name
        if s.conditions.radio is not None:
            platform = self.radio_override(platform, link)
        c = s.constraints
        try:
            constraints = Constraints(
                deadline_s=c.deadline_ms / 1000.0, max_accuracy_loss=c.max_accuracy_loss,
                energy_budget_j=c.energy_budget_j, objective=c.objective,
                latency_weight_j_per_s=c.latency_weight_j_per_s)
        except DeepxError as exc:
            raise self.fail("constraints", str(exc)) from None
        return Problem(graph, platform, Conditions(link=link), constraints, fuse=s.fusion)

    def radio_override(self, platform: Platform, link_name: str | None) -> Platform:
        """The platform with ``conditions.radio``'s fields laid over its link's radio."""
        fields = dict(self.s.conditions.radio or {})
        if link_name is None:
            raise self.fail("conditions.radio", f"platform {platform.name} has no link to set a radio for")
        link = platform.link(link_name)
        if link.radio.promotion_ms == 0 and link.radio.tail_s == 0:  # a wire: no radio states at all
            stateful = sorted(k for k in fields if k in ("promotion_ms", "promotion_power_mw", "tail"))
            if stateful:
                raise self.fail(f"conditions.radio.{stateful[0]}", f"link {link_name!r} of {platform.name} "
                                f"is wired (its radio has no promotion and no tail), so it cannot have "
                                f"{stateful[0]} {fields[stateful[0]]!r}; remove it or use a radio link")
        try:
            radio = RadioModel.model_validate({**link.radio.model_dump(), **fields, "name": "custom"})
        except ValidationError as exc:
            raise ScenarioError(validation_message(f"{self.source}: conditions.radio", exc, fields,
                                                   RadioModel)) from None
        links = [lk.model_copy(update={"radio": radio}) if lk.name == link_name else lk
                 for lk in platform.links]
        return platform.model_copy(update={"links": links})

    def world(self, problem: Problem) -> World:
        s, cond = self.s, self.s.conditions
        nominal = World.nominal(problem)
        if cond.bandwidth_mbps is not None:
            up = down = StepTrace.constant(cond.bandwidth_mbps, name="conditions.bandwidth_mbps")
        else:
            up = (self.signal(cond.uplink, "conditions.uplink", "mbps") if cond.uplink is not None
                  else nominal.uplink_mbps)
            down = (self.signal(cond.downlink, "conditions.downlink", "mbps") if cond.downlink is not None
                    else nominal.downlink_mbps)
        if isinstance(cond.outages, OutageSpec):
            m = cond.outages.markov
            try:
                outages = Outages.markov(_rng(s.seed, "conditions.outages"), s.duration_s, m.mean_up_s,
                                         m.mean_down_s)
            except ScenarioError as exc:
                raise ScenarioError(f"{self.source}: {exc}") from None
        else:
            try:
                outages = Outages(tuple((float(a), float(b)) for a, b in cond.outages))
            except ScenarioError as exc:
                raise self.fail("conditions.outages", str(exc)) from None
        if (cond.outages and problem.costs.link is None):
            raise self.fail("conditions.outages", f"platform {problem.platform.name} has no link")
        names = [p.name for p in problem.platform.processors]
        free: dict[str, StepTrace] = {}
        for proc, spec in cond.load.items():
            field = f"conditions.load.{proc}"
            if proc not in names:
                raise self.fail(field, f"unknown processor {proc!r}: {closest_names(proc, names)}")
            load = self.signal(spec, field, "load")
            if load.values.max() > 1:
                raise self.fail(field, f"a load is a share of the processor in [0, 1], "
                                f"got {float(load.values.max())!r}")
            if load.period_s is None and load.values[-1] >= 1:
                raise self.fail(field, "the load must end below 1 (a processor taken forever "
                                "never finishes our work)")
            free[proc] = StepTrace(load.times_s, 1.0 - load.values, load.period_s, field)
        rtt = cond.rtt_ms if cond.rtt_ms is not None else nominal.rtt_ms
        return World(nominal.link, up, down, rtt, outages, free)

    def policy(self, problem: Problem, world: World) -> Policy:
        p = self.s.policy
        if p.planner not in planner_names():
            raise self.fail("policy.planner", f"unknown planner {p.planner!r}: "
                            f"{closest_names(p.planner, planner_names())}")
        if p.kind == "replan" and p.estimator == "ewma":  # the estimator folds in every sample
            count_within(f"{self.source}: policy.sample_interval_s: samples (duration_s / "
                         "sample_interval_s)", self.s.duration_s / p.sample_interval_s, MAX_TRACE_SEGMENTS,
                         "raise sample_interval_s or shorten duration_s", ScenarioError)
        if p.kind not in policy_names():
            raise self.fail("policy.kind", f"unknown policy {p.kind!r}: "
                            f"{closest_names(p.kind, policy_names())}")
        settings = PolicySettings(planner=p.planner, estimator=p.estimator,
                                  sample_interval_s=p.sample_interval_s, ewma_alpha=p.ewma_alpha,
                                  plan_at=world.mean_conditions(0.0, self.s.duration_s),
                                  radio_aware=p.radio_aware, expected_gap_s=self.mean_gap_s(),
                                  full_solve_every=p.full_solve_every, see_queue=p.see_queue)
        try:
            return make_policy(p.kind, problem, world, settings)
        except DeepxError as exc:
            raise self.fail("policy", str(exc)) from None

    def mean_gap_s(self) -> float | None:
        """The workload's mean time between arrivals (a trace's: from its timestamps)."""
        w = self.s.workload
        if w.arrivals == "periodic":
            return w.interval_s
        if w.arrivals == "poisson":
            return 1.0 / w.rate_per_s if w.rate_per_s else None
        stamps = self.arrivals()
        return (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else None

    def arrivals(self) -> list[float]:
        try:
            return self._arrivals()
        except ScenarioError as exc:
            raise self.fail("workload", str(exc)) from None

    def _arrivals(self) -> list[float]:
        w, s = self.s.workload, self.s
        stamps = list(w.timestamps_s or ())
        if w.timestamps_file is not None:
            path = Path(w.timestamps_file)
            path = path if path.is_absolute() else self.base_dir / path
            if not path.is_file():
                raise self.fail("workload.timestamps_file", f"no such file {str(path)!r}")
            stamps = read_timestamps(path, end_s=s.duration_s)
        return arrival_times(w.arrivals, s.duration_s, _rng(s.seed, "workload"), interval_s=w.interval_s,
                             rate_per_s=w.rate_per_s, timestamps_s=stamps)


def build_simulation(scenario: Scenario, base_dir: Path | str = ".", source: str = "scenario") -> Simulation:
    """Everything a scenario names, loaded and checked, ready to ``run()``."""
    b = _Builder(scenario, Path(base_dir), source)
    arrivals = b.arrivals()  # first: a run too large is refused before any planning
    problem = b.problem()
    world = b.world(problem)
    policy = b.policy(problem, world)
    battery = Battery(scenario.battery.capacity_mah, scenario.battery.voltage_v)
    return Simulation(problem, world, policy, arrivals, duration_s=scenario.duration_s,
                      replan_overhead_s=scenario.policy.replan_overhead_s, battery=battery)


def run_scenario(path: str | Path) -> SimulationResult:
    """Load a scenario file and simulate it."""
    scenario, base_dir = load_scenario(path)
    result = build_simulation(scenario, base_dir, str(path)).run()
    result.summary["scenario"] = scenario.name
    return result
