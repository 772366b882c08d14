"""What every input boundary shares: defaults, limits, reading files, validated numbers.

- Each default (deadline, accuracy budget, battery) is declared once, here.
- Each memory limit is declared once, here, and stated in the error that enforces it.
- Every text file a user hands us (YAML, CSV, JSON, traces) is read through
  :func:`text_lines` or :func:`read_text`, which name the file (and line) when it
  is binary or not UTF-8.  YAML goes through :func:`load_yaml`, which also
  rejects duplicate keys.
- The number types below carry a range and reject inf and NaN; a field's range is
  written once, in the pydantic model that validates it, and CLI options reuse the
  same field through :func:`field_type` and :func:`check_value`.
- :func:`validation_message` turns pydantic's errors into the user's words: the
  field path as written in the file (``conditions.outages[0]``), the rule and the value.
"""

from __future__ import annotations

import math
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from deepx_sim.errors import DeepxError, closest_names

# ------------------------------------------------------------------ defaults
#: DeepX bounds one inference at 5 s and allows about a 5 % fall in accuracy
#: (Lane et al., IPSN 2016, Section III-C).
DEFAULT_DEADLINE_S = 5.0
DEFAULT_MAX_ACCURACY_LOSS = 0.05
#: estimate: a typical phone battery, 3000 mAh at a 3.85 V nominal cell voltage.
DEFAULT_BATTERY_CAPACITY_MAH = 3000.0
DEFAULT_BATTERY_VOLTAGE_V = 3.85

# ------------------------------------------------------------------ limits
#: A run keeps one record per request in memory (about 3 KB each, measured by
#: benchmarks/bench_memory.py), so a run is capped well below the machine's memory.
MAX_REQUESTS_PER_RUN = 1_000_000
#: Segments of one condition trace (bandwidth, load): 32 bytes each in memory.
MAX_TRACE_SEGMENTS = 2_000_000
#: Outage intervals of one run.
MAX_OUTAGES = 1_000_000
#: Files read whole (YAML, JSON); traces and CSV files are streamed line by line.
MAX_TEXT_BYTES = 64 * 1024 * 1024
#: A longer line is taken as a sign of a binary file.
MAX_LINE_BYTES = 1024 * 1024


def count_within(what: str, count: float, limit: int, advice: str,
                 error: type[DeepxError] = DeepxError) -> int:
    """``ceil(count)`` if it is within ``limit``; else ``error`` stating the limit."""
    if not count <= limit:  # (also catches inf and NaN)
        shown = f"{count:,.0f}" if count < 1e15 else f"{count:.3g}"
        raise error(f"{what} would be {shown}; at most {limit:,} are allowed ({advice})")
    return math.ceil(count)


# ------------------------------------------------------------------ reading files
def text_lines(path: Path, error: type[DeepxError] = DeepxError) -> Iterator[str]:
    """The lines of a UTF-8 text file, streamed (a leading BOM is dropped).

    Raises ``error`` naming the file when it cannot be read, and the file and line
    when it is binary (a NUL byte or a line over 1 MiB) or not UTF-8."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    with handle:
        if b"\x00" in handle.read(8192):  # NUL bytes do not occur in text
            raise error(f"{path}: a binary file, not text; expected UTF-8 text")
        handle.seek(0)
        number = 0
        while raw := handle.readline(MAX_LINE_BYTES + 1):
            number += 1
            if b"\x00" in raw or len(raw) > MAX_LINE_BYTES:  # (past the first block)
                raise error(f"{path}: a binary file, not text (line {number}); expected UTF-8 text")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise error(f"{path}:{number}: not UTF-8 text (byte {raw[exc.start]:#04x} at column "
                            f"{exc.start + 1}); save the file as UTF-8") from None
            yield line.removeprefix("\ufeff") if number == 1 else line


def read_text(path: Path, error: type[DeepxError] = DeepxError) -> str:
    """A whole UTF-8 text file (at most :data:`MAX_TEXT_BYTES`); errors as :func:`text_lines`."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    if size > MAX_TEXT_BYTES:
        raise error(f"{path}: {size / 2**20:.0f} MiB is too large; files read whole may be at most "
                    f"{MAX_TEXT_BYTES // 2**20} MiB")
    return "".join(text_lines(path, error))


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in a mapping is an error
    (PyYAML would silently keep the last one)."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # '<<: *base' merges are allowed to be overridden
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, typing.Hashable) and key in first_line:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first given on line {first_line[key]})",
                        key_node.start_mark)
                if isinstance(key, typing.Hashable):
                    first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)  # type: ignore[arg-type]


