"""The layer graph read from an ONNX file, cached by the file's bytes: reading it again parses nothing.

Parsing a VGG-16 export (553 MB of protobuf) and copying its weights out took
most of a repeated ``plan``.  The cache entry (namespace ``onnx`` of
:mod:`deepx_sim.cache`) holds the graph without its weights, where each large
weight lies in the file (offset, dtype, shape; transpose, factor), every other
array (small initialisers, folded constants, int8 codes), the storage precisions
and the warnings the import gave.  Large weights are read from their place in
the file (:mod:`~deepx_sim.model.onnx_light`) when asked for, after checking
once that the file's bytes still have the key: the protobuf is never parsed
again.  The digest of each file-backed weight is derived from (file key, layer,
role) (:meth:`~deepx_sim.model.weights.WeightStore.digest`), so a cached spectrum
is found without reading the weight, and none is hashed.

The key hashes the file's bytes (xxh3 over a memory map: 0.07 s for 553 MB),
the input-shape overrides and the importer's own source: a changed file or a
changed importer is never served an old graph.  The entry is a pickle, checksummed
against corruption; like any cache folder, it must be writable by its user only.
"""

from __future__ import annotations

import mmap
import pickle
import warnings
from collections.abc import Mapping
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from deepx_sim import cache
from deepx_sim.errors import ModelError
from deepx_sim.model.onnx_light import Extent
from deepx_sim.model.weights import WeightStore, initializer_loader

NAMESPACE = "onnx"
#: Arrays the importer made itself are kept in the entry up to this size; a model with
#: more (weights cast from float16, say) is not cached.
MAX_INLINE_BYTES = 64 * 1024 * 1024
#: The importer's modules and the types the entry pickles: a change to any changes every key.
_IMPORTER = ("model/onnx.py", "model/onnx_light.py", "model/layers.py", "model/weights.py",
             "model/skeleton.py", "kinds.py")


def _xxh3() -> Any:
    import xxhash

    return xxhash.xxh3_128()


@lru_cache(maxsize=1)
def _importer_version() -> str:
    h = _xxh3()
    for name in _IMPORTER:
        h.update((Path(__file__).parent.parent / name).read_bytes())
    return h.hexdigest()


def bytes_key(path: Path) -> str:
    """A hash of the file's size and bytes."""
    h = _xxh3()
    with open(path, "rb") as handle:
        size = handle.seek(0, 2)
        h.update(str(size).encode())
        if size:
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
                h.update(view)
    return h.hexdigest()


def file_key(raw_key: str, overrides: Mapping[str | None, tuple[int, ...]] | None) -> str:
    """The cache key of the graph read from a file whose :func:`bytes_key` is ``raw_key``
    with input-shape ``overrides``."""
    h = _xxh3()
    given = sorted(((k or ""), tuple(v)) for k, v in (overrides or {}).items())
    h.update(repr((raw_key, given, _importer_version())).encode())
    return h.hexdigest()


def digest_key(key: str, layer: str, role: str) -> str:
    """The digest of (``layer``, ``role``) read from the file with ``key``."""
    h = _xxh3()
    h.update(f"{key}\0{layer}\0{role}".encode())
    return h.hexdigest()


def _same(array: np.ndarray) -> np.ndarray:
    return array


class _FileArrays:
    """Initialisers read from the file at their extents, if the file still has its bytes."""

    def __init__(self, path: Path, expected: str) -> None:
        self.path, self.expected = path, expected
        self._checked = False

    def read(self, extent: Extent) -> np.ndarray:
        if not self._checked:
            if not self.path.is_file() or bytes_key(self.path) != self.expected:
                raise ModelError(f"{self.path}: the file changed after its graph was read; read it again")
            self._checked = True
        return extent.read(self.path)


Recipe = tuple[str, bool, float]


def save(key: str, raw_key: str, graph: nx.DiGraph, recipes: Mapping[tuple[str, str], Recipe],
         extents: Mapping[str, Extent], caught: list[tuple[type[Warning], str]]) -> None:
    """Cache ``graph`` (read from a file with ``raw_key``) under ``key``, unless it holds too
    many arrays of its own.  Weights the light reader left in the file (``extents``) are
    read from there later; every other array is kept in the entry."""
    store: WeightStore = graph.graph["weights"]
    from_file = {k: (*recipe, extents[recipe[0]]) for k, recipe in recipes.items() if recipe[0] in extents}
    inline = {k: store.peek(*k) for k in store.entries() if k not in from_file}
    sizes = [a.nbytes for a in [*inline.values(), *store.training_state.values()]]
    if sum(sizes) > MAX_INLINE_BYTES:
        return
    entry = {
        "bytes_key": raw_key,
        "from_file": from_file,
        "inline": inline,
        "storage": {layer: store.storage(layer) for layer, role in store.entries() if role == "weight"},
        "training_state": store.training_state,
        "warnings": caught,
    }
    graph.graph["weights"] = None
    try:
        blob = pickle.dumps({**entry, "graph": graph}, protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        graph.graph["weights"] = store
    cache.store(NAMESPACE, key, {"entry": np.frombuffer(blob, dtype=np.uint8)})


def load(key: str, path: Path) -> nx.DiGraph | None:
    """The cached graph for ``key``, with a weight store reading ``path`` lazily, or None."""

    arrays = cache.lookup(NAMESPACE, key)
    if arrays is None:
        return None
    try:
        entry = pickle.loads(arrays["entry"].tobytes())
        graph: nx.DiGraph = entry["graph"]
        parts = [entry[k] for k in ("from_file", "inline", "storage", "training_state", "warnings")]
    except Exception:  # an entry from an incompatible version: unpickling raises many types
        cache.entry_path(NAMESPACE, key).unlink(missing_ok=True)
        return None
    from_file, inline, storages, training_state, caught = parts
    graph.graph.update(name=path.stem, source=str(path))
    files = _FileArrays(path, entry["bytes_key"])
    store = WeightStore()
    for (layer, role), (_, transpose, factor, extent) in from_file.items():
        loader = initializer_loader(partial(files.read, extent), transpose, factor)
        store.register(layer, role, loader, digest_key(key, layer, role))
    for (layer, role), array in inline.items():
        store.register(layer, role, partial(_same, array))  # "loaded" only when asked for, as fresh
    for layer, storage in storages.items():
        store.set_storage(layer, storage)
    store.training_state = training_state
    graph.graph["weights"] = store
    for category, message in caught:
        warnings.warn(message, category, stacklevel=3)
    return graph
