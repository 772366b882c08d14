"""Sweeps: a base scenario plus axes, run in parallel, every run saved as it ends.

A sweep file::

    name: deadlines
    base: {model: alexnet, platform: tegra_k1, ...}   # a scenario mapping,
    # or base_file: ../scenarios/alexnet_tegra_lte_trace.yaml
    grid:                       # cartesian product over dotted scenario fields
      constraints.deadline_ms: [250, 500, 1000, 5000]
      policy.planner: [deepx, cloud-only, gpu-only, cpu-only]
    zip:                        # equal-length lists varied together
      conditions.bandwidth_mbps: [1, 5, 20]
    repetitions: 2              # seeds derived from the base seed and the repetition
    keep_records: false         # also save each run's per-request table

Each run is keyed by a hash of its fully resolved scenario.  A worker writes
``runs/<key>.json`` (summary or error) when its run ends, after the optional
``records/<key>.parquet``; a re-run skips keys already done, so an
interrupted sweep resumes where it stopped.  A run that fails is recorded with
its error and the others go on.  :func:`load_results` reads the tidy table.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import time
import traceback
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from deepx_sim.errors import DeepxError, ScenarioError
from deepx_sim.results import atomic_path, write_table
from deepx_sim.scenario import build_simulation, parse_scenario, read_yaml_mapping

MAX_BATCH = 8
SWEEP_FIELDS = {"name", "base", "base_file", "grid", "zip", "repetitions", "keep_records"}


@dataclass(frozen=True)
class Run:
    key: str
    params: dict[str, Any]  # swept field -> value, plus "repetition" and "seed"
    scenario: dict[str, Any]  # the fully resolved scenario mapping


@dataclass(frozen=True)
class Sweep:
    name: str
    runs: tuple[Run, ...]
    base_dir: Path  # relative paths in scenarios start here
    keep_records: bool = False
    axes: tuple[str, ...] = ()


@dataclass
class Progress:
    total: int
    skipped: int = 0
    done: int = 0
    failed: int = 0
    started_s: float = field(default_factory=time.perf_counter)

    @property
    def finished(self) -> int:
        return self.done + self.failed

    @property
    def eta_s(self) -> float:
        left = self.total - self.skipped - self.finished
        if self.finished == 0:
            return math.nan
        return (time.perf_counter() - self.started_s) / self.finished * left


# ------------------------------------------------------------------ expanding a sweep
def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, last = dotted.split(".")
    for part in parents:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ScenarioError(f"{dotted}: {part!r} is not a section of the scenario")
        node = child
    node[last] = value


def _deep_merge(under: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``under`` with ``over``'s fields laid on top; nested mappings merge field by field."""
    merged = copy.deepcopy(under)
    for name, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(name), dict):
            merged[name] = _deep_merge(merged[name], value)
        else:
            merged[name] = copy.deepcopy(value)
    return merged


