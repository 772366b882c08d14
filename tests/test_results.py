"""Output files: paths checked before any work, atomic writes that respect the umask."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from deepx_sim.errors import DeepxError
from deepx_sim.results import atomic_path, check_output_path, remove_leftover_temps, write_table


@pytest.fixture
def umask() -> Iterator[None]:
    """Restore the process umask after a test that sets it."""
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_atomic_writes_get_the_modes_the_umask_allows(tmp_path: Path, umask: None, mask: int) -> None:
    os.umask(mask)
    table = write_table(pd.DataFrame({"a": [1, 2]}), tmp_path / "new" / "t.parquet")
    with atomic_path(tmp_path / "x.json") as tmp, open(tmp, "w") as handle:
        handle.write("{}")
    # the oracle: what open(2) gives a new file and mkdir(2) a new folder
    assert mode(table) == 0o666 & ~mask
    assert mode(tmp_path / "x.json") == 0o666 & ~mask
    assert mode(tmp_path / "new") == 0o777 & ~mask


def test_a_failed_write_leaves_neither_file_nor_temp(tmp_path: Path) -> None:
    target = tmp_path / "t.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        Path(tmp).write_text("half")
        raise RuntimeError
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["t.csv"]


def test_leftover_temps_of_a_killed_writer_are_removed_and_nothing_else(tmp_path: Path) -> None:
    keep = ["run.json", ".hidden", ".run.json.notes", ".run.json.0123456z"]
    for name in [*keep, ".run.json.0123abcd", ".t.parquet.deadbeef"]:
        (tmp_path / name).write_text("x")
    assert remove_leftover_temps(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


@pytest.mark.parametrize(("kind", "make", "target", "words"), [
    ("file", "dir", "out", "is a folder; give a file name"),
    ("dir", "file", "out", "is a file; give a folder"),
    ("file", "file", "out/x.png", "out is a file, not a folder"),
    ("dir", "file", "out/sub/run", "out is a file, not a folder"),
    ("file", None, "missing/x.png", "missing does not exist; create it first"),
    ("dir", None, "missing/run", "missing does not exist; create it first"),
])
def test_bad_output_paths_are_named(tmp_path: Path, kind: str, make: str | None, target: str,
                                    words: str) -> None:
    if make == "dir":
        (tmp_path / "out").mkdir()
    elif make == "file":
        (tmp_path / "out").write_text("x")
    with pytest.raises(DeepxError) as err:
        check_output_path(tmp_path / target, kind, "--out")  # type: ignore[arg-type]
    assert str(err.value).startswith(f"--out {tmp_path / target}: ") and words in str(err.value)


def test_good_output_paths_pass(tmp_path: Path) -> None:
    assert check_output_path(tmp_path / "x.png", "file") == tmp_path / "x.png"
    (tmp_path / "x.png").write_text("old")  # replacing a file is fine
    check_output_path(tmp_path / "x.png", "file")
    check_output_path(tmp_path / "new", "dir")  # a new folder in an existing one
    check_output_path(tmp_path, "dir")  # an existing folder


def without_root_override() -> list[str]:
    """A command prefix under which a read-only folder is read-only (root ignores modes)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot make a folder read-only")
    drop = "-dac_override,-dac_read_search"
    return ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}"]


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_a_read_only_folder_is_refused(tmp_path: Path, kind: str) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    code = ("import sys; from deepx_sim.results import check_output_path\n"
            "try: check_output_path(sys.argv[1], sys.argv[2], '-o')\n"
            "except Exception as exc: print(type(exc).__name__, exc); sys.exit(2)")
    target = folder / ("x.png" if kind == "file" else "run")
    done = subprocess.run([*without_root_override(), sys.executable, "-c", code, str(target), kind],
                          capture_output=True, text=True, timeout=60)
    folder.chmod(0o755)
    assert done.returncode == 2, done.stdout + done.stderr
    expected = f"DeepxError -o {target}: cannot write in folder {folder} (permission denied)"
    assert done.stdout.strip() == expected
