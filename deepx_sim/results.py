"""Records to files: output paths checked up front, tables written atomically as Parquet or CSV."""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import pandas as pd

from deepx_sim.errors import DeepxError

TABLE_SUFFIXES = (".parquet", ".csv")


def check_output_path(path: str | Path, kind: Literal["file", "dir"], label: str = "output") -> Path:
    """Fail before any work on an output we could not write.

    ``kind`` is ``"file"`` (``path`` is written, replacing a file there) or
    ``"dir"`` (``path`` is a folder, created if missing, that files go into).
    The folder holding ``path`` must exist and be writable; no part of the
    path may be a regular file; a file cannot replace a folder nor the reverse.
    ``label`` starts the message (e.g. ``"--out results"``)."""
    path = Path(path)
    where = f"{label} {path}" if label else str(path)
    if kind == "file" and path.is_dir():
        raise DeepxError(f"{where}: is a folder; give a file name (inside it or elsewhere)")
    if kind == "dir" and path.exists() and not path.is_dir():
        raise DeepxError(f"{where}: is a file; give a folder (new or existing) for the results")
    for ancestor in [*reversed(path.parents)] + ([path] if kind == "dir" else []):
        if ancestor.exists() and not ancestor.is_dir():
            raise DeepxError(f"{where}: {ancestor} is a file, not a folder")
    folder = path if kind == "dir" and path.is_dir() else path.parent
    if not folder.is_dir():
        raise DeepxError(f"{where}: folder {folder} does not exist; create it first (mkdir -p {folder})")
    if not os.access(folder, os.W_OK | os.X_OK):
        reason = "a read-only file system" if _read_only_fs(folder) else "permission denied"
        raise DeepxError(f"{where}: cannot write in folder {folder} ({reason})")
    return path


def _read_only_fs(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows)
        return False


def _check_table_suffix(path: Path) -> Path:
    if path.suffix not in TABLE_SUFFIXES:
        raise DeepxError(f"{path}: output must end in .parquet or .csv, got {path.suffix or 'no suffix'!r}")
    return path


def check_table_path(path: str | Path, label: str = "output") -> Path:
    """Fail early (before any work) on a table name we cannot write."""
    return check_output_path(_check_table_suffix(Path(path)), "file", label)


def _create_temp(path: Path) -> str:
    """A new empty file beside ``path``.  Created with mode 0666 so the kernel
    applies the umask (tempfile.mkstemp's 0600 would survive the rename)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        name = str(path.parent / f".{path.name}.{secrets.token_hex(4)}")
        try:
            os.close(os.open(name, flags, 0o666))
            return name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))


@contextmanager
def atomic_path(path: Path) -> Iterator[str]:
    """A temporary file beside ``path`` that replaces it only if the block succeeds,
    so a failed or interrupted write never leaves a half-written file behind.
    The file gets the modes the umask allows, as any new file would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_name = _create_temp(path)
    try:
        yield tmp_name
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def remove_leftover_temps(folder: Path) -> int:
    """Delete temporary files a killed writer left in ``folder``; return how many."""
    count = 0
    for leftover in folder.glob(".*.*"):
        stem, _, token = leftover.name[1:].rpartition(".")
        if stem and len(token) == 8 and all(c in "0123456789abcdef" for c in token) and leftover.is_file():
            leftover.unlink(missing_ok=True)
            count += 1
    return count


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` as Parquet or CSV (by suffix), atomically."""
    path = _check_table_suffix(Path(path))
    with atomic_path(path) as tmp_name:
        if path.suffix == ".parquet":
            frame.to_parquet(tmp_name, index=False)
        else:
            frame.to_csv(tmp_name, index=False)
    return path


def read_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DeepxError(f"{path}: no such results file")
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
