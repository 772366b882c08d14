"""Discrete-event simulation of plans under changing conditions (SimPy)."""

from deepx_sim.sim.conditions import Outages, StepTrace, read_csv_trace, read_mahimahi
from deepx_sim.sim.engine import Battery, Simulation, SimulationResult
from deepx_sim.sim.policies import (
    CompiledPlan,
    Estimator,
    Observation,
    OraclePolicy,
    Policy,
    ReplanPolicy,
    StaticPolicy,
    World,
    compile_plan,
)
from deepx_sim.sim.records import RequestRecord
from deepx_sim.sim.registry import (
    PolicySettings,
    make_policy,
    policy_names,
    register_policy,
    unregister_policy,
)

__all__ = [
    "Battery",
    "CompiledPlan",
    "Estimator",
    "Observation",
    "OraclePolicy",
    "Outages",
    "Policy",
    "PolicySettings",
    "ReplanPolicy",
    "RequestRecord",
    "Simulation",
    "SimulationResult",
    "StaticPolicy",
    "StepTrace",
    "World",
    "compile_plan",
    "make_policy",
    "policy_names",
    "read_csv_trace",
    "read_mahimahi",
    "register_policy",
    "unregister_policy",
]
