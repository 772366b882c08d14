"""Profiled layer graphs (Tarnawski et al., NeurIPS 2020) as a model source.

The format (``data/profiled_graphs/README.md``): ``maxSizePerFPGA`` (bytes of
one accelerator's memory), ``maxFPGAs``, ``maxCPUs``, ``nodes`` with ``id``,
``name``, ``supportedOnFpga``, ``cpuLatency`` and ``fpgaLatency`` (ms),
``size`` (bytes of accelerator memory), ``colorClass`` (nodes of one class
share a device), and ``edges`` with ``sourceId``, ``destId``, ``cost`` (ms to
move the source's output between an accelerator and CPU memory) and ``size``.

How a file maps onto deepx_sim:

- each node is a layer of kind ``other`` with no kernel model: its two
  measured times are layer attributes (:data:`CPU_LATENCY`,
  :data:`ACCELERATOR_LATENCY`, seconds) that :func:`measured_profile` turns
  into a :data:`~deepx_sim.model.profiles.Profile` for any platform (kind
  ``cpu`` gets the CPU time, every other local processor the accelerator time);
- its ``size`` is its memory: stored as 32-bit parameters (``size / 4``), with
  zero-element activations, so the memory the planners count is exactly ``size``;
- the file brings its platform (:func:`file_platform`): one ``cpu`` whose memory
  never binds (their IP has no CPU memory limit and, like it, we ignore
  ``maxCPUs``) and a ``gpu`` class with
  ``count: maxFPGAs`` and ``maxSizePerFPGA`` each; no power data (0 W);
- colocation classes with more than one node are stored as
  ``graph.graph["colocation"] = {class: [layer names]}`` (see layers.py).

Transfers (the one place this is decided): the cost model charges a copy
between local processors ``bytes / shared_memory_gbps``.  Each edge gets the
bytes that the file platform's copy rate (:data:`COPY_GBPS`) turns back into
the edge's ``cost`` exactly, rather than a per-edge measured time, so every
planner, ``evaluate`` and the simulator use the cost model unchanged.  The
platform sets ``copies_via_sensor``: a copy between two accelerators goes
through CPU memory (two copies, as their IP charges ``cost`` out and ``cost``
in).  Execution differs: we run one layer at a time, their IP runs independent
branches (and any number of CPU layers) in parallel (:data:`EXECUTION_NOTE`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import networkx as nx
from pydantic import ValidationError

from deepx_sim.config import read_text, validation_message
from deepx_sim.errors import ModelError
from deepx_sim.kinds import LayerKind
from deepx_sim.model.layers import COLOCATION, Layer, colocation, layers_in_order, tensor_bytes
from deepx_sim.model.profiles import Profile, ProfileEntry
from deepx_sim.platform import Platform, ProcessorKind

#: Copy rate of the file platform: 2 GiB/s.  Every edge of the four shipped files
#: has size / cost = 2**31 B/s, so the bytes we derive equal their ``size`` field.
COPY_GBPS = 2**31 / 1e9
#: Largest memory a processor may have (platform.py's Mebibytes limit, 2**40 MiB).
MAX_MEMORY_BYTES = 2.0**60
#: Layer attribute keys of the measured times (seconds).
CPU_LATENCY = "cpu_latency_s"
ACCELERATOR_LATENCY = "accelerator_latency_s"
#: ``graph.graph[FILE_PLATFORM]``: the Platform the file brings.
FILE_PLATFORM = "platform"
OP_TYPE = "profiled"
#: Bits of the parameters that carry a node's memory (4 bytes each).
_BITS = 32
EXECUTION_NOTE = ("profiled graph: deepx_sim runs one layer at a time; the paper's IP (Tarnawski "
                  "et al. 2020) runs independent branches and CPU layers in parallel, so its "
                  "latency for the same placement can be lower")


@dataclass(frozen=True)
class ProfiledModel:
    """A profiled graph file read whole: the layer graph, its platform, its profile."""

    graph: nx.DiGraph
    platform: Platform
    profile: Profile


def is_profiled(graph: nx.DiGraph) -> bool:
    """Whether ``graph`` came from a profiled graph file."""
    return FILE_PLATFORM in graph.graph


def load_profiled(path: str | Path) -> ProfiledModel:
    """Read a profiled graph file; ModelError names the file, the node or class, the
    field and the value on bad input (a cycle, an unknown node, a negative number)."""
    graph = load_profiled_graph(path)
    platform = graph.graph[FILE_PLATFORM]
    return ProfiledModel(graph, platform, measured_profile(graph, platform))


def load_profiled_graph(path: str | Path) -> nx.DiGraph:
    """The layer graph of a profiled graph file, with its platform attached."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such profiled graph file")
    try:
        data = json.loads(read_text(path, ModelError))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ModelError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: must be a JSON object with maxSizePerFPGA, maxFPGAs, nodes, edges")
    accel_bytes = _number(path, "maxSizePerFPGA", data.get("maxSizePerFPGA"), positive=True)
    if accel_bytes > MAX_MEMORY_BYTES:
        raise ModelError(f"{path}: maxSizePerFPGA must be <= 2**60 bytes (what a platform allows), "
                         f"got {accel_bytes:g}")
    count = data.get("maxFPGAs")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ModelError(f"{path}: maxFPGAs must be a whole number >= 1, got {count!r}")
    nodes = _nodes(path, data.get("nodes"))
    graph = _graph(path, nodes, data.get("edges"))
    graph.graph[FILE_PLATFORM] = file_platform(path.stem, graph, accel_bytes, count)
    return graph


