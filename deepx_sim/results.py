"""Records to files: tables written atomically as Parquet or CSV."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from deepx_sim.errors import DeepxError

TABLE_SUFFIXES = (".parquet", ".csv")


def check_table_path(path: str | Path) -> Path:
    """Fail early (before any work) on an output name we cannot write."""
    path = Path(path)
    if path.suffix not in TABLE_SUFFIXES:
        raise DeepxError(f"{path}: output must end in .parquet or .csv, got {path.suffix or 'no suffix'!r}")
    return path


@contextmanager
def atomic_path(path: Path) -> Iterator[str]:
    """A temporary file beside ``path`` that replaces it only if the block succeeds,
    so a failed or interrupted write never leaves a half-written file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield tmp_name
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` as Parquet or CSV (by suffix), atomically."""
    path = check_table_path(path)
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