def run_key(scenario: dict[str, Any]) -> str:
    text = json.dumps(scenario, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def derived_seed(base_seed: int, repetition: int) -> int:
    """Repetition 0 keeps the base seed; others get independent-looking seeds."""
    if repetition == 0:
        return base_seed
    return zlib.crc32(f"{base_seed}:{repetition}".encode()) & 0x7FFFFFFF


def expand(data: dict[str, Any], source: str, base_dir: Path) -> Sweep:
    """Validate a sweep mapping and resolve every run (errors name ``source``)."""
    unknown = sorted(set(data) - SWEEP_FIELDS)
    if unknown:
        raise ScenarioError(f"{source}: {unknown[0]} is not a known field; a sweep has "
                            f"{', '.join(sorted(SWEEP_FIELDS))}")
    if "base" not in data and "base_file" not in data:
        raise ScenarioError(f"{source}: give base (a scenario), base_file (its path), or both "
                            "(base then overrides fields of base_file)")
    base = data.get("base") or {}
    if not isinstance(base, dict):
        raise ScenarioError(f"{source}: base must be a scenario mapping, got {type(base).__name__}")
    if "base_file" in data:
        base_path = base_dir / str(data["base_file"])
        base = _deep_merge(read_yaml_mapping(base_path), base)
        base_dir = base_path.parent
    grid = data.get("grid") or {}
    zipped = data.get("zip") or {}
    for name, axes in (("grid", grid), ("zip", zipped)):
        if not isinstance(axes, dict):
            raise ScenarioError(f"{source}: {name} must map dotted fields to lists, got {axes!r}")
        for dotted, values in axes.items():
            if not isinstance(values, list) or not values:
                raise ScenarioError(f"{source}: {name}.{dotted} must be a non-empty list, got {values!r}")
    lengths = {len(v) for v in zipped.values()}
    if len(lengths) > 1:
        raise ScenarioError(f"{source}: zip lists must have equal lengths, got "
                            f"{ {k: len(v) for k, v in zipped.items()} }")
    reps = data.get("repetitions", 1)
    if not isinstance(reps, int) or reps < 1:
        raise ScenarioError(f"{source}: repetitions must be an integer >= 1, got {reps!r}")
    keep = data.get("keep_records", False)
    if not isinstance(keep, bool):
        raise ScenarioError(f"{source}: keep_records must be true or false, got {keep!r}")
    base_seed = base.get("seed", 0)
    if not isinstance(base_seed, int):
        raise ScenarioError(f"{source}: base.seed must be an integer, got {base_seed!r}")
    zip_rows = [dict(zip(zipped, row, strict=True)) for row in zip(*zipped.values(), strict=True)] or [{}]
    grid_rows = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    runs, seen = [], set()
    for grid_row in grid_rows:
        for zip_row in zip_rows:
            for rep in range(reps):
                scenario = copy.deepcopy(base)
                params = {**grid_row, **zip_row}
                for dotted, value in params.items():
                    try:
                        _set_dotted(scenario, dotted, value)
                    except ScenarioError as exc:
                        raise ScenarioError(f"{source}: {exc}") from None
                if "seed" not in params:
                    scenario["seed"] = derived_seed(base_seed, rep)
                described = ", ".join(f"{k}={v}" for k, v in params.items())
                parse_scenario(scenario, f"{source} [{described or 'base'}]")
                key = run_key({"scenario": scenario, "base_dir": str(base_dir.resolve())})
                if key in seen:
                    continue
                seen.add(key)
                runs.append(Run(key, {**params, "repetition": rep, "seed": scenario["seed"]}, scenario))
    name = str(data.get("name") or Path(source).stem)
    return Sweep(name, tuple(runs), base_dir, keep, tuple([*grid, *zipped]))


def load_sweep(path: str | Path) -> Sweep:
    path = Path(path)
    return expand(read_yaml_mapping(path), str(path), path.parent)


# ------------------------------------------------------------------ running
def _write_json(path: Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as handle:
        json.dump(payload, handle, indent=1, default=_plain)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def run_one(run: Run, base_dir: str, out_dir: str, keep_records: bool) -> dict[str, Any]:
    """Simulate one run and write its files; never raises for a bad run."""
    out = Path(out_dir)
    started = time.perf_counter()
    payload: dict[str, Any] = {"key": run.key, "params": run.params, "scenario": run.scenario}
    try:
        scenario = parse_scenario(run.scenario, "scenario")
        result = build_simulation(scenario, base_dir, "scenario").run()
        if keep_records:
            write_table(result.records, out / "records" / f"{run.key}.parquet")
        payload.update(status="ok", error="", summary=result.summary,
                       run_energy_j=result.run_energy_j)
    except DeepxError as exc:
        payload.update(status="failed", error=str(exc))
    except Exception as exc:  # a bug in one run must not stop the sweep; keep the trace
        payload.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                       traceback=traceback.format_exc())
    payload["wall_s"] = time.perf_counter() - started
    _write_json(out / "runs" / f"{run.key}.json", payload)
    return payload


def pending_runs(sweep: Sweep, out_dir: Path) -> list[Run]:
    """Runs without a successful result in ``out_dir`` (failed ones are retried)."""
    todo = []
    for run in sweep.runs:
        path = out_dir / "runs" / f"{run.key}.json"
        if path.is_file():
            try:
                if json.loads(path.read_text()).get("status") == "ok":
                    continue
            except (OSError, json.JSONDecodeError):
                pass  # a damaged file: run again
        todo.append(run)
    return todo


def run_sweep(sweep: Sweep, out_dir: str | Path, workers: int = 1, dask_address: str | None = None,
              progress: Callable[[Progress], None] | None = None, csv: bool = False) -> pd.DataFrame:
    """Run every pending run of ``sweep`` into ``out_dir``; return the tidy table.

    ``workers`` local processes (1: in this process), or the Dask cluster at
    ``dask_address``.  KeyboardInterrupt stops submitting and cancels what has
    not started; every finished run is already on disk."""
    out = Path(out_dir)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    if sweep.keep_records:
        (out / "records").mkdir(exist_ok=True)
    _write_json(out / "sweep.json", {"name": sweep.name, "axes": list(sweep.axes),
                                     "runs": [r.key for r in sweep.runs]})
    todo = pending_runs(sweep, out)
    state = Progress(total=len(sweep.runs), skipped=len(sweep.runs) - len(todo))
    if progress:
        progress(state)

    def finished(payload: dict[str, Any]) -> None:
        if payload["status"] == "ok":
            state.done += 1
        else:
            state.failed += 1
        if progress:
            progress(state)

    args = (str(sweep.base_dir), str(out), sweep.keep_records)
    if dask_address is not None:
        _run_dask(todo, args, dask_address, finished)
    elif workers <= 1:
        for run in todo:
            finished(run_one(run, *args))
    else:
        _run_processes(todo, args, workers, finished)
    table = load_results(out)
    write_table(table, out / "results.parquet")
    if csv:
        write_table(table, out / "results.csv")
    return table


def _run_batch(runs: list[Run], base_dir: str, out_dir: str, keep_records: bool) -> list[str]:
    """Run several runs in a worker; each is on disk as it ends.  Only the statuses
    travel back, so the parent's pickling stays small."""
    return [run_one(run, base_dir, out_dir, keep_records)["status"] for run in runs]


def _batch_size(n_runs: int, workers: int) -> int:
    """Runs per task: a few, so short runs do not pay a round trip each, while the
    queue still splits evenly over the workers and Ctrl-C stops soon."""
    return max(1, min(MAX_BATCH, n_runs // (workers * 8)))


def _run_processes(todo: list[Run], args: tuple[str, str, bool], workers: int,
                   finished: Callable[[dict[str, Any]], None]) -> None:
    size = _batch_size(len(todo), workers)
    batches: Iterator[list[Run]] = iter([todo[i:i + size] for i in range(0, len(todo), size)])
    pool = ProcessPoolExecutor(max_workers=workers)
    running: set[Future[list[str]]] = set()
    try:
        for batch in itertools.islice(batches, 2 * workers):  # a short queue, so Ctrl-C cancels fast
            running.add(pool.submit(_run_batch, batch, *args))
        while running:
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                for status in future.result():
                    finished({"status": status})
                nxt = next(batches, None)
                if nxt is not None:
                    running.add(pool.submit(_run_batch, nxt, *args))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _run_dask(todo: list[Run], args: tuple[str, str, bool], address: str,
              finished: Callable[[dict[str, Any]], None]) -> None:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise DeepxError("--dask needs the distributed package: pip install 'deepx_sim[dask]'") from None
    try:
        client = Client(address, timeout="10s")
    except OSError as exc:
        raise DeepxError(f"cannot reach the Dask scheduler at {address!r}: {exc}") from None
    with client:
        futures = [client.submit(run_one, run, *args, key=f"deepx-run-{run.key}", pure=False)
                   for run in todo]
        try:
            for future in as_completed(futures):
                finished(future.result())
        except BaseException:
            client.cancel(futures)
            raise


# ------------------------------------------------------------------ results
def load_results(out_dir: str | Path) -> pd.DataFrame:
    """The tidy table of a sweep folder: one row per run, swept fields (dotted
    names) as columns, then the summary metrics; failed runs have ``status``
    ``failed`` and their ``error``."""
    out = Path(out_dir)
    runs_dir = out / "runs"
    if not runs_dir.is_dir():
        raise DeepxError(f"{out}: not a sweep results folder (no runs/ inside)")
    order: dict[str, int] = {}
    index_file = out / "sweep.json"
    if index_file.is_file():
        try:
            order = {k: i for i, k in enumerate(json.loads(index_file.read_text()).get("runs", []))}
        except (OSError, json.JSONDecodeError):
            order = {}
    rows = []
    paths = sorted(runs_dir.glob("*.json"), key=lambda p: (order.get(p.stem, len(order)), p.stem))
    for path in paths:
        try:
            payload = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DeepxError(f"{path}: unreadable run file: {exc}") from None
        row: dict[str, Any] = {"key": payload["key"], "status": payload["status"]}
        row.update(payload.get("params", {}))
        scenario = payload.get("scenario", {})
        policy = scenario.get("policy", {})
        row.setdefault("model", scenario.get("model"))
        row.setdefault("platform", scenario.get("platform"))
        row.setdefault("policy.kind", policy.get("kind", "replan"))
        row.setdefault("policy.planner", policy.get("planner", "deepx"))
        row.update(payload.get("summary", {}))
        row["wall_s"] = payload.get("wall_s")
        row["error"] = payload.get("error", "")
        rows.append(row)
    return pd.DataFrame(rows)

