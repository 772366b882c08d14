"""Hardware platforms: processors, links and radio power models, loaded from YAML.

Every file is validated once here; after loading, the rest of the package trusts
the values.  Errors name the file, the field path, the value and the rule:
``hardware/x.yaml: processors[1].peak_gflops.fp32 must be > 0, got -3``.

File layout (see hardware/README.md for every field)::

    name: tegra_k1
    sensor_processor: cpu        # where the input arrives and the result returns
    shared_memory_gbps: 14.9     # on-chip copies between local processors
    remote: cloud_a100           # optional: hardware/remote/cloud_a100.yaml adds
                                 # its cloud processors and links (wifi, lte, 3g)
    processors: [...]
    links: [...]
"""

from __future__ import annotations

import os
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from deepx_sim.config import (
    Flag,
    Mbps,
    Millis,
    NonNegative,
    Positive,
    PositiveInt,
    StrictModel,
    finite_range,
    read_yaml_mapping,
    validation_message,
)
from deepx_sim.errors import PlatformError, closest_names
from deepx_sim.kinds import LayerKind

PRECISION_BITS = {"fp64": 64, "fp32": 32, "fp16": 16, "int8": 8}
BITS_PRECISION = {bits: name for name, bits in PRECISION_BITS.items()}

# Bounds far beyond any real device; upper ones keep every product of two fields finite.
# Lower bounds keep latencies (work / rate) below 1e13 s: solvers take 1e20 as infinite.
Gflops = finite_range(ge=1e-6, le=1e9)  # 1 kFLOP/s to 1 EFLOP/s
Gbps = finite_range(ge=1e-6, le=1e6)  # 1 kB/s to 1 PB/s
Efficiency = finite_range(ge=1e-3, le=1)
Watts = Annotated[NonNegative, Field(le=1e6)]
MilliWatts = Annotated[NonNegative, Field(le=1e9)]
Mebibytes = Annotated[Positive, Field(le=2.0**40)]  # 1 EiB
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")]


MatrixSize = Annotated[NonNegative, Field(le=1e6)]


def loop_share(dims: Any, half: Any) -> Any:
    """The share of its kind's efficiency a kernel keeps when its loops run ``dims``
    long and each halves it at ``half``: the product of d / (d + half) over the last
    axis.  Short loops leave vector registers and cache lines part empty and pay their
    set-up on little work: a convolution's matrix products (rows, depth, columns;
    onnxruntime runs a grouped convolution as one product per group), or the channel
    planes a BatchNorm or a depthwise convolution runs one at a time.  Takes numpy
    arrays too (dims ``(..., d)``), for the calibration's fit."""
    dims = np.asarray(dims, dtype=float)
    return np.prod(dims / (dims + np.asarray(half, dtype=float)), axis=-1)


class GemmHalfSize(StrictModel):
    """Matrix sizes at which a convolution's matrix product runs at half the efficiency of
    its kind (:func:`loop_share`); 0 (the default) leaves that dimension out.  Fitted by
    ``deepx-sim calibrate``; datasheet platforms leave them at 0."""

    rows: MatrixSize = 0.0
    depth: MatrixSize = 0.0
    columns: MatrixSize = 0.0

    def as_tuple(self) -> tuple[float, float, float]:
        return self.rows, self.depth, self.columns


def _only_kinds(value: dict[str, float], default: bool) -> dict[str, float]:
    allowed = {*(k.value for k in LayerKind), *(["default"] if default else [])}
    bad = sorted(set(value) - allowed)
    if bad:
        raise ValueError(f"has unknown layer kinds {bad}; allowed: {sorted(allowed)}")
    return value


class ProcessorKind(StrEnum):
    CPU = "cpu"
    GPU = "gpu"
    DSP = "dsp"
    LPC = "lpc"  # low-power companion core
    MCU = "mcu"
    NPU = "npu"
    CLOUD = "cloud"


class Calibration(BaseModel):
    """Where a processor's fitted numbers come from (written by ``deepx-sim calibrate``):
    when and how it was measured, plus free-form provenance (host, CPU, errors).
    ``predictor`` names a learned latency predictor file beside the YAML."""

    model_config = ConfigDict(frozen=True, extra="allow")
    measured_at: str
    method: str
    predictor: str = ""


