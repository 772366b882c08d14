"""A layer graph's real weights: arrays, their storage precision and quantisation scales.

The one weight store of a model (``graph.graph["weights"]``).  Importers
register, per layer, named tensors (``weight``, ``bias``, batchnorm's
``scale``/``mean``/``var``, ...) as zero-argument loaders, converted to numpy
only when asked for.  fc weights are always ``W`` of shape (m, n) = (out, in),
whatever layout the source file used.

A layer's ``weight`` may be *stored* at another precision than the float32
computation sees (:class:`Storage`): 64 or 16-bit floats, or 8-bit integers
with one scale per output channel (dequantised on read, as onnxruntime does
with ``DequantizeLinear``); a sparse weight counts its nonzeros only.  Other
roles are always float32.  ``training_state`` holds what only training uses
(gradient buffers, optimiser moments), which parameter cleaning drops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import networkx as nx
import numpy as np

from deepx_sim.cache import array_digest
from deepx_sim.errors import ModelError

Loader = Callable[[], np.ndarray]


def initializer_loader(read: Callable[[], np.ndarray], transpose: bool, factor: float) -> Loader:
    """A loader of an initialiser (``read`` gives its array) as a layer reads it."""

    def load() -> np.ndarray:
        array = read()
        array = array.T if transpose else array
        return array if factor == 1.0 else array * factor

    return load


#: Weight storage precisions a model may use (bits).
STORAGE_BITS = (64, 32, 16, 8)
_FLOAT_DTYPES = {64: np.float64, 32: np.float32, 16: np.float16}


@dataclass(frozen=True)
class Storage:
    """How a layer's ``weight`` is stored: ``bits`` per value, per-output-channel
    ``scale`` for 8-bit integers, ``sparse`` when only nonzeros are kept."""

    bits: int = 32
    scale: np.ndarray | None = None
    sparse: bool = False

    def __post_init__(self) -> None:
        if self.bits not in STORAGE_BITS:
            raise ModelError(f"weight storage bits must be one of {STORAGE_BITS}, got {self.bits!r}")
        if (self.bits == 8) != (self.scale is not None):
            raise ModelError("8-bit weights need per-channel scales, and only they have them")


FLOAT32 = Storage()


class WeightStore:
    """Lazily loaded arrays keyed by (layer name, role); each is loaded once."""

    def __init__(self) -> None:
        self._loaders: dict[tuple[str, str], Loader] = {}
        self._cache: dict[tuple[str, str], np.ndarray] = {}
        self._storage: dict[str, Storage] = {}
        self.training_state: dict[str, np.ndarray] = {}
        self._digests: dict[tuple[str, str], str] = {}
        # a file-backed array's digest, derived from the file's bytes (see :meth:`digest`)
        self._digest_keys: dict[tuple[str, str], str] = {}

    def register(self, layer: str, role: str, loader: Loader, digest_key: str | None = None) -> None:
        """A lazy ``loader`` for (``layer``, ``role``); ``digest_key``, given when the array comes
        unchanged from a file, is a key derived from the file's bytes: its :meth:`digest`, known
        without loading the array."""
        self._loaders[(layer, role)] = loader
        self._cache.pop((layer, role), None)
        self._forget(layer, role)
        if digest_key is not None:
            self._digest_keys[(layer, role)] = digest_key

    def _forget(self, layer: str, role: str) -> None:
        self._digests.pop((layer, role), None)
        self._digest_keys.pop((layer, role), None)

    def digest(self, layer: str, role: str = "weight") -> str:
        """A hash that determines the array :meth:`get` returns: the key of every result
        computed from it.  For an array read unchanged from a file it is the key derived from
        the file's bytes, layer and role (as determining as hashing the array, and a first
        import of VGG-16 then need not hash its 553 MB of weights a second time); otherwise a
        hash of the array itself."""
        key = (layer, role)
        if key not in self._digests:
            derived = self._digest_keys.get(key)
            self._digests[key] = derived if derived else array_digest(self.get(layer, role))
        return self._digests[key]

    def set(self, layer: str, role: str, array: np.ndarray, storage: Storage | None = None) -> None:
        """Store an array directly: float values, or for ``weight`` the values as
        ``storage`` keeps them (int8 codes, float16...)."""
        self._cache[(layer, role)] = array
        self._loaders[(layer, role)] = lambda: array
        self._forget(layer, role)
        if role == "weight":
            self.set_storage(layer, storage or FLOAT32)

    def set_storage(self, layer: str, storage: Storage) -> None:
        if storage.scale is not None or self.storage(layer).scale is not None:
            self._forget(layer, "weight")  # dequantisation scales change what get() returns
        self._storage[layer] = storage

    def storage(self, layer: str) -> Storage:
        return self._storage.get(layer, FLOAT32)

    def has(self, layer: str, role: str = "weight") -> bool:
        return (layer, role) in self._loaders

    def entries(self) -> list[tuple[str, str]]:
        """Every (layer, role) with an array."""
        return list(self._loaders)

    def roles(self, layer: str) -> list[str]:
        return sorted(role for name, role in self._loaders if name == layer)

    def stored(self, layer: str, role: str = "weight") -> np.ndarray:
        """The array as stored (int8 codes for an 8-bit weight)."""
        key = (layer, role)
        if key not in self._cache:
            if key not in self._loaders:
                raise ModelError(f"no {role!r} weights stored for layer {layer!r}")
            array = self._loaders[key]()
            if role == "weight" and array.dtype.kind == "f":
                check_finite(array, layer)
            self._cache[key] = array
        return self._cache[key]

    def peek(self, layer: str, role: str = "weight") -> np.ndarray:
        """The array as stored, without keeping it loaded (nor checking it)."""
        key = (layer, role)
        return self._cache[key] if key in self._cache else self._loaders[key]()

    def get(self, layer: str, role: str = "weight") -> np.ndarray:
        """The array as computation sees it: float32, 8-bit weights dequantised."""
        array = self.stored(layer, role)
        storage = self.storage(layer) if role == "weight" else FLOAT32
        if storage.scale is not None:
            shape = (-1,) + (1,) * (array.ndim - 1)
            return array.astype(np.float32) * storage.scale.reshape(shape).astype(np.float32)
        return np.asarray(array, dtype=np.float32)

    def copy(self) -> WeightStore:
        """A store sharing the arrays (optimisers replace arrays, never edit them)."""
        new = WeightStore()
        new._loaders = dict(self._loaders)
        new._cache = dict(self._cache)
        new._storage = dict(self._storage)
        new.training_state = dict(self.training_state)
        new._digests = dict(self._digests)
        new._digest_keys = dict(self._digest_keys)
        return new

    def drop(self, layer: str) -> None:
        for key in [k for k in self._loaders if k[0] == layer]:
            self._loaders.pop(key)
            self._cache.pop(key, None)
            self._forget(*key)
        self._storage.pop(layer, None)

    def loaded_count(self) -> int:
        """How many arrays have been converted so far (laziness is testable)."""
        return len(self._cache)


def check_finite(array: np.ndarray, layer: str) -> None:
    """A clear error for NaN or infinity in a layer's weight (a float64 sum is finite iff
    every value is), before anything computes with it."""
    if not np.isfinite(np.sum(array, dtype=np.float64)):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise ModelError(f"layer {layer!r}: its weight holds {bad} NaN or infinite values; weights must be "
                         "finite")


def as_stored(values: np.ndarray, bits: int) -> tuple[np.ndarray, Storage]:
    """``values`` (float) stored at ``bits``: a float array of that width, or
    symmetric per-output-channel int8 codes with their scales (w ~ q * scale)."""
    if bits not in STORAGE_BITS:
        raise ModelError(f"bits must be one of {', '.join(map(str, STORAGE_BITS))}, got {bits!r}")
    if bits != 8:
        return values.astype(_FLOAT_DTYPES[bits]), Storage(bits)
    peak = np.abs(values.reshape(values.shape[0], -1)).max(axis=1)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(values / scale.reshape((-1,) + (1,) * (values.ndim - 1))), -127, 127)
    return q.astype(np.int8), Storage(8, scale)


def weight_store(graph: nx.DiGraph) -> WeightStore | None:
    return graph.graph.get("weights")


def require_weights(graph: nx.DiGraph, what: str) -> WeightStore:
    """The graph's store, or a ModelError saying ``what`` needs real weights."""
    store = weight_store(graph)
    if store is None:
        raise ModelError(
            f"model {graph.graph.get('name')!r} has no weights; {what} needs a model with "
            "weights (an ONNX file, or random_weights() for a zoo model)"
        )
    return store


def random_weights(graph: nx.DiGraph, seed: int = 0) -> WeightStore:
    """Fill ``graph`` with He-initialised random weights (zoo models have none):
    enough to run, export and time a model, not to measure its accuracy."""
    rng = np.random.default_rng(seed)
    store = WeightStore()
    for name, data in graph.nodes(data=True):
        lay = data["layer"]
        shape: tuple[int, ...] | None = None
        if lay.fc is not None:
            shape = (lay.fc.m, lay.fc.n)
        elif lay.conv is not None:
            c = lay.conv
            shape = (c.c_out, c.c_in // c.groups, *c.kernel)
        if shape is not None:
            fan_in = int(np.prod(shape[1:]))
            store.set(name, "weight", (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32))
            if lay.bias_params:
                store.set(name, "bias", np.zeros(shape[0], np.float32))
        elif lay.kind == "batchnorm":
            channels = lay.output_shape[1]
            for role, value in (("scale", 1.0), ("bias", 0.0), ("mean", 0.0), ("var", 1.0)):
                store.set(name, role, np.full(channels, value, np.float32))
    graph.graph["weights"] = store
    return store
