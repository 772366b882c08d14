"""The one model type: a layer graph with its weights.

Layers and attribute keys (layers.py), the zoo (zoo.py, built with builder.py),
ONNX read and write (onnx.py), the weight store (weights.py), the numpy
executor (execute.py) and DXTK's memory steps (memory.py)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import networkx as nx

from deepx_sim.errors import ModelError
from deepx_sim.model.layers import (
    ConvSpec,
    FcSpec,
    Layer,
    LayerKind,
    get_layer,
    layers_in_order,
    total,
)
from deepx_sim.model.memory import Footprints, footprints, peak_activation_bytes
from deepx_sim.model.zoo import ZOO, load_zoo_model, model_names

__all__ = [
    "ZOO",
    "ConvSpec",
    "FcSpec",
    "Footprints",
    "Layer",
    "LayerKind",
    "footprints",
    "get_layer",
    "layers_in_order",
    "load_model",
    "model_names",
    "peak_activation_bytes",
    "total",
]


def load_model(
    name_or_path: str | Path,
    input_shapes: Mapping[str | None, tuple[int, ...]] | None = None,
) -> nx.DiGraph:
    """A zoo model by name, an ONNX file by path (``.onnx``), or a profiled graph file
    (``.json``, :mod:`deepx_sim.model.profiled`; its platform rides in ``graph.graph``)."""
    if str(name_or_path).lower().endswith(".json"):
        from deepx_sim.model.profiled import load_profiled_graph

        return load_profiled_graph(name_or_path)
    if str(name_or_path).lower().endswith(".onnx"):
        from deepx_sim.model.onnx import load_onnx

        return load_onnx(name_or_path, input_shapes)
    if Path(name_or_path).is_file():
        raise ModelError(f"{name_or_path}: a model file must be .onnx, or .json for a profiled graph; "
                         f"zoo models are named: {', '.join(model_names())}")
    return load_zoo_model(str(name_or_path))
