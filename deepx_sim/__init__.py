"""deepx_sim: plan and simulate deep models across mobile processors and the cloud."""

from deepx_sim.costs import Conditions, CostModel, Variant
from deepx_sim.errors import DeepxError
from deepx_sim.graph import footprints, load_model, model_names
from deepx_sim.platform import Platform, load_platform, platform_names

__all__ = [
    "Conditions",
    "CostModel",
    "DeepxError",
    "Platform",
    "Variant",
    "footprints",
    "load_model",
    "load_platform",
    "model_names",
    "platform_names",
]
__version__ = "0.1.0"
