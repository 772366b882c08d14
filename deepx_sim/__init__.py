"""deepx_sim: plan and simulate deep models across mobile processors and the cloud."""

from pathlib import Path
from typing import TYPE_CHECKING

from deepx_sim.costs import Conditions, CostModel, Variant
from deepx_sim.errors import DeepxError
from deepx_sim.model import footprints, load_model, model_names
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
    "load_results",
    "model_names",
    "platform_names",
]
__version__ = "0.1.0"

if TYPE_CHECKING:
    import pandas as pd


def load_results(out_dir: str | Path, all_runs: bool = False) -> "pd.DataFrame":
    """A sweep folder's tidy table (see :func:`deepx_sim.sweep.load_results`)."""
    from deepx_sim.sweep import load_results as _load

    return _load(out_dir, all_runs)
