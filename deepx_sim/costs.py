"""The cost model: time, device energy and memory of layers and transfers.

Everything the planner optimises and the simulator replays comes from here.

Layer on a processor, in a variant (precision ``bits``, SVD ``rank`` for fc):

- compute_s = FLOPs / (peak FLOP/s at ``bits`` x efficiency of the layer kind)
  (Paleo, Qi et al. ICLR 2017: time = FLOPs / (peak x percent of peak))
- memory_s  = (input + output activations + parameters) bytes /
  (memory bandwidth x memory efficiency)
- busy_s    = max(compute_s, memory_s) + launch overhead
  (roofline: a kernel is bound by whichever of the two is slower)
- latency_s = busy_s / free fraction of the processor (background load takes
  its share of the processor, so our work stretches in proportion)
- energy_j  = power x busy_s: the energy our work adds; a loaded processor
  spends the rest on someone else's work.  A measured profile replaces busy_s
  (and power, when given) for the full-rank 32-bit variant; other variants are
  scaled by the analytic ratio.
- A calibrated processor may name a learned predictor (``deepx-sim calibrate
  --predictor``): without a measured profile, busy_s is the roofline times the
  predictor's per-layer factor (:mod:`deepx_sim.measure.predictor`).
- On a cloud processor the device spends no compute energy, but its radio
  waits connected (first tail state power) for the remote compute time.

An fc layer W (m x n) at rank k runs as V_k (k x n) then U_k (m x k):
k(m + n) multiply-adds per row and parameters, two kernel launches.

Transfers of a tensor between processors:

- same processor: free;
- two local processors: through shared memory at its bandwidth, the
  producing processor busy meanwhile (twice, through the sensor's memory,
  between two non-sensor processors of a platform with ``copies_via_sensor``);
- device <-> cloud: bits / link rate + rtt/2, the radio drawing the Huang et al.
  power a * rate + b while bits move and b during the propagation delay
  (energy = a * megabits + b * time).

The radio rule (:func:`radio_charge`; the ILP, the fast path, ``evaluate``
and the simulator's predictions all use it).  A request that uses the radio
pays, besides its transfers and the connected waiting during cloud compute:

- the promotion (its delay and energy) only if the radio will be idle when
  the request first needs it: it is idle at the request's start, or its tail
  runs out (``tail_left_s``) before the request's local work up to its first
  radio use (``first_use_s``) is done;
- the tail after its last transfer only for the part the next request will
  not share (the marginal cost): with the next arrival expected ``next_gap_s``
  after this one and the next request running the same way, the tail runs
  from this request's last radio use to the next one's first, ``next_gap_s -
  span_s - promotion_s`` (``span_s``: this request's transfer and cloud time;
  ``promotion_s`` if it promotes), capped at the full tail.  With no next
  request expected, the full tail.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

import networkx as nx
import numpy as np

from deepx_sim.errors import CostError
from deepx_sim.model.layers import (
    DEFAULT_ACTIVATION_BITS,
    NO_KERNEL_KINDS,
    Layer,
    get_layer,
    layers_in_order,
    tensor_bytes,
)
from deepx_sim.model.profiles import Profile
from deepx_sim.platform import Link, Platform, Processor, RadioModel

#: Layers that are views or identities at inference: no kernel runs.
FREE_KINDS = NO_KERNEL_KINDS


@dataclass(frozen=True, order=True)
class Variant:
    """How a layer is run: weight precision and, for fc layers, an SVD rank."""

    bits: int = 32
    rank: int | None = None  # None: the full weight matrix

    def label(self) -> str:
        return f"{self.bits}b" + (f"/k{self.rank}" if self.rank is not None else "")


FULL = Variant()

RadioState = Literal["idle", "promoting", "connected"]
RADIO_STATES = ("idle", "promoting", "connected")


@dataclass(frozen=True)
class Conditions:
    """What the device sees at the moment of a request.

    Bandwidths and RTT of ``None`` take the link's nominal values.  ``free_fraction``
    maps processor name to the share of it not taken by background load (1 = idle).

    The radio at the request's start: ``idle``; ``promoting`` (another request
    is waking it); or ``connected`` with ``tail_left_s`` seconds before it would
    go idle (``inf`` while another request is transferring).  ``next_gap_s``:
    the time expected from this request's arrival to the next one's (None: no
    next request expected, so the whole tail is this request's).

    ``queued_s`` maps a processor to the seconds of our own earlier requests'
    work still ahead of a new one there; a plan waits for the longest queue
    among the processors it uses (:meth:`CostModel.queue_wait_s`).
    """

    link: str | None = None
    uplink_mbps: float | None = None
    downlink_mbps: float | None = None
    rtt_ms: float | None = None
    free_fraction: Mapping[str, float] = field(default_factory=dict)
    cloud_reachable: bool = True
    radio_state: RadioState = "idle"
    tail_left_s: float = 0.0
    next_gap_s: float | None = None
    queued_s: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value in (("uplink_mbps", self.uplink_mbps),
                            ("downlink_mbps", self.downlink_mbps)):
            if value is not None and not value > 0:
                raise CostError(f"conditions.{name} must be > 0, got {value!r}")
        if self.rtt_ms is not None and not self.rtt_ms >= 0:
            raise CostError(f"conditions.rtt_ms must be >= 0, got {self.rtt_ms!r}")
        for proc, share in self.free_fraction.items():
            if not 0 < share <= 1:
                raise CostError(f"conditions.free_fraction[{proc!r}] must be in (0, 1], "
                                f"got {share!r}")
        if self.radio_state not in RADIO_STATES:
            raise CostError(f"conditions.radio_state must be one of {RADIO_STATES}, "
                            f"got {self.radio_state!r}")
        if not self.tail_left_s >= 0 or (self.radio_state != "connected" and self.tail_left_s != 0):
            raise CostError(f"conditions.tail_left_s must be >= 0, and 0 unless the radio is "
                            f"connected; got {self.tail_left_s!r} ({self.radio_state})")
        for proc, wait_s in self.queued_s.items():
            if not wait_s >= 0:
                raise CostError(f"conditions.queued_s[{proc!r}] must be >= 0, got {wait_s!r}")
        if self.next_gap_s is not None and not self.next_gap_s > 0:
            raise CostError(f"conditions.next_gap_s must be > 0 or None, got {self.next_gap_s!r}")


@dataclass(frozen=True)
class LayerCost:
    latency_s: float
    busy_s: float
    energy_j: float
    compute_s: float
    memory_s: float
    flops: int
    param_bytes: int
    activation_bytes: int

    @property
    def memory_bytes(self) -> int:
        """Bytes the layer holds on its processor: its parameters and its output."""
        return self.param_bytes + self.activation_bytes


@dataclass(frozen=True)
class TransferCost:
    latency_s: float
    energy_j: float
    size_bytes: int
    route: str  # "none", "shared_memory", "uplink" or "downlink"


ZERO_TRANSFER = TransferCost(0.0, 0.0, 0, "none")


def variant_flops(layer: Layer, variant: Variant) -> int:
    """FLOPs of ``layer`` in ``variant`` (a rank only changes fc layers)."""
    if variant.rank is None or layer.fc is None:
        return layer.flops
    rows = layer.output_elements // layer.fc.m
    dense = 2 * rows * layer.fc.m * layer.fc.n  # the product a rank replaces; a fused unit's
    rest = max(layer.flops - dense, 0)  # bias, batchnorm and activation stay
    return 2 * rows * variant.rank * (layer.fc.m + layer.fc.n) + rest


def variant_params(layer: Layer, variant: Variant) -> int:
    """Parameters of ``layer`` in ``variant``: rank k keeps k(m + n) weights plus bias."""
    if variant.rank is None or layer.fc is None:
        return layer.params
    return variant.rank * (layer.fc.m + layer.fc.n) + layer.bias_params


def check_variant(layer: Layer, variant: Variant) -> None:
    if variant.rank is not None:
        if layer.fc is None:
            raise CostError(f"layer {layer.name!r} is {layer.kind}, only fc layers take a rank")
        if not 1 <= variant.rank <= min(layer.fc.m, layer.fc.n):
            raise CostError(f"layer {layer.name!r}: rank must be in 1..{min(layer.fc.m, layer.fc.n)}"
                            f", got {variant.rank}")


class CostModel:
    """Costs of one model on one platform under one set of conditions.

    ``activation_bits`` sets the size of activations and transferred tensors.
    """

    def __init__(
        self,
        graph: nx.DiGraph,
        platform: Platform,
        conditions: Conditions | None = None,
        profile: Profile | None = None,
        activation_bits: int = DEFAULT_ACTIVATION_BITS,
    ) -> None:
        self.graph = graph
        self.platform = platform
        self.conditions = conditions or Conditions()
        self.profile = profile or {}
        self._transfers: dict[tuple[int, str, str], TransferCost] = {}
        self.activation_bits = activation_bits
        for proc in (*self.conditions.free_fraction, *self.conditions.queued_s):
            platform.processor(proc)  # unknown names fail here, with the known ones listed
        self._layer_costs: dict[tuple[str, str, Variant], LayerCost] = {}
        self._by_shape: dict[tuple[object, ...], LayerCost] = {}
        self._learned: dict[str, dict[str, float]] = {}  # processor -> layer -> factor
        self.link: Link | None = None
        if self.conditions.link is not None:
            self.link = platform.link(self.conditions.link)
        elif platform.links:
            self.link = platform.links[0]

    # ------------------------------------------------------------- conditions
    @property
    def uplink_mbps(self) -> float:
        assert self.link is not None
        return self.conditions.uplink_mbps or self.link.uplink_mbps

    @property
    def downlink_mbps(self) -> float:
        assert self.link is not None
        return self.conditions.downlink_mbps or self.link.downlink_mbps

    @property
    def rtt_s(self) -> float:
        assert self.link is not None
        rtt = self.conditions.rtt_ms if self.conditions.rtt_ms is not None else self.link.rtt_ms
        return rtt / 1000.0

    def free_fraction(self, processor: str) -> float:
        return self.conditions.free_fraction.get(processor, 1.0)

    def available_processors(self) -> list[Processor]:
        """Local processors, plus the link's remote processor when it is reachable."""
        procs = list(self.platform.local_processors)
        if self.link is not None and self.conditions.cloud_reachable:
            procs.append(self.platform.processor(self.link.remote))
        return procs

    # ------------------------------------------------------------- layers
    def peak_work_s(self, layer: Layer, proc: Processor, variant: Variant) -> tuple[float, float]:
        """(compute_s, memory_s) at every efficiency 1: FLOPs over peak, bytes over
        bandwidth (0 for a free layer); what the calibration fits efficiencies to."""
        if layer.kind in FREE_KINDS:
            return 0.0, 0.0
        traffic = (tensor_bytes(layer.input_elements + layer.output_elements, self.activation_bits)
                   + tensor_bytes(variant_params(layer, variant), variant.bits))
        return (variant_flops(layer, variant) / proc.peak_flops(variant.bits),
                traffic / (proc.memory_bandwidth_gbps * 1e9))

    def analytic_busy_s(self, layer: Layer, proc: Processor, variant: Variant) -> tuple[float, float, float]:
        """(busy_s, compute_s, memory_s) from the roofline model."""
        if layer.kind in FREE_KINDS:
            return 0.0, 0.0, 0.0
        peak_compute_s, peak_memory_s = self.peak_work_s(layer, proc, variant)
        planes = proc.plane_efficiency(layer.kind, layer.plane_size)
        compute_s = peak_compute_s / (proc.efficiency_for(layer.kind) * proc.gemm_efficiency(layer.gemm_dims)
                                      * planes)
        memory_s = peak_memory_s / (proc.memory_efficiency * planes)
        launches = 2 if (variant.rank is not None and layer.fc is not None) else 1
        return max(compute_s, memory_s) + launches * proc.launch_overhead_s, compute_s, memory_s

    def learned_factor(self, layer_name: str, proc: Processor) -> float:
        """The calibrated processor's learned correction of the roofline (1 without one)."""
        if proc.calibration is None or not proc.calibration.predictor:
            return 1.0
        if proc.name not in self._learned:
            from deepx_sim.measure.predictor import load_predictor, producers_of

            folder = Path(self.platform.path).parent if self.platform.path else Path.cwd()
            predictor = load_predictor(str(folder / proc.calibration.predictor))
            self._learned[proc.name] = predictor.factors(layers_in_order(self.graph),
                                                          producers_of(self.graph))
        return self._learned[proc.name].get(layer_name, 1.0)

    def layer_cost(self, layer_name: str, processor: str, variant: Variant = FULL) -> LayerCost:
        """Cost of running ``layer_name`` on ``processor`` in ``variant``.

        Raises CostError if the processor lacks the precision or the rank is invalid.
        """
        key = (layer_name, processor, variant)
        cost = self._layer_costs.get(key)
        if cost is None:
            cost = self._layer_costs[key] = self._shared_layer_cost(layer_name, processor, variant)
        return cost

    def _shared_layer_cost(self, layer_name: str, processor: str, variant: Variant) -> LayerCost:
        """The cost of a layer of the same shape on ``processor`` when one is known and
        nothing measured or learned is specific to this layer: a transformer's twelve
        blocks cost the same layer by layer (a third of a ViT-B/16 plan's costs)."""
        proc = self.platform.processor(processor)
        named = (layer_name, processor) in self.profile or (
            proc.calibration is not None and bool(proc.calibration.predictor))
        if named:
            return self._layer_cost(layer_name, processor, variant)
        layer = get_layer(self.graph, layer_name)
        shape = (layer.kind, layer.flops, layer.weight_params, layer.bias_params, layer.fc,
                 layer.input_elements, layer.output_elements, processor, variant)
        cost = self._by_shape.get(shape)
        if cost is None:
            cost = self._by_shape[shape] = self._layer_cost(layer_name, processor, variant)
        return cost

    def _layer_cost(self, layer_name: str, processor: str, variant: Variant) -> LayerCost:
        layer = get_layer(self.graph, layer_name)
        proc = self.platform.processor(processor)
        check_variant(layer, variant)
        if not proc.supports(variant.bits):
            raise CostError(f"processor {processor!r} has no {variant.bits}-bit support; "
                            f"it lists {sorted(proc.peak_gflops)}")
        busy_s, compute_s, memory_s = self.analytic_busy_s(layer, proc, variant)
        power_w = proc.active_power_w
        measured = self.profile.get((layer_name, processor))
        if measured is not None:
            base_s, _, _ = self.analytic_busy_s(layer, proc, FULL) if proc.supports(32) else (0, 0, 0)
            scale = busy_s / base_s if base_s > 0 else 1.0
            busy_s = measured.latency_s * scale
            if measured.power_w is not None:
                power_w = measured.power_w
        else:
            busy_s *= self.learned_factor(layer_name, proc)
        latency_s = busy_s / self.free_fraction(processor)
        if proc.is_remote:
            wait_w = self.link.radio.connected_wait_power_w if self.link else 0.0
            energy_j = wait_w * latency_s
        else:
            energy_j = power_w * busy_s
        return LayerCost(
            latency_s=latency_s, busy_s=busy_s, energy_j=energy_j,
            compute_s=compute_s, memory_s=memory_s,
            flops=variant_flops(layer, variant),
            param_bytes=tensor_bytes(variant_params(layer, variant), variant.bits),
            activation_bytes=layer.output_bytes(self.activation_bits),
        )

    # ------------------------------------------------------------- transfers
    def edge_bytes(self, src_layer: str, dst_layer: str) -> int:
        return tensor_bytes(self.graph.edges[src_layer, dst_layer]["elements"],
                            self.activation_bits)

    def transfer_cost(self, size_bytes: int, src: str, dst: str) -> TransferCost:
        """Time and device energy to move ``size_bytes`` from processor src to dst."""
        if src == dst or size_bytes == 0:
            return ZERO_TRANSFER
        key = (size_bytes, src, dst)
        if key not in self._transfers:
            self._transfers[key] = self._transfer_cost(size_bytes, src, dst)
        return self._transfers[key]

    def _transfer_cost(self, size_bytes: int, src: str, dst: str) -> TransferCost:
        p_src, p_dst = self.platform.processor(src), self.platform.processor(dst)
        if not p_src.is_remote and not p_dst.is_remote:
            copies = 2 if self.platform.copies_via_sensor and self.platform.sensor not in (src, dst) else 1
            time_s = copies * size_bytes / (self.platform.shared_memory_gbps * 1e9)
            return TransferCost(time_s, p_src.active_power_w * time_s, size_bytes, "shared_memory")
        if p_src.is_remote and p_dst.is_remote:
            raise CostError(f"no link between remote processors {src!r} and {dst!r}")
        if self.link is None or not self.conditions.cloud_reachable:
            raise CostError(f"the cloud is not reachable: cannot move data {src!r} -> {dst!r}")
        megabits = size_bytes * 8 / 1e6
        radio = self.link.radio
        if not p_dst.is_remote:
            time_s = megabits / self.downlink_mbps + self.rtt_s / 2
            energy_j = radio.transfer_energy_j(time_s, down_megabits=megabits)
            return TransferCost(time_s, energy_j, size_bytes, "downlink")
        time_s = megabits / self.uplink_mbps + self.rtt_s / 2
        energy_j = radio.transfer_energy_j(time_s, up_megabits=megabits)
        return TransferCost(time_s, energy_j, size_bytes, "uplink")

    def queue_wait_s(self, processors: Iterable[str]) -> float:
        """How long a request using ``processors`` waits for our own queued work:
        the longest queue among them (0 with nothing queued)."""
        queued = self.conditions.queued_s
        return max((queued.get(p, 0.0) for p in processors), default=0.0) if queued else 0.0

    def radio_charge(self, first_use_s: float, span_s: float) -> RadioCharge:
        """The radio rule under these conditions (see :func:`radio_charge`)."""
        if self.link is None:
            return RadioCharge(first_use_s, span_s, 0.0, 0.0, 0.0)
        return radio_charge(self.link.radio, self.conditions, first_use_s, span_s)


# ------------------------------------------------------------------ the radio rule
@dataclass(frozen=True)
class RadioCharge:
    """What a request using the radio pays beyond its transfers and cloud waiting."""

    first_use_s: float  # local work before its first radio use
    span_s: float  # its transfer and cloud time
    promotion_s: float
    promotion_j: float
    tail_j: float


Num = TypeVar("Num", float, np.ndarray)


def tail_energy_j(radio: RadioModel, duration_s: Num) -> Num:
    """Energy of the first ``duration_s`` seconds of a tail (0 below 0, the whole
    tail beyond its end); scalars or numpy arrays."""
    clip = _clip_array if isinstance(duration_s, np.ndarray) else _clip
    energy = 0.0 * duration_s
    start = 0.0
    for stage in radio.tail:
        length = stage.duration_ms / 1000.0
        energy = energy + stage.power_mw / 1000.0 * clip(duration_s - start, 0.0, length)
        start += length
    return energy


def _clip(x: float, low: float, high: float) -> float:
    return low if x < low else high if x > high else x


def _clip_array(x: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.minimum(np.maximum(x, low), high)  # np.clip's wrapper costs more on small arrays


def tail_pieces(radio: RadioModel) -> list[tuple[float, float, float, float]]:
    """:func:`tail_energy_j` piece by piece over the tail's duration x:
    (start_s, end_s, intercept_j, slope_w), energy = intercept + slope * x on
    [start, end] (the first piece is x <= 0, the last x beyond the tail)."""
    pieces = [(-math.inf, 0.0, 0.0, 0.0)]
    start = energy = 0.0
    for stage in radio.tail:
        length, power = stage.duration_ms / 1000.0, stage.power_mw / 1000.0
        pieces.append((start, start + length, energy - power * start, power))
        start, energy = start + length, energy + power * length
    pieces.append((start, math.inf, energy, 0.0))
    return pieces


def promotes(conditions: Conditions, first_use_s: Num) -> Num:
    """Whether a request pays the promotion: the radio is idle when it first needs it."""
    if conditions.radio_state == "idle":
        return first_use_s == first_use_s  # True (shaped like first_use_s)
    if conditions.radio_state == "promoting":
        return first_use_s != first_use_s  # False
    return conditions.tail_left_s <= first_use_s


def tail_charged_s(radio: RadioModel, conditions: Conditions, busy_s: Num) -> Num:
    """Seconds of tail a request pays: until the next request's first radio use
    (``next_gap_s - busy_s``, ``busy_s`` the time it holds the radio awake:
    promotion, transfers, cloud compute), capped at the whole tail."""
    if conditions.next_gap_s is None or math.isinf(conditions.next_gap_s):
        return 0.0 * busy_s + radio.tail_s
    clip = _clip_array if isinstance(busy_s, np.ndarray) else _clip
    return clip(conditions.next_gap_s - busy_s, 0.0, radio.tail_s)


def radio_rule(radio: RadioModel, conditions: Conditions, first_use_s: Num, span_s: Num) -> tuple[Num, Num]:
    """(promoted, tail_j) of requests using ``radio``; scalars or numpy arrays."""
    promoted = promotes(conditions, first_use_s)
    busy_s = span_s + promoted * radio.promotion_s
    return promoted, tail_energy_j(radio, tail_charged_s(radio, conditions, busy_s))


def radio_charge(radio: RadioModel, conditions: Conditions, first_use_s: float,
                 span_s: float) -> RadioCharge:
    """Promotion and tail of a request that uses ``radio`` (the module's rule)."""
    promoted, tail_j = radio_rule(radio, conditions, first_use_s, span_s)
    return RadioCharge(first_use_s, span_s, radio.promotion_s if promoted else 0.0,
                       radio.promotion_energy_j if promoted else 0.0, tail_j)
