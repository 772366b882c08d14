"""The SimPy engine: requests run their plans on shared processors and a radio.

Each local processor is a SimPy resource of capacity 1, so concurrent
requests queue; the radio link is one resource too (one transfer at a time).
The cloud serves every request at once.  A compute step lasts its busy
seconds stretched by the processor's background load (piecewise when the
load changes mid-step); a transfer lasts the time its megabits take at the
link's changing bandwidth, plus rtt/2 per tensor, plus a promotion if the
radio was idle.

Energy per request: processor energy (power x busy seconds of its work, as
the planner counts it) and radio energy by state (:mod:`deepx_sim.sim.radio`).
Per run, idle power fills the time each processor is not running our work,
and the radio's idle (paging) power the time it is idle; the run's breakdown
adds up to its total exactly.

Under constant conditions a single request costs exactly what the planner
predicted (tests/sim/test_prediction.py holds every planner to 1e-9).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import simpy
from simpy.events import Timeout

from deepx_sim.config import DEFAULT_BATTERY_CAPACITY_MAH, DEFAULT_BATTERY_VOLTAGE_V
from deepx_sim.errors import SimulationError
from deepx_sim.plan.problem import Problem
from deepx_sim.sim.policies import Decision, Observation, Policy, Step, World, work_by_processor
from deepx_sim.sim.radio import Radio, RadioEnergy
from deepx_sim.sim.records import RequestRecord, records_frame, summarize


@dataclass(frozen=True)
class Battery:
    capacity_mah: float = DEFAULT_BATTERY_CAPACITY_MAH
    voltage_v: float = DEFAULT_BATTERY_VOLTAGE_V

    def drain_pct_per_h(self, power_w: float) -> float:
        """Share of a full charge used per hour at a steady ``power_w``."""
        return power_w * 3600.0 / (self.capacity_mah * 3.6 * self.voltage_v) * 100.0


class _Lock:
    """A processor or the radio: capacity 1, first come first served.

    It grants in the same order and at the same times as ``simpy.Resource(env, 1)``
    (a free lock grants at once, a release grants the first waiter), without
    SimPy's request and release objects and the release event nobody waits for.
    A free lock hands out no event at all when nothing else is due at this
    instant: the grant would be the very next event, so the holder may as well
    go on (``yield`` only what :meth:`acquire` returns).  tests/sim/test_engine.py
    checks the records against ``simpy.Resource``."""

    __slots__ = ("busy", "env", "waiting")

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self.busy = False
        self.waiting: deque[simpy.Event] = deque()

    def acquire(self) -> simpy.Event | None:
        """An event that succeeds when the lock is ours, or None if it is ours now."""
        env = self.env
        if not self.busy:
            self.busy = True
            if env.peek() > env.now:
                return None
            return simpy.Event(env).succeed()
        granted = simpy.Event(env)
        self.waiting.append(granted)
        return granted

    def release(self) -> None:
        if self.waiting:
            self.waiting.popleft().succeed()
        else:
            self.busy = False


@dataclass(slots=True)
class _Request:
    index: int
    arrival_s: float
    energy_j: dict[str, float]
    radio: RadioEnergy = field(default_factory=RadioEnergy)
    start_s: float = math.nan
    finish_s: float = math.nan
    wait_s: float = 0.0
    decision: Decision | None = None
    fallback: Decision | None = None
    lost_cloud_s: float | None = None
    replan_time_s: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0
    radio_state: str = "idle"


@dataclass(frozen=True)
class SimulationResult:
    """Per-request records and the run's summary; ``records`` is a DataFrame."""

    records: pd.DataFrame
    summary: dict[str, Any]
    run_energy_j: dict[str, float]
    events: dict[str, int]


