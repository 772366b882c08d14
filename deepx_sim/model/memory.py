"""Memory footprints of a model, in the terms DXTK reports them.

DXTK (Lane et al. 2016, Figure 6) starts from a model as a training framework
saves it: 64-bit weights plus gradient buffers of the same size.  Precision
scaling shrinks both; parameter cleaning drops the gradients.  With the
original grouped AlexNet (60,965,224 parameters) that gives 930.2 MiB
original and 232.6 MiB cleaned at 32-bit, the paper's 930.3 MB and 233 MB.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

from deepx_sim.model.layers import (
    DEFAULT_ACTIVATION_BITS,
    Layer,
    layers_in_order,
    tensor_bytes,
    total,
)

MIB = 1024 * 1024


@dataclass(frozen=True)
class Footprints:
    """Model memory in bytes under DXTK's steps, plus the peak activation memory."""

    params: int
    original_bytes: int  # 64-bit weights + 64-bit gradient buffers
    scaled_bytes: int  # weights + gradients at the chosen precision
    cleaned_bytes: int  # weights only, at the chosen precision
    peak_activation_bytes: int  # largest set of live activations during one run
    precision_bits: int

    def as_dict(self) -> dict[str, int]:
        return {
            "params": self.params,
            "precision_bits": self.precision_bits,
            "original_bytes": self.original_bytes,
            "scaled_bytes": self.scaled_bytes,
            "cleaned_bytes": self.cleaned_bytes,
            "peak_activation_bytes": self.peak_activation_bytes,
        }


def model_bytes(params: int, bits: int, with_gradients: bool) -> int:
    """Bytes of ``params`` parameters at ``bits``, doubled when gradients are kept."""
    return tensor_bytes(params, bits) * (2 if with_gradients else 1)


def peak_activation_bytes(graph: nx.DiGraph, bits: int = DEFAULT_ACTIVATION_BITS) -> int:
    """Peak bytes of live activations when layers run one at a time in order.

    A layer's output is live from when the layer runs until its last consumer
    has run (graph outputs stay live to the end).  At each step the live set
    includes the running layer's inputs and its new output.
    """
    layers = layers_in_order(graph)
    last_use: dict[str, int] = {}
    for lay in layers:
        successors = list(graph.successors(lay.name))
        last_use[lay.name] = (
            max(graph.nodes[s]["layer"].order for s in successors) if successors else len(layers)
        )
    live: dict[str, int] = {}
    peak = 0
    for step, lay in enumerate(layers):
        live[lay.name] = lay.output_bytes(bits)
        peak = max(peak, sum(live.values()))
        for name in [n for n, end in last_use.items() if end == step and n in live]:
            del live[name]
    return peak


def footprints(graph: nx.DiGraph, bits: int = 32) -> Footprints:
    """DXTK's memory steps for ``graph`` with weights at ``bits`` (64, 32, 16 or 8)."""
    params = total(graph, "params")
    return Footprints(
        params=params,
        original_bytes=model_bytes(params, 64, with_gradients=True),
        scaled_bytes=model_bytes(params, bits, with_gradients=True),
        cleaned_bytes=model_bytes(params, bits, with_gradients=False),
        peak_activation_bytes=peak_activation_bytes(graph, bits),
        precision_bits=bits,
    )


@dataclass(frozen=True)
class StoredSizes:
    """What a model with weights holds, as stored: the figures ``compress`` and
    ``inspect`` both print (parameters and multiply-adds count nonzeros of sparse layers)."""

    params: int
    macs: int
    weight_bytes: int  # weights at their storage precision, biases and scales as float32
    training_state_bytes: int  # gradients, optimiser moments: dropped by parameter cleaning

    @property
    def memory_bytes(self) -> int:
        return self.weight_bytes + self.training_state_bytes

    def as_dict(self) -> dict[str, int]:
        return {"params": self.params, "macs": self.macs, "weight_bytes": self.weight_bytes,
                "training_state_bytes": self.training_state_bytes, "memory_bytes": self.memory_bytes}


def layer_weight_bytes(graph: nx.DiGraph, layer: Layer) -> int:
    """Bytes to store ``layer``'s parameters: its weight at the stored precision (a sparse
    weight pays a value and an index per nonzero, DXTK's nnz < nk/2 rule), everything else
    (biases, batchnorm, 8-bit scales) at 32 bits; 32-bit throughout without a store."""
    store = graph.graph.get("weights")
    if store is None or not store.has(layer.name):
        return tensor_bytes(layer.params, 32)
    storage = store.storage(layer.name)
    per_value = 2 if storage.sparse else 1
    scales = 0 if storage.scale is None else len(storage.scale)
    return (tensor_bytes(layer.weight_params * per_value, storage.bits)
            + tensor_bytes(layer.bias_params + scales, 32))


def stored_sizes(graph: nx.DiGraph) -> StoredSizes:
    store = graph.graph.get("weights")
    state = 0 if store is None else int(sum(np.asarray(a).nbytes for a in store.training_state.values()))
    return StoredSizes(
        params=total(graph, "params"), macs=total(graph, "macs"),
        weight_bytes=sum(layer_weight_bytes(graph, lay) for lay in layers_in_order(graph)),
        training_state_bytes=state)
