"""A disk cache for arrays computed from a model's weights, shared by every process.

Entries are ``.bin`` files under ``$DEEPX_SIM_CACHE`` (default
``~/.cache/deepx_sim``), one folder per namespace, named by a key the caller
derives from what the result depends on (e.g. a hash of a weight's bytes).
Each entry is a JSON layout and the arrays' bytes (no pickles), behind an
xxh3-128 checksum of both: a corrupt, truncated or stale entry is detected,
removed and recomputed, never trusted.  Reading one takes a fraction of a
millisecond (an ``.npz`` took 2 ms, 0.3 s over a BERT's 144 lookups).  A cache folder
that cannot be written makes the cache compute in memory, with one warning.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: Bumped when the stored layout changes: older entries are then ignored.
FORMAT_VERSION = 2
_MAGIC = b"DXSC"
_warned: set[str] = set()


class CacheWarning(UserWarning):
    """The disk cache could not be used; results are computed in memory."""


def cache_root() -> Path:
    return Path(os.environ.get("DEEPX_SIM_CACHE") or Path.home() / ".cache" / "deepx_sim")


def array_digest(array: np.ndarray) -> str:
    """A 128-bit hash of an array's dtype, shape and bytes (xxh3: memory speed; no copy
    for contiguous arrays)."""
    import xxhash

    h = xxhash.xxh3_128()
    h.update(f"{array.dtype.str}{array.shape}".encode())
    if array.flags.f_contiguous and not array.flags.c_contiguous:  # a transposed weight: no copy
        h.update(b"F")
        array = array.T
    if array.size:  # an empty array has no bytes (and memoryview cannot cast its zero shape)
        h.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    return h.hexdigest()


def _xxh3(data: bytes | memoryview) -> bytes:
    import xxhash

    return xxhash.xxh3_128_digest(data)


def _read(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of an entry, or None if it is truncated, foreign, of another format
    version or fails its checksum.  Arrays are read-only views of one buffer."""
    try:
        data = path.read_bytes()
        if data[:4] != _MAGIC or data[4] != FORMAT_VERSION or _xxh3(memoryview(data)[21:]) != data[5:21]:
            return None
        head = int.from_bytes(data[21:25], "little")
        layout = json.loads(data[25:25 + head])
        return {name: np.frombuffer(data, dtype=np.dtype(dtype), count=math.prod(shape),
                                    offset=25 + head + offset).reshape(tuple(shape))
                for name, (dtype, shape, offset) in layout.items()}
    except (OSError, ValueError, TypeError, KeyError, IndexError):  # truncated or foreign
        return None


def _write(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """magic, version, xxh3-128 of the rest, header length, JSON layout, array bytes."""
    layout, chunks, offset = {}, [], 0
    for name, array in arrays.items():
        if array.dtype.hasobject:
            raise TypeError(f"cache entry {path}: {name!r} holds Python objects")
        layout[name] = (array.dtype.str, array.shape, offset)
        chunks.append(array.tobytes())  # C order, whatever the layout
        offset += array.nbytes
    head = json.dumps(layout).encode()
    body = b"".join([len(head).to_bytes(4, "little"), head, *chunks])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(_MAGIC + bytes([FORMAT_VERSION]) + _xxh3(body) + body)
    os.replace(tmp, path)


def entry_path(namespace: str, key: str) -> Path:
    return cache_root() / namespace / f"{key}.bin"


def lookup(namespace: str, key: str) -> dict[str, np.ndarray] | None:
    """The arrays stored under (``namespace``, ``key``), or None when absent; a corrupt
    or stale entry is removed and reads as absent."""
    path = entry_path(namespace, key)
    if not path.is_file():
        return None
    arrays = _read(path)
    if arrays is None:
        path.unlink(missing_ok=True)
    return arrays


def store(namespace: str, key: str, arrays: dict[str, np.ndarray]) -> None:
    """Store ``arrays`` under (``namespace``, ``key``); an unwritable cache warns once per
    process, whichever namespaces fail."""
    path = entry_path(namespace, key)
    try:
        _write(path, arrays)
    except OSError as exc:
        root = str(cache_root())
        if root not in _warned:
            _warned.add(root)
            warnings.warn(f"cannot write the cache folder {path.parent} ({exc.strerror or exc}); computing "
                          "in memory (set DEEPX_SIM_CACHE to a writable folder)", CacheWarning, stacklevel=3)


def cached(namespace: str, key: str, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays stored under (``namespace``, ``key``), computing and storing them if
    absent or invalid."""
    arrays = lookup(namespace, key)
    if arrays is None:
        arrays = compute()
        store(namespace, key, arrays)
    return arrays

