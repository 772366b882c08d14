"""Layer fusion as inference runtimes do it: one kernel for a unit, placed as one.

A convolution or fc layer followed by its batch normalisation and activation,
an element-wise add (a residual join) followed by its activation or layer norm,
and attention scores followed by their scale and softmax run as one unit on
one processor in TensorRT, TFLite and onnxruntime alike; reshapes and
transposes are views of the tensor before them and run nowhere.  A
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

from deepx_sim.model.layers import NO_KERNEL_KINDS, Layer, LayerKind, layers_in_order, rewrite_graph
from deepx_sim.model.profiles import Profile, ProfileEntry

#: What each head kind absorbs after it, in this order (a stage may be skipped):
#: conv/fc + batchnorm + activation; a residual add + activation or layer norm
#: (onnxruntime's SkipLayerNormalization); attention scores + scale + softmax.
FOLLOWERS: dict[LayerKind, tuple[LayerKind, ...]] = {
    LayerKind.CONV: (LayerKind.BATCHNORM, LayerKind.ACTIVATION),
    LayerKind.DEPTHWISE_CONV: (LayerKind.BATCHNORM, LayerKind.ACTIVATION),
    LayerKind.FC: (LayerKind.BATCHNORM, LayerKind.ACTIVATION),
    LayerKind.ADD: (LayerKind.ACTIVATION, LayerKind.LAYERNORM),
    LayerKind.MATMUL: (LayerKind.ADD, LayerKind.SOFTMAX),
    LayerKind.BATCHNORM: (LayerKind.ACTIVATION,),  # pre-activation (DenseNet): one element-wise kernel
}
HEADS = frozenset(FOLLOWERS)

#: Kinds that run no kernel and are absorbed by whatever precedes them in a chain:
#: a reshape or transpose is a view of its producer's output, never a kernel of its own.
VIEWS = frozenset({LayerKind.FLATTEN, LayerKind.VIEW, LayerKind.DROPOUT})


def _absorbs(graph: nx.DiGraph, nxt: Layer, head: Layer, stage: int) -> int | None:
    """The stage ``nxt`` joins the unit at (len(followers) for a view), or None."""
    if graph.in_degree(nxt.name) != 1:
        return None
    followers = FOLLOWERS.get(head.kind, ())
    if nxt.kind in VIEWS:
        return len(followers)
    if nxt.kind not in followers or followers.index(nxt.kind) < stage:
        return None  # (a one-input add is a scale; a residual add has two inputs)
    return followers.index(nxt.kind) + 1


def _unit(graph: nx.DiGraph, head: Layer) -> list[Layer]:
    """The head and the single-consumer chain it absorbs: its followers in order, then views."""
    members, stage, current = [head], 0, head
    while graph.out_degree(current.name) == 1:
        nxt: Layer = graph.nodes[next(iter(graph.successors(current.name)))]["layer"]
        joined = _absorbs(graph, nxt, head, stage)
        if joined is None:
            break
        members.append(nxt)
        stage, current = joined, nxt
    return members


def fuse(graph: nx.DiGraph) -> nx.DiGraph:
    """The graph of fused units (see the module docstring); a graph with nothing to fuse
    comes back as an equal copy."""
    chains: dict[str, list[Layer]] = {}
    absorbed: set[str] = set()
    for lay in layers_in_order(graph):
        if lay.kind in NO_KERNEL_KINDS or lay.name in absorbed:
            continue
        members = _unit(graph, lay)
        if len(members) == 1:
            continue
        last = members[-1]
        unit = replace(lay, output_shape=last.output_shape, flops=sum(m.flops for m in members),
                       bias_params=lay.bias_params + sum(m.params for m in members[1:]),
                       attrs=(*lay.attrs, ("fused", tuple(m.name for m in members))))
        chains[lay.name] = [unit]
        absorbed.update(m.name for m in members[1:])
    fused = rewrite_graph(graph, chains, bypass=absorbed)
    fused.graph["fused"] = bool(chains)
    return fused


def fused_members(layer: Layer) -> tuple[str, ...]:
    """The layers a unit stands for (itself alone when unfused)."""
    return tuple(layer.attr("fused", (layer.name,)))


def fuse_profile(profile: Profile, fused: nx.DiGraph) -> Profile:
    """A per-layer profile as per-unit: a unit's time is the sum of its members' measured
    times on a processor (members without a row, such as views, add nothing) and its
    power the time-weighted mean, when every measured member gives one."""
    out: Profile = {}
    procs = {proc for _, proc in profile}
    for lay in layers_in_order(fused):
        members = fused_members(lay)
        for proc in procs:
            rows = [profile[(m, proc)] for m in members if (m, proc) in profile]
            if not rows:
                continue
            if len(members) == 1:
                out[(lay.name, proc)] = rows[0]
                continue
            latency_s = sum(r.latency_s for r in rows)
            powered = all(r.power_w is not None for r in rows) and latency_s > 0
            power_w = sum(r.latency_s * r.power_w for r in rows) / latency_s if powered else None  # type: ignore[operator]
            out[(lay.name, proc)] = ProfileEntry(latency_s, power_w, group=rows[0].group)
    return out
