"""Bad inputs to sweep, results and plot: one clear line, exit status 2, no
traceback, and nothing written or run before the check."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import yaml

from deepx_sim.sweep import load_results, load_sweep, run_sweep
from tests.test_sweep import BASE
from tests.test_sweep_folder import cli

GRID = {"policy.planner": ["deepx", "cpu-only", "npu-only"], "conditions.bandwidth_mbps": [2, 20]}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sweep folder of 6 runs, 2 of them failed (tegra_k1 has no NPU)."""
    root = tmp_path_factory.mktemp("finished")
    (root / "s.yaml").write_text(yaml.safe_dump({"name": "t", "base": BASE, "grid": GRID}))
    run_sweep(load_sweep(root / "s.yaml"), root / "out")
    return root


@pytest.fixture
def folder(finished: Path, tmp_path: Path) -> Path:
    """A copy of the finished sweep (tests may damage it) next to a few odd paths."""
    shutil.copytree(finished, tmp_path, dirs_exist_ok=True)
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_dir").mkdir()
    (tmp_path / "empty" / "runs").mkdir(parents=True)
    return tmp_path


def damage_first_run(content: str | bytes) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        key = json.loads((root / "out" / "sweep.json").read_text())["runs"][0]
        path = root / "out" / "runs" / f"{key}.json"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return damage


PLOT = ["plot", "out", "--x", "conditions.bandwidth_mbps", "--y", "energy_mean_j"]
SWEEP = ["sweep", "s.yaml", "--quiet"]
CASES = [  # (id, arguments, damage before, words in the message)
    ("run file is a list", ["results", "out"], damage_first_run("[1, 2]"),
     "a run file holds a JSON object with key and status, got a list"),
    ("run file without key", ["results", "out"], damage_first_run('{"status": "ok"}'),
     "run file has no 'key' field"),
    ("run file not JSON", ["results", "out"], damage_first_run("{oops"), "unreadable run file"),
    ("run file not UTF-8", ["results", "out"], damage_first_run(b"\xff\xfe{}"), "unreadable run file"),
    ("index damaged", ["results", "out"], lambda r: (r / "out" / "sweep.json").write_text("[]"),
     "sweep.json: a sweep index holds a JSON object whose runs is a list of keys"),
    ("number column vs text", ["results", "out", "--where", "conditions.bandwidth_mbps=fast"], None,
     "filter 'conditions.bandwidth_mbps=fast': conditions.bandwidth_mbps holds numbers; compare it "
     "with a number, got 'fast'"),
    ("ordering a number column by text", ["results", "out", "--where", "latency_p95_s<abc"], None,
     "latency_p95_s holds numbers"),
    ("negative max rows", ["results", "out", "--max-rows", "-1"], None,
     "--max-rows must be >= 0 (0 prints every row), got -1"),
    ("y on a text column", [*PLOT[:-1], "policy.planner", "-o", "p.png"], None,
     "y column 'policy.planner' holds text, not numbers; numeric columns: conditions.bandwidth_mbps"),
    ("plot an empty folder", ["plot", "empty", "--x", "a", "--y", "b", "-o", "p.png"], None,
     "empty: no successful runs to plot"),
    ("unknown image format", [*PLOT, "-o", "x.unknown"], None,
     "-o x.unknown: unknown image format '.unknown'; end the name in one of: "),
    ("plot into a missing folder", [*PLOT, "-o", "nowhere/p.png"], None,
     "-o nowhere/p.png: folder nowhere does not exist"),
    ("plot onto a folder", [*PLOT, "-o", "a_dir"], None, "-o a_dir: is a folder; give a file name"),
    ("plot under a file", [*PLOT, "-o", "a_file/p.png"], None, "a_file is a file, not a folder"),
    ("zero workers", [*SWEEP, "--out", "new", "--workers", "0"], None,
     "workers must be an integer >= 1 (local worker processes), got 0"),
    ("negative workers", [*SWEEP, "--out", "new", "--workers", "-3"], None, "got -3"),
    ("not a Dask address", [*SWEEP, "--out", "new", "--dask", "not-an-address"], None,
     "Dask scheduler 'not-an-address': cannot connect"),
    ("sweep into a missing folder", [*SWEEP, "--out", "nowhere/new"], None,
     "--out nowhere/new: folder nowhere does not exist"),
    ("sweep onto a file", [*SWEEP, "--out", "a_file"], None, "--out a_file: is a file; give a folder"),
    ("sweep under a file", [*SWEEP, "--out", "a_file/new"], None,
     "--out a_file/new: a_file is a file, not a folder"),
]


@pytest.mark.parametrize(("argv", "damage", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(folder: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch, argv: list[str],
                                     damage: Callable[[Path], None] | None, words: str) -> None:
    monkeypatch.chdir(folder)
    if damage:
        damage(folder)
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    code, stdout, err = cli(capsys, *argv)
    assert code == 2 and stdout == ""
    assert err.startswith("deepx-sim: error: ") and err.count("\n") == 1, err
    assert words in err and "Traceback" not in err
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before  # nothing written


def test_image_formats_are_listed(folder: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure

    monkeypatch.chdir(folder)
    _, _, err = cli(capsys, *PLOT, "-o", "x.unknown")
    listed = err.rsplit(": ", 1)[1].strip().split(", ")
    assert sorted(listed) == sorted("." + f for f in Figure().canvas.get_supported_filetypes())


def test_filters_compare_numbers_as_numbers_and_text_as_text(folder: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    table = load_results(folder / "out")
    for where, expected in [("conditions.bandwidth_mbps>5", table["conditions.bandwidth_mbps"] > 5),
                            ("policy.planner=deepx", table["policy.planner"] == "deepx"),
                            ("status!=ok", table["status"] != "ok")]:
        code, stdout, _ = cli(capsys, "results", str(folder / "out"), "--csv", "--where", where)
        assert code == 0
        assert list(pd.read_csv(io.StringIO(stdout)).key) == list(table[expected].key)


def test_max_rows_bounds_the_printed_table(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def body_lines(*extra: str) -> list[str]:
        code, stdout, _ = cli(capsys, "results", str(folder / "out"), "--columns", "key", *extra)
        assert code == 0
        return stdout.strip().splitlines()[1:]  # without the header

    keys = list(load_results(folder / "out").key)
    assert [line.strip() for line in body_lines("--max-rows", "0")] == keys
    shown = [line.strip() for line in body_lines("--max-rows", "2")]
    assert shown == [keys[0], "...", keys[-1]]


def test_a_damaged_run_file_is_redone_by_the_next_sweep(folder: Path) -> None:
    damage_first_run("[1, 2]")(folder)
    table = run_sweep(load_sweep(folder / "s.yaml"), folder / "out")
    assert (table.status == "ok").sum() == 4 and len(table) == 6


def test_results_of_an_empty_folder(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = cli(capsys, "results", str(folder / "empty"))
    assert code == 0 and stdout.strip() == f"{folder / 'empty'}: no runs yet"
    assert list(load_results(folder / "empty").columns[:2]) == ["key", "status"]
