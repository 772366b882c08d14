"""The planner contract, shipped so that you can run it on your own planner.

Every planner in the registry passes these checks (tests/plan/test_contract.py
runs them on each).  To hold your planner to the same contract under pytest::

    from deepx_sim.plan.testing import PlannerContract

    class TestMyPlanner(PlannerContract):
        @staticmethod
        def make_planner():
            return MyPlanner()

Outside pytest, :func:`check_planner` runs the same checks and raises
AssertionError naming the case and the broken rule.

The contract: a plan places every layer exactly once, in execution order, on a
processor available under the problem's conditions, with inputs on the sensor
processor; its latency and energy are what the cost model gives for that
assignment (recomputed here independently); its status honestly says which
constraints it breaks; a planner that finds no plan, or does not apply,
raises PlanError (InfeasibleError for no plan) with a message.

This module also holds the random small problems the oracle tests use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import cache

import networkx as nx
import numpy as np

from deepx_sim.costs import Conditions
from deepx_sim.errors import PlanError
from deepx_sim.model.builder import GraphBuilder
from deepx_sim.model.layers import LayerKind
from deepx_sim.plan.base import Planner
from deepx_sim.plan.problem import RADIO, Constraints, Plan, Problem, transfers_of
from deepx_sim.platform import Platform

REL = 1e-9


# ------------------------------------------------------------------ problems
def random_platform(rng: np.random.Generator, with_cloud: bool = True, n_local: int = 2) -> Platform:
    """A platform with ``n_local`` processors of random speed and power, and a cloud
    behind a link with a random radio preset."""
    procs = []
    for i in range(n_local):
        procs.append({
            "name": f"p{i}", "kind": "cpu" if i == 0 else "gpu",
            "peak_gflops": {"fp32": float(rng.uniform(0.5, 50))},
            "efficiency": {"default": float(rng.uniform(0.2, 1.0))},
            "memory_bandwidth_gbps": float(rng.uniform(1, 20)),
            "usable_memory_mib": 1024, "active_power_w": float(rng.uniform(0.1, 5)),
            "launch_overhead_ms": float(rng.uniform(0, 0.1)),
        })
    links = []
    if with_cloud:
        procs.append({"name": "cloud", "kind": "cloud", "peak_gflops": {"fp32": 5000.0},
                      "efficiency": {"default": 0.5}, "memory_bandwidth_gbps": 900,
                      "usable_memory_mib": 40000, "active_power_w": 300})
        links.append({"name": "net", "remote": "cloud", "uplink_mbps": float(rng.uniform(1, 50)),
                      "downlink_mbps": float(rng.uniform(5, 100)),
                      "rtt_ms": float(rng.uniform(5, 80)),
                      "radio": ["wifi", "lte", "3g"][int(rng.integers(3))]})
    return Platform.model_validate({"name": "rand", "shared_memory_gbps": float(rng.uniform(1, 20)),
                                    "processors": procs, "links": links})


def random_dag(rng: np.random.Generator, n_layers: int) -> nx.DiGraph:
    """A DAG of fc, activation and add layers (input included in n_layers)."""
    b = GraphBuilder("rand", (1, int(rng.integers(16, 2000))))
    names = [b.last]
    while len(names) < n_layers:
        roll = rng.random()
        src = names[int(rng.integers(len(names)))]
        if roll < 0.5:
            names.append(b.fc(int(rng.integers(8, 1500)), inputs=src))
        elif roll < 0.75 or len(names) < 3:
            names.append(b.relu(inputs=src))
        else:
            other = names[int(rng.integers(len(names)))]
            if other == src or b.shape(other) != b.shape(src):
                names.append(b.relu(inputs=src))
            else:
                names.append(b.add([src, other]))
    return b.build()


def random_problem(seed: int, objective: str = "energy") -> Problem:
    """A small random problem (4-8 layers, two local processors and a cloud) with a
    random deadline and accuracy budget; 3 variants per fc layer."""
    rng = np.random.default_rng(seed)
    graph = random_dag(rng, int(rng.integers(4, 9)))
    platform = random_platform(rng)
    deadline = float(rng.choice([0.002, 0.01, 0.05, 0.5, 5.0]))
    constraints = Constraints(deadline_s=deadline, max_accuracy_loss=float(rng.choice([0.0, 0.02, 0.05])),
                              objective=objective)  # type: ignore[arg-type]
    return Problem(graph, platform, Conditions(link="net"), constraints,
                   rank_fractions=(0.6, 0.2))  # full rank + 2 ranks = 3 candidates


def random_radio_problem(seed: int) -> Problem:
    """A small random problem whose device is slow enough that the cloud often pays,
    in a random radio state (idle, promoting, or connected with some tail left)
    with a random next arrival gap (none, or up to 1.2 tails); one in five has
    our own work queued on the device's processors."""
    rng = np.random.default_rng(seed)
    graph = random_dag(rng, int(rng.integers(4, 8)))
    data = random_platform(rng).model_dump()
    for proc in data["processors"]:
        if proc["kind"] != "cloud":
            proc["peak_gflops"] = {"fp32": proc["peak_gflops"]["fp32"] / 1000}
            proc["memory_bandwidth_gbps"] /= 100
    platform = Platform.model_validate(data)
    radio = platform.links[0].radio
    state = ("idle", "promoting", "connected")[seed % 3]
    tail_left_s = float(rng.uniform(0, 0.3)) if state == "connected" else 0.0
    gap = None if seed % 4 == 0 else float(rng.uniform(0.01, 1.2)) * radio.tail_s
    queued = {p["name"]: float(rng.uniform(0, 0.2)) for p in data["processors"]
               if p["kind"] != "cloud" and seed % 5 == 1}
    conditions = Conditions(link="net", radio_state=state, tail_left_s=tail_left_s,  # type: ignore[arg-type]
                            next_gap_s=gap, queued_s=queued)
    objective = ("energy", "latency", "weighted")[seed % 3 if seed % 7 else 0]
    constraints = Constraints(deadline_s=float(rng.choice([0.5, 5.0, 50.0])),
                              objective=objective)  # type: ignore[arg-type]
    return Problem(graph, platform, conditions, constraints, rank_fractions=(0.6, 0.2))


