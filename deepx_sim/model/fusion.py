"""Layer fusion as inference runtimes do it: one kernel for a unit, placed as one.

A convolution or fc layer followed by its batch normalisation and activation,
and an element-wise add (a residual join) followed by its activation, run as
one unit on one processor in TensorRT, TFLite and onnxruntime alike.  A
planner that places single operators may put a ReLU on another processor than
the convolution it belongs to, which no runtime would do.  :func:`fuse` returns
the graph of units: each unit is its first layer with the members' FLOPs and
parameters added (totals unchanged), its last member's output, and the
members' names in ``attrs["fused"]``.  Fused graphs are for planning; the
numpy executor and the ONNX writer take the unfused graph.
"""

from __future__ import annotations

from dataclasses import replace

import networkx as nx

from deepx_sim.model.layers import Layer, LayerKind, layers_in_order, rewrite_graph

#: What may absorb what follows it, in order: head kinds, then the kinds it swallows.
HEADS = frozenset({LayerKind.CONV, LayerKind.DEPTHWISE_CONV, LayerKind.FC, LayerKind.ADD})
FOLLOWERS = {LayerKind.BATCHNORM: 0, LayerKind.ACTIVATION: 1}


def _unit(graph: nx.DiGraph, head: Layer) -> list[Layer]:
    """The head and the layers it absorbs: a chain of single-consumer batchnorm then activation."""
    members, stage, current = [head], -1, head
    while graph.out_degree(current.name) == 1:
        nxt: Layer = graph.nodes[next(iter(graph.successors(current.name)))]["layer"]
        rank = FOLLOWERS.get(nxt.kind)
        if rank is None or rank <= stage or graph.in_degree(nxt.name) != 1:
            break
        if head.kind == LayerKind.ADD and nxt.kind == LayerKind.BATCHNORM:
            break
        members.append(nxt)
        stage, current = rank, nxt
    return members


def fuse(graph: nx.DiGraph) -> nx.DiGraph:
    """The graph of fused units (see the module docstring); a graph with nothing to fuse
    comes back as an equal copy."""
    chains: dict[str, list[Layer]] = {}
    absorbed: list[str] = []
    for lay in layers_in_order(graph):
        if lay.kind not in HEADS or lay.name in absorbed:
            continue
        members = _unit(graph, lay)
        if len(members) == 1:
            continue
        last = members[-1]
        unit = replace(lay, output_shape=last.output_shape, flops=sum(m.flops for m in members),
                       bias_params=lay.bias_params + sum(m.params for m in members[1:]),
                       attrs=(*lay.attrs, ("fused", tuple(m.name for m in members))))
        chains[lay.name] = [unit]
        absorbed += [m.name for m in members[1:]]
    fused = rewrite_graph(graph, chains, bypass=absorbed)
    fused.graph["fused"] = bool(chains)
    return fused


def fused_members(layer: Layer) -> tuple[str, ...]:
    """The layers a unit stands for (itself alone when unfused)."""
    return tuple(layer.attr("fused", (layer.name,)))