def _number(path: Path, where: str, value: Any, positive: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        rule = "> 0" if positive else ">= 0"
        raise ModelError(f"{path}: {where} must be a finite number {rule}, got {value!r}")
    return float(value)


def _nodes(path: Path, raw: Any) -> dict[int, tuple[str, Layer, Any]]:
    """id -> (name, layer without order, colour class), checked."""
    if not isinstance(raw, list) or not raw:
        raise ModelError(f"{path}: nodes must be a non-empty list of objects, got {raw!r:.60}")
    out: dict[int, tuple[str, Layer, Any]] = {}
    names: set[str] = set()
    for i, node in enumerate(raw):
        if not isinstance(node, dict) or "id" not in node:
            raise ModelError(f"{path}: nodes[{i}] must be an object with an id, got {node!r:.60}")
        name = str(node.get("name", node["id"]))
        where = f"nodes[{i}] ({name})"
        if node["id"] in out or name in names:
            raise ModelError(f"{path}: {where} repeats id {node['id']!r} or name {name!r}")
        if node.get("isBackwardNode"):
            raise ModelError(f"{path}: {where} is a backward node; only inference graphs are read")
        if node.get("supportedOnFpga", 1) in (0, False):
            raise ModelError(f"{path}: {where}.supportedOnFpga is 0; deepx_sim cannot yet keep one "
                             "layer off the accelerators (every node must be supported)")
        cpu_s = _number(path, f"{where}.cpuLatency", node.get("cpuLatency")) / 1000.0
        acc_s = _number(path, f"{where}.fpgaLatency", node.get("fpgaLatency")) / 1000.0
        size = _number(path, f"{where}.size", node.get("size", 0.0))
        layer = Layer(name=name, kind=LayerKind.OTHER, input_shapes=(), output_shape=(0,), macs=0,
                      flops=0, weight_params=math.ceil(size * 8 / _BITS), bias_params=0,
                      op_type=OP_TYPE, attrs=((ACCELERATOR_LATENCY, acc_s), (CPU_LATENCY, cpu_s)))
        out[node["id"]] = (name, layer, node.get("colorClass", f"_node{node['id']}"))
        names.add(name)
    return out


def _graph(path: Path, nodes: dict[int, tuple[str, Layer, Any]], raw: Any) -> nx.DiGraph:
    if not isinstance(raw, list):
        raise ModelError(f"{path}: edges must be a list of objects, got {raw!r:.60}")
    graph = nx.DiGraph(name=path.stem, source=str(path), weights=None)
    for name, layer, _ in nodes.values():
        graph.add_node(name, layer=layer)
    for i, edge in enumerate(raw):
        if not isinstance(edge, dict):
            raise ModelError(f"{path}: edges[{i}] must be an object with sourceId, destId, cost")
        ends = [edge.get(k) for k in ("sourceId", "destId")]
        for key, end in zip(("sourceId", "destId"), ends, strict=True):
            if end not in nodes:
                raise ModelError(f"{path}: edges[{i}].{key} {end!r} is not the id of a node")
        cost_ms = _number(path, f"edges[{i}].cost", edge.get("cost", 0.0))
        _number(path, f"edges[{i}].size", edge.get("size", 0.0))
        elements = round(cost_ms / 1000.0 * COPY_GBPS * 1e9 * 8 / _BITS)  # bytes / 4 at 32 bits
        src, dst = nodes[ends[0]][0], nodes[ends[1]][0]
        graph.add_edge(src, dst, elements=elements, size_bytes=tensor_bytes(elements, _BITS))
    if not nx.is_directed_acyclic_graph(graph):
        cycle = " -> ".join(u for u, _ in nx.find_cycle(graph))
        raise ModelError(f"{path}: the edges form a cycle through nodes {cycle}; a layer graph must "
                         "be acyclic")
    for order, name in enumerate(nx.lexicographical_topological_sort(graph, key=_id_key(nodes))):
        graph.nodes[name]["layer"] = replace(graph.nodes[name]["layer"], order=order)
    classes: dict[str, list[str]] = {}
    for name, _, colour in nodes.values():
        classes.setdefault(str(colour), []).append(name)
    graph.graph[COLOCATION] = {c: names for c, names in classes.items() if len(names) > 1}
    return graph


def _id_key(nodes: dict[int, tuple[str, Layer, Any]]) -> Any:
    """Ties in the execution order broken by the file's node ids (then names)."""
    ids = {name: node_id for node_id, (name, _, _) in nodes.items()}
    return lambda name: (str(type(ids[name])), ids[name], name)


def file_platform(name: str, graph: nx.DiGraph, accelerator_bytes: float, count: int) -> Platform:
    """The platform a profiled file describes: a CPU whose memory holds every layer (their
    IP puts no limit on it) and ``count`` accelerators of ``accelerator_bytes`` each.

    Compute and power numbers are placeholders: every time comes from the file, and it
    has no power data (0 W, so only latency can be optimised)."""
    total_bytes = sum(lay.param_bytes(_BITS) for lay in layers_in_order(graph))
    unused = {"peak_gflops": {"fp32": 1.0}, "efficiency": {"default": 1.0},
              "memory_bandwidth_gbps": 1.0, "active_power_w": 0.0}
    ident = "".join(c if c.isalnum() or c in "_-" else "_" for c in name)
    data = {
        "name": ident if ident[:1].isalnum() else f"g{ident}",
        "description": f"platform of profiled graph {name}: a CPU and {count} accelerators",
        "sources": ["Tarnawski et al., NeurIPS 2020 (msr-fiddle/dnn-partitioning)"],
        "sensor_processor": "cpu", "shared_memory_gbps": COPY_GBPS, "copies_via_sensor": True,
        "processors": [
            {"name": "cpu", "kind": "cpu", **unused,
             "usable_memory_mib": max(1.0, math.ceil(total_bytes / 2**20))},
            {"name": "gpu", "kind": "gpu", "count": count, **unused,
             "usable_memory_mib": accelerator_bytes / 2**20},
        ],
    }
    try:
        return Platform.model_validate(data)
    except ValidationError as exc:  # (memory beyond any device: the limits are in platform.py)
        raise ModelError(validation_message(f"platform of profiled graph {name}", exc, data,
                                            Platform)) from None


def measured_profile(graph: nx.DiGraph, platform: Platform) -> Profile:
    """The file's measured times as a profile for ``platform``: kind ``cpu`` gets the
    CPU time, every other local processor the accelerator time.  ModelError if the
    platform has a cloud processor (the file measures none) or a colocation class
    fits on no processor."""
    remote = [p.name for p in platform.processors if p.is_remote]
    if remote:
        raise ModelError(f"model {graph.graph.get('source')}: its times cover a CPU and accelerators; "
                         f"platform {platform.name!r} has cloud processors {remote}, which it "
                         "cannot time: use a platform without a remote")
    check_colocation(graph, platform)
    profile: Profile = {}
    for lay in layers_in_order(graph):
        for proc in platform.processors:
            key = CPU_LATENCY if proc.kind == ProcessorKind.CPU else ACCELERATOR_LATENCY
            profile[lay.name, proc.name] = ProfileEntry(latency_s=float(lay.attr(key)))
    return profile


def check_colocation(graph: nx.DiGraph, platform: Platform) -> None:
    """ModelError naming the class if a colocation class needs more memory than any
    one processor of ``platform`` has."""
    largest = max(p.usable_memory_bytes for p in platform.local_processors)
    for klass, names in colocation(graph).items():
        need = sum(graph.nodes[n]["layer"].param_bytes(_BITS) for n in names)
        if need > largest:
            raise ModelError(f"model {graph.graph.get('source')}: colocation class {klass!r} "
                             f"({len(names)} layers, {need:,} B) fits on no processor of platform "
                             f"{platform.name!r} (largest memory {largest:,} B)")


def bind_platform(graph: nx.DiGraph, platform: Platform | None, *,
                  objective: str = "latency") -> tuple[Platform, Profile | None]:
    """The platform and measured profile to plan ``graph`` with: ``platform`` if given,
    else the one its profiled file brings; the profile only for profiled graphs.

    Raises ModelError when no platform is given for a zoo or ONNX model, or when a
    profiled graph on its own (powerless) platform is asked to minimise energy."""
    if not is_profiled(graph):
        if platform is None:
            raise ModelError(f"--platform is required: model {graph.graph.get('name')!r} brings no "
                             "platform (only a profiled graph .json does); in a scenario, platform:")
        return platform, None
    own = platform is None
    platform = graph.graph[FILE_PLATFORM] if own else platform
    if own and objective != "latency":
        raise ModelError(f"model {graph.graph.get('source')}: its file has no power data (every "
                         f"processor draws 0 W), so objective {objective!r} cannot rank plans: "
                         "use objective latency (--objective latency), or a --platform with powers")
    return platform, measured_profile(graph, platform)


def notes_for(graph: nx.DiGraph) -> tuple[str, ...]:
    """Notes a plan of ``graph`` should carry (the execution-model difference)."""
    return (EXECUTION_NOTE,) if is_profiled(graph) else ()



def synthetic_profiled(nodes: int, accelerators: int, seed: int, *, memory_slack: float = 1.5,
                       colocated_pairs: int = 0) -> dict[str, Any]:
    """A random profiled graph in the file format (for tests and benchmarks): a chain of
    ``nodes`` layers with skip edges every few layers, a fifth of them zero-time views,
    accelerators 5-15x faster than the CPU, and each accelerator's memory sized to
    ``1 / (accelerators * memory_slack)`` of the layers' memory plus the largest layer's, so
    with ``memory_slack`` above 1 some layers must run on the CPU (memory binds).  ``colocated_pairs``
    pairs of neighbours share a colour class.  Times in ms, sizes in bytes (the format's)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    view = rng.random(nodes) < 0.2
    cpu_ms = np.where(view, 0.0, rng.uniform(0.5, 10.0, nodes))
    accel_ms = cpu_ms / rng.uniform(5.0, 15.0, nodes)
    size = np.where(view, 0.0, rng.uniform(1.0, 3.0, nodes)).round(3) * 2**20
    per_accel = math.ceil(size.sum() / (accelerators * memory_slack) / 2**20 + size.max() / 2**20)
    colour = np.arange(nodes)
    for i in rng.choice(np.arange(1, nodes), size=min(colocated_pairs, nodes - 1), replace=False):
        colour[i] = colour[i - 1]
    out_ms = rng.uniform(0.0, 2.0, nodes).round(4)
    edges = [(i - 1, i) for i in range(1, nodes)]
    edges += [(int(rng.integers(max(0, i - 8), i - 1)), i) for i in range(2, nodes) if rng.random() < 0.3]
    return {
        "maxSizePerFPGA": float(per_accel * 2**20), "maxFPGAs": accelerators, "maxCPUs": 1,
        "nodes": [{"id": i, "name": f"n{i}", "supportedOnFpga": 1, "cpuLatency": float(cpu_ms[i]),
                   "fpgaLatency": float(accel_ms[i]), "isBackwardNode": False,
                   "colorClass": int(colour[i]), "size": float(size[i])} for i in range(nodes)],
        "edges": [{"sourceId": u, "destId": v, "cost": float(out_ms[u]),
                   "size": float(out_ms[u]) * COPY_GBPS * 1e6} for u, v in sorted(set(edges))],
    }
