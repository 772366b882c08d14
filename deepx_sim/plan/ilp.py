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
    t >= 0              the tail energy the radio rule charges (piecewise linear in
                        next_gap_s - span, span = radio transfer + cloud time)
    m[p] >= 0           largest activation footprint of a layer on p
Constraints
    one placement per layer; the input on the sensor processor;
    q >= queued_s[p] for each processor p used (our own earlier requests' work);
    the radio rule (deepx_sim.costs.radio_charge): promotion when the radio
    is idle, or when its tail runs out before the local work ahead of the
    first cloud layer (prefix variables f, u); the tail for the part the
    next request will not share;
    latency <= deadline; sum of accuracy losses <= budget;
    parameters + m[p] <= usable memory of p; energy <= budget (optional).
Objective
    device energy, latency, or energy + lambda * latency.

Every number comes from :class:`~deepx_sim.costs.CostModel`; the returned Plan's
costs are recomputed by :func:`~deepx_sim.plan.problem.evaluate`.
"""

from __future__ import annotations

import gc
import itertools
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np
import pulp

from deepx_sim.costs import Variant, tail_energy_j, tail_pieces
from deepx_sim.errors import DeepxError, InfeasibleError, PlanError
from deepx_sim.model.fusion import fused_members
from deepx_sim.model.layers import Layer, LayerKind, colocation
from deepx_sim.plan.base import Planner
from deepx_sim.plan.columns import column_generation, in_scope
from deepx_sim.plan.improve import POLISH_LIMIT_S, improve, search_limit_s
from deepx_sim.plan.pooled import pooled_plan
from deepx_sim.plan.presolve import Option, presolved
from deepx_sim.plan.problem import Placement, Plan, Problem, evaluate, interchangeable
from deepx_sim.plan.segments import segment_bound, segment_plan

SOLVERS = ("highs", "cbc")
OBJECTIVE_SCALE = 1000.0
#: Producers with this many consumers pay transfers per destination, not per edge.
FANOUT = 3
#: HiGHS options.  No presolve reductions: plan/presolve.py has already dropped dominated
#: options, and HiGHS's own reductions cost more than they saved on most of the zoo
#: (benchmarks/bench_planner_scale.py, HiGHS 1.15, quiet machine, solver time alone:
#: ViT-B/16 0.26 -> 0.15 s, DenseNet-121 0.13 -> 0.12, BERT-base 0.47 -> 0.56, ResNet-50
#: 0.05 -> 0.07); its restarts and cuts stay on.  No feasibility jump: its first-solution
#: search ran before each root LP and took a quarter to a third of the solve on the zoo
#: (ViT-B/16 0.37 -> 0.27 s, DenseNet-121 0.19 -> 0.14, ResNet-50 0.07 -> 0.05, BERT-base
#: unchanged); the planner hands HiGHS a starting plan where finding one is hard.
HIGHS_OPTIONS: dict[str, object] = {"presolve_reduction_limit": 0,
                                   "mip_heuristic_run_feasibility_jump": False}
#: Programs with this many columns or more solve their LPs with HiGHS's interior point
#: method: the random 800-node profiled graph on 8 instances (27,000 columns) closed its
#: root in a 60 s plan with it (gap 14 %) and not without (66 %); the zoo's programs
#: (under 6,000) are faster with the simplex (ViT-B/16 0.2 -> 0.4 s with it).
IPM_MIN_COLUMNS = 10_000
#: Where column generation applies (plan/columns.py), its share of the time limit; the
#: compact program gets the rest to close what its bound leaves open.  Inception-v3 in
#: 60 s: proven within 1 % at 0.95 (twice), 1.5 % at 0.8, whose last 12 s of the compact
#: program improved neither plan nor bound.
COLUMN_SHARE = 0.95
#: Absolute slack on a proven gap for rounding in the scaled objective (see _within).
GAP_ROUNDING = 5e-7


@dataclass
class _Model:
    """A built program with handles on its expressions."""

    prob: pulp.LpProblem
    x: dict[tuple[str, str, Variant], pulp.LpVariable]
    latency_terms: Terms
    energy_terms: Terms
    loss_terms: Terms
    linked: dict[tuple[str, object], pulp.LpVariable]  # (layer, processor or ("rank", k)) -> a or k
    bound: float | None = None  # a known lower bound on the objective (segments.py), unscaled

    def raise_bound(self, bound: float) -> None:
        """Add ``bound`` (unscaled) as a row on the objective where it beats the known one."""
        if np.isfinite(bound) and (self.bound is None or bound > self.bound):
            self.prob += self.prob.objective >= OBJECTIVE_SCALE * bound * (1 - 1e-9), "column_bound"
            self.bound = bound

    @property
    def latency(self) -> pulp.LpAffineExpression:
        return _expr(self.latency_terms)

    @property
    def energy(self) -> pulp.LpAffineExpression:
        return _expr(self.energy_terms)

    def start(self, placements: Mapping[str, Placement]) -> dict[pulp.LpVariable, float]:
        """Values of the placement and rank variables that make ``placements`` (a plan for
        the same layers) a starting solution; the solver completes the rest."""
        values: dict[pulp.LpVariable, float] = {}
        for (layer, p, v), var in self.x.items():
            chosen = placements.get(layer)
            values[var] = float(chosen is not None and (chosen.processor, chosen.variant) == (p, v))
        for (layer, key), var in self.linked.items():
            chosen = placements.get(layer)
            keys = () if chosen is None else (chosen.processor, ("rank", chosen.variant.rank))
            values[var] = float(key in keys)
        return values


class DeepXPlanner(Planner):
    """Joint placement (DAD) and compression (RLC) by integer programming.

    ``solver`` is ``highs`` (in-process, the default) or ``cbc`` (PuLP's bundled
    binary); ``time_limit_s`` and ``gap`` bound the search; ``presolve`` drops layer
    options no optimum needs (:mod:`deepx_sim.plan.presolve`) before building;
    ``warm_start`` hands the solver a heuristic plan when no start is given;
    a layer with ``fanout`` consumers or more pays transfers per destination processor;
    ``split_copies`` prices a copy's two halves apart where copies go through the
    sensor's memory (a smaller program with the same optimum; False: per-edge flows).
    """

    name = "deepx"

    def __init__(self, solver: str = "highs", time_limit_s: float | None = 60.0,
                 gap: float = 1e-6, presolve: bool = True, warm_start: bool = True,
                 fanout: int = FANOUT, split_copies: bool = True) -> None:
        if solver not in SOLVERS:
            raise PlanError(f"solver must be one of {SOLVERS}, got {solver!r}")
        self.solver = solver
        self.time_limit_s = time_limit_s
        self.gap = gap
        self.presolve = presolve
        self.fanout = fanout
        self.warm_start = warm_start
        self.split_copies = split_copies

    # ---------------------------------------------------------------- build
    def build(self, problem: Problem, *, deadline: bool = True, objective: str | None = None,
              energy_budget: bool = True) -> _Model:
        """The integer program for ``problem``; ``deadline``/``energy_budget`` False
        drop those constraints and ``objective`` overrides the problem's (diagnosis)."""
        b = _Builder(problem, self.presolve, self.fanout, self.split_copies)
        b.placement()
        b.transfers()
        b.radio()
        b.queue()
        b.memory()
        b.colocation()
        b.symmetry()
        return b.objective(deadline=deadline, objective=objective, energy_budget=energy_budget)

    # ---------------------------------------------------------------- solve
    def _solver(self, time_limit_s: float | None = None, columns: int = 0) -> Any:
        limit = self.time_limit_s if time_limit_s is None else max(time_limit_s, 1.0)
        if self.solver == "highs":
            # HiGHS also stops at an absolute gap of 1e-6 by default: too coarse for
            # objectives in seconds or joules of ~1e-3, so only the relative gap counts
            large = {"mip_lp_solver": "ipm"} if columns >= IPM_MIN_COLUMNS else {}
            return _BatchHiGHS(msg=False, timeLimit=limit, gapRel=self.gap, gapAbs=0.0,
                               **HIGHS_OPTIONS, **large)
        with warnings.catch_warnings():  # PuLP 3.3 warns that bundled CBC leaves in 4.0
            warnings.simplefilter("ignore", DeprecationWarning)
            return pulp.PULP_CBC_CMD(msg=False, timeLimit=limit, gapRel=self.gap)

    def _solve(self, model: _Model, start: Mapping[str, Placement] | None = None,
               time_limit_s: float | None = None) -> tuple[str, float | None]:
        solver = self._solver(time_limit_s, len(model.prob.variables()))
        if start and isinstance(solver, _BatchHiGHS):
            solver.start = model.start(start)
        model.prob.solve(solver)
        status = pulp.LpStatus[model.prob.status]
        gap: float | None = None
        if self.solver == "highs" and getattr(model.prob, "solverModel", None) is not None:
            gap = _highs_gap(model.prob.solverModel.getInfo(), model.bound)
        elif status == "Optimal" and model.prob.sol_status == pulp.LpSolutionOptimal:
            gap = 0.0  # CBC does not report it through PuLP; optimal within gapRel (a time limit
            # also returns "Optimal", with solution status "found": then the gap is unknown)
        return status, gap

    def plan(self, problem: Problem, start: Plan | None = None) -> Plan:
        """The optimal plan; ``start`` (e.g. the previous request's plan) is handed to the
        solver as a first solution when its layers match the problem's."""
        with _cyclic_gc_paused():
            return self._plan(problem, start)

    def _plan(self, problem: Problem, start: Plan | None) -> Plan:
        began = time.perf_counter()
        model = self.build(problem)
        if start is None and self.warm_start:
            # measured at load 0.3: ResNet-50 on tegra_k1 70 ms with it, 139 without;
            # BERT-base on snapdragon_8_gen_3 439 with, 377 without (the rest within 15 %)
            start = self._heuristic_start(problem, self.time_limit_s)
        if self.solver == "highs" and self.time_limit_s is not None and _partition_bound(problem):
            return self._by_columns(problem, model, start, began)
        first = first_use_order(problem, start.assignment) if start is not None else None
        # the solver gets what the build and the first plan left of the limit, less the polish
        polish_s = POLISH_LIMIT_S if interchangeable(problem) and self.time_limit_s is not None else 0.0
        left_s = None if self.time_limit_s is None else \
            self.time_limit_s - (time.perf_counter() - began) - polish_s
        status, gap = self._solve(model, first, left_s)
        elapsed = time.perf_counter() - began
        if status == "Infeasible":
            raise InfeasibleError(self.diagnose(problem))
        chosen = _chosen(model)
        if status != "Optimal" and len(chosen) != len(problem.layers):
            raise PlanError(f"deepx: solver {self.solver} returned {status} without a plan after "
                            f"{elapsed:.2f} s (time limit {self.time_limit_s} s)")
        # optimal only when the solver says so (not stopped by its limit) and the gap it
        # proved, raised by any known bound, is within this planner's tolerance
        optimal = (status == "Optimal" and model.prob.sol_status == pulp.LpSolutionOptimal
                   and gap is not None and self._within(gap))
        plan = evaluate(problem, chosen, self.name, solver=self.solver, solve_time_s=elapsed,
                        gap=gap, status="optimal" if optimal else "feasible")
        return plan if optimal or not polish_s else self._polished(problem, model, plan, polish_s, began)

    def _polished(self, problem: Problem, model: _Model, plan: Plan, limit_s: float, began: float) -> Plan:
        """``plan`` (the solver's last incumbent) after local search, its gap against the
        solver's bound (random 200-node graph on 4 instances: 2.542 -> 2.503 times the
        obvious bound in 0.3 s)."""
        better = improve(problem, plan, limit_s)
        if better.objective_value >= plan.objective_value:
            return plan
        return self._answer(problem, better, max(_dual_bound(model), model.bound or -np.inf), began)

    def _answer(self, problem: Problem, plan: Plan, bound: float, began: float) -> Plan:
        """``plan`` as this planner's answer: in execution order, with its gap against ``bound``."""
        gap = _gap(plan.objective_value, bound)
        return evaluate(problem, first_use_order(problem, plan.assignment), self.name, solver=self.solver,
                        solve_time_s=time.perf_counter() - began, gap=gap,
                        status="optimal" if self._within(gap) else "feasible")

    def _within(self, gap: float) -> bool:
        """Whether ``gap`` is proven within this planner's tolerance: its ``gap`` (at least
        1e-6: below that the solver's own tolerances decide), plus GAP_ROUNDING."""
        return gap <= max(self.gap, 1e-6) + GAP_ROUNDING

    def _by_columns(self, problem: Problem, model: _Model, start: Plan | None, began: float) -> Plan:
        """Column generation over the identical instances (plan/columns.py) for most of the
        time limit; if its bound does not prove the best plan within the gap, the compact
        program closes the rest from that plan, with the column bound as a row.  The gap
        is the best plan's against the best of the bounds."""
        limit = self.time_limit_s or 0.0
        feasible = [start] if start is not None and start.status == "feasible" else []
        result = column_generation(problem, feasible, COLUMN_SHARE * limit, gap=self.gap)
        bounds = [model.bound or -np.inf]
        if result is not None:
            bounds.append(result.bound)
            feasible += [result.plan] if result.plan is not None else []
            model.raise_bound(result.bound)
        best = min(feasible, key=lambda p: p.objective_value, default=None)
        if best is None or not self._within(_gap(best.objective_value, max(bounds))):
            first = first_use_order(problem, best.assignment) if best is not None else None
            status, _ = self._solve(model, first, limit - (time.perf_counter() - began))
            if status == "Infeasible":
                raise InfeasibleError(self.diagnose(problem))
            chosen = _chosen(model)
            if len(chosen) == len(problem.layers):
                feasible.append(evaluate(problem, chosen, self.name))
            bounds.append(_dual_bound(model))
        feasible = [p for p in feasible if p.status == "feasible"]
        if not feasible:
            raise PlanError(f"deepx: no plan found in {self.time_limit_s} s ({_memory_message(problem)})")
        return self._answer(problem, min(feasible, key=lambda p: p.objective_value), max(bounds), began)

    @staticmethod
    def _heuristic_start(problem: Problem, time_limit_s: float | None = None) -> Plan | None:
        """A first incumbent: the best feasible plan of the memory-aware greedy and, with
        interchangeable instances, the segment heuristic and the pooled plan, then improved
        by local search (None when none finds one)."""
        from deepx_sim.plan.baselines import GreedyPlanner

        try:
            plans = [GreedyPlanner().plan(problem)]
        except DeepxError:
            plans = []
        plans += [segment_plan(problem), pooled_plan(problem, time_limit_s)]
        feasible = [p for p in plans if p is not None and p.status == "feasible"]
        best = min(feasible, key=lambda p: p.objective_value, default=None)
        if best is None or not interchangeable(problem):
            return best
        # the local search gets a tenth of the planner's limit at most (5 s by default)
        return improve(problem, best, search_limit_s(time_limit_s))

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


Terms = list[tuple[pulp.LpVariable, float]]


class _BatchHiGHS(pulp.HiGHS):
    """PuLP's HiGHS interface, passing columns, integrality and rows to HiGHS in three
    calls instead of one call per variable and per row (BERT-base: 0.37 s -> 0.05 s),
    and an optional starting solution (``start``: values of some variables)."""

    start: dict[pulp.LpVariable, float] | None = None

    def buildSolverModel(self, lp: pulp.LpProblem) -> None:
        import highspy

        inf = highspy.kHighsInf
        variables = lp.variables()
        for i, var in enumerate(variables):
            var.index = i
        sign = -1.0 if lp.sense == pulp.LpMaximize else 1.0
        cost = np.array([sign * lp.objective.get(v, 0.0) for v in variables])
        lower = np.array([-inf if v.lowBound is None else v.lowBound for v in variables], dtype=float)
        upper = np.array([inf if v.upBound is None else v.upBound for v in variables], dtype=float)
        model = lp.solverModel
        model.addCols(len(variables), cost, lower, upper, 0, np.zeros(0, np.int32),
                      np.zeros(0, np.int32), np.zeros(0))
        integer = np.array([v.index for v in variables if v.cat == pulp.LpInteger], dtype=np.int32)
        if self.mip and len(integer):
            model.changeColsIntegrality(len(integer), integer,
                                        np.full(len(integer), 1, dtype=np.uint8))  # kInteger
        starts, index, value, row_lo, row_hi = [], [], [], [], []
        for i, constraint in enumerate(lp._constraints.values()):
            constraint.index = i
            starts.append(len(index))
            for var, coef in constraint.items():
                if coef != 0:
                    index.append(var.index)
                    value.append(coef)
            lo, hi = constraint.getLb(), constraint.getUb()
            row_lo.append(-inf if lo is None else lo)
            row_hi.append(inf if hi is None else hi)
        for terms, sense, rhs in getattr(lp, "raw_rows", ()):
            starts.append(len(index))
            columns = [var.index for var, _ in terms]
            if len(set(columns)) < len(columns):  # a variable named twice: coefficients summed
                terms = list(_expr(terms).items())
                columns = [var.index for var, _ in terms]
            index += columns
            value += [coef for _, coef in terms]
            row_lo.append(rhs if sense != pulp.LpConstraintLE else -inf)
            row_hi.append(rhs if sense != pulp.LpConstraintGE else inf)
        model.addRows(len(starts), np.array(row_lo, dtype=float), np.array(row_hi, dtype=float),
                      len(index), np.array(starts, dtype=np.int32), np.array(index, dtype=np.int32),
                      np.array(value, dtype=float))
        if self.start:
            model.setSolution(len(self.start), np.array([v.index for v in self.start], dtype=np.int32),
                              np.array(list(self.start.values()), dtype=float))


class _Variable(pulp.LpVariable):
    """An LpVariable made without PuLP's per-variable checks (name sanitising, finite
    bounds, deprecation), which cost more than the rest of a ViT-B/16 build's variables:
    the builder's names are plain and its bounds 0, 1 or None.  PuLP is pinned below 3.4
    (pyproject.toml) and the planner tests exercise every attribute set here."""

    def __init__(self, name: str, lowBound: float | None, upBound: float | None, cat: str) -> None:
        self._LpElement__name = name  # what LpElement.name reads
        self.hash = id(self)
        self.modified = True
        if cat == pulp.LpBinary:
            lowBound, upBound, cat = 0, 1, pulp.LpInteger
        self._lowbound_original = self.lowBound = lowBound
        self._upbound_original = self.upBound = upBound
        self.cat = cat
        self.varValue = None
        self.dj = None


class _Program(pulp.LpProblem):
    """An LpProblem that skips PuLP's bookkeeping on the builder's hot path.

    Variables are all made by :meth:`add_variable` and registered then, once (PuLP 3
    registers every variable of every row as the row is added and scans all rows again
    on each ``variables()`` call).  Rows from :meth:`add_row` stay (terms, sense, rhs)
    lists, which :class:`_BatchHiGHS` reads directly; any other solver, or a look at
    ``constraints``, first turns them into PuLP constraints.  Together: a third of
    ViT-B/16's build.
    """

    def __init__(self, name: str, sense: int) -> None:
        super().__init__(name, sense)
        self.raw_rows: list[tuple[Terms, int, float]] = []

    def add_variable(self, name: str, lowBound: float | None = None, upBound: float | None = None,
                     cat: str = pulp.LpContinuous) -> pulp.LpVariable:
        var = _Variable(name, lowBound, upBound, cat)
        self._register_variable(var)
        return var

    def add_row(self, terms: Terms, sense: int, rhs: float = 0.0) -> None:
        self.raw_rows.append((terms, sense, rhs))

    def addConstraint(self, constraint: pulp.LpConstraint, name: str | None = None) -> None:
        if name:
            constraint.name = name
        if constraint.name in self._constraints or not constraint.name:
            super().addConstraint(constraint, name)  # PuLP's naming and overlap rules
            return
        self._constraints[constraint.name] = constraint
        self.modifiedConstraints.append(constraint)

    def variables(self) -> list[pulp.LpVariable]:
        return self._variables

    @property
    def constraints(self) -> dict[str, pulp.LpConstraint]:  # type: ignore[override]
        self.materialize()
        return self._constraints

    @constraints.setter
    def constraints(self, value: dict[str, pulp.LpConstraint]) -> None:
        self._constraints = value

    def materialize(self) -> None:
        """Turn the raw rows into PuLP constraints (for solvers that read only those)."""
        rows, self.raw_rows = getattr(self, "raw_rows", []), []
        for i, (terms, sense, rhs) in enumerate(rows, start=len(self._constraints)):
            self.addConstraint(pulp.LpConstraint(_expr(terms), sense, rhs=rhs), name=f"r{i}")

    def solve(self, solver: Any = None, **kwargs: Any) -> int:
        if not isinstance(solver, _BatchHiGHS):
            self.materialize()
        return super().solve(solver, **kwargs)


class _Builder:
    """Builds the program part by part; each part adds variables, constraints and
    (variable, coefficient) terms of latency, energy and accuracy loss.

    Coefficient lists may name a variable twice (layer cost + result transfer);
    LpAffineExpression keeps only the last pair, so they are summed in _expr.
    """

    def __init__(self, problem: Problem, presolve: bool = True, fanout: int = FANOUT,
                 split_copies: bool = True) -> None:
        self.problem = problem
        self.presolve = presolve
        self.fanout = fanout
        self.split_copies = split_copies
        self.costs = problem.costs
        self.procs = problem.processors
        self.remote = {p for p in self.procs if problem.platform.processor(p).is_remote}
        self.prob = _Program("deepx", pulp.LpMinimize)
        self.x: dict[tuple[str, str, Variant], pulp.LpVariable] = {}
        self.lat: Terms = []
        self.energy: Terms = []
        self.loss: Terms = []
        self.span: Terms = []  # radio transfer and cloud latency (the rule's span_s)
        self.local_lat: list[Terms] = []  # per layer in order: its latency if local
        self.params: dict[str, Terms] = {p: [] for p in self.procs}
        self.assign: dict[tuple[str, str], list[pulp.LpVariable]] = {}
        self.act_bytes: dict[str, int] = {}
        self.max_params: dict[str, int] = dict.fromkeys(self.procs, 0)
        self._n = 0
        self.linked: dict[tuple[str, object], pulp.LpVariable] = {}

    def var(self, prefix: str, binary: bool = False) -> pulp.LpVariable:
        self._n += 1
        return self.prob.add_variable(f"{prefix}{self._n}", 0, 1,
                                      cat=pulp.LpBinary if binary else pulp.LpContinuous)

    def on(self, layer: str, p: str, coef: float = 1.0) -> Terms:
        """``coef`` times "``layer`` runs on ``p``" (the sum of its variables there), as terms."""
        return [(v, coef) for v in self.assign.get((layer, p), [])]

    def row(self, terms: Terms, sense: int, rhs: float = 0.0) -> None:
        """Add sum(terms) (sense) rhs, sense one of pulp.LpConstraintLE/EQ/GE: kept as the
        terms, without PuLP's expression arithmetic (the builder's hot path)."""
        self.prob.add_row(terms, sense, rhs)

    def pay(self, var: pulp.LpVariable, latency_s: float, energy_j: float) -> None:
        self.lat.append((var, latency_s))
        self.energy.append((var, energy_j))

    def pay_transfer(self, var: pulp.LpVariable, size: int, p: str, q: str) -> None:
        t = self.costs.transfer_cost(size, p, q)  # (cached by the cost model)
        self.pay(var, t.latency_s, t.energy_j)
        if t.route in ("uplink", "downlink"):
            self.span.append((var, t.latency_s))

    # ------------------------------------------------------------ placement
    def placement(self) -> None:
        """x[l,p,v]: one processor and variant per layer, the input on the sensor."""
        problem, bits = self.problem, self.costs.activation_bits
        options = {lay.name: self._options(lay) for lay in problem.layers}
        if self.presolve:
            options = self._presolved(options)
        for lay in problem.layers:
            self.act_bytes[lay.name] = lay.input_bytes(bits) + lay.output_bytes(bits)
            by_proc: dict[str, list[Option]] = {}
            for opt in options[lay.name]:
                by_proc.setdefault(opt.processor, []).append(opt)
            self.local_lat.append([])
            linked = _linkable({p: [o.variant for o in opts] for p, opts in by_proc.items()})
            for p, opts in by_proc.items():
                for opt in opts:
                    var = self.var("x", binary=not linked)
                    self.x[(lay.name, p, opt.variant)] = var
                    self._pay_option(opt, var)
                self.max_params[p] += max(o.param_bytes for o in opts)
            if linked:
                self._link(lay.name, {p: [o.variant for o in opts] for p, opts in by_proc.items()})
            else:
                for p, opts in by_proc.items():
                    self.assign[(lay.name, p)] = [self.x[(lay.name, p, o.variant)] for o in opts]
            one = [(v, 1.0) for p in by_proc for v in self.assign[(lay.name, p)]]
            self.row(one, pulp.LpConstraintEQ, 1.0)

    def _options(self, lay: Layer) -> list[Option]:
        """Every processor and variant ``lay`` may run in, with its costs."""
        problem = self.problem
        allowed = [problem.sensor] if lay.kind == LayerKind.INPUT else self.procs
        out = []
        for p in allowed:
            for v in problem.variants(lay, p):
                cost = self.costs.layer_cost(lay.name, p, v)
                loss = problem.loss(lay, v)
                out.append(Option(p, v, cost.latency_s, cost.energy_j, loss, cost.param_bytes))
        if not out:
            raise PlanError(f"layer {lay.name!r} has no processor that can run it")
        return out

    def _presolved(self, options: dict[str, list[Option]]) -> dict[str, list[Option]]:
        """The options left after dropping dominated ones (:mod:`deepx_sim.plan.presolve`)."""
        problem = self.problem
        binds = {p: self.memory_may_bind(p, sum(max((o.param_bytes for o in opts if o.processor == p),
                                                    default=0) for opts in options.values()))
                 for p in self.procs}
        queued = {p for p, s in problem.conditions.queued_s.items() if s > 0}
        # instances of a processor class stay out: symmetry() relabels plans among them,
        # which a dominance between them (or with them) could contradict
        grouped = {p for p in self.procs if problem.platform.processor(p).klass != p}
        movable = {p for p in self.procs if p not in self.remote | queued | grouped}
        colocated = {m for members in colocation(problem.graph).values() for m in members}
        together = {lay.name for lay in problem.layers if colocated.intersection(fused_members(lay))}
        return presolved(problem, options, movable, binds, together)

    def _pay_option(self, opt: Option, var: pulp.LpVariable) -> None:
        """The latency, energy, parameters and accuracy loss of one option."""
        self.pay(var, opt.latency_s, opt.energy_j)
        (self.span if opt.processor in self.remote else self.local_lat[-1]).append((var, opt.latency_s))
        self.params[opt.processor].append((var, opt.param_bytes))
        if opt.loss > 0:
            self.loss.append((var, opt.loss))

    def _link(self, name: str, options: dict[str, list[Variant]]) -> None:
        """Processor binaries a[p] and rank binaries k[r] with continuous x[p,r] whose sums
        over r and over p equal them: x = a[p] k[r] at integer points, the LP relaxation is
        the same as with binary x, and the search branches on processors and ranks."""
        ranks: dict[int | None, list[pulp.LpVariable]] = {}
        for p, variants in options.items():
            a = self.var("a", binary=True)
            self.assign[(name, p)] = [a]
            self.linked[(name, p)] = a
            self.row([(self.x[(name, p, v)], 1.0) for v in variants] + [(a, -1.0)], pulp.LpConstraintEQ)
            for v in variants:
                ranks.setdefault(v.rank, []).append(self.x[(name, p, v)])
        for rank, xs in ranks.items():
            k = self.var("k", binary=True)
            self.linked[(name, ("rank", rank))] = k
            self.row([(x, 1.0) for x in xs] + [(k, -1.0)], pulp.LpConstraintEQ)

    # ------------------------------------------------------------ transfers
    def transfers(self) -> None:
        """Flows per edge, deduplicated per destination processor; or, where a copy between
        two processors costs a copy out of the first plus one into the second, the two
        halves apart (:meth:`_split_transfers`).  For a producer with one consumer that
        relaxes exactly as the flows do, with a ninth of the variables on nine processors;
        with several consumers it relaxes further (ResNet-50's profiled graph: root 1.50
        against 1.78 times the obvious bound, below its segment bound of 3.57 either way).
        Split throughout all the same: with flows kept for producers of several consumers,
        a 60 s plan of the random 400-node graph did not finish its root LP at load 5
        (gap 63.6 %); split throughout, it did (gap 14.7 %)."""
        outputs = set(self.problem.output_layers())
        rates = self._copy_rates()
        for lay in self.problem.layers:
            size_out = lay.output_bytes(self.costs.activation_bits)
            if rates is not None:
                self._split_transfers(lay.name, size_out, lay.name in outputs, *rates)
            else:
                self._layer_transfers(lay.name, size_out, lay.name in outputs)

    def _copy_rates(self) -> tuple[tuple[float, float], dict[str, tuple[float, float]]] | None:
        """Per byte, the (latency, energy) of a copy out of any processor but the sensor, and
        of a copy into each processor (none into the sensor), when every copy between two
        processors costs their sum: copies through the sensor's memory (``copies_via_sensor``)
        at one power, nothing remote (the profiled graphs' platforms).  None otherwise."""
        sensor, size = self.problem.sensor, 1 << 20
        others = [p for p in self.procs if p != sensor]
        if not self.split_copies or self.remote or not others or not self.problem.platform.copies_via_sensor:
            return None

        def rate(p: str, q: str) -> tuple[float, float]:
            t = self.costs.transfer_cost(size, p, q)
            return t.latency_s / size, t.energy_j / size

        out = rate(others[0], sensor)
        into = {q: rate(sensor, q) for q in others} | {sensor: (0.0, 0.0)}
        pairs = [(p, q) for p in self.procs for q in self.procs if p != q]
        expected = {(p, q): ((0.0, 0.0) if p == sensor else out, into[q]) for p, q in pairs}
        if all(np.allclose(rate(p, q), np.add(*expected[(p, q)]), rtol=1e-9, atol=0) for p, q in pairs):
            return out, into
        return None

    def _split_transfers(self, u: str, size_out: int, is_output: bool, out: tuple[float, float],
                         into: dict[str, tuple[float, float]]) -> None:
        """Per processor q that some consumer of u may run on: y = u's output is needed on q
        and u is not there (a copy into q), c = that and u is not on the sensor either
        (a copy out of u's processor).  Each is at least a consumer's share on q less u's,
        so the relaxation charges what the per-edge flows charge for one consumer.  As
        with the flows, a copy to q moves the largest tensor any consumer reads."""
        sensor = self.problem.sensor
        consumers = list(self.problem.graph.successors(u))
        for q in self.procs:
            feeders = [v for v in consumers if (v, q) in self.assign]
            to_sensor = is_output and q == sensor
            if not feeders and not to_sensor:
                continue
            size = max([self.costs.edge_bytes(u, v) for v in feeders] + ([size_out] if to_sensor else []))
            # (terms, rhs): "needed on q" is a consumer there, or 1 for the result
            needs = [(self.on(v, q, -1.0), 0.0) for v in feeders] + ([([], 1.0)] if to_sensor else [])
            if q != sensor and into[q] != (0.0, 0.0):
                y = self.var("y")
                for need, rhs in needs:
                    self.row([(y, 1.0), *need, *self.on(u, q)], pulp.LpConstraintGE, rhs)
                self.pay(y, into[q][0] * size, into[q][1] * size)
            if out != (0.0, 0.0):
                c = self.var("c")
                away = self.on(u, q) + ([] if q == sensor else self.on(u, sensor))
                for need, rhs in needs:
                    self.row([(c, 1.0), *need, *away], pulp.LpConstraintGE, rhs)
                self.pay(c, out[0] * size, out[1] * size)

    def _edge_flows(self, u: str, v: str, src_procs: list[str]) -> dict[tuple[str, str], pulp.LpVariable]:
        """z[p,q] for edge u->v: sums over q and over p equal u's and v's assignments."""
        dst_procs = [q for q in self.procs if (v, q) in self.assign]
        z = {(p, q): self.var("z") for p in src_procs for q in dst_procs}
        for p in src_procs:
            self.row([(z[(p, q)], 1.0) for q in dst_procs] + self.on(u, p, -1.0), pulp.LpConstraintEQ)
        for q in dst_procs:
            self.row([(z[(p, q)], 1.0) for p in src_procs] + self.on(v, q, -1.0), pulp.LpConstraintEQ)
        return z

    def _layer_transfers(self, u: str, size_out: int, is_output: bool) -> None:
        costs, sensor = self.costs, self.problem.sensor
        src_procs = [p for p in self.procs if (u, p) in self.assign]
        consumers = list(self.problem.graph.successors(u))
        sizes = {v: costs.edge_bytes(u, v) for v in consumers}
        if len(consumers) >= self.fanout:
            self._fanout_transfers(u, src_procs, consumers, max(sizes.values()), size_out if is_output else 0)
            return
        per_edge = {v: self._edge_flows(u, v, src_procs) for v in consumers}
        if len(consumers) == 1 and not is_output:  # one consumer: pay on the flow itself
            v = consumers[0]
            for (p, q), var in per_edge[v].items():
                if p != q:
                    self.pay_transfer(var, sizes[v], p, q)
            return
        for p in src_procs:
            for q in self.procs:
                if q == p:
                    continue
                feeders = [per_edge[v][(p, q)] for v in consumers if (p, q) in per_edge[v]]
                to_sensor = is_output and q == sensor
                if not feeders and not to_sensor:
                    continue
                size = max([sizes[v] for v in consumers if (p, q) in per_edge[v]]
                           + ([size_out] if to_sensor else []))
                if to_sensor and not consumers:  # result only: linear in a(u, p)
                    for var in self.assign[(u, p)]:
                        self.pay_transfer(var, size, p, q)
                    continue
                w = self.var("w")  # u's output is sent p -> q at all
                for f in feeders:
                    self.row([(w, 1.0), (f, -1.0)], pulp.LpConstraintGE)
                if to_sensor:
                    self.row([(w, 1.0), *self.on(u, p, -1.0)], pulp.LpConstraintGE)
                self.pay_transfer(w, size, p, q)

    def _fanout_transfers(self, u: str, src_procs: list[str], consumers: list[str], size: int,
                          result_bytes: int) -> None:
        """w[p,q]: u's output goes p -> q, needed when some consumer runs on q and u does not;
        one constraint per consumer and processor instead of a flow per edge."""
        sensor = self.problem.sensor
        w = {(p, q): self.var("w") for p in src_procs for q in self.procs if q != p}
        for (p, q), var in w.items():
            self.row([(var, 1.0), *self.on(u, p, -1.0)], pulp.LpConstraintLE)
            self.pay_transfer(var, max(size, result_bytes) if q == sensor else size, p, q)
        for q in self.procs:
            into = [w[(p, q)] for p in src_procs if p != q]
            for v in consumers:
                if (v, q) in self.assign:
                    needs = self.on(v, q, -1.0) + self.on(u, q)
                    self.row([(x, 1.0) for x in into] + needs, pulp.LpConstraintGE)
            if result_bytes and q == sensor:
                self.row([(x, 1.0) for x in into] + self.on(u, q), pulp.LpConstraintGE, 1.0)

    # ------------------------------------------------------------ radio
    def radio(self) -> None:
        """r = 1 if any layer runs remotely; the radio rule's promotion and tail."""
        if not self.remote:
            return
        r = self.prob.add_variable("radio", 0, 1, cat=pulp.LpBinary)
        for (_layer, p), vars_ in self.assign.items():
            if p in self.remote:
                for var in vars_:
                    self.row([(r, 1.0), (var, -1.0)], pulp.LpConstraintGE)
        model = self.costs.link.radio  # type: ignore[union-attr]
        promotion = self._promotion(r)
        awake = _expr(self.span)  # time the request holds the radio awake
        if promotion is not None:
            self.pay(promotion, model.promotion_s, model.promotion_energy_j)
            awake += model.promotion_s * promotion
        self._tail(r, awake, sum(coef for _, coef in self.span) + model.promotion_s)

    def _promotion(self, r: pulp.LpVariable) -> pulp.LpVariable | None:
        """The variable that pays the promotion (None: never paid)."""
        c = self.problem.conditions
        if c.radio_state == "idle":
            return r
        bounds = [max((coef for _, coef in terms), default=0.0) for terms in self.local_lat]
        if c.radio_state == "promoting" or c.tail_left_s > sum(bounds):
            return None  # the tail outlasts any local work before the first cloud layer
        # connected with tail_left_s: no promotion (y = 1) only if the local latency before
        # the first remote layer, sum(u), fits in it; f[i] may reach 1 only once a remote
        # layer has appeared at or before position i
        y = self.var("conn", binary=True)
        p = self.var("promo")
        self.prob += p >= r - y
        seen: list[pulp.LpVariable] = []
        prefix = []
        for lay, terms, bound in zip(self.problem.layers, self.local_lat, bounds, strict=True):
            seen += [v for q in self.remote for v in self.assign.get((lay.name, q), [])]
            if not terms:
                continue
            f, u = self.var("f"), self.prob.add_variable(f"u{self._n}", 0)
            self.prob += f <= pulp.lpSum(seen)
            self.prob += u >= _expr(terms) - bound * f
            prefix.append(u)
        self.prob += pulp.lpSum(prefix) <= c.tail_left_s + sum(bounds) * (1 - y)
        return p

    def _tail(self, r: pulp.LpVariable, awake: pulp.LpAffineExpression, span_ub: float) -> None:
        """t >= the tail energy of x = next_gap_s * r - awake (awake <= span_ub):
        piecewise linear, convex pieces as cuts, otherwise one binary per piece."""
        model = self.costs.link.radio  # type: ignore[union-attr]
        full_j = tail_energy_j(model, model.tail_s)
        gap = self.problem.conditions.next_gap_s
        if gap is None or gap == float("inf") or gap - span_ub >= model.tail_s:
            self.pay(r, 0.0, full_j)
            return
        pieces = [p for p in tail_pieces(model) if p[0] < gap and p[1] > gap - span_ub]
        t = self.prob.add_variable("tail", 0)
        self.pay(t, 0.0, 1.0)
        x = gap * r - awake
        if all(a[3] <= b[3] for a, b in itertools.pairwise(pieces)):  # convex
            for _, _, intercept, slope in pieces:
                self.prob += t >= intercept * r + slope * x
            return
        big_x = gap + span_ub + model.tail_s
        big_t = full_j + max(p[3] for p in pieces) * (gap + span_ub)
        ys = []
        for start, end, intercept, slope in pieces:
            y = self.var("piece", binary=True)
            ys.append(y)
            self.prob += t >= intercept * r + slope * x - big_t * (1 - y)
            if start > -big_x:
                self.prob += x >= start - big_x * (1 - y)
            if end < big_x:
                self.prob += x <= end + big_x * (1 - y)
        self.prob += pulp.lpSum(ys) == r

    # ------------------------------------------------------------ our own queue
    def queue(self) -> None:
        """q >= queued_s[p] for every processor p the plan uses: it waits for the
        longest of our own queues among them."""
        queued = {p: s for p, s in self.problem.conditions.queued_s.items() if s > 0 and p in self.procs}
        if not queued:
            return
        q = self.prob.add_variable("queue_wait", 0)
        self.pay(q, 1.0, 0.0)
        for p, wait_s in queued.items():
            uses = self.var("uses")
            for var in (v for (_, proc), vs in self.assign.items() if proc == p for v in vs):
                self.row([(uses, 1.0), (var, -1.0)], pulp.LpConstraintGE)
            self.prob += q >= wait_s * uses

    # ------------------------------------------------------------ colocation and symmetry
    def colocation(self) -> None:
        """Layers of one colocation class (profiled graphs) run on one processor; a layer
        fused into a unit stands for its unit."""
        unit_of = {m: lay.name for lay in self.problem.layers for m in fused_members(lay)}
        for members in colocation(self.problem.graph).values():
            units = list(dict.fromkeys(unit_of[m] for m in members if m in unit_of))
            for first, other in itertools.pairwise(units):
                for p in self.procs:
                    self.row(self.on(first, p) + self.on(other, p, -1.0), pulp.LpConstraintEQ)

    def symmetry(self) -> None:
        """Instances of one processor class (``count: k``) under the same load and queue
        are interchangeable, so some optimum uses them in order of first use: instance j
        may run a layer only once instance j-1 has run an earlier one (``seen`` counts)."""
        for members in interchangeable(self.problem):
            seen: list[pulp.LpVariable | None] = [None] * len(members)
            for lay in self.problem.layers:
                for j in range(1, len(members)):
                    before = [] if seen[j - 1] is None else [(seen[j - 1], -1.0)]
                    if self.on(lay.name, members[j]):
                        self.row(self.on(lay.name, members[j]) + before, pulp.LpConstraintLE)
                for j, p in enumerate(members):
                    if self.on(lay.name, p):
                        count = self.prob.add_variable(f"seen{lay.order}_{p}", 0)
                        carried = [] if seen[j] is None else [(seen[j], -1.0)]
                        self.row([(count, 1.0), *self.on(lay.name, p, -1.0), *carried], pulp.LpConstraintEQ)
                        seen[j] = count

    # ------------------------------------------------------------ memory
    def memory(self) -> None:
        """Parameters plus the largest activation footprint fit each processor: in shares
        of its memory, so that byte counts (up to 1e9) do not wreck the solver's numerics
        (in bytes, HiGHS stalled on GNMT's LP relaxation for a minute)."""
        for p in self.procs:
            if not self.memory_may_bind(p, self.max_params[p]):
                continue
            cap = float(self.problem.platform.processor(p).usable_memory_bytes)
            m = self.prob.add_variable(f"mem_act_{p}", 0)
            for layer_name, size in self.act_bytes.items():
                if (layer_name, p) in self.assign:
                    self.row([(m, 1.0), *self.on(layer_name, p, -size / cap)], pulp.LpConstraintGE)
            share = [(var, size / cap) for var, size in self.params[p]]
            self.row([*share, (m, 1.0)], pulp.LpConstraintLE, 1.0)

    def memory_may_bind(self, p: str, max_param_bytes: int) -> bool:
        """Whether ``max_param_bytes`` of parameters and the largest activation footprint
        can exceed ``p``'s memory (if not, no plan needs a memory row for ``p``)."""
        cap = self.problem.platform.processor(p).usable_memory_bytes
        return max_param_bytes + self.largest_act_bytes > cap

    @cached_property
    def largest_act_bytes(self) -> int:
        """The largest input + output footprint of one layer."""
        bits = self.costs.activation_bits
        return max(lay.input_bytes(bits) + lay.output_bytes(bits) for lay in self.problem.layers)

    # ------------------------------------------------------------ objective
    def objective(self, *, deadline: bool, objective: str | None, energy_budget: bool) -> _Model:
        """Deadline, accuracy and energy-budget constraints, and the objective."""
        c = self.problem.constraints
        prob = self.prob
        # raw rows (repeated variables are summed when HiGHS reads them): PuLP's arithmetic
        # on expressions of 15,000 terms took a fifth of a ViT-B/16 build
        if deadline:
            self.row(self.lat, pulp.LpConstraintLE, c.deadline_s)
        if self.loss:
            self.row(self.loss, pulp.LpConstraintLE, c.max_accuracy_loss)
        if energy_budget and c.energy_budget_j is not None:
            self.row(self.energy, pulp.LpConstraintLE, c.energy_budget_j)
        objective = objective or c.objective
        weights = {"energy": (1.0, 0.0), "latency": (0.0, 1.0)}
        per_j, per_s = weights.get(objective, (1.0, c.latency_weight_j_per_s))
        goal = ([(v, per_j * e) for v, e in self.energy if per_j]
                + [(v, per_s * t) for v, t in self.lat if per_s])
        bound = segment_bound(self.problem) if objective == c.objective else None
        if bound is not None:  # a combinatorial bound the LP relaxation does not see (segments.py)
            prob += _expr(goal) >= bound * (1 - 1e-9), "segment_bound"
        # in mJ / ms: the solver's optimality tolerances (about 1e-7 absolute) would
        # otherwise blur choices that differ by a tenth of a microsecond
        prob.setObjective(_expr([(v, OBJECTIVE_SCALE * coef) for v, coef in goal]))
        return _Model(prob, self.x, self.lat, self.energy, self.loss, self.linked, bound)


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Python's cyclic collector paused for one plan, and restored as it was.  A build
    makes tens of thousands of short-lived objects, whose full collections scanned every
    live object of the process: 15-20 % of a ViT-B/16 or DenseNet-121 plan's CPU time
    (measured with gc.callbacks).  Reference counting still frees them as they go."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _partition_bound(problem: Problem) -> bool:
    """Whether column generation gets the time after the compact program's short run: in
    its scope, and where the instances can hold every layer they run, so that the plan is
    a question of cutting the model into parts (the shipped profiled graphs).  Where some
    layers must go to the CPU, the compact relaxation's knapsack-like bound is the
    stronger one (random 200-800-node graphs, measured in benchmarks/bench_profiled.py)."""
    instances = in_scope(problem)
    if instances is None:
        return False
    cap = problem.platform.processor(instances[0]).usable_memory_bytes
    need = 0
    for lay in problem.layers:
        variants = problem.variants(lay, instances[0])
        if lay.kind != LayerKind.INPUT and variants:
            need += problem.costs.layer_cost(lay.name, instances[0], variants[0]).param_bytes
    return need <= cap * len(instances)


def _chosen(model: _Model) -> dict[str, Placement]:
    """The placements the last solve of ``model`` chose."""
    return {layer: Placement(layer, p, v) for (layer, p, v), var in model.x.items()
            if (var.varValue or 0) > 0.5}


def _gap(value: float, bound: float) -> float:
    return max(0.0, (value - bound) / value) if value > 0 else 0.0


def _dual_bound(model: _Model) -> float:
    """HiGHS's dual bound on the last solve of ``model``, unscaled (-inf if none)."""
    solver = getattr(model.prob, "solverModel", None)
    bound = float(solver.getInfo().mip_dual_bound) if solver is not None else -np.inf
    return bound / OBJECTIVE_SCALE if np.isfinite(bound) else -np.inf


def _highs_gap(info: Any, bound: float | None) -> float | None:
    """HiGHS's relative gap, its dual bound first raised to ``bound`` where that is
    higher (e.g. when a time limit stops HiGHS before its root relaxation is solved)."""
    primal = float(info.objective_function_value)
    if info.primal_solution_status != 2 or not np.isfinite(primal):  # 2: a feasible solution
        return None
    dual = float(info.mip_dual_bound)
    if bound is not None:
        dual = max(dual, bound * OBJECTIVE_SCALE)
    if not np.isfinite(dual):
        return None
    if primal <= 0.0:
        return 0.0 if dual >= primal else None
    return max(0.0, (primal - dual) / primal)


def first_use_order(problem: Problem, assignment: Mapping[str, Placement]) -> dict[str, Placement]:
    """``assignment`` with each group of interchangeable processors relabelled in order of
    first use (layers in execution order): the form the symmetry rows admit."""
    rename: dict[str, str] = {}
    for members in interchangeable(problem):
        used = list(dict.fromkeys(assignment[lay.name].processor for lay in problem.layers
                                  if lay.name in assignment and assignment[lay.name].processor in members))
        rename.update(zip(used, members, strict=False))
    return {name: replace(pl, processor=rename.get(pl.processor, pl.processor))
            for name, pl in assignment.items()}


def _linkable(options: dict[str, list[Variant]]) -> bool:
    """Whether placement and rank can be chosen by separate binaries: several processors
    and ranks, each processor with one variant per rank."""
    ranks = [[v.rank for v in vs] for vs in options.values()]
    return (len(options) > 1 and max(map(len, ranks)) > 1
            and all(len(set(r)) == len(r) for r in ranks))


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