# YAML 1.1 (PyYAML) reads 1e-9 or 5E3 as text; YAML 1.2, and users, take them as numbers.
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def load_yaml(path: Path, error: type[DeepxError] = DeepxError) -> Any:
    """Parse a YAML file; one-line errors with the file, line and problem."""
    text = read_text(path, error)
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # (a SafeLoader subclass)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = " ".join(str(exc.problem or exc).split())
        raise error(f"{where}: not valid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise error(f"{path}: not valid YAML: nested too deeply") from None


def read_yaml_mapping(path: Path, error: type[DeepxError] = DeepxError) -> dict[str, Any]:
    """A YAML file whose top level is a mapping of fields."""
    data = load_yaml(path, error)
    if not isinstance(data, dict):
        raise error(f"{path}: must be a mapping of fields, got {_type_name(data)}")
    return data


# ------------------------------------------------------------------ validated numbers
def finite_range(**bounds: float) -> Any:
    """A float field with bounds (gt/ge/lt/le) that refuses inf, NaN, text and booleans."""
    # strict: a YAML string or boolean is not silently taken as a number
    return Annotated[float, Field(strict=True, allow_inf_nan=False, **bounds)]


Positive = finite_range(gt=0)
NonNegative = finite_range(ge=0)
Fraction = finite_range(gt=0, le=1)  # a share that cannot be zero
UnitInterval = finite_range(ge=0, le=1)
#: Upper bounds far beyond any real run or device; they keep sums and products finite.
Seconds = finite_range(gt=0, le=1e9)  # about 32 years
Mbps = finite_range(ge=1e-6, le=1e9)  # 1 bit/s to 1 Pbit/s
Millis = finite_range(ge=0, le=1e9)
Count = Annotated[int, Field(strict=True, ge=0)]
PositiveInt = Annotated[int, Field(strict=True, ge=1)]
Flag = Annotated[bool, Field(strict=True)]


class StrictModel(BaseModel):
    """Base of every validated input: frozen, and unknown fields are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def field_type(model: type[BaseModel], name: str) -> Any:
    """The type of a model's field with its range, to validate a CLI option alike."""
    info = model.model_fields[name]
    return Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation


def check_value(kind: Any, value: Any, what: str, error: type[DeepxError] = DeepxError) -> Any:
    """``value`` validated as ``kind``; ``error("<what> must be in [0, 1], got 2")``."""
    try:
        return TypeAdapter(kind).validate_python(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        rule = (err["type"] in _BOUND_ERRORS and _range(kind, ())) or _rule(err)
        raise error(f"{what} {rule}, got {_shown(value)}".lstrip()) from None


# ------------------------------------------------------------------ messages
_TYPE_RULES = {
    "float_type": "must be a number", "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "int_type": "must be a whole number", "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "string_type": "must be text", "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "list_type": "must be a list", "tuple_type": "must be a list",
    "dict_type": "must be a mapping of fields", "model_type": "must be a mapping of fields",
    "model_attributes_type": "must be a mapping of fields",
}


_BOUND_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _plain(value: Any) -> Any:
    """0.0 -> 0, so bounds read as the user wrote them."""
    return int(value) if isinstance(value, float) and value.is_integer() and abs(value) < 1e15 else value


def _type_name(value: Any) -> str:
    return {list: "a list", dict: "a mapping", str: "text", type(None): "nothing"}.get(
        type(value), type(value).__name__)


def _shown(value: Any) -> str:
    text = repr(_plain(value))
    return text if len(text) <= 80 else text[:77] + "..."


def _rule(err: Any) -> str:
    kind, ctx = err["type"], {k: _plain(v) for k, v in (err.get("ctx") or {}).items()}
    rules = {
        "greater_than": f"must be > {ctx.get('gt')}",
        "greater_than_equal": f"must be >= {ctx.get('ge')}",
        "less_than_equal": f"must be <= {ctx.get('le')}",
        "less_than": f"must be < {ctx.get('lt')}",
        "missing": "is required",
        "extra_forbidden": "is not a known field",
        "literal_error": f"must be one of {ctx.get('expected')}",
        "enum": f"must be one of {ctx.get('expected')}",
        "string_pattern_mismatch": "must be a name of letters, digits, '_' or '-'",
        "too_short": f"must have at least {ctx.get('min_length')} items",
        "too_long": f"must have at most {ctx.get('max_length')} items",
        **_TYPE_RULES,
    }
    rule = rules.get(kind, str(err["msg"]).replace("Value error, ", ""))
    if rule.startswith("must be one of ") and "," not in rule and " or " not in rule:
        rule = "must be " + rule.removeprefix("must be one of ")
    return rule


def _user_path(err: Any, data: Any) -> tuple[int | str, ...]:
    """The error's location in the user's data: pydantic adds a tag per union branch
    (``list[tuple[constrained-float, ...]]``, ``OutageSpec``), which the user never wrote."""
    loc, node, out = tuple(err["loc"]), data, []
    for i, part in enumerate(loc):
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list | tuple) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            node = node[part]
        elif not (i == len(loc) - 1 and err["type"] == "missing"):
            continue  # a union tag
        out.append(part)
    return tuple(out)


def _format_path(path: tuple[int | str, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _choices(kind: Any, part: int | str) -> Any:
    """The type inside ``kind`` (a model, dict, list, tuple, union, Optional) that
    ``part`` indexes, with its constraints (``Annotated``) kept."""
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        info = kind.model_fields.get(part) if isinstance(part, str) else None
        if info is None:
            return None
        return Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Annotated:
        return _choices(args[0], part)
    if origin is dict and isinstance(part, str):
        return args[1]
    if origin is list and isinstance(part, int):
        return args[0]
    if origin is tuple and isinstance(part, int) and part < len(args):
        return args[part]
    for arg in args if origin in (typing.Union, types.UnionType) else ():
        found = _choices(arg, part)
        if found is not None:
            return found
    return None


def _type_at(model: Any, path: tuple[int | str, ...]) -> Any:
    kind = model
    for part in path:
        kind = _choices(kind, part) if kind is not None else None
    return kind


def _alternatives(kind: Any) -> tuple[Any, ...]:
    union = typing.get_origin(kind) in (typing.Union, types.UnionType)
    return typing.get_args(kind) if union else (kind,)


def _known_fields(model: Any, path: tuple[int | str, ...]) -> list[str]:
    """The field names allowed at ``path`` (below ``model``), for 'not a known field'."""
    for arg in _alternatives(_type_at(model, path)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return list(arg.model_fields)
    return []


def _range(model: Any, path: tuple[int | str, ...]) -> str:
    """'must be in [0, 1]' from the bounds declared on the field at ``path`` ('' if none)."""
    bounds: dict[str, float] = {}
    for arg in _alternatives(_type_at(model, path)):
        if typing.get_origin(arg) is Annotated:
            for extra in typing.get_args(arg)[1:]:
                for item in getattr(extra, "metadata", [extra]):
                    bounds.update({k: getattr(item, k) for k in ("gt", "ge", "lt", "le") if hasattr(item, k)})
    low = next(((k, bounds[k]) for k in ("gt", "ge") if k in bounds), None)
    high = next(((k, bounds[k]) for k in ("lt", "le") if k in bounds), None)
    if low and high:
        return (f"must be in {'(' if low[0] == 'gt' else '['}{low[1]:g}, "
                f"{high[1]:g}{')' if high[0] == 'lt' else ']'}")
    return ""


def validation_message(source: str, exc: ValidationError, data: Any,
                       model: type[BaseModel] | None = None) -> str:
    """A pydantic error as lines ``<source>: <field path> <rule>, got <value>``.

    Errors from the branches of a union at one path merge into one line ("must be >= 0
    or 'measured'"); a branch's type mismatch is dropped where another branch got
    further into the value (the user clearly meant that branch)."""
    errors = [(_user_path(e, data), e) for e in exc.errors()]
    deeper = {p[:k] for p, _ in errors for k in range(len(p))}
    by_path: dict[tuple[int | str, ...], list[Any]] = {}
    for path, err in errors:
        if err["type"] in _TYPE_RULES and path in deeper:
            continue
        by_path.setdefault(path, []).append(err)
    lines = []
    for path, errs in by_path.items():
        rules = list(dict.fromkeys(
            (model is not None and e["type"] in _BOUND_ERRORS and _range(model, path)) or _rule(e)
            for e in errs))
        if all(r.startswith("must be ") for r in rules):
            rules = [rules[0], *(r.removeprefix("must be ") for r in rules[1:])]
        rule = " or ".join(rules)
        value = errs[0].get("input")
        plain = errs[0]["type"] == "missing" or (
            errs[0]["type"] == "value_error" and isinstance(value, dict | list))  # our own messages
        got = "" if plain else f", got {_shown(value)}"
        if errs[0]["type"] == "extra_forbidden" and model is not None:
            known = _known_fields(model, path[:-1])
            got = f"; {closest_names(str(path[-1]), known)}" if known else got
        where = f"{source}: {_format_path(path)}" if path else f"{source}:"
        lines.append(f"{where} {rule}{got}")
    return "\n".join(lines)
