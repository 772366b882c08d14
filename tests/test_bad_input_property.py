"""Property: no mutation of a shipped file ends in a traceback (issue 16).

Hypothesis takes a shipped scenario or hardware file, replaces one field (or a
whole sub-tree) with a wrong type or an extreme value, or deletes it, and runs
the command that reads the file.  Whatever the mutation, the command exits 0 or
2, and on 2 every line of stderr is a ``deepx-sim: error:`` line.  A bug would
raise through main() (tests/conftest.py sets DEEPX_SIM_DEBUG).  Mutations that
are invalid by construction (a number made NaN, infinite, text, a list; text
made a list) must be refused with the file named.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepx_sim.cli import main
from deepx_sim.platform import hardware_dir

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
HARDWARE = [hardware_dir() / "tegra_k1.yaml", hardware_dir() / "cortex_m0.yaml",
            hardware_dir() / "remote" / "cloud_a100.yaml"]
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

Path_ = tuple[int | str, ...]
DELETE = object()


def paths(node: Any, path: Path_ = ()) -> Iterator[Path_]:
    """Every field and list item below the top level, sub-trees included."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield (*path, key)
        yield from paths(value, (*path, key))


def get(node: Any, path: Path_) -> Any:
    for part in path:
        node = node[part]
    return node


def mutate(data: Any, path: Path_, value: Any) -> None:
    parent = get(data, path[:-1])
    if value is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value


def surely_invalid(old: Any, new: Any) -> bool:
    """Mutations no validator may accept, whatever the field."""
    if new is DELETE:
        return False
    if isinstance(old, int | float) and not isinstance(old, bool):
        not_a_number = not isinstance(new, int | float) or isinstance(new, bool)
        return not_a_number or not math.isfinite(new)
    if isinstance(old, str):
        return isinstance(new, list | dict)
    return isinstance(old, bool) and not isinstance(new, bool)


values = st.one_of(
    st.sampled_from([DELETE, None, True, "x", "", [], [1, "x"], {"a": 1}, "\x00", "measured"]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1e-308, 1e308, -1e308, 2**63, 10**30, math.inf, -math.inf, math.nan]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=6),
)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def check(code: int, err: str, name: str, invalid: bool) -> None:
    assert code in (0, 2), err
    if code == 2:
        assert err and all(line.startswith("deepx-sim: error: ") for line in err.splitlines()), err
    if invalid:
        assert code == 2 and name in err, f"accepted an invalid value: {err}"


def draw_mutation(data: st.DataObject, files: list[Path]) -> tuple[Path, Any, bool]:
    """(file, its content with one field replaced or deleted, whether that is surely invalid)."""
    source = data.draw(st.sampled_from(files), label="file")
    content = yaml.safe_load(source.read_text())
    if "duration_s" in content:
        content["duration_s"] = min(content["duration_s"], 10)  # keep each run short
    path = data.draw(st.sampled_from(list(paths(content))), label="field")
    new = data.draw(values, label="value")
    old = get(content, path)
    mutate(content, path, new)
    return source, content, surely_invalid(old, new)


def simulate(copied: Path, mutated: Path) -> list[str]:
    return ["simulate", str(copied / mutated)]


def plan(copied: Path, mutated: Path) -> list[str]:
    platform = copied / ("tegra_k1.yaml" if mutated.parent.name == "remote" else mutated)
    return ["plan", "--model", "speakerid", "--platform", str(platform)]


# (shipped files, the folder copied beside them, the command that reads a mutated one)
TARGETS = {"scenario": (SCENARIOS, ROOT / "scenarios", simulate),
           "hardware": (HARDWARE, hardware_dir(), plan)}


@pytest.mark.parametrize("target", list(TARGETS))
@SETTINGS
@given(data=st.data())
def test_mutated_files_never_crash(target: str, data: st.DataObject,
                                   tmp_path_factory: pytest.TempPathFactory,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    files, folder, command = TARGETS[target]
    source, content, invalid = draw_mutation(data, files)
    copied = tmp_path_factory.mktemp(target) / "files"
    shutil.copytree(folder, copied)  # traces, remote files: what the mutated file refers to
    mutated = source.relative_to(folder)
    (copied / mutated).write_text(yaml.safe_dump(content))
    code, err = run(command(copied, mutated), capsys)
    check(code, err, source.name, invalid)
