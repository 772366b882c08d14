"""A small disk cache for computed numpy arrays, keyed by what they were computed from.

``cached(namespace, key_parts, compute)`` returns ``compute()``'s arrays, from
``$DEEPX_SIM_CACHE`` (default ``~/.cache/deepx_sim``) ``/<namespace>/<key>.npz``
when an entry is there.  The key is a hash of ``key_parts``: arrays by dtype,
shape and bytes, anything else by its ``repr``.  Each entry stores a checksum of
its arrays; an entry that cannot be read or whose checksum differs is computed
again and overwritten.  When the folder cannot be written the arrays are kept in
memory for the life of the process, with one warning.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

Arrays = dict[str, np.ndarray]

#: The key of the checksum stored beside the arrays in each entry.
_CHECKSUM = "__checksum__"
_memory: dict[tuple[str, str], Arrays] = {}
_warned: set[str] = set()


def cache_root() -> Path:
    """The cache folder: ``$DEEPX_SIM_CACHE`` or ``~/.cache/deepx_sim``."""
    return Path(os.environ.get("DEEPX_SIM_CACHE") or Path.home() / ".cache" / "deepx_sim")


def digest(parts: Iterable[object]) -> str:
    """A stable hex key for ``parts`` (arrays hashed by dtype, shape and bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        if isinstance(part, np.ndarray):
            array = np.ascontiguousarray(part)
            h.update(f"array {array.dtype.str} {array.shape}".encode())
            h.update(array.tobytes())
        elif isinstance(part, bytes):
            h.update(b"bytes")
            h.update(part)
        else:
            h.update(repr(part).encode())
        h.update(b"\0")
    return h.hexdigest()


def _checksum(arrays: Arrays) -> str:
    return digest([name for name in sorted(arrays)] + [arrays[name] for name in sorted(arrays)])


def _read(path: Path) -> Arrays | None:
    """The entry's arrays, or None when it is missing, unreadable or corrupt."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {k: stored[k] for k in stored.files}
    except Exception:  # a truncated or foreign file: numpy raises several types
        return None
    expected = arrays.pop(_CHECKSUM, None)
    if expected is None or str(expected) != _checksum(arrays):
        return None
    return arrays


def _write(path: Path, arrays: Arrays) -> bool:
    """Write atomically (temporary file, then rename); False when the folder is not writable."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays, **{_CHECKSUM: np.array(_checksum(arrays))})
        os.replace(tmp, path)
        return True
    except OSError:
        return False


def cached(namespace: str, key_parts: Iterable[object], compute: Callable[[], Arrays]) -> Arrays:
    """``compute()``'s arrays, cached on disk under ``namespace`` by a hash of ``key_parts``."""
    key = digest(key_parts)
    if (namespace, key) in _memory:
        return _memory[(namespace, key)]
    path = cache_root() / namespace / f"{key}.npz"
    arrays = _read(path)
    if arrays is None:
        arrays = compute()
        if not _write(path, arrays) and str(path.parent) not in _warned:
            _warned.add(str(path.parent))
            warnings.warn(f"cache folder {path.parent} cannot be written; results are kept in memory "
                          "for this run only (set DEEPX_SIM_CACHE to a writable folder)", stacklevel=2)
    _memory[(namespace, key)] = arrays
    return arrays


def clear_memory() -> None:
    """Forget the in-memory level (tests use it to exercise the disk level)."""
    _memory.clear()
    _warned.clear()
