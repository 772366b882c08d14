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

``sweep.json`` in the folder records the sweep it was last made from (file and
SHA-256) and its run keys.  Runs on disk that this sweep does not define (left
by an earlier version of the file) are *stale*: kept on disk, but left out of
the table unless asked for (``all_runs=True``).

Workers die with the sweep: an interrupt (Ctrl-C, or SIGTERM turned into an
exception by the caller) cancels queued runs and ends the workers; a killed
parent is noticed by each worker (Linux parent-death signal, elsewhere a
thread watching the parent's id).
"""

from __future__ import annotations

import copy
import ctypes
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
import warnings
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from deepx_sim.errors import DeepxError, ScenarioError
from deepx_sim.results import atomic_path, check_output_path, remove_leftover_temps, write_table
from deepx_sim.scenario import build_simulation, parse_scenario, read_yaml_mapping

MAX_BATCH = 8
PARENT_POLL_S = 0.5  # how often a worker without a parent-death signal checks its parent
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
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
    source: str = ""  # the file name or label errors and the folder index name
    source_file: str | None = None  # absolute path, when read from a file as it is
    sha256: str = ""  # of the file's bytes, or of the mapping when built in code


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


def _sha256_of_mapping(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def expand(data: dict[str, Any], source: str, base_dir: Path, source_file: str | None = None,
           sha256: str | None = None) -> Sweep:
    """Validate a sweep mapping and resolve every run (errors name ``source``).

    ``source_file`` and ``sha256`` identify the file it was read from (see
    :func:`load_sweep`); without them the mapping's own hash is recorded."""
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
    return Sweep(name, tuple(runs), base_dir, keep, tuple([*grid, *zipped]), source, source_file,
                 sha256 or _sha256_of_mapping(data))


def _file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def load_sweep(path: str | Path) -> Sweep:
    path = Path(path)
    data = read_yaml_mapping(path)
    return expand(data, str(path), path.parent, str(path.resolve()), _file_sha256(path))


# ------------------------------------------------------------------ run files
def _write_json(path: Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as handle:
        json.dump(payload, handle, indent=1, default=_plain)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _redo(path: Path) -> str:
    return f"delete {path} and run the sweep again to redo that run"


def read_run(path: Path) -> dict[str, Any]:
    """One run file, checked: a JSON object with ``key`` (its file name) and
    ``status`` ok or failed; raises DeepxError naming the file otherwise."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or not UTF-8
        raise DeepxError(f"{path}: unreadable run file ({exc}); {_redo(path)}") from None
    if not isinstance(payload, dict):
        raise DeepxError(f"{path}: a run file holds a JSON object with key and status, got a "
                         f"{type(payload).__name__}; {_redo(path)}")
    for name in ("key", "status"):
        if name not in payload:
            raise DeepxError(f"{path}: run file has no {name!r} field; {_redo(path)}")
    if payload["key"] != path.stem:
        raise DeepxError(f"{path}: key {payload['key']!r} does not match the file name; {_redo(path)}")
    if payload["status"] not in ("ok", "failed"):
        raise DeepxError(f"{path}: status must be 'ok' or 'failed', got {payload['status']!r}; "
                         f"{_redo(path)}")
    for name in ("params", "scenario", "summary"):
        if not isinstance(payload.get(name, {}), dict):
            raise DeepxError(f"{path}: {name} must be a JSON object, got "
                             f"{type(payload[name]).__name__}; {_redo(path)}")
    return payload


# ------------------------------------------------------------------ running
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
    """Runs without a successful result in ``out_dir`` (failed or damaged ones are redone)."""
    todo = []
    for run in sweep.runs:
        path = out_dir / "runs" / f"{run.key}.json"
        if path.is_file():
            try:
                if read_run(path)["status"] == "ok":
                    continue
            except DeepxError:
                pass  # a damaged file: run again, which replaces it
        todo.append(run)
    return todo


def run_sweep(sweep: Sweep, out_dir: str | Path, workers: int = 1, dask_address: str | None = None,
              progress: Callable[[Progress], None] | None = None, csv: bool = False) -> pd.DataFrame:
    """Run every pending run of ``sweep`` into ``out_dir``; return the tidy table.

    ``workers`` local processes (1: in this process), or the Dask cluster at
    ``dask_address``.  The folder, the worker count and the scheduler are
    checked before any run starts.  KeyboardInterrupt (or any exception)
    cancels what has not started and ends the workers; every finished run is
    already on disk.  Raises DeepxError for a bad folder, count or address."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise DeepxError(f"workers must be an integer >= 1 (local worker processes), got {workers!r}")
    out = check_output_path(out_dir, "dir")
    with ExitStack() as stack:
        client = stack.enter_context(_dask_client(dask_address)) if dask_address is not None else None
        todo, state = _prepare_folder(sweep, out)
        if progress:
            progress(state)

        def finished(status: str) -> None:
            if status == "ok":
                state.done += 1
            else:
                state.failed += 1
            if progress:
                progress(state)

        args = (str(sweep.base_dir), str(out), sweep.keep_records)
        if client is not None:
            _run_dask(client, todo, args, finished)
        elif workers == 1:
            for run in todo:
                finished(run_one(run, *args)["status"])
        else:
            _run_processes(todo, args, workers, finished)
    table = load_results(out)
    write_table(table, out / "results.parquet")
    if csv:
        write_table(table, out / "results.csv")
    return table


def _prepare_folder(sweep: Sweep, out: Path) -> tuple[list[Run], Progress]:
    """Folders made, a killed writer's temporary files removed, the index written."""
    (out / "runs").mkdir(parents=True, exist_ok=True)
    remove_leftover_temps(out / "runs")
    if (out / "records").is_dir() or sweep.keep_records:
        (out / "records").mkdir(exist_ok=True)
        remove_leftover_temps(out / "records")
    _write_json(out / INDEX, {"name": sweep.name, "axes": list(sweep.axes), "source": sweep.source,
                              "sweep_file": sweep.source_file, "sweep_sha256": sweep.sha256,
                              "runs": [r.key for r in sweep.runs]})
    todo = pending_runs(sweep, out)
    return todo, Progress(total=len(sweep.runs), skipped=len(sweep.runs) - len(todo))


def _run_batch(runs: list[Run], base_dir: str, out_dir: str, keep_records: bool) -> list[str]:
    """Run several runs in a worker; each is on disk as it ends.  Only the statuses
    travel back, so the parent's pickling stays small."""
    return [run_one(run, base_dir, out_dir, keep_records)["status"] for run in runs]


def _batch_size(n_runs: int, workers: int) -> int:
    """Runs per task: a few, so short runs do not pay a round trip each, while the
    queue still splits evenly over the workers and Ctrl-C stops soon."""
    return max(1, min(MAX_BATCH, n_runs // (workers * 8)))


def _run_processes(todo: list[Run], args: tuple[str, str, bool], workers: int,
                   finished: Callable[[str], None]) -> None:
    size = _batch_size(len(todo), workers)
    batches: Iterator[list[Run]] = (todo[i:i + size] for i in range(0, len(todo), size))
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_worker_start, initargs=(os.getpid(),))
    running: set[Future[list[str]]] = set()
    try:
        for batch in itertools.islice(batches, 2 * workers):  # a short queue, so Ctrl-C cancels fast
            running.add(pool.submit(_run_batch, batch, *args))
        while running:
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                for status in future.result():
                    finished(status)
                nxt = next(batches, None)
                if nxt is not None:
                    running.add(pool.submit(_run_batch, nxt, *args))
    except BaseException:
        _stop_pool(pool)
        raise
    pool.shutdown()


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel queued runs and end the workers now.  A run cut short has no file
    yet (at most a temporary one, removed on the next start) and is redone on
    resume.  Python 3.14's ``terminate_workers`` does exactly this."""
    terminate = getattr(pool, "terminate_workers", None)
    if terminate is not None:
        terminate()
        return
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=5)


# ------------------------------------------------------------------ workers die with the parent
def _worker_start(parent_pid: int) -> None:
    """Pool initializer: the parent alone decides on Ctrl-C (the terminal sends
    SIGINT to every process of the group), SIGTERM ends a worker at once (fork
    copies the parent's handler), and the worker dies with its parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # a forkserver's workers are its children, not ours; otherwise the parent may
    # have died before the signal was armed (or the watcher started: it watches the
    # pid the parent gave, not one read here, after the parent may be gone)
    forkserver = multiprocessing.get_start_method() == "forkserver"
    if not _parent_death_signal():
        threading.Thread(target=watch_parent, args=(os.getppid() if forkserver else parent_pid,),
                         daemon=True, name="deepx-watch-parent").start()
    if not forkserver and os.getppid() != parent_pid:
        os._exit(1)


def _parent_death_signal() -> bool:
    """Ask Linux to SIGKILL this process when its parent dies; False where unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def watch_parent(parent_pid: int, poll_s: float = PARENT_POLL_S) -> None:
    """Exit this process once its parent is gone (it is then re-parented, so
    ``getppid`` changes).  Runs in a daemon thread; the portable fallback."""
    while os.getppid() == parent_pid:
        time.sleep(poll_s)
    os._exit(1)


# ------------------------------------------------------------------ Dask
def _dask_client(address: str) -> Any:
    """A connected client; a bad or unreachable address is a clear DeepxError."""
    try:
        from distributed import Client
    except ImportError:
        raise DeepxError("--dask needs the distributed package: pip install 'deepx_sim[dask]'") from None
    try:
        return Client(address, timeout="10s")
    except (OSError, ValueError, TypeError) as exc:  # TimeoutError is an OSError
        raise DeepxError(f"Dask scheduler {address!r}: cannot connect ({exc}); give the scheduler's "
                         "address as host:port or tcp://host:port") from None


def _run_dask(client: Any, todo: list[Run], args: tuple[str, str, bool],
              finished: Callable[[str], None]) -> None:
    from distributed import as_completed

    futures = [client.submit(run_one, run, *args, key=f"deepx-run-{run.key}", pure=False)
               for run in todo]
    try:
        for future in as_completed(futures):
            finished(future.result()["status"])
    except BaseException:
        client.cancel(futures)
        raise


# ------------------------------------------------------------------ the folder and its table
INDEX = "sweep.json"
#: columns every table has, even with no runs
BASE_COLUMNS = ("key", "status", "model", "platform", "policy.kind", "policy.planner", "wall_s", "error")


@dataclass(frozen=True)
class FolderState:
    """What a results folder holds before ``sweep`` runs into it."""
    kept: int  # runs on disk that the sweep defines (ok ones are not run again)
    stale: int  # runs on disk that it does not define: kept on disk, left out of the table
    previous: str | None  # the sweep the folder was made from (None: a new folder)
    changed: bool  # made from another sweep file, or another version of it


def folder_state(sweep: Sweep, out_dir: str | Path) -> FolderState:
    out = Path(out_dir)
    runs_dir = out / "runs"
    on_disk = {p.stem for p in runs_dir.glob("*.json")} if runs_dir.is_dir() else set()
    keys = {r.key for r in sweep.runs}
    try:
        index = _read_index(out)
    except DeepxError:
        index = {}  # damaged: it is about to be rewritten
    previous = (index.get("sweep_file") or index.get("source")) if index else None
    # folders from before the hash was recorded compare by their runs alone
    changed = bool(index) and (index.get("runs") != [r.key for r in sweep.runs]
                               or index.get("sweep_sha256", sweep.sha256) != sweep.sha256)
    return FolderState(len(on_disk & keys), len(on_disk - keys), previous, changed)


def _read_index(out: Path) -> dict[str, Any]:
    """``sweep.json``, checked ({} when the folder has none)."""
    path = out / INDEX
    if not path.exists():
        return {}
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DeepxError(f"{path}: unreadable sweep index ({exc}); run the sweep into {out} again "
                         "to rewrite it") from None
    runs = index.get("runs") if isinstance(index, dict) else None
    if not isinstance(runs, list) or not all(isinstance(k, str) for k in runs):
        raise DeepxError(f"{path}: a sweep index holds a JSON object whose runs is a list of keys; "
                         f"run the sweep into {out} again to rewrite it")
    return index


def _warn_if_edited(out: Path, index: dict[str, Any]) -> None:
    source = index.get("sweep_file")
    if source and Path(source).is_file() and _file_sha256(Path(source)) != index.get("sweep_sha256"):
        warnings.warn(f"{out}: {source} changed after these runs were made; the table shows the runs "
                      "of the version that made them; run the sweep again to update it", stacklevel=3)


def load_results(out_dir: str | Path, all_runs: bool = False) -> pd.DataFrame:
    """The tidy table of a sweep folder: one row per run, swept fields (dotted
    names) as columns, then the summary metrics; failed runs have ``status``
    ``failed`` and their ``error``.

    Only the runs of the sweep the folder was last made from, in its order;
    ``all_runs`` adds the stale ones after them, with a ``stale`` column.
    Raises DeepxError for a folder or run file that is not a sweep's."""
    out = Path(out_dir)
    runs_dir = out / "runs"
    if not runs_dir.is_dir():
        raise DeepxError(f"{out}: not a sweep results folder (no runs/ inside)")
    index = _read_index(out)
    _warn_if_edited(out, index)
    on_disk = sorted(p.stem for p in runs_dir.glob("*.json"))
    current = index.get("runs", on_disk)
    present = set(on_disk)
    keys = [k for k in current if k in present]
    stale = sorted(present - set(current)) if all_runs else []
    rows = [_row(read_run(runs_dir / f"{key}.json")) for key in [*keys, *stale]]
    frame = pd.DataFrame(rows, columns=None if rows else list(BASE_COLUMNS))
    if all_runs:
        frame["stale"] = [False] * len(keys) + [True] * len(stale)
    return frame


def _row(payload: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"key": payload["key"], "status": payload["status"]}
    row.update(payload.get("params", {}))
    scenario = payload.get("scenario", {})
    policy = scenario.get("policy") if isinstance(scenario.get("policy"), dict) else {}
    row.setdefault("model", scenario.get("model"))
    row.setdefault("platform", scenario.get("platform"))
    row.setdefault("policy.kind", policy.get("kind", "replan"))
    row.setdefault("policy.planner", policy.get("planner", "deepx"))
    row.update(payload.get("summary", {}))
    row["wall_s"] = payload.get("wall_s")
    row["error"] = payload.get("error", "")
    return row

