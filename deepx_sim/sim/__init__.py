"""Discrete-event simulation of plans under changing conditions (SimPy)."""

from deepx_sim.sim.conditions import Outages, StepTrace, read_csv_trace, read_mahimahi
from deepx_sim.sim.engine import Battery, Simulation, SimulationResult
from deepx_sim.sim.policies import (
    POLICIES,
    CompiledPlan,
    Estimator,
    OraclePolicy,
    Policy,
    ReplanPolicy,
    StaticPolicy,
    World,
    compile_plan,
)

__all__ = [
    "POLICIES",
    "Battery",
    "CompiledPlan",
    "Estimator",
    "OraclePolicy",
    "Outages",
    "Policy",
    "ReplanPolicy",
    "Simulation",
    "SimulationResult",
    "StaticPolicy",
    "StepTrace",
    "World",
    "compile_plan",
    "read_csv_trace",
    "read_mahimahi",
]