def random_attention_problem(seed: int, fuse: bool = True) -> Problem:
    """One random self-attention block as transformers have it: the input feeds the
    q, k and v projections and the residual add (a fan-out of four), the scores
    and the context are products of two activations, reshapes sit between them;
    two local processors and a cloud, 2 variants per fc layer."""
    rng = np.random.default_rng(seed)
    tokens, width = int(rng.integers(4, 64)), int(rng.choice([16, 32, 64, 128]))
    b = GraphBuilder("attention", (1, tokens, width))
    x = b.last
    q, k, v = (b.fc(width, name=part, inputs=x) for part in "qkv")
    kt = b.view(perm=(0, 2, 1), name="k_t", inputs=k)
    b.matmul(q, kt, name="scores")
    b.scale(name="scale", op_type="Div")
    probs = b.softmax(name="softmax")
    b.matmul(probs, v, name="context")
    b.view(shape=(1, tokens, width), name="merge")
    out = b.fc(width, name="out")
    b.add([out, x], name="residual")
    platform = random_platform(rng)
    constraints = Constraints(deadline_s=float(rng.choice([0.01, 0.5, 5.0])),
                              max_accuracy_loss=float(rng.choice([0.0, 0.05])),
                              objective=("energy", "latency", "weighted")[seed % 3])  # type: ignore[arg-type]
    return Problem(b.build(), platform, Conditions(link="net"), constraints, rank_fractions=(0.5,),
                   fuse=fuse)


#: (model, platform, link, deadline_s) of the zoo cases every planner is checked on.
ZOO_CASES = (("speakerid", "tegra_k1", "wifi", 5.0), ("alexnet", "snapdragon_800", "lte", 5.0),
             ("mobilenetv2", "snapdragon_8_gen_3", "wifi", 5.0), ("speakerid", "tegra_k1", "lte", 0.001))
