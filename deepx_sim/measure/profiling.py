"""Time every layer of a model on this machine with onnxruntime's per-node profiler.

A run of :func:`profile_model`:

1. the model as ONNX: a file as given, or a zoo model exported with random
   weights (``random_weights`` + ``save_onnx``; timing does not depend on them);
2. an onnxruntime CPU session with ``threads`` intra-op threads (1 by default:
   reproducible on a shared machine) and its per-node profiler on;
3. ``warmup`` untimed runs, ``repeats`` profiled runs (each node's kernel time),
   then ``repeats`` runs with the profiler off (the end-to-end time);
4. executed nodes are mapped back to layers (:mod:`deepx_sim.measure.mapping`).

Per layer the profile records ``latency_s``: the median (or another quantile,
``quantile``) over profiled runs of its kernel's on-CPU time (see
:mod:`deepx_sim.measure.cpuclock`), less what the profiler adds inside each
kernel's window, scaled (``row_scale``), plus what onnxruntime's executor
spends per node.  A probe, chains of ReLUs on one
element timed with the same settings, measures the profiler's share (about
2 us a kernel here, a fifth of a small ReLU), the executor's (0.3 us a node)
and the Python binding's time per call.  The end-to-end time is the median
on-CPU time of as many runs with the profiler and the sampler off; the scale
makes the rows plus the binding's time per call add up to it, dividing out
what the instruments slow the kernels by.
``kernel_s`` is the kernel alone, ``spread_s`` the interquartile range over runs.
The meta also records the hypervisor's steal time during the profile and a speed
probe (two reference kernels timed right after; see ``SPEED_KERNELS``).
When onnxruntime fused several layers into one node, their joint time is split
in proportion to each layer's work (FLOPs plus bytes moved) and the rows share a
``group``; the calibration fits groups, never the split.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import networkx as nx
import numpy as np

from deepx_sim.errors import ProfileError
from deepx_sim.measure.cpuclock import ThreadCpuSampler
from deepx_sim.measure.energy import open_meter
from deepx_sim.measure.host import cpu_jiffies, cpu_model, host_name, load_average, steal_share
from deepx_sim.measure.mapping import Group, executed_groups
from deepx_sim.model.layers import LayerKind, get_layer, tensor_bytes
from deepx_sim.model.profiles import Profile, ProfileEntry, save_profile

#: graph optimisation levels, by the name the command line takes
OPTIMIZATION_LEVELS = ("none", "basic", "extended", "all")
DEFAULT_THREADS = 1
DEFAULT_REPEATS = 20
DEFAULT_WARMUP = 3
#: the statistic over a profile's runs, per kernel and end to end: the median
DEFAULT_QUANTILE = 0.5
#: uninterrupted runs a kernel needs for its median to come from them alone
MIN_CLEAN_RUNS = 3


@dataclass(frozen=True)
class ModelProfile:
    """Everything one profiling run measured, ready to write as a profile file."""

    model: str
    processor: str
    entries: Profile  # (layer, processor) -> ProfileEntry, in execution order
    end_to_end_s: float
    end_to_end_spread_s: float
    meta: dict[str, str] = field(default_factory=dict)
    #: the same runs summarised by other statistics, by name (e.g. "q25": lower quartile)
    variants: dict[str, ModelProfile] = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        return save_profile(path, self.entries, self.meta)


def _ort():  # type: ignore[no-untyped-def]
    try:
        import onnxruntime
    except ImportError:
        raise ProfileError("profiling needs onnxruntime: pip install onnxruntime") from None
    return onnxruntime


def model_as_onnx(model: str | Path, folder: Path, input_shapes: Mapping[str | None, tuple[int, ...]]
                  | None = None, seed: int = 0, cache: Path | None = None) -> tuple[nx.DiGraph, Path]:
    """The layer graph and an ONNX file of it: a file as given, a zoo model exported
    with random weights (it has none of its own), a ``heldout:``/``sampled:`` net written.

    With ``cache`` (a folder), a zoo model's export is kept there and reused by later
    calls with the same seed: exporting VGG-16's random weights takes about 20 s, longer
    than profiling it, and repeated rounds would pay it every time.
    """
    from deepx_sim.measure.nets import is_net_name, write_net
    from deepx_sim.model import load_model

    if is_net_name(str(model)):
        path = write_net(str(model), folder)
        return load_model(path, input_shapes), path
    graph = load_model(model, input_shapes)
    if str(model).lower().endswith(".onnx"):
        return graph, Path(model)
    from deepx_sim.model.onnx import save_onnx
    from deepx_sim.model.weights import random_weights

    path = folder / f"{graph.graph['name']}.onnx"
    if cache is not None and not input_shapes:  # the shapes are not in the file's name
        path = cache / f"{graph.graph['name']}.seed{seed}.onnx"
        if path.is_file():
            return graph, path
        cache.mkdir(parents=True, exist_ok=True)
    random_weights(graph, seed=seed)
    return graph, save_onnx(graph, path)


PROBE_NODES = 100


@dataclass(frozen=True)
class Probe:
    """What the instruments and the runtime cost, measured on chains of ReLUs on one
    element (whose arithmetic takes nanoseconds), with the model's settings."""

    profiler_s: float  # added inside each kernel's profiled window
    executor_s: float  # onnxruntime's own time per node, unprofiled
    binding_s: float  # the Python binding's fixed time per call, unprofiled


