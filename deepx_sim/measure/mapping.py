"""Map the nodes onnxruntime ran back to the layers of the model.

onnxruntime rewrites the graph before it runs it: it folds batchnorm into the
convolution before it, fuses activations into the kernel (``FusedConv``),
drops identities, and at the highest level re-lays tensors out in blocks
(``r1_nchwc``, ``ReorderOutput``).  Two steps undo that:

1. executed node -> original ONNX nodes.  A tensor name that survives in the
   optimised graph is a fixed point.  Walking back in the original graph from
   a node's surviving outputs through tensors that vanished finds the original
   nodes it absorbed.  A node whose outputs were all renamed takes the tensor in
   its own name (``r1_nchwc`` computes ``r1``); a node that claims nothing (a
   layout reorder) joins the group of the node it feeds.
2. original ONNX node -> layer: by node name, by output tensor name (our
   writer names both after the layer), by the importer's name for an unnamed
   node, else (weight casts, bias adds) the layer it feeds.

The result is a list of groups: executed nodes whose summed time belongs to a
set of layers.  Without optimisation every group is one node and one layer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import networkx as nx


@dataclass(frozen=True)
class Group:
    """Executed nodes (names as onnxruntime reports them) and the layers they ran."""

    nodes: tuple[str, ...]
    layers: tuple[str, ...]


def _producers(graph_def: object) -> dict[str, int]:
    return {t: i for i, n in enumerate(graph_def.node) for t in n.output if t}  # type: ignore[attr-defined]


def onnx_node_layers(graph_def: object, graph: nx.DiGraph) -> dict[int, str]:
    """Original ONNX node index -> layer name, for every node that has a layer."""
    nodes = list(graph_def.node)  # type: ignore[attr-defined]
    found: dict[int, str] = {}
    for i, node in enumerate(nodes):
        candidates = [node.name, *node.output, f"{node.op_type}_{i}", f"{node.name}_{i}"]
        layer = next((c for c in candidates if c and c in graph), None)
        if layer is not None:
            found[i] = layer
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for t in node.input:
            consumers.setdefault(t, []).append(i)
    for i in range(len(nodes) - 1, -1, -1):  # helpers feed later layers: resolve back to front
        if i not in found:
            fed = [found[j] for t in nodes[i].output for j in consumers.get(t, []) if j in found]
            if fed:
                found[i] = fed[0]
    return found


def executed_groups(original: object, optimised: object, graph: nx.DiGraph) -> list[Group]:
    """Groups of executed nodes of ``optimised`` (a GraphProto) and the layers they ran."""
    orig_nodes = list(original.node)  # type: ignore[attr-defined]
    opt_nodes = list(optimised.node)  # type: ignore[attr-defined]
    producer = _producers(original)
    surviving = {t for n in opt_nodes for t in (*n.input, *n.output)}
    surviving |= {i.name for i in optimised.input}  # type: ignore[attr-defined]
    claimed: dict[int, int] = {}  # original node -> optimised node that absorbed it

    def walk_back(tensor: str, owner: int) -> None:
        stack = [tensor]
        while stack:
            i = producer.get(stack.pop())
            if i is None or i in claimed:
                continue
            claimed[i] = owner
            stack.extend(t for t in orig_nodes[i].input if t not in surviving)

    for j, node in enumerate(opt_nodes):
        outputs = [t for t in node.output if t in producer]
        if not outputs:  # renamed: a layout-changed node is named after the tensor it computes
            stem = node.name.rsplit("_", 1)[0]
            outputs = [t for t in (node.name, stem) if t in producer]
        for t in outputs:
            walk_back(t, j)
    node_layer = onnx_node_layers(original, graph)
    layers: list[set[str]] = [set() for _ in opt_nodes]
    for i, j in claimed.items():
        if i in node_layer:
            layers[j].add(node_layer[i])
    return _merge_empty(opt_nodes, layers, graph)


def _merge_empty(opt_nodes: list[object], layers: list[set[str]], graph: nx.DiGraph) -> list[Group]:
    """Join every executed node that ran no layer to the node it feeds (else the one feeding it)."""
    parent = list(range(len(opt_nodes)))

    def find(j: int) -> int:
        while parent[j] != j:
            parent[j] = parent[parent[j]]
            j = parent[j]
        return j

    producer = {t: j for j, n in enumerate(opt_nodes) for t in n.output}  # type: ignore[attr-defined]
    consumers: dict[str, list[int]] = {}
    for j, n in enumerate(opt_nodes):
        for t in n.input:  # type: ignore[attr-defined]
            consumers.setdefault(t, []).append(j)
    for j in range(len(opt_nodes)):
        if layers[j]:
            continue
        after = [k for t in opt_nodes[j].output for k in consumers.get(t, [])]  # type: ignore[attr-defined]
        before = [producer[t] for t in opt_nodes[j].input if t in producer]  # type: ignore[attr-defined]
        target = next(iter(after or before), None)
        if target is not None:
            parent[find(j)] = find(target)
    members: dict[int, list[int]] = {}
    for j in range(len(opt_nodes)):
        members.setdefault(find(j), []).append(j)
    order = {name: graph.nodes[name]["layer"].order for name in graph}
    groups = []
    for root in sorted(members):
        names = _union(layers[j] for j in members[root])
        groups.append(Group(tuple(opt_nodes[j].name for j in members[root]),  # type: ignore[attr-defined]
                            tuple(sorted(names, key=order.__getitem__))))
    return groups


def _union(sets: Iterable[set[str]]) -> set[str]:
    out: set[str] = set()
    for s in sets:
        out |= s
    return out