CASE_NAMES = (*(f"{m}/{p}/{lk}/{d:g}s" for m, p, lk, d in ZOO_CASES),
              "random-dag-1", "random-dag-2", "speakerid/tegra_k1/wifi/5s/no-cloud")
#: The cases small enough for exhaustive planners.
SMALL_CASES = ("random-dag-1", "random-dag-2", "random-dag-1/no-cloud")


@cache
def contract_problem(case: str) -> Problem:
    """The problem behind a case name (built once per process): a zoo case of
    :data:`ZOO_CASES`, ``random-dag-<seed>``, or either followed by ``/no-cloud``."""
    from deepx_sim.model import load_model
    from deepx_sim.platform import load_platform

    if case.endswith("/no-cloud"):
        base = contract_problem(case.removesuffix("/no-cloud"))
        return base.with_conditions(replace(base.conditions, cloud_reachable=False))
    if case.startswith("random-dag-"):
        return random_problem(int(case.rsplit("-", 1)[1]))
    model, platform, link, deadline = ZOO_CASES[CASE_NAMES.index(case)]
    return Problem(load_model(model), load_platform(platform), Conditions(link=link),
                   Constraints(deadline_s=deadline))


# ------------------------------------------------------------------ checks
def recompute(problem: Problem, plan: Plan) -> tuple[float, float]:
    """(latency_s, energy_j) of ``plan``'s assignment summed from the cost model's
    pieces and the radio rule, independently of :func:`~deepx_sim.plan.problem.evaluate`."""
    costs = problem.costs
    remote = [problem.platform.processor(p.processor).is_remote for p in plan.placements]
    first = remote.index(True) if any(remote) else len(remote)
    lat = en = first_use_s = span_s = 0.0
    for i, p in enumerate(plan.placements):
        c = costs.layer_cost(p.layer, p.processor, p.variant)
        lat, en = lat + c.latency_s, en + c.energy_j
        first_use_s += c.latency_s if i < first else 0.0
        span_s += c.latency_s if remote[i] else 0.0
    where = {p.layer: p.processor for p in plan.placements}
    for _, src, dst, size in transfers_of(problem, where):
        t = costs.transfer_cost(size, src, dst)
        lat, en = lat + t.latency_s, en + t.energy_j
        span_s += t.latency_s if t.route in ("uplink", "downlink") else 0.0
    lat += costs.queue_wait_s({p.processor for p in plan.placements})
    if any(remote):
        charge = costs.radio_charge(first_use_s, span_s)
        lat, en = lat + charge.promotion_s, en + charge.promotion_j + charge.tail_j
    return lat, en


def _fail(case: str, rule: str) -> AssertionError:
    return AssertionError(f"{case}: {rule}")


