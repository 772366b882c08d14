"""A model's per-layer table and totals as plain JSON-ready data.

This is the stable ``deepx-sim inspect --json`` format (schema_version 1):
``{"schema_version", "model", "source", "precision_bits", "layers": [...],
"totals": {...}}``; README.md documents every key.
"""

from __future__ import annotations

from typing import Any

import networkx as nx

from deepx_sim.model.layers import layers_in_order, total
from deepx_sim.model.memory import footprints, stored_sizes

SCHEMA_VERSION = 1


def model_summary(graph: nx.DiGraph, bits: int = 32) -> dict[str, Any]:
    """Per-layer rows and totals with weights at ``bits``; sizes in bytes."""
    layers = []
    for lay in layers_in_order(graph):
        row: dict[str, Any] = {
            "name": lay.name,
            "kind": str(lay.kind),
            "op_type": lay.op_type,
            "fused": list(lay.attr("fused", ())),
            "inputs": list(graph.predecessors(lay.name)),
            "input_shapes": [list(s) for s in lay.input_shapes],
            "output_shape": list(lay.output_shape),
            "params": lay.params,
            "macs": lay.macs,
            "flops": lay.flops,
            "param_bytes": lay.param_bytes(bits),
            "output_bytes": lay.output_bytes(bits),
            "fc": None if lay.fc is None else {"m": lay.fc.m, "n": lay.fc.n},
            "conv": None if lay.conv is None else {
                "c_in": lay.conv.c_in, "c_out": lay.conv.c_out, "kernel": list(lay.conv.kernel),
                "stride": list(lay.conv.stride), "groups": lay.conv.groups},
        }
        layers.append(row)
    fp = footprints(graph, bits)
    totals = {
        "layers": graph.number_of_nodes(),
        "params": fp.params,
        "macs": total(graph, "macs"),
        "flops": total(graph, "flops"),
        "param_bytes": fp.cleaned_bytes,
        **{k: v for k, v in fp.as_dict().items() if k not in ("params", "precision_bits")},
    }
    if graph.graph.get("weights") is not None:  # what the file really stores
        stored = stored_sizes(graph)
        totals["stored_weight_bytes"] = stored.weight_bytes
        totals["training_state_bytes"] = stored.training_state_bytes
    return {
        "schema_version": SCHEMA_VERSION,
        "model": graph.graph.get("name"),
        "source": graph.graph.get("source"),
        "precision_bits": bits,
        "layers": layers,
        "totals": totals,
    }
