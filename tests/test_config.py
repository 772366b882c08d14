"""The shared input helpers: file reading, YAML, ranges and messages."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from deepx_sim.config import (
    Fraction,
    check_value,
    load_yaml,
    read_text,
    text_lines,
    validation_message,
)
from deepx_sim.errors import DeepxError
from deepx_sim.scenario import Scenario


def test_yaml_numbers_as_yaml_1_2_reads_them(tmp_path: Path) -> None:
    f = tmp_path / "n.yaml"
    f.write_text("a: [1e-9, 5E3, -2.5e+2, 1_000, .inf, 1e, 0x10, '1e3']\n")
    assert load_yaml(f) == {"a": [1e-9, 5000.0, -250.0, 1000, float("inf"), "1e", 16, "1e3"]}


def test_duplicate_keys_are_refused_but_merges_may_override(tmp_path: Path) -> None:
    f = tmp_path / "d.yaml"
    f.write_text("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n")
    assert load_yaml(f)["other"] == {"x": 1, "y": 3}
    f.write_text("a:\n  x: 1\n  y: 2\n  x: 3\n")
    with pytest.raises(DeepxError, match=r"d.yaml:4:3: not valid YAML: duplicate key 'x' \(first given on"):
        load_yaml(f)


def test_text_files_keep_utf8_and_drop_a_bom(tmp_path: Path) -> None:
    f = tmp_path / "t.txt"
    f.write_bytes("\ufeffcafé\nnaïve\n".encode())
    assert list(text_lines(f)) == ["café\n", "naïve\n"]
    assert read_text(f) == "café\nnaïve\n"


def test_a_line_longer_than_a_mebibyte_is_taken_as_binary(tmp_path: Path) -> None:
    f = tmp_path / "long.txt"
    f.write_bytes(b"ok\n" + b"x" * (1024 * 1024 + 1))
    with pytest.raises(DeepxError, match="long.txt: a binary file, not text \\(line 2\\)"):
        list(text_lines(f))


def test_messages_use_the_users_path_not_pydantics_type_names() -> None:
    data = {"model": "m", "platform": "p", "conditions": {"outages": [[1, 2], [3, "x"]]}}
    with pytest.raises(ValidationError) as err:
        Scenario.model_validate(data)
    message = validation_message("s.yaml", err.value, data, Scenario)
    assert message == "s.yaml: conditions.outages[1][1] must be a number, got 'x'"


@pytest.mark.parametrize(("value", "rule"), [
    (0.0, "must be in (0, 1], got 0"), (1.5, "must be in (0, 1], got 1.5"),
    (float("nan"), "must be a finite number, got nan"), ("0.5", "must be a number, got '0.5'"),
    (True, "must be a number, got True"),
])
def test_check_value_states_the_whole_range(value: object, rule: str) -> None:
    with pytest.raises(DeepxError) as err:
        check_value(Fraction, value, "share")
    assert str(err.value) == f"share {rule}"
    assert check_value(Fraction, 1, "share") == 1.0
