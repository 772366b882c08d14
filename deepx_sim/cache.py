"""A disk cache for arrays computed from a model's weights, shared by every process.

Entries are ``.npz`` files under ``$DEEPX_SIM_CACHE`` (default
``~/.cache/deepx_sim``), one folder per namespace, named by a key the caller
derives from what the result depends on (e.g. a hash of a weight's bytes).
Each entry stores a checksum of its arrays: a corrupt, truncated or stale
entry is detected, removed and recomputed, never trusted.  A cache folder
that cannot be written makes the cache compute in memory, with one warning.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: Bumped when the stored layout changes: older entries are then ignored.
FORMAT_VERSION = 1
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


def _checksum(arrays: dict[str, np.ndarray]) -> np.ndarray:
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(arrays):
        h.update(name.encode())
        h.update(array_digest(arrays[name]).encode())
    return np.frombuffer(h.digest(), dtype=np.uint8)


def _read(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as stored:
            arrays = {k: stored[k] for k in stored.files}
    except Exception:  # a truncated or foreign file: numpy raises several types
        return None
    check = arrays.pop("__checksum__", None)
    version = arrays.pop("__version__", None)
    if check is None or version is None or int(version) != FORMAT_VERSION:
        return None
    return arrays if np.array_equal(check, _checksum(arrays)) else None


def _write(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        np.savez(handle, __checksum__=_checksum(arrays), __version__=np.array(FORMAT_VERSION), **arrays)
    os.replace(tmp, path)


def entry_path(namespace: str, key: str) -> Path:
    return cache_root() / namespace / f"{key}.npz"


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
    """Store ``arrays`` under (``namespace``, ``key``); an unwritable folder warns once."""
    path = entry_path(namespace, key)
    try:
        _write(path, arrays)
    except OSError as exc:
        if str(path.parent) not in _warned:
            _warned.add(str(path.parent))
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


def cached_text(namespace: str, key: str, compute: Callable[[], str]) -> str:
    """A short string (a digest) cached like :func:`cached`."""
    arrays = cached(namespace, key, lambda: {"text": np.frombuffer(compute().encode(), dtype=np.uint8)})
    return arrays["text"].tobytes().decode()