def check_plan(problem: Problem, plan: Plan, case: str = "plan") -> None:
    """Raise AssertionError if ``plan`` breaks the contract for ``problem``."""
    names = [lay.name for lay in problem.layers]
    if [p.layer for p in plan.placements] != names:
        raise _fail(case, "placements must list every layer once, in execution order")
    for p in plan.placements:
        if p.processor not in problem.processors:
            raise _fail(case, f"layer {p.layer!r} on {p.processor!r}, not one of the available "
                        f"processors {problem.processors}")
        if problem.graph.nodes[p.layer]["layer"].kind == LayerKind.INPUT and p.processor != problem.sensor:
            raise _fail(case, f"input {p.layer!r} must stay on the sensor {problem.sensor!r}")
    lat, en = recompute(problem, plan)
    if not np.isclose(plan.latency_s, lat, rtol=REL, atol=1e-15):
        raise _fail(case, f"latency_s {plan.latency_s!r} differs from the cost model's {lat!r}")
    if not np.isclose(plan.energy_j, en, rtol=REL, atol=1e-15):
        raise _fail(case, f"energy_j {plan.energy_j!r} differs from the cost model's {en!r}")
    if not np.isclose(sum(plan.energy_breakdown_j.values()), plan.energy_j, rtol=1e-12, atol=1e-15):
        raise _fail(case, "energy_breakdown_j must add up to energy_j")
    if plan.uses_radio and not plan.energy_breakdown_j.get(RADIO, 0.0) > 0:
        raise _fail(case, "a plan using the radio must charge radio energy")
    c = problem.constraints
    broken = plan.latency_s > c.deadline_s * (1 + 1e-9) or plan.accuracy_loss > c.max_accuracy_loss + 1e-9
    broken |= any(used > problem.platform.processor(proc).usable_memory_bytes
                  for proc, used in plan.memory_bytes.items())
    if broken and plan.status in ("feasible", "optimal"):
        raise _fail(case, f"status {plan.status!r} but the plan breaks a constraint "
                    f"(latency {plan.latency_s:.4g} s, deadline {c.deadline_s:g} s, "
                    f"accuracy loss {plan.accuracy_loss:.4g}, budget {c.max_accuracy_loss:g})")


def check_planner(planner: Planner | Callable[[], Planner],
                  cases: Iterable[str] = CASE_NAMES) -> dict[str, Plan | PlanError]:
    """Run the contract on ``planner`` (or a factory of it) over ``cases``; returns each
    case's plan or the PlanError it raised.  Raises AssertionError on a broken rule."""
    out: dict[str, Plan | PlanError] = {}
    for case in cases:
        problem = contract_problem(case)
        p = planner if isinstance(planner, Planner) else planner()
        try:
            plan = p.plan(problem)
        except PlanError as exc:
            if not str(exc):
                raise _fail(case, f"{type(exc).__name__} must say why") from None
            out[case] = exc
            continue
        check_plan(problem, plan, case)
        out[case] = plan
    return out


class PlannerContract:
    """Subclass as ``TestSomething`` and define ``make_planner``; pytest then runs
    every contract check on every case in ``cases`` (set it to :data:`SMALL_CASES`
    for an exhaustive planner)."""

    cases: tuple[str, ...] = CASE_NAMES

    @staticmethod
    def make_planner() -> Planner:
        raise NotImplementedError("define make_planner() returning your planner")

    def _plan(self, case: str) -> tuple[Problem, Plan | None]:
        import pytest

        problem = contract_problem(case)
        try:
            return problem, self.make_planner().plan(problem)
        except PlanError as exc:
            assert str(exc), f"{case}: {type(exc).__name__} must say why"
            pytest.skip(f"{case}: {exc}")
        return problem, None

    def pytest_generate_tests(self, metafunc) -> None:  # type: ignore[no-untyped-def]
        """pytest calls this on the class: every ``contract_case`` check runs on each case."""
        if "contract_case" in metafunc.fixturenames:
            metafunc.parametrize("contract_case", self.cases)

    def test_is_a_planner(self) -> None:
        assert isinstance(self.make_planner(), Planner)

    def test_contract(self, contract_case: str) -> None:
        problem, plan = self._plan(contract_case)
        assert plan is not None
        check_plan(problem, plan, contract_case)

    def test_same_problem_same_plan(self, contract_case: str) -> None:
        problem, plan = self._plan(contract_case)
        assert plan is not None
        again = self.make_planner().plan(problem)
        assert again.placements == plan.placements, f"{contract_case}: two runs gave different plans"

    def test_unreachable_cloud_is_never_used(self) -> None:
        for case in (c for c in self.cases if c.endswith("/no-cloud")):
            self._check_no_cloud(case)

    def _check_no_cloud(self, case: str) -> None:
        problem, plan = self._plan(case)
        assert plan is not None
        remote = {p.name for p in problem.platform.processors if p.is_remote}
        assert not remote & set(plan.processors_used), f"{case}: the cloud is unreachable"
        assert not plan.uses_radio

