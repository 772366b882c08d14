"""Planner quality as a feature: named instances and each planner's objective
relative to the best known on each.

``run_quality(planners, instances)`` returns one row per (instance, planner):
its objective, ``ratio`` = objective / best feasible objective on the instance
(1.0 is best; the DeepX ILP proves optimality, so ratios below 1 would expose a
bug), feasibility, and time.  A planner that finds nothing, or breaks a
constraint, gets ratio NaN and says why.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from deepx_sim.costs import Conditions
from deepx_sim.errors import DeepxError
from deepx_sim.model import load_model
from deepx_sim.plan import Constraints, Problem, get_planner
from deepx_sim.platform import load_platform


@dataclass(frozen=True)
class Instance:
    model: str
    platform: str
    link: str | None
    deadline_s: float
    uplink_mbps: float | None

    @property
    def name(self) -> str:
        bw = "nominal" if self.uplink_mbps is None else f"{self.uplink_mbps:g}Mbps"
        return f"{self.model}/{self.platform}/{self.link or 'local'}/{self.deadline_s:g}s/{bw}"

    def problem(self) -> Problem:
        conditions = Conditions(link=self.link, uplink_mbps=self.uplink_mbps)
        return Problem(load_model(self.model), load_platform(self.platform), conditions,
                       Constraints(deadline_s=self.deadline_s))


def default_instances() -> list[Instance]:
    """The shipped suite: the papers' models on the papers' platforms, three
    deadlines (user-facing 250 ms, 1 s, DeepX's 5 s) and three LTE uplinks; and
    today's CNNs and transformers on a phone with an NPU over WiFi, three
    deadlines and two uplinks."""
    models = ["speakerid", "ambient", "alexnet", "agenet", "vgg16"]
    platforms = ["tegra_k1", "snapdragon_800", "snapdragon_400"]
    out = [Instance(m, p, "lte", d, bw) for m, p, d, bw in itertools.product(
        models, platforms, (0.25, 1.0, 5.0), (1.0, 6.0, 20.0))]
    modern = ["mobilenetv2", "resnet50", "googlenet", "densenet121", "vit_b16", "bert_base"]
    out += [Instance(m, "snapdragon_8_gen_3", "wifi", d, bw) for m, d, bw in itertools.product(
        modern, (0.25, 1.0, 5.0), (6.0, 50.0))]
    return out


def run_quality(planners: Sequence[str], instances: Iterable[Instance]) -> list[dict[str, object]]:
    """Plan every instance with every planner; rows as described in the module."""
    rows: list[dict[str, object]] = []
    for inst in instances:
        problem = inst.problem()
        found: list[dict[str, object]] = []
        for name in planners:
            start = time.perf_counter()
            row: dict[str, object] = {"instance": inst.name, "model": inst.model,
                                      "platform": inst.platform, "deadline_s": inst.deadline_s,
                                      "uplink_mbps": inst.uplink_mbps, "planner": name}
            try:
                plan = get_planner(name).plan(problem)
                ok = plan.status in ("feasible", "optimal")
                row.update(objective=plan.objective_value, feasible=ok,
                           status=plan.status, energy_j=plan.energy_j, latency_s=plan.latency_s)
            except DeepxError as exc:
                row.update(objective=math.nan, feasible=False, status=str(exc).split("\n")[0],
                           energy_j=math.nan, latency_s=math.nan)
            row["time_s"] = time.perf_counter() - start
            found.append(row)
        feasible = [float(r["objective"]) for r in found if r["feasible"]]  # type: ignore[arg-type]
        best = min(feasible) if feasible else math.nan
        for r in found:
            r["best_known"] = best
            r["ratio"] = (float(r["objective"]) / best  # type: ignore[arg-type]
                          if r["feasible"] and best > 0 else math.nan)
        rows.extend(found)
    return rows