def _chain(folder: Path, nodes: int) -> Path:
    import onnx
    from onnx import TensorProto, helper

    chain = [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"], name=f"probe{i}") for i in range(nodes)]
    graph = helper.make_graph(chain, "probe", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info(f"t{nodes}", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = folder / f"probe{nodes}.onnx"
    onnx.save(model, str(path))
    return path


def _probe(folder: Path, threads: int, repeats: int) -> Probe:
    """Profiled kernel windows of a 100-node chain, unprofiled runs of it and of one node."""
    feeds = {"t0": np.ones(1, np.float32)}
    medians = {}
    for nodes in (1, PROBE_NODES):
        session = _session(_chain(folder, nodes), folder, threads, "none", prefix=f"probe{nodes}")
        for _ in range(DEFAULT_WARMUP + repeats):
            session.run(None, feeds)
        trace = json.loads(Path(session.end_profiling()).read_text())
        medians[nodes] = statistics.median(_timed(session, feeds, 3 * repeats)[1])
    durations = [e["dur"] for e in trace
                 if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    executor = max(medians[PROBE_NODES] - medians[1], 0.0) / (PROBE_NODES - 1)
    return Probe(interquartile_mean(durations) * 1e-6, executor, max(medians[1] - executor, 0.0))


#: the speed probe's reference kernels, timed next to every profile: a compute-bound
#: convolution and a memory-bound BatchNorm on a tensor of a typical CNN's size (the
#: same layer's time drifts by 10-30 % within minutes on this shared VM, memory-bound
#: kinds most); ``speed_<name>_s`` in a profile's meta.  Shapes: (input, channels out).
SPEED_KERNELS = {"compute": ((1, 32, 28, 28), 32), "memory": ((1, 64, 56, 56), 64)}
#: which probe a layer kind's time follows (the rest follow "memory")
COMPUTE_KINDS = frozenset({LayerKind.CONV.value, LayerKind.FC.value})


def _speed_model(folder: Path, name: str) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shape, c_out = SPEED_KERNELS[name]
    rng = np.random.default_rng(0)
    if name == "compute":
        kernel = rng.standard_normal((c_out, shape[1], 3, 3)).astype(np.float32)
        weights = [numpy_helper.from_array(kernel, "w")]
        node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
        out = (1, c_out, shape[2], shape[3])
    else:
        weights = [numpy_helper.from_array(rng.random(shape[1]).astype(np.float32) + 0.5, n)
                   for n in ("scale", "bias", "mean", "var")]
        node = helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["y"])
        out = shape
    graph = helper.make_graph([node], f"speed_{name}",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = folder / f"speed_{name}.onnx"
    onnx.save(model, str(path))
    return path


def speed_probe(folder: Path, threads: int, repeats: int, quantile: float) -> dict[str, float]:
    """On-CPU seconds (the ``quantile`` over ``repeats`` runs, after a warm-up) of each
    reference kernel in ``SPEED_KERNELS``, unprofiled: how fast this CPU is right now."""
    ort = _ort()
    speeds = {}
    for name, (shape, _) in SPEED_KERNELS.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(str(_speed_model(folder, name)), options,
                                       providers=["CPUExecutionProvider"])
        feeds = {"x": np.random.default_rng(1).standard_normal(shape).astype(np.float32)}
        _timed(session, feeds, DEFAULT_WARMUP)
        walls, cpus = _timed(session, feeds, repeats)
        speeds[name] = float(np.quantile(cpus if threads == 1 else walls, quantile))
    return speeds


def interquartile_mean(values: list[float]) -> float:
    """The mean of the middle half (by rank): robust to a preempted run like the median;
    where readings jitter across whole microseconds (the profiler truncates to them) it
    also keeps the fraction.

    Layers keep the median: of back-to-back profiles of four held-out CNNs (40 runs
    each, the same runs taken both ways) the mean of the middle half repeated no better
    (kernels of 10-30 us within +-20 % of each other for 81 % either way; under 10 us
    91 % against the median's 94 %).  What limits them is drift between profiles, not
    the microsecond.
    """
    # by rank, not by value: readings tie on whole microseconds, and keeping every tie at a
    # quartile would weigh one side more; of 3 runs it keeps the median
    array = np.sort(np.asarray(values, dtype=np.float64))
    cut = (len(array) + 1) // 4
    return float(array[cut : len(array) - cut].mean())


def _named_copy(path: Path, folder: Path) -> tuple[object, Path]:
    """The ONNX model, with a unique name on every node (the profiler reports by name)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    names = [n.name for n in proto.graph.node]
    if all(names) and len(set(names)) == len(names):
        return proto, path
    seen: set[str] = set()
    for i, node in enumerate(proto.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}" if not node.name else f"{node.name}_{i}"
        seen.add(node.name)
    onnx.load_external_data_for_model(proto, str(path.parent))
    named = folder / f"{path.stem}.named.onnx"
    onnx.save(proto, str(named))
    return proto, named


def _session(path: Path, folder: Path, threads: int, optimization: str,  # type: ignore[no-untyped-def]
             prefix: str = "ort_profile"):
    ort = _ort()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = {
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[optimization]
    options.enable_profiling = True
    options.profile_file_prefix = str(folder / prefix)
    options.log_severity_level = 3  # the NCHWc serialisation notice is not the user's concern
    if optimization != "none":
        options.optimized_model_filepath = str(folder / "optimised.onnx")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ProfileError(f"{path}: onnxruntime cannot run this model: {first}") from None


def _inputs(session, graph: nx.DiGraph, seed: int) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in session.get_inputs():
        if inp.name in graph:
            shape = get_layer(graph, inp.name).output_shape
        else:
            shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in inp.shape)
        if inp.type == "tensor(float)":
            feeds[inp.name] = rng.standard_normal(shape).astype(np.float32)
        else:
            dtype = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}.get(inp.type, np.float32)
            feeds[inp.name] = np.zeros(shape, dtype=dtype)
    return feeds


#: wall intervals (ns since the epoch) -> (on-CPU seconds, ran uninterrupted)
Clock = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
Kernels = list[dict[str, tuple[float, bool]]]  # per run: node -> (seconds, uninterrupted)


def _kernel_times(trace: list[dict], runs: int, skip: int,
                  clock: Clock | None) -> tuple[Kernels, list[float]]:
    """Per profiled run after the warm-up: executed node -> (kernel seconds, whether it
    ran uninterrupted), and the run's time inside onnxruntime (its ``model_run`` span).

    Without a ``clock`` the profiler's wall-clock durations count, all as uninterrupted.
    """
    def seconds(ts: np.ndarray, dur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if clock is None:
            return dur * 1e-6, np.ones(len(ts), dtype=bool)
        return clock(ts * 1e3, (ts + dur) * 1e3)

    spans = sorted((e["ts"], e["dur"]) for e in trace
                   if e.get("cat") == "Session" and e.get("name") == "model_run")
    if len(spans) != runs:
        raise ProfileError(f"onnxruntime's profile has {len(spans)} runs, expected {runs}")
    starts = np.array([s[0] for s in spans], dtype=np.float64)
    inside, _ = seconds(starts, np.array([s[1] for s in spans], dtype=np.float64))
    events = [e for e in trace if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    ts = np.array([e["ts"] for e in events], dtype=np.float64)
    run_of = np.searchsorted(starts, ts, side="right") - 1
    per_run: Kernels = [{} for _ in spans]
    durations, clean = seconds(ts, np.array([e["dur"] for e in events], dtype=np.float64))
    for e, run, sec, ok in zip(events, run_of, durations, clean, strict=True):
        if run >= 0:
            node = e["name"][: -len("_kernel_time")]
            before, was_ok = per_run[run].get(node, (0.0, True))
            per_run[run][node] = (before + float(sec), was_ok and bool(ok))
    return per_run[skip:], [float(x) for x in inside[skip:]]


def _work(graph: nx.DiGraph, layer: str) -> float:
    """A layer's share of a fused kernel: its FLOPs plus the bytes it moves."""
    lay = get_layer(graph, layer)
    if lay.kind == LayerKind.INPUT:
        return 0.0
    return float(lay.flops + tensor_bytes(lay.input_elements + lay.output_elements + lay.params, 32))


def _iqr(values: list[float]) -> float:
    q1, q3 = np.percentile(values, [25, 75])
    return float(q3 - q1)


def _group_times(group: Group, kernels: Kernels) -> list[float]:
    """The group's kernel seconds in the runs it ran uninterrupted, if there are enough
    for a median; otherwise in every run (on-CPU time interpolated where preempted)."""
    runs = [(sum(run.get(n, (0.0, True))[0] for n in group.nodes),
             all(run.get(n, (0.0, True))[1] for n in group.nodes)) for run in kernels]
    clean = [t for t, ok in runs if ok]
    return clean if len(clean) >= max(MIN_CLEAN_RUNS, len(runs) // 4) else [t for t, _ in runs]


def _entries(graph: nx.DiGraph, processor: str, groups: list[Group], kernels: Kernels, probe: Probe,
             end_to_end_s: float, power_w: float | None, quantile: float) -> tuple[Profile, float]:
    """Profile rows, and the scale that made them add up to the unprofiled run.

    A row is its kernel's ``quantile`` over runs (the median by default) less the
    profiler's share of the window, scaled, plus
    the executor's time per node.  The scale divides out what the instruments slow
    the kernels by (the clock sampler about a tenth; see cpuclock) and what medians
    miss of a run: with it, rows plus the binding's time per call make the end-to-end time.
    """
    times = [_group_times(g, kernels) for g in groups]
    nodes = np.array([len(g.nodes) for g in groups], dtype=np.float64)
    kernel = np.maximum(np.array([np.quantile(t, quantile) for t in times]) - probe.profiler_s * nodes, 0.0)
    room = end_to_end_s - probe.binding_s - probe.executor_s * nodes.sum()
    scale = float(room / kernel.sum()) if kernel.sum() > 0 and room > 0 else 1.0
    rows: list[tuple[int, str, ProfileEntry]] = []
    for k, group in enumerate(groups):
        latency = kernel[k] * scale + probe.executor_s * nodes[k]
        weights = [_work(graph, name) for name in group.layers]
        whole = sum(weights) or 1.0
        label = "+".join(group.nodes) if len(group.layers) > 1 else ""
        for name, weight in zip(group.layers, weights, strict=True):
            if weight > 0:
                part = weight / whole
                rows.append((get_layer(graph, name).order, name, ProfileEntry(
                    float(latency * part), power_w, float(kernel[k] * part),
                    _iqr(times[k]) * scale * part, label)))
    return {(name, processor): entry for _, name, entry in sorted(rows, key=lambda r: r[0])}, scale


@dataclass
class _Runs:
    """What the runs measured besides the profiler's trace."""

    trace: list[dict]  # the profiler's events of the profiled runs
    start_ns: int  # when the profiler started (ns since the epoch, the trace's zero)
    sampler: ThreadCpuSampler | None
    walls_s: list[float]  # unprofiled runs from here on
    cpus_s: list[float]  # the calling thread's CPU time per run
    energy_j: float | None
    energy_note: str


def _timed(session, feeds: dict[str, np.ndarray], repeats: int) -> tuple[list[float], list[float]]:  # type: ignore[no-untyped-def]
    walls, cpus = [], []
    for _ in range(repeats):
        tick, cpu = time.perf_counter(), time.thread_time()
        session.run(None, feeds)
        walls.append(time.perf_counter() - tick)
        cpus.append(time.thread_time() - cpu)
    return walls, cpus


def _run(session, feeds: dict[str, np.ndarray], warmup: int, repeats: int,  # type: ignore[no-untyped-def]
         path: Path, on_cpu: bool) -> _Runs:
    """Warm up; ``repeats`` profiled runs for the layers; the profiler off, ``repeats``
    more for the end-to-end time (the profiler's own bookkeeping costs microseconds a
    node) and the energy where readable."""
    meter = open_meter()
    sampler = ThreadCpuSampler() if on_cpu else None
    try:
        for _ in range(warmup):
            session.run(None, feeds)
        with sampler or contextlib.nullcontext():
            for _ in range(repeats):
                session.run(None, feeds)
        start_ns = session.get_profiling_start_time_ns()
        trace = json.loads(Path(session.end_profiling()).read_text())
        start_uj = meter.read_uj() if meter.available else ()
        walls, cpus = _timed(session, feeds, repeats)
        energy_j = meter.joules_between(start_uj, meter.read_uj()) if meter.available else None
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ProfileError(f"{path}: onnxruntime failed to run the model: {exc}") from None
    if energy_j:
        note = (f"RAPL {', '.join(d.name for d in meter.domains)}: {energy_j:.4g} J over {repeats} "
                f"unprofiled runs; power_w is the package average")
    else:
        note = f"not measured: {meter.unavailable or 'the RAPL counter did not advance'}"
    return _Runs(trace, start_ns, sampler, walls, cpus, energy_j or None, note)


def quantile_name(quantile: float) -> str:
    """A statistic's short name: the median is ``q50``, the lower quartile ``q25``."""
    return f"q{round(quantile * 100):02d}"


@dataclass
class _Measured:
    """One profiling's measurement, before it is summarised by a statistic."""

    graph: nx.DiGraph
    groups: list[Group]
    kernels: Kernels
    inside_s: list[float]
    runs: _Runs
    probe: Probe
    speeds: dict[str, float]
    meta: dict[str, str]


def _summarise(model: str, processor: str, m: _Measured, quantile: float, on_cpu: bool) -> ModelProfile:
    """The profile of the measurement ``m`` with ``quantile`` over runs as the statistic,
    per kernel and end to end."""
    totals = m.runs.cpus_s if on_cpu else m.runs.walls_s
    end_to_end_s = float(np.quantile(totals, quantile))
    power_w = m.runs.energy_j / sum(m.runs.walls_s) if m.runs.energy_j else None
    entries, scale = _entries(m.graph, processor, m.groups, m.kernels, m.probe, end_to_end_s, power_w,
                              quantile)
    rows_s = sum(e.latency_s for e in entries.values())
    meta = {**m.meta, "statistic": f"{quantile_name(quantile)}: quantile {quantile:g} of the runs' times",
            "end_to_end_s": f"{end_to_end_s:.6g}", "end_to_end_spread_s": f"{_iqr(totals):.3g}",
            "end_to_end_wall_s": f"{statistics.median(m.runs.walls_s):.6g}",
            "profiled_run_s": f"{np.quantile(m.inside_s, quantile):.6g}",
            "kernel_sum_s": f"{sum(e.kernel_s or 0.0 for e in entries.values()):.6g}",
            "rows_sum_s": f"{rows_s:.6g}", "run_overhead_s": f"{end_to_end_s - rows_s:.3g}",
            "row_scale": f"{scale:.4f}",
            **{f"speed_{k}_s": f"{v:.6g}" for k, v in m.speeds.items()}}
    return ModelProfile(model, processor, entries, end_to_end_s, _iqr(totals), meta)


def profile_model(model: str | Path, *, processor: str | None = None, threads: int = DEFAULT_THREADS,
                  repeats: int = DEFAULT_REPEATS, warmup: int = DEFAULT_WARMUP,
                  optimization: str = "none", seed: int = 0,
                  input_shapes: Mapping[str | None, tuple[int, ...]] | None = None,
                  progress: Callable[[str], None] | None = None, quantile: float = DEFAULT_QUANTILE,
                  also: tuple[float, ...] = (), onnx_cache: Path | None = None) -> ModelProfile:
    """Profile ``model`` (zoo name, .onnx path, ``heldout:NAME`` or ``sampled:SEED``) on this CPU.

    ``processor`` names the rows (default: this host's name).  Per kernel and end to
    end the ``quantile`` of the runs' times counts; the profiles of the same runs at the
    quantiles ``also`` are in ``variants``.  ``onnx_cache``: a folder where zoo models'
    exports are kept for later profiles (see :func:`model_as_onnx`).  Raises ProfileError
    for bad settings or a model onnxruntime cannot run, ModelError for an unknown or malformed model.
    """
    if threads < 1 or repeats < 1 or warmup < 0:
        raise ProfileError(f"threads and repeats must be >= 1 and warmup >= 0, got threads={threads}, "
                           f"repeats={repeats}, warmup={warmup}")
    if optimization not in OPTIMIZATION_LEVELS:
        raise ProfileError(f"optimization {optimization!r} is not one of {', '.join(OPTIMIZATION_LEVELS)}")
    if not all(0.0 <= q <= 1.0 for q in (quantile, *also)):
        raise ProfileError(f"quantiles must be within 0..1, got {quantile} and {list(also)}")
    processor = processor or host_name()
    on_cpu = threads == 1  # one thread runs the kernels inline, in the calling thread
    m = _measure(model, processor, threads, repeats, warmup, optimization, seed, input_shapes,
                 progress or (lambda _msg: None), quantile, onnx_cache)
    main = _summarise(str(model), processor, m, quantile, on_cpu)
    main.variants.update({quantile_name(q): _summarise(str(model), processor, m, q, on_cpu) for q in also})
    return main


def _measure(model: str | Path, processor: str, threads: int, repeats: int, warmup: int,
             optimization: str, seed: int, input_shapes: Mapping[str | None, tuple[int, ...]] | None,
             say: Callable[[str], None], quantile: float, onnx_cache: Path | None = None) -> _Measured:
    started = time.perf_counter()
    on_cpu = threads == 1
    with tempfile.TemporaryDirectory(prefix="deepx_profile_") as tmp:
        folder = Path(tmp)
        say(f"{model}: preparing ONNX")
        graph, onnx_path = model_as_onnx(model, folder, input_shapes, seed, onnx_cache)
        original, run_path = _named_copy(onnx_path, folder)
        session = _session(run_path, folder, threads, optimization)
        load_before, jiffies = load_average(), cpu_jiffies()
        say(f"{model}: {warmup} warm-up, {repeats} profiled and {repeats} plain runs")
        runs = _run(session, _inputs(session, graph, seed), warmup, repeats, onnx_path, on_cpu)
        probe = _probe(folder, threads, repeats)
        speeds = speed_probe(folder, threads, repeats, quantile)
        steal = steal_share(jiffies, cpu_jiffies())
        clock = None if runs.sampler is None else (
            lambda a, b: runs.sampler.cpu_s(a + runs.start_ns, b + runs.start_ns))  # type: ignore[union-attr]
        kernels, inside_s = _kernel_times(runs.trace, warmup + repeats, warmup, clock)
        optimised = original
        if optimization != "none":
            import onnx

            optimised = onnx.load(str(folder / "optimised.onnx"), load_external_data=False)
        groups = executed_groups(original.graph, optimised.graph, graph)  # type: ignore[attr-defined]
    meta = {
        "model": str(model), "processor": processor, "host": host_name(), "cpu_model": cpu_model(),
        "threads": str(threads), "repeats": str(repeats), "warmup": str(warmup),
        "optimization": optimization, "onnxruntime": _ort().__version__,
        "clock": ("on-CPU time of the inference thread (its CPU clock, sampled): excludes time the OS "
                  "gave other processes") if on_cpu else "wall clock (several threads)",
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "load_average_before": " ".join(f"{v:.2f}" for v in load_before),
        "load_average_after": " ".join(f"{v:.2f}" for v in load_average()),
        "steal_share": "unknown" if steal is None else f"{steal:.4f}",
        "cpu_share": f"{sum(runs.cpus_s) / sum(runs.walls_s):.3f}",
        "profiler_per_kernel_s": f"{probe.profiler_s:.3g}", "executor_per_node_s": f"{probe.executor_s:.3g}",
        "binding_per_call_s": f"{probe.binding_s:.3g}", "energy": runs.energy_note,
        "profiling_s": f"{time.perf_counter() - started:.2f}",
    }
    if input_shapes:
        meta["input_shape"] = " ".join(f"{k + '=' if k else ''}{'x'.join(map(str, v))}"
                                       for k, v in input_shapes.items())
    return _Measured(graph, groups, kernels, inside_s, runs, probe, speeds, meta)


def speed_factors(rounds: list[ModelProfile], reference: Mapping[str, float]) -> list[dict[str, float]]:
    """Per round, how much slower than ``reference`` each speed probe ran (1.0: as fast)."""
    factors = []
    for r in rounds:
        try:
            factors.append({k: float(r.meta[f"speed_{k}_s"]) / ref for k, ref in reference.items()})
        except (KeyError, ValueError):
            raise ProfileError(f"a round of {r.model} has no speed probe {list(reference)}; "
                               f"profile again to normalise by speed") from None
    return factors


def merge_rounds(rounds: list[ModelProfile], speed_of: Mapping[str, str] | None = None,
                 reference: Mapping[str, float] | None = None) -> ModelProfile:
    """One profile from several rounds of the same model, taken apart in time so that
    a busy spell on the machine weighs on one round only: per layer and end to end,
    the median over rounds (rows rescaled to add up to the median round).

    With ``speed_of`` (layer -> speed probe name) and ``reference`` (probe name ->
    seconds), each round's row is first divided by how much slower than the reference
    its probe ran in that round: times at the reference speed.  ``kernel_s`` keeps the
    raw median kernel time, and the meta says what was done.
    """
    if not rounds:
        raise ProfileError("no profiling rounds to merge")
    first = rounds[0]
    keys = list(first.entries)
    if any(list(r.entries) != keys for r in rounds):
        raise ProfileError(f"rounds of {first.model} differ in their layers; cannot merge them")
    factors = speed_factors(rounds, reference) if speed_of and reference else [{} for _ in rounds]

    def latency(r: ModelProfile, f: dict[str, float], k: tuple[str, str]) -> float:
        return r.entries[k].latency_s / f.get((speed_of or {}).get(k[0], ""), 1.0)

    median = {k: statistics.median(latency(r, f, k) for r, f in zip(rounds, factors, strict=True))
              for k in keys}
    sums = [sum(latency(r, f, k) for k in keys) for r, f in zip(rounds, factors, strict=True)]
    total = statistics.median(sums)
    scale = total / sum(median.values()) if sum(median.values()) > 0 else 1.0

    def mid(k: tuple[str, str], attr: str) -> float | None:
        values = [getattr(r.entries[k], attr) for r in rounds]
        return None if None in values else statistics.median(values)

    entries = {k: ProfileEntry(median[k] * scale, mid(k, "power_w"), mid(k, "kernel_s"),
                               mid(k, "spread_s"), first.entries[k].group) for k in keys}
    # a round's end-to-end time is normalised as its rows were, overhead included
    e2e = statistics.median(r.end_to_end_s * s / max(sum(e.latency_s for e in r.entries.values()), 1e-12)
                            for r, s in zip(rounds, sums, strict=True))
    meta = dict(first.meta)
    meta.update({
        "rounds": str(len(rounds)),
        "repeats": str(sum(int(r.meta.get("repeats", 0)) for r in rounds)),
        "measured_at": " / ".join(r.meta.get("measured_at", "?") for r in rounds),
        "load_average_before": " / ".join(r.meta.get("load_average_before", "?") for r in rounds),
        "cpu_share": " / ".join(r.meta.get("cpu_share", "?") for r in rounds),
        "steal_share": " / ".join(r.meta.get("steal_share", "?") for r in rounds),
        "end_to_end_s": f"{e2e:.6g}",
        "end_to_end_spread_s": f"{statistics.median(r.end_to_end_spread_s for r in rounds):.3g}",
        "rows_sum_s": f"{total:.6g}", "run_overhead_s": f"{e2e - total:.3g}",
        "profiling_s": f"{sum(float(r.meta.get('profiling_s', 0)) for r in rounds):.2f}",
    })
    if speed_of and reference:
        meta["speed_normalised"] = (
            "latency_s and end_to_end_s are at the reference speed: each round's row divided by how much "
            "slower its speed probe ran than " + ", ".join(f"{k} {v:.6g} s" for k, v in reference.items())
            + "; kernel_s is the raw median; factors per round " + " / ".join(
                " ".join(f"{k}={v:.3f}" for k, v in f.items()) for f in factors))
    for key in [k for k in meta if k.startswith("speed_") and k.endswith("_s")]:
        meta[key] = " / ".join(r.meta.get(key, "?") for r in rounds)
    meta.pop("load_average_after", None)
    return ModelProfile(first.model, first.processor, entries, e2e,
                        statistics.median(r.end_to_end_spread_s for r in rounds), meta)


def read_model_profile(path: str | Path) -> ModelProfile:
    """A profile file written by :meth:`ModelProfile.save`, back as a ModelProfile (no
    graph needed: to merge saved rounds again)."""
    import csv

    from deepx_sim.model.profiles import read_profile_meta

    meta = read_profile_meta(path)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(line for line in handle if not line.startswith("#")))

    def number(row: dict[str, str], key: str) -> float | None:
        return float(row[key]) if row.get(key) else None

    try:
        entries = {(r["layer"], r["processor"]): ProfileEntry(
            float(r["latency_s"]), number(r, "power_w"), number(r, "kernel_s"), number(r, "spread_s"),
            r.get("group") or "") for r in rows}
        spread = float(meta.get("end_to_end_spread_s", "nan"))
        return ModelProfile(meta.get("model", Path(path).stem), rows[0]["processor"], entries,
                            float(meta["end_to_end_s"]), spread, meta)
    except (KeyError, ValueError, IndexError) as exc:
        raise ProfileError(f"{path}: not a profile written by deepx-sim profile ({exc})") from None
