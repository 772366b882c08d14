"""Random small problems for the planner oracle tests (shipped in deepx_sim.plan.testing)."""

from deepx_sim.plan.testing import (
    random_attention_problem,
    random_dag,
    random_platform,
    random_problem,
    random_radio_problem,
)

__all__ = ["random_attention_problem", "random_dag", "random_platform", "random_problem",
           "random_radio_problem"]