class Simulation:
    """One run: a problem (model, platform, constraints), the true conditions
    over time, a policy and arrival times.

    ``replan_overhead_s`` charges planning to each replanned request: a number
    of seconds, or ``"measured"`` for the planner's wall-clock time (this
    makes records vary between runs).  The run lasts until the last request
    finishes and the radio's tail runs out, and at least ``duration_s``.
    ``fast_forward`` (default) works out the steps of a request that runs alone
    directly instead of event by event; the records are the same either way.
    """

    def __init__(self, problem: Problem, world: World, policy: Policy, arrivals_s: Sequence[float], *,
                 duration_s: float | None = None, replan_overhead_s: float | str = 0.0,
                 battery: Battery | None = None, fast_forward: bool = True) -> None:
        if isinstance(replan_overhead_s, str) and replan_overhead_s != "measured":
            raise SimulationError(f"replan_overhead_s must be seconds >= 0 or 'measured', "
                                  f"got {replan_overhead_s!r}")
        if not isinstance(replan_overhead_s, str) and not replan_overhead_s >= 0:
            raise SimulationError(f"replan_overhead_s must be >= 0, got {replan_overhead_s!r}")
        self.problem = problem
        self.world = world
        self.policy = policy
        self.arrivals_s = list(arrivals_s)
        self.duration_s = duration_s if duration_s is not None else (
            self.arrivals_s[-1] if self.arrivals_s else 0.0)
        self.replan_overhead_s = replan_overhead_s
        self.battery = battery or Battery()
        self.fast_forward = fast_forward
        self.deadline_s = problem.constraints.deadline_s
        platform = problem.platform
        self.local = [p.name for p in platform.local_processors]
        self.sensor = platform.sensor
        link = problem.costs.link
        self.radio = Radio(link.radio) if link is not None else None
        self.radio_model = link.radio if link is not None else None
        self.half_rtt_s = world.rtt_ms / 2000.0

    # ------------------------------------------------------------------ run
    def run(self) -> SimulationResult:
        started = time.perf_counter()
        env = simpy.Environment()
        self.env = env
        self.resources = {p: _Lock(env) for p in self.local}
        self.radio_resource = _Lock(env)
        self.occupied_s = dict.fromkeys(self.local, 0.0)
        self.backlog_s = dict.fromkeys(self.local, 0.0)  # our own work queued or running
        self.acquisitions = 0
        self.timeouts = 0
        self._active = 0  # requests in flight
        self.steps_alone = 0  # steps worked out without the event loop
        self.requests: list[_Request] = []
        env.process(self._source())
        env.run()
        end_s = max(self.duration_s, env.now)
        horizon_s = self.radio.finish(end_s) if self.radio is not None else end_s
        wall_s = time.perf_counter() - started
        return self._result(horizon_s, wall_s)

    def _source(self):  # type: ignore[no-untyped-def]
        env = self.env
        zero = dict.fromkeys(self.local, 0.0)
        for index, t in enumerate(self.arrivals_s):
            if t > env.now:
                yield env.timeout(t - env.now)
                self.timeouts += 1
            req = _Request(index, env.now, dict(zero))
            self.requests.append(req)
            env.process(self._serve(req))

    def _observe(self, req: _Request) -> Observation:
        """What the request finds: the radio's state and the arrival gaps."""
        state, tail_left_s = self.radio.state(req.arrival_s) if self.radio is not None else ("idle", 0.0)
        req.radio_state = state
        i, arrivals = req.index, self.arrivals_s
        return Observation(state, tail_left_s,
                           arrivals[i] - arrivals[i - 1] if i > 0 else None,
                           arrivals[i + 1] - arrivals[i] if i + 1 < len(arrivals) else None,
                           {p: max(0.0, b) for p, b in self.backlog_s.items()})

    def _enqueue(self, work_s: Mapping[str, float], sign: float = 1.0) -> None:
        for p, w in work_s.items():
            self.backlog_s[p] += sign * w

    def _serve(self, req: _Request):  # type: ignore[no-untyped-def]
        self._active += 1
        decision = self.policy.decide(self.env.now, self._observe(req))
        req.decision = decision
        steps = decision.compiled.steps
        if self.policy.replans:
            overhead = (decision.planning_s if self.replan_overhead_s == "measured"
                        else float(self.replan_overhead_s))
            if overhead > 0:
                req.replan_time_s = overhead
                proc = self.problem.platform.processor(self.sensor)
                steps = (Step("compute", self.sensor, work_s=overhead,
                              energy_j=proc.active_power_w * overhead), *steps)
                self._enqueue({self.sensor: overhead})
        self._enqueue(decision.compiled.work_s)
        for attempt in ("plan", "fallback"):
            done, t = self._fast_forward(steps, req)
            if t > self.env.now:
                yield self.env.timeout(t - self.env.now)
            if done == len(steps) or (yield from self._run(steps[done:] if done else steps, req)):
                break
            if attempt == "fallback":
                raise SimulationError(f"request {req.index}: the fallback plan "
                                      f"{req.fallback.compiled.plan_id} still needs the cloud")  # type: ignore[union-attr]
            req.lost_cloud_s = self.env.now
            req.fallback = self.policy.fallback(self.env.now)
            self._enqueue(req.fallback.compiled.work_s)
            steps = req.fallback.compiled.steps
        req.finish_s = self.env.now
        self._active -= 1

    def _fast_forward(self, steps: tuple[Step, ...], req: _Request) -> tuple[int, float]:
        """While the request is alone (no other in flight) its steps that end before
        the next arrival are worked out directly, in one jump of the clock: nothing
        else can happen meanwhile, so the records are the same as event by event
        (tests/sim/test_engine.py).  Returns (steps done, the time they end)."""
        if not (self.fast_forward and self._active == 1):
            return 0, self.env.now
        i = req.index + 1
        until = self.arrivals_s[i] if i < len(self.arrivals_s) else math.inf
        done, t = self._run_alone(steps, req, self.env.now, until)
        self.steps_alone += done
        return done, t

    def _run_alone(self, steps: tuple[Step, ...], req: _Request, now: float,
                   until: float) -> tuple[int, float]:
        """Do the leading ``steps`` that end before ``until`` with nothing ahead of
        them, without the event loop; (steps done, the time they end)."""
        world, radio = self.world, self.radio
        for i, step in enumerate(steps):
            kind = step.kind
            held_s = 0.0
            if kind == "compute" or kind == "copy":
                held_s = self._busy_s(step, now)
                end = now + held_s
            elif kind == "cloud":
                end, lost = self._cloud_span(step, now)
                if lost is not None:
                    return i, now
            else:
                assert radio is not None
                if world.outages.is_down(now):
                    return i, now
                promotion_s = self.radio_model.promotion_s if radio.state(now)[0] == "idle" else 0.0
                bits_from, end, lost = self._bits_span(step, now, promotion_s)
                if lost is not None:
                    return i, now
            if not end < until:
                return i, now
            if req.start_s != req.start_s:
                req.start_s = now
            self.timeouts += 1
            if kind == "compute" or kind == "copy":
                self.acquisitions += 1
                self._computed(step, req, held_s)
            elif kind != "cloud":
                self.acquisitions += 1
                radio.connect(now, req.radio)  # type: ignore[union-attr]
                self._sent(step, req, bits_from, end)
            now = end
        return len(steps), now

    def _run(self, steps: tuple[Step, ...], req: _Request):  # type: ignore[no-untyped-def]
        """Run ``steps`` event by event; False if the cloud was lost (the caller falls back)."""
        env = self.env
        loads = self.world.free_fraction
        for i, step in enumerate(steps):
            kind = step.kind
            if kind == "compute" or kind == "copy":
                asked = env.now
                self.acquisitions += 1
                lock = self.resources[step.processor]
                granted = lock.acquire()
                now = asked
                if granted is not None:
                    yield granted
                    now = env.now
                    req.wait_s += now - asked
                try:  # released even if we raise
                    if req.start_s != req.start_s:  # nan: the first step to start
                        req.start_s = now
                    duration = (step.work_s + step.fixed_s if step.processor not in loads
                                else self._busy_s(step, now))
                    yield Timeout(env, duration)
                    self.timeouts += 1
                finally:
                    lock.release()
                self._computed(step, req, duration)
                continue
            if kind == "cloud":
                now = env.now
                if req.start_s != req.start_s:
                    req.start_s = now
                end, lost = self._cloud_span(step, now)
                yield env.timeout((end if lost is None else lost) - now)
                self.timeouts += 1
                ok = lost is None
            else:
                ok = yield from self._transfer(step, req)
            if not ok:
                self._enqueue(work_by_processor(steps[i + 1:]), -1.0)  # abandoned
                return False
        return True

    # the steps' arithmetic, shared by both ways of running them
    def _busy_s(self, step: Step, now: float) -> float:
        """How long a compute or copy step started at ``now`` holds its processor."""
        duration = step.work_s
        load = self.world.free_fraction.get(step.processor)
        if load is not None and duration > 0:
            duration = load.finish_time(now, step.work_s) - now
            if math.isinf(duration):
                raise SimulationError(f"processor {step.processor!r} is fully loaded forever "
                                      f"from t={now:.3f} s: its load trace must end below 1")
        return duration + step.fixed_s

    def _computed(self, step: Step, req: _Request, duration: float) -> None:
        req.energy_j[step.processor] += step.energy_j
        self.occupied_s[step.processor] += duration
        self.backlog_s[step.processor] -= step.work_s + step.fixed_s

    def _cloud_span(self, step: Step, now: float) -> tuple[float, float | None]:
        """(end, time the cloud is lost or None) of a cloud step started at ``now``."""
        load = self.world.free_fraction.get(step.processor)
        end = now + step.work_s if load is None else load.finish_time(now, step.work_s)
        return end, self.world.outages.first_down(now, end)

    def _bits_span(self, step: Step, now: float, promotion_s: float) -> tuple[float, float, float | None]:
        """(bits start, end, time the link is lost or None) of a transfer holding the
        radio from ``now`` after a promotion of ``promotion_s``."""
        trace = self.world.uplink_mbps if step.kind == "uplink" else self.world.downlink_mbps
        bits_from = now + promotion_s
        end = trace.finish_time(bits_from, step.megabits) + step.transfers * self.half_rtt_s
        lost = self.world.outages.first_down(now, end)
        if lost is None and math.isinf(end):
            lost = now  # the link delivers nothing from here on: treat it as lost
        return bits_from, end, lost

    def _sent(self, step: Step, req: _Request, bits_from: float, end: float) -> None:
        up = step.kind == "uplink"
        self.radio.transferred(req.radio, end - bits_from, step.megabits if up else 0.0,  # type: ignore[union-attr]
                               0.0 if up else step.megabits, end)
        if up:
            req.bytes_up += step.size_bytes
        else:
            req.bytes_down += step.size_bytes

    def _transfer(self, step: Step, req: _Request):  # type: ignore[no-untyped-def]
        if self.world.outages.is_down(self.env.now):
            return False
        asked = self.env.now
        self.acquisitions += 1
        lock = self.radio_resource
        granted = lock.acquire()
        if granted is not None:
            yield granted
        try:  # released on every return and on errors
            now = self.env.now
            req.wait_s += now - asked
            if req.start_s != req.start_s:
                req.start_s = now
            if self.world.outages.is_down(now):
                return False
            return (yield from self._send(step, req, now))
        finally:
            lock.release()

    def _send(self, step: Step, req: _Request, now: float):  # type: ignore[no-untyped-def]
        """Move ``step``'s bits from ``now`` holding the radio; False if the link went down."""
        env, radio = self.env, self.radio
        assert radio is not None
        promotion_s = radio.connect(now, req.radio)
        bits_from, end, lost = self._bits_span(step, now, promotion_s)
        if lost is None:
            yield env.timeout(end - now)
            self.timeouts += 1
            self._sent(step, req, bits_from, end)
            return True
        if lost > now:
            yield env.timeout(lost - now)
            self.timeouts += 1
        up = step.kind == "uplink"
        trace = self.world.uplink_mbps if up else self.world.downlink_mbps
        moved = 0.0
        if lost > bits_from:
            moved = min(step.megabits, trace.integral_to(lost) - trace.integral_to(bits_from))
        radio.transferred(req.radio, max(0.0, lost - bits_from), moved if up else 0.0,
                          0.0 if up else moved, lost)
        return False

    # ------------------------------------------------------------------ results
    def _miss_reason(self, req: _Request, latency_s: float) -> str:
        if latency_s <= self.deadline_s * (1 + 1e-9):
            return ""
        decision = req.decision
        assert decision is not None
        if req.fallback is not None:
            return f"cloud unreachable at {req.lost_cloud_s:.3f} s: finished on the device"
        if decision.predicted_latency_s > self.deadline_s * (1 + 1e-9):
            return "no plan meets the deadline under the estimated conditions"
        if req.wait_s > 0 and latency_s - req.wait_s <= self.deadline_s * (1 + 1e-9):
            return f"queued {req.wait_s:.3f} s behind other requests"
        return (f"slower than predicted ({decision.predicted_latency_s:.3f} s): conditions "
                f"differed from the estimate")

    def _record(self, req: _Request) -> RequestRecord:
        d = req.decision
        assert d is not None
        latency_s = req.finish_s - req.arrival_s
        final = req.fallback or d
        return RequestRecord(
            request=req.index, arrival_s=req.arrival_s, start_s=req.start_s, finish_s=req.finish_s,
            latency_s=latency_s, wait_s=req.wait_s, deadline_s=self.deadline_s,
            deadline_met=latency_s <= self.deadline_s * (1 + 1e-9),
            miss_reason=self._miss_reason(req, latency_s),
            energy_j=sum(req.energy_j.values()) + req.radio.total_j,
            energy_by_processor_j=req.energy_j, energy_radio_j=req.radio.total_j,
            radio_promotion_j=req.radio.promotion_j, radio_transfer_j=req.radio.transfer_j,
            radio_tail_j=req.radio.tail_j, radio_state=req.radio_state,
            expected_gap_s=d.conditions.next_gap_s,
            plan_id=d.compiled.plan_id, planner=d.compiled.plan.planner,
            processors_used=d.compiled.processors_used,
            fallback_plan_id=req.fallback.compiled.plan_id if req.fallback else "",
            fallback=req.fallback is not None, bytes_sent=req.bytes_up, bytes_received=req.bytes_down,
            replan_time_s=req.replan_time_s, predicted_latency_s=d.predicted_latency_s,
            predicted_energy_j=d.predicted_energy_j, accuracy_loss=final.compiled.plan.accuracy_loss,
            accuracy_source=final.compiled.plan.accuracy_source,
            estimated_uplink_mbps=d.conditions.uplink_mbps,
            true_uplink_mbps=self.world.uplink_mbps.value_at(req.arrival_s), note=d.note)

    def _result(self, horizon_s: float, wall_s: float) -> SimulationResult:
        rows, requests = [], self.requests
        for i, req in enumerate(requests):  # each request's objects go once its record is made
            rows.append(self._record(req))
            requests[i] = None  # type: ignore[call-overload]
        self.requests = []
        run_energy = self._run_energy(rows, horizon_s)
        events = {"acquisitions": self.acquisitions, "timeouts": self.timeouts,
                  "simpy_events": self.acquisitions + self.timeouts, "steps_alone": self.steps_alone}
        summary = summarize(rows, run_energy, horizon_s, self.battery.drain_pct_per_h)
        summary.update({"policy": self.policy.name, "wall_s": wall_s,
                        "planner_full_solves": self.policy.full_solves,
                        "planner_pool_size": self.policy.pool_size,
                        "radio_promotions": self.radio.promotions if self.radio else 0})
        return SimulationResult(records_frame(rows, self.local), summary, run_energy, events)

    def _run_energy(self, rows: list[RequestRecord], horizon_s: float) -> dict[str, float]:
        """The run's device energy by component; sums to the total exactly."""
        platform = self.problem.platform
        out: dict[str, float] = {}
        for proc in self.local:
            out[f"{proc}_active_j"] = float(sum(r.energy_by_processor_j[proc] for r in rows))
            idle_s = max(0.0, horizon_s - self.occupied_s[proc])
            out[f"{proc}_idle_j"] = platform.processor(proc).idle_power_w * idle_s
        if self.radio is not None:
            out["radio_promotion_j"] = float(sum(r.radio_promotion_j for r in rows))
            out["radio_transfer_j"] = float(sum(r.radio_transfer_j for r in rows))
            out["radio_tail_j"] = float(sum(r.radio_tail_j for r in rows))
            out["radio_idle_j"] = self.radio.idle_j
        return out
