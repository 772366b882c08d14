"""The DeepX planner: one integer program choosing every layer's processor and
variant (SVD rank, precision) together.

Variables
    x[l,p,v] in {0,1}   layer l runs on processor p in variant v
    z[u,v,p,q] in [0,1] edge u->v carries u's output from p to q (a flow: its sums
                        over q and over p equal u's and v's assignments, which
                        makes z = a[u,p] a[v,q] without product linearisation;
                        ../shared/reference/FACTS.md measured 6 s -> 0.3 s)
    w[u,p,q] in [0,1]   u's output is sent p -> q at all (u with several
                        consumers sends once per destination processor)
    r in {0,1}          the request uses the radio (any layer in the cloud)
    m[p] >= 0           largest activation footprint of a layer on p
Constraints
    one placement per layer; the input on the sensor processor;
    latency <= deadline; sum of accuracy losses <= budget;
    parameters + m[p] <= usable memory of p; energy <= budget (optional).
Objective
    device energy, latency, or energy + lambda * latency.

Every number comes from :class:`~deepx_sim.costs.CostModel`; the returned Plan's
costs are recomputed by :func:`~deepx_sim.plan.problem.evaluate`.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import pulp

from deepx_sim.costs import Variant
from deepx_sim.errors import InfeasibleError, PlanError
from deepx_sim.model.layers import LayerKind
from deepx_sim.plan.base import Planner
from deepx_sim.plan.problem import Placement, Plan, Problem, evaluate

SOLVERS = ("highs", "cbc")


@dataclass
class _Model:
    """A built program with handles on its expressions."""

    prob: pulp.LpProblem
    x: dict[tuple[str, str, Variant], pulp.LpVariable]
    latency: pulp.LpAffineExpression
    energy: pulp.LpAffineExpression
    loss: pulp.LpAffineExpression


class DeepXPlanner(Planner):
    """Joint placement (DAD) and compression (RLC) by integer programming.

    ``solver`` is ``highs`` (in-process, the default) or ``cbc`` (PuLP's bundled
    binary); ``time_limit_s`` and ``gap`` bound the search.
    """

    name = "deepx"

    def __init__(self, solver: str = "highs", time_limit_s: float | None = 60.0,
                 gap: float = 1e-6) -> None:
        if solver not in SOLVERS:
            raise PlanError(f"solver must be one of {SOLVERS}, got {solver!r}")
        self.solver = solver
        self.time_limit_s = time_limit_s
        self.gap = gap

    # ---------------------------------------------------------------- build
    def build(self, problem: Problem, *, deadline: bool = True, objective: str | None = None,
              energy_budget: bool = True) -> _Model:
        costs = problem.costs
        c = problem.constraints
        procs = problem.processors
        remote = {p for p in procs if problem.platform.processor(p).is_remote}
        prob = pulp.LpProblem("deepx", pulp.LpMinimize)
        x: dict[tuple[str, str, Variant], pulp.LpVariable] = {}
        # coefficient lists may name a variable twice (layer cost + result transfer);
        # LpAffineExpression keeps only the last pair, so they are summed in _expr
        lat_terms: list[tuple[pulp.LpVariable, float]] = []
        en_terms: list[tuple[pulp.LpVariable, float]] = []
        loss_terms: list[tuple[pulp.LpVariable, float]] = []
        params: dict[str, list[tuple[pulp.LpVariable, float]]] = {p: [] for p in procs}
        assign: dict[tuple[str, str], list[pulp.LpVariable]] = {}
        act_bytes: dict[str, int] = {}
        max_params: dict[str, int] = {p: 0 for p in procs}
        n = 0
        for lay in problem.layers:
            allowed = [problem.sensor] if lay.kind == LayerKind.INPUT else procs
            act_bytes[lay.name] = lay.input_bytes(costs.activation_bits) + lay.output_bytes(
                costs.activation_bits)
            row: list[pulp.LpVariable] = []
            for p in allowed:
                assign[(lay.name, p)] = []
                biggest = 0
                for v in problem.variants(lay, p):
                    n += 1
                    var = prob.add_variable(f"x{n}", 0, 1, cat=pulp.LpBinary)
                    x[(lay.name, p, v)] = var
                    assign[(lay.name, p)].append(var)
                    row.append(var)
                    cost = costs.layer_cost(lay.name, p, v)
                    lat_terms.append((var, cost.latency_s))
                    en_terms.append((var, cost.energy_j))
                    params[p].append((var, cost.param_bytes))
                    biggest = max(biggest, cost.param_bytes)
                    loss = problem.loss(lay, v)
                    if loss > 0:
                        loss_terms.append((var, loss))
                max_params[p] += biggest
            if not row:
                raise PlanError(f"layer {lay.name!r} has no processor that can run it")
            prob += pulp.lpSum(row) == 1, f"place_{n}"

        def a(layer: str, p: str) -> pulp.LpAffineExpression:
            return pulp.LpAffineExpression([(v, 1) for v in assign.get((layer, p), [])])

        # transfers: flows per edge, deduplicated per destination processor
        graph = problem.graph
        outputs = set(problem.output_layers())
        tcache: dict[tuple[int, str, str], tuple[float, float, bool]] = {}

        def transfer(size: int, p: str, q: str) -> tuple[float, float, bool]:
            key = (size, p, q)
            if key not in tcache:
                t = costs.transfer_cost(size, p, q)
                tcache[key] = (t.latency_s, t.energy_j, t.route in ("uplink", "downlink"))
            return tcache[key]

        k = 0
        for lay in problem.layers:
            u = lay.name
            src_procs = [p for p in procs if (u, p) in assign]
            consumers = list(graph.successors(u))
            dest_count = len(consumers) + (1 if u in outputs else 0)
            sizes: dict[str, int] = {}
            per_edge: dict[str, dict[tuple[str, str], pulp.LpVariable]] = {}
            for v in consumers:
                sizes[v] = costs.edge_bytes(u, v)
                dst_procs = [q for q in procs if (v, q) in assign]
                z = {}
                for p in src_procs:
                    for q in dst_procs:
                        k += 1
                        z[(p, q)] = prob.add_variable(f"z{k}", 0, 1)
                for p in src_procs:
                    prob += pulp.lpSum(z[(p, q)] for q in dst_procs) == a(u, p)
                for q in dst_procs:
                    prob += pulp.lpSum(z[(p, q)] for p in src_procs) == a(v, q)
                per_edge[v] = z
            if dest_count == 1 and consumers:  # one consumer: pay on the flow itself
                v = consumers[0]
                for (p, q), var in per_edge[v].items():
                    if p != q:
                        t_lat, t_en, _ = transfer(sizes[v], p, q)
                        lat_terms.append((var, t_lat))
                        en_terms.append((var, t_en))
                continue
            size_out = lay.output_bytes(costs.activation_bits)
            for p in src_procs:
                for q in procs:
                    if q == p:
                        continue
                    feeders = [per_edge[v][(p, q)] for v in consumers if (p, q) in per_edge[v]]
                    to_sensor = u in outputs and q == problem.sensor
                    if not feeders and not to_sensor:
                        continue
                    size = max([sizes[v] for v in consumers if (p, q) in per_edge[v]]
                               + ([size_out] if to_sensor else []))
                    t_lat, t_en, _ = transfer(size, p, q)
                    if to_sensor and not consumers:  # result only: linear in a(u, p)
                        for var in assign[(u, p)]:
                            lat_terms.append((var, t_lat))
                            en_terms.append((var, t_en))
                        continue
                    k += 1
                    w = prob.add_variable(f"w{k}", 0, 1)
                    for f in feeders:
                        prob += w >= f
                    if to_sensor:
                        prob += w >= a(u, p)
                    lat_terms.append((w, t_lat))
                    en_terms.append((w, t_en))

        if remote:
            r = prob.add_variable("radio", 0, 1, cat=pulp.LpBinary)
            for (_layer, p), vars_ in assign.items():
                if p in remote:
                    for var in vars_:
                        prob += r >= var
            promo_s, burst_j = costs.radio_burst()
            lat_terms.append((r, promo_s))
            en_terms.append((r, burst_j))

        # memory: parameters plus the largest activation footprint on each processor
        for p in procs:
            cap = problem.platform.processor(p).usable_memory_bytes
            if max_params[p] + max(act_bytes.values()) <= cap:
                continue  # cannot bind
            m = prob.add_variable(f"mem_act_{p}", 0)
            for layer_name, size in act_bytes.items():
                if (layer_name, p) in assign:
                    prob += m >= size * a(layer_name, p)
            prob += _expr(params[p]) + m <= cap, f"memory_{p}"

        latency, energy, loss = _expr(lat_terms), _expr(en_terms), _expr(loss_terms)
        if deadline:
            prob += latency <= c.deadline_s, "deadline"
        if loss_terms:
            prob += loss <= c.max_accuracy_loss, "accuracy"
        if energy_budget and c.energy_budget_j is not None:
            prob += energy <= c.energy_budget_j, "energy_budget"
        objective = objective or c.objective
        if objective == "energy":
            prob += energy
        elif objective == "latency":
            prob += latency
        else:
            prob += energy + c.latency_weight_j_per_s * latency
        return _Model(prob, x, latency, energy, loss)

    # ---------------------------------------------------------------- solve
    def _solver(self) -> Any:
        if self.solver == "highs":
            return pulp.HiGHS(msg=False, timeLimit=self.time_limit_s, gapRel=self.gap)
        with warnings.catch_warnings():  # PuLP 3.3 warns that bundled CBC leaves in 4.0
            warnings.simplefilter("ignore", DeprecationWarning)
            return pulp.PULP_CBC_CMD(msg=False, timeLimit=self.time_limit_s, gapRel=self.gap)

    def _solve(self, model: _Model) -> tuple[str, float | None]:
        model.prob.solve(self._solver())
        status = pulp.LpStatus[model.prob.status]
        gap: float | None = None
        if self.solver == "highs" and getattr(model.prob, "solverModel", None) is not None:
            info = model.prob.solverModel.getInfo()
            gap = max(0.0, float(info.mip_gap)) if info.mip_gap < 1e30 else None
        elif status == "Optimal":
            gap = 0.0  # CBC does not report it through PuLP; optimal within gapRel
        return status, gap

    def plan(self, problem: Problem) -> Plan:
        start = time.perf_counter()
        model = self.build(problem)
        status, gap = self._solve(model)
        elapsed = time.perf_counter() - start
        if status == "Infeasible":
            raise InfeasibleError(self.diagnose(problem))
        chosen = {}
        for (layer, p, v), var in model.x.items():
            if (var.varValue or 0) > 0.5:
                chosen[layer] = Placement(layer, p, v)
        if status != "Optimal" and len(chosen) != len(problem.layers):
            raise PlanError(f"deepx: solver {self.solver} returned {status} without a plan after "
                            f"{elapsed:.2f} s (time limit {self.time_limit_s} s)")
        optimal = status == "Optimal" and (gap or 0.0) <= max(self.gap * 10, 1e-6)
        return evaluate(problem, chosen, self.name, solver=self.solver, solve_time_s=elapsed,
                        gap=gap, status="optimal" if optimal else "feasible")

    # ---------------------------------------------------------------- why infeasible
    def diagnose(self, problem: Problem) -> str:
        """Name the constraint that cannot be met and the best achievable value."""
        c = problem.constraints
        fastest = self.build(problem, deadline=False, objective="latency", energy_budget=False)
        status, _ = self._solve(fastest)
        if status != "Optimal":
            return _memory_message(problem)
        best_s = pulp.value(fastest.latency)
        procs = sorted({p for (_, p, _), var in fastest.x.items() if (var.varValue or 0) > 0.5})
        if best_s > c.deadline_s * (1 + 1e-9):
            return (f"deadline {c.deadline_s * 1000:g} ms cannot be met: the fastest plan takes "
                    f"{best_s * 1000:.3g} ms (layers on {', '.join(procs)})")
        if c.energy_budget_j is not None:
            lowest = self.build(problem, energy_budget=False, objective="energy")
            if self._solve(lowest)[0] == "Optimal":
                best_j = pulp.value(lowest.energy)
                return (f"energy budget {c.energy_budget_j:g} J cannot be met within the "
                        f"deadline: the lowest energy is {best_j:.4g} J")
        return "no plan meets all constraints together (deadline, accuracy, memory, energy)"


def _expr(terms: list[tuple[pulp.LpVariable, float]]) -> pulp.LpAffineExpression:
    """Sum (variable, coefficient) pairs into one expression, merging repeats."""
    merged: dict[pulp.LpVariable, float] = {}
    for var, coef in terms:
        merged[var] = merged.get(var, 0.0) + coef
    return pulp.LpAffineExpression(list(merged.items()))


def _memory_message(problem: Problem) -> str:
    """Why nothing fits: the smallest parameter footprint against the largest memory."""
    budget = problem.constraints.max_accuracy_loss
    smallest = 0
    for lay in problem.layers:
        options = [
            problem.costs.layer_cost(lay.name, p, v).param_bytes
            for p in problem.processors for v in problem.variants(lay, p)
            if problem.loss(lay, v) <= budget
        ]
        smallest = max(smallest, min(options) if options else 0)
    best = max(problem.platform.processor(p).usable_memory_bytes for p in problem.processors)
    return (f"memory cannot be met: within accuracy loss {budget:g} the largest layer still needs "
            f"{smallest:,} B of parameters, and the layers together do not fit the processors' "
            f"memory (largest: {best:,} B)")