class Processor(StrictModel):
    """One processor: compute peaks, efficiencies, memory and power."""

    name: Identifier
    kind: ProcessorKind
    description: str = ""
    peak_gflops: dict[Literal["fp64", "fp32", "fp16", "int8"], Gflops]
    #: fraction of peak reached, per layer kind; ``default`` covers the rest
    efficiency: dict[str, Efficiency]
    memory_bandwidth_gbps: Gbps
    #: fraction of memory bandwidth reached by layer kernels
    memory_efficiency: Efficiency = 0.7
    usable_memory_mib: Mebibytes
    active_power_w: Watts
    idle_power_w: Watts = 0.0
    launch_overhead_ms: Millis = 0.0
    #: how a convolution's efficiency falls with the size of its matrix products
    gemm_half_size: GemmHalfSize = GemmHalfSize()
    #: per layer kind, the channel plane (output positions per channel) at which the
    #: kind's compute and memory efficiency halve; a kind not listed keeps them
    plane_half_size: dict[str, MatrixSize] = Field(default_factory=dict)
    calibration: Calibration | None = None  # None: datasheet numbers and estimates
    #: how many identical instances of this processor the platform has; the platform
    #: expands ``count: k`` into k processors ``<name>0`` .. ``<name>{k-1}``
    count: PositiveInt = 1
    #: the class an expanded instance belongs to (the name written in the file);
    #: "" for a processor written once.  Planners may treat one class's instances as
    #: interchangeable (symmetry breaking); each has its own memory and resource.
    group: str = ""

    @field_validator("peak_gflops")
    @classmethod
    def _some_precision(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("must list at least one precision (fp64, fp32, fp16, int8)")
        return value

    @field_validator("efficiency")
    @classmethod
    def _known_kinds(cls, value: dict[str, float]) -> dict[str, float]:
        _only_kinds(value, default=True)
        if "default" not in value:
            raise ValueError("needs a 'default' entry")
        return value

    @field_validator("plane_half_size")
    @classmethod
    def _plane_kinds(cls, value: dict[str, float]) -> dict[str, float]:
        return _only_kinds(value, default=False)

    @model_validator(mode="after")
    def _idle_below_active(self) -> Processor:
        if self.idle_power_w > self.active_power_w and self.kind != ProcessorKind.CLOUD:
            raise ValueError(
                f"idle_power_w ({self.idle_power_w}) must be <= active_power_w "
                f"({self.active_power_w})"
            )
        return self

    @property
    def is_remote(self) -> bool:
        return self.kind == ProcessorKind.CLOUD

    @property
    def klass(self) -> str:
        """The processor's class: its group, or its own name if it was written once."""
        return self.group or self.name

    def instances(self) -> list[Processor]:
        """This processor as ``count`` interchangeable instances (itself if count is 1)."""
        if self.count == 1:
            return [self]
        return [self.model_copy(update={"name": f"{self.name}{i}", "count": 1, "group": self.name})
                for i in range(self.count)]

    @property
    def usable_memory_bytes(self) -> int:
        return int(self.usable_memory_mib * 1024 * 1024)

    @property
    def launch_overhead_s(self) -> float:
        return self.launch_overhead_ms / 1000.0

    def supports(self, bits: int) -> bool:
        return BITS_PRECISION.get(bits) in self.peak_gflops

    def peak_flops(self, bits: int) -> float:
        """Peak FLOP/s at ``bits``; PlatformError if the precision is unsupported."""
        key = BITS_PRECISION.get(bits)
        if key not in self.peak_gflops:
            raise PlatformError(
                f"processor {self.name!r} has no {bits}-bit peak; it supports "
                f"{sorted(self.peak_gflops)}"
            )
        return self.peak_gflops[key] * 1e9  # type: ignore[index]

    def efficiency_for(self, kind: LayerKind | str) -> float:
        return self.efficiency.get(str(kind), self.efficiency["default"])

    def gemm_efficiency(self, dims: tuple[int, int, int] | None) -> float:
        """The share of its kind's efficiency a layer of matrix products ``dims``
        (``Layer.gemm_dims``; None: not a convolution) reaches on this processor."""
        half = self.gemm_half_size.as_tuple()
        return 1.0 if dims is None or not any(half) else float(loop_share(dims, half))

    def plane_efficiency(self, kind: LayerKind | str, plane: int | None) -> float:
        """The share of its kind's efficiencies a layer whose channel planes are ``plane``
        positions (``Layer.plane_size``; None: no planes) keeps on this processor."""
        half = self.plane_half_size.get(str(kind), 0.0)
        return 1.0 if plane is None or not half else float(loop_share((plane,), (half,)))


class TailStage(StrictModel):
    power_mw: MilliWatts
    duration_ms: Millis


class RadioModel(StrictModel):
    """Huang et al. (MobiSys 2012) radio power model: promotion, transfer, tail.

    Transfer power is ``a_up * up_mbps + a_down * down_mbps + base`` (mW).
    """

    name: str = "custom"
    promotion_power_mw: MilliWatts
    promotion_ms: Millis
    tail: list[TailStage]
    a_up_mw_per_mbps: MilliWatts
    a_down_mw_per_mbps: MilliWatts
    base_mw: MilliWatts
    idle_power_mw: MilliWatts = 0.0

    @property
    def promotion_s(self) -> float:
        return self.promotion_ms / 1000.0

    @property
    def promotion_energy_j(self) -> float:
        return self.promotion_power_mw / 1000.0 * self.promotion_s

    @property
    def tail_s(self) -> float:
        return sum(stage.duration_ms for stage in self.tail) / 1000.0

    @property
    def tail_energy_j(self) -> float:
        return sum(s.power_mw / 1000.0 * s.duration_ms / 1000.0 for s in self.tail)

    @property
    def connected_wait_power_w(self) -> float:
        """Power while connected but not sending (first tail stage): the radio
        waits in this state while the cloud computes."""
        return self.tail[0].power_mw / 1000.0 if self.tail else self.base_mw / 1000.0

    def transfer_power_w(self, up_mbps: float = 0.0, down_mbps: float = 0.0) -> float:
        return (self.a_up_mw_per_mbps * up_mbps + self.a_down_mw_per_mbps * down_mbps
                + self.base_mw) / 1000.0

    def transfer_energy_j(self, time_s: float, up_megabits: float = 0.0,
                          down_megabits: float = 0.0) -> float:
        """Energy of a transfer lasting ``time_s`` that moves the given data: the
        power model integrated over time, so the throughput terms depend only on
        the data moved (mW/Mbps x Mb) and the base power on the duration.  Exact
        under a bandwidth that changes during the transfer."""
        return (self.a_up_mw_per_mbps * up_megabits + self.a_down_mw_per_mbps * down_megabits
                + self.base_mw * time_s) / 1000.0


# Huang et al., "A Close Examination of Performance and Power Characteristics of
# 4G LTE Networks", MobiSys 2012, Tables 3-4 (as cited in ../shared/reference/FACTS.md).
RADIO_PRESETS: dict[str, RadioModel] = {
    "lte": RadioModel(
        name="lte", promotion_power_mw=1210.7, promotion_ms=260.1,
        tail=[TailStage(power_mw=1060.0, duration_ms=11576.0)],
        a_up_mw_per_mbps=438.39, a_down_mw_per_mbps=51.97, base_mw=1288.04,
        idle_power_mw=594.3 * 43.2 / 1280.0,  # DRX: 594.3 mW for 43.2 ms every 1280 ms
    ),
    "3g": RadioModel(
        name="3g", promotion_power_mw=659.4, promotion_ms=582.1,
        tail=[TailStage(power_mw=803.9, duration_ms=8088.2),  # DCH tail
              TailStage(power_mw=601.3, duration_ms=824.2)],  # then FACH
        a_up_mw_per_mbps=868.98, a_down_mw_per_mbps=122.12, base_mw=817.88,
        idle_power_mw=374.2 * 55.4 / 5112.4,
    ),
    "wifi": RadioModel(
        name="wifi", promotion_power_mw=124.4, promotion_ms=79.1,
        tail=[TailStage(power_mw=119.3, duration_ms=238.1)],
        a_up_mw_per_mbps=283.17, a_down_mw_per_mbps=137.01, base_mw=132.86,
        idle_power_mw=77.2 * 7.6 / 308.2,  # beacon: 77.2 mW for 7.6 ms every 308.2 ms
    ),
}


class Link(StrictModel):
    """A wireless link from the device to a remote processor."""

    name: Identifier
    remote: str
    uplink_mbps: Mbps
    downlink_mbps: Mbps
    rtt_ms: Millis
    radio: RadioModel
    description: str = ""

    @field_validator("radio", mode="before")
    @classmethod
    def _preset(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value not in RADIO_PRESETS:
                raise ValueError(f"unknown radio preset {value!r}; allowed: "
                                 f"{sorted(RADIO_PRESETS)} or a mapping of the model's fields")
            return RADIO_PRESETS[value]
        return value

    @property
    def rtt_s(self) -> float:
        return self.rtt_ms / 1000.0


class Platform(StrictModel):
    """A device's processors, the remote processors and the links that reach them."""

    name: Identifier
    description: str = ""
    sources: list[str] = Field(default_factory=list)
    sensor_processor: str = ""
    shared_memory_gbps: Gbps
    #: copies between two local processors that are not the sensor pass through the
    #: sensor's memory (no peer-to-peer path): two copies instead of one
    copies_via_sensor: Flag = False
    processors: list[Processor]
    links: list[Link] = Field(default_factory=list)
    path: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Platform:
        # a class with a count becomes that many processors, each with the class's memory
        # (frozen model: set once here, before anything reads it)
        object.__setattr__(self, "processors", [q for p in self.processors for q in p.instances()])
        names = [p.name for p in self.processors]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"processor names must be unique (a processor with count k becomes "
                             f"<name>0 .. <name>k-1), got duplicates {dupes}")
        local = [p.name for p in self.processors if not p.is_remote]
        if not local:
            raise ValueError("needs at least one local (non-cloud) processor")
        if self.sensor_processor and self.sensor_processor not in local:
            raise ValueError(f"sensor_processor {self.sensor_processor!r} must be a local "
                             f"processor, one of {local}")
        remote = {p.name for p in self.processors if p.is_remote}
        for link in self.links:
            if link.remote not in remote:
                raise ValueError(f"link {link.name!r}: remote {link.remote!r} must name a "
                                 f"cloud processor, one of {sorted(remote)}")
        link_names = [lk.name for lk in self.links]
        if len(set(link_names)) != len(link_names):
            raise ValueError(f"link names must be unique, got {link_names}")
        return self

    @cached_property
    def by_name(self) -> dict[str, Processor]:
        return {p.name: p for p in self.processors}

    @property
    def sensor(self) -> str:
        """The processor where input arrives and results are delivered."""
        return self.sensor_processor or next(p.name for p in self.processors if not p.is_remote)

    @property
    def local_processors(self) -> list[Processor]:
        return [p for p in self.processors if not p.is_remote]

    def processor(self, name: str) -> Processor:
        if name not in self.by_name:
            raise PlatformError(f"platform {self.name!r} has no processor {name!r}: "
                                f"{closest_names(name, list(self.by_name))}")
        return self.by_name[name]

    def link(self, name: str) -> Link:
        for link in self.links:
            if link.name == name:
                return link
        known = [lk.name for lk in self.links]
        raise PlatformError(f"platform {self.name!r} has no link {name!r}; "
                            f"known links: {', '.join(known) or 'none'}")

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description: every field, plus memory in bytes."""
        data = self.model_dump(mode="json")
        for proc, out in zip(self.processors, data["processors"], strict=True):
            out["usable_memory_bytes"] = proc.usable_memory_bytes
        data["sensor_processor"] = self.sensor
        return data


# ------------------------------------------------------------------ loading

def hardware_dir() -> Path:
    """Folder of the shipped hardware files (override with DEEPX_SIM_HARDWARE)."""
    env = os.environ.get("DEEPX_SIM_HARDWARE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "hardware"


def platform_names() -> list[str]:
    folder = hardware_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


class _RemoteFile(StrictModel):
    """A file in hardware/remote/: processors and links that platforms share."""

    description: str = ""
    sources: list[str] = Field(default_factory=list)
    processors: list[Processor] = Field(default_factory=list)
    links: list[Link] = Field(default_factory=list)


def _merge_remote(path: Path, data: dict[str, Any]) -> None:
    """Add the processors, links and sources of ``remote: <name>`` (a file in
    ``remote/`` beside ``path``) to ``data``, after checking them in their own file."""
    remote = data.pop("remote", None)
    if remote is None:
        return
    folder = path.parent / "remote"
    known = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
    if not isinstance(remote, str) or remote not in known:
        raise PlatformError(f"{path}: remote {remote!r} has no file in {folder}; known remotes: "
                            f"{', '.join(known) or 'none'}")
    remote_path = folder / f"{remote}.yaml"
    extra = read_yaml_mapping(remote_path, PlatformError)
    try:
        _RemoteFile.model_validate(extra)
    except ValidationError as exc:
        raise PlatformError(validation_message(str(remote_path), exc, extra, _RemoteFile)) from None
    for key in ("processors", "links", "sources"):
        if not isinstance(data.get(key, []), list):
            raise PlatformError(f"{path}: {key} must be a list, got {data[key]!r}")
        data[key] = [*data.get(key, []), *extra.get(key, [])]


def load_platform(name_or_path: str | Path) -> Platform:
    """Load a platform by shipped name (``tegra_k1``) or by path to a YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        path = candidate
        if not path.is_file():
            raise PlatformError(f"{path}: no such hardware file")
    else:
        path = hardware_dir() / f"{name_or_path}.yaml"
        if not path.is_file():
            raise PlatformError(
                f"unknown platform {name_or_path!r}: "
                f"{closest_names(str(name_or_path), platform_names())}"
            )
    data = read_yaml_mapping(path, PlatformError)
    _merge_remote(path, data)
    try:
        return Platform.model_validate({**data, "path": str(path)})
    except ValidationError as exc:
        raise PlatformError(validation_message(str(path), exc, data, Platform)) from None
