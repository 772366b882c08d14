"""The ``deepx-sim`` command: parse arguments, call the library, print.

Every DeepxError, and every bad option, becomes one ``deepx-sim: error: ...``
line on stderr and exit status 2; nothing else here decides anything.  Any
other exception is a bug: :func:`main` prints one line saying so, saves the
traceback to a file and exits with status 70 (set DEEPX_SIM_DEBUG=1 to let it
raise instead, as the test suite does).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from deepx_sim.config import (
    DEFAULT_DEADLINE_S,
    DEFAULT_MAX_ACCURACY_LOSS,
    Positive,
    PositiveInt,
    UnitInterval,
    check_value,
    field_type,
)
from deepx_sim.errors import DeepxError

if TYPE_CHECKING:
    import pandas as pd

    from deepx_sim.compress.search import Outcome
    from deepx_sim.sweep import FolderState, Sweep

#: Exit status of an internal error (BSD sysexits EX_SOFTWARE).
EXIT_BUG = 70

MIB = 1024 * 1024


_NUMBER = re.compile(r"^-?[\d,]+(\.\d+)?( ?[A-Za-z]{1,4})?$")


def _table(rows: list[list[str]], header: list[str]) -> str:
    """A plain text table; cells that read as numbers are right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        cells = [str(c).rjust(w) if _NUMBER.match(str(c)) else str(c).ljust(w)
                 for c, w in zip(r, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _mib(n: int) -> str:
    """Bytes as MiB with two decimals (KiB below 0.1 MiB): 930.25 MiB, not 930.3."""
    return f"{n / MIB:.2f} MiB" if n >= 0.1 * MIB else f"{n / 1024:.1f} KiB"


def _print_json(data: Any) -> None:
    """Strict JSON on stdout: NaN and infinities (no value) become null."""
    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    print(json.dumps(clean(data), indent=2, allow_nan=False, default=float))


# ------------------------------------------------------------------ option types
def _option(kind: Callable[[], Any], parse: Callable[[str], Any] = float) -> Callable[[str], Any]:
    """An argparse ``type`` that validates an option as ``kind()``: a validated
    field's type, looked up only when the option is given."""
    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            what = "a whole number" if parse is int else "a number"
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        try:
            return check_value(kind(), value, "")
        except DeepxError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _spec_field(model: str, field: str) -> Callable[[], Any]:
    """The type of a scenario field (its range is declared there, once)."""
    def kind() -> Any:
        from deepx_sim import scenario

        return field_type(getattr(scenario, model), field)

    return kind


def _precisions(text: str) -> tuple[int, ...]:
    try:
        bits = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be bits such as 32,16,8, got {text!r}") from None
    bad = [b for b in bits if b not in (64, 32, 16, 8)]
    if bad:
        raise argparse.ArgumentTypeError(f"{bad} not allowed; choose from 64, 32, 16, 8")
    return bits


def _input_shapes(values: list[str] | None) -> dict[str | None, tuple[int, ...]]:
    from deepx_sim.model.onnx import parse_input_shape

    return dict(parse_input_shape(v) for v in values or [])


# ------------------------------------------------------------------ commands

def cmd_models(args: argparse.Namespace) -> None:
    from deepx_sim.model import ZOO, footprints, total

    if args.json:
        out = []
        for entry in ZOO.values():
            g = entry.build()
            out.append({"name": entry.name, "description": entry.description,
                        "reference": entry.reference, "params": total(g, "params"),
                        "macs": total(g, "macs"), "layers": g.number_of_nodes()})
        _print_json(out)
        return
    rows = []
    for entry in ZOO.values():
        g = entry.build()
        fp = footprints(g, 32)
        rows.append([entry.name, f"{total(g, 'params'):,}", f"{total(g, 'macs') / 1e9:.3f}",
                     str(g.number_of_nodes()), _mib(fp.cleaned_bytes), entry.description])
    print(_table(rows, ["model", "params", "GMACs", "layers", "fp32 weights", "description"]))


def cmd_inspect(args: argparse.Namespace) -> None:
    from deepx_sim.model import load_model
    from deepx_sim.model.summary import model_summary

    graph = load_model(args.model, _input_shapes(args.input_shape))
    if args.fuse:
        from deepx_sim.model.fusion import fuse

        graph = fuse(graph)
    report = model_summary(graph, args.precision)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    rows = [[lay["name"], lay["kind"], "x".join(map(str, lay["output_shape"])),
             f"{lay['params']:,}", f"{lay['macs']:,}", _mib(lay["param_bytes"]),
             _mib(lay["output_bytes"])] for lay in report["layers"]]
    print(f"model {report['model']} ({report['source']}), weights at {args.precision}-bit\n")
    if not args.totals_only:
        print(_table(rows, ["layer", "kind", "output", "params", "MACs", "weights", "output"]))
        print()
    t = report["totals"]
    print(f"layers                     {t['layers']}")
    print(f"parameters                 {t['params']:,}")
    print(f"multiply-adds              {t['macs']:,} ({t['macs'] / 1e9:.3f} G)")
    print(f"FLOPs                      {t['flops']:,}")
    print("memory (DXTK Figure 6 steps; 1 MiB = 2**20 B):")
    steps = [("original (64-bit weights + gradients)", t["original_bytes"]),
             (f"precision scaled ({args.precision}-bit + gradients)", t["scaled_bytes"]),
             (f"cleaned ({args.precision}-bit weights only)", t["cleaned_bytes"]),
             ("peak activation memory", t["peak_activation_bytes"])]
    for label, size in steps:
        print(f"  {label:<40} {_mib(size):>12}  ({size:,} B)")
    if "stored_weight_bytes" in t:
        print("as stored in the file (weights at their own precision):")
        for label, key in (("weight bytes", "stored_weight_bytes"),
                           ("training-only state", "training_state_bytes")):
            print(f"  {label:<40} {_mib(t[key]):>12}  ({t[key]:,} B)")


def cmd_platforms(args: argparse.Namespace) -> None:
    from deepx_sim.platform import load_platform, platform_names

    names = platform_names()
    if args.json:
        _print_json([load_platform(n).summary() for n in names])
        return
    rows = []
    for name in names:
        p = load_platform(name)
        rows.append([name, ", ".join(f"{q.name}({q.kind})" for q in p.processors),
                     ", ".join(lk.name for lk in p.links) or "-"])
    print(_table(rows, ["platform", "processors", "links"]))


def cmd_platform(args: argparse.Namespace) -> None:
    from deepx_sim.platform import load_platform

    platform = load_platform(args.name)
    report = platform.summary()
    if args.json:
        _print_json(report)
        return
    print(f"{platform.name}: {platform.description}")
    print(f"file {platform.path}; input arrives on {platform.sensor}; "
          f"shared memory {platform.shared_memory_gbps} GB/s\n")
    rows = [[q["name"], q["kind"],
             " ".join(f"{k}={v:g}" for k, v in q["peak_gflops"].items()),
             f"{q['memory_bandwidth_gbps']:g}", _mib(q["usable_memory_bytes"]),
             f"{q['active_power_w']:g}", f"{q['idle_power_w']:g}"] for q in report["processors"]]
    print(_table(rows, ["processor", "kind", "peak GFLOP/s", "mem GB/s", "memory", "active W",
                        "idle W"]))
    if report["links"]:
        print()
        rows = [[lk["name"], lk["remote"], f"{lk['uplink_mbps']:g}", f"{lk['downlink_mbps']:g}",
                 f"{lk['rtt_ms']:g}", lk["radio"]["name"]] for lk in report["links"]]
        print(_table(rows, ["link", "remote", "up Mbps", "down Mbps", "RTT ms", "radio"]))
    if platform.sources:
        print("\nsources:")
        for s in platform.sources:
            print(f"  - {s}")


def _problem(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from deepx_sim.costs import Conditions
    from deepx_sim.model import load_model
    from deepx_sim.model.profiled import bind_platform
    from deepx_sim.model.profiles import load_profile
    from deepx_sim.plan import Constraints, Problem
    from deepx_sim.platform import load_platform

    graph = load_model(args.model, _input_shapes(getattr(args, "input_shape", None)))
    given = load_platform(args.platform) if args.platform else None
    platform, measured = bind_platform(graph, given, objective=args.objective)
    link = args.link
    if link is None and platform.links:
        link = platform.links[0].name
    given = [f"--{k.replace('_', '-')}" for k in ("link", "bandwidth_mbps", "downlink_mbps", "rtt_ms")
             if getattr(args, k) is not None]
    if given and not platform.links:
        raise DeepxError(f"{' and '.join(given)}: platform {platform.name!r} has no wireless link "
                         f"(it has no cloud to reach)")
    conditions = Conditions(link=link, uplink_mbps=args.bandwidth_mbps,
                            downlink_mbps=args.downlink_mbps, rtt_ms=args.rtt_ms,
                            cloud_reachable=not args.no_cloud)
    constraints = Constraints(deadline_s=args.deadline_ms / 1000.0,
                              max_accuracy_loss=args.max_accuracy_loss,
                              energy_budget_j=args.energy_budget_j, objective=args.objective)
    profile = load_profile(args.profile, graph, platform) if args.profile else measured
    return Problem(graph, platform, conditions, constraints, profile=profile,
                   precisions=args.precisions, accuracy=_accuracy_model(args, graph),
                   fuse=not args.no_fusion)


def _accuracy_model(args: argparse.Namespace, graph):  # type: ignore[no-untyped-def]
    """The accuracy model measured on --data or --inputs, as compress reads them (None: the default)."""
    from deepx_sim.accuracy import AccuracyModel, load_inputs, load_labelled
    from deepx_sim.model.weights import weight_store

    option, path = ("--data", args.data) if args.data else ("--inputs", args.inputs)
    if not path:
        return None
    if weight_store(graph) is None:
        raise DeepxError(f"{option} {path}: model {args.model!r} has no weights (a zoo model), so accuracy "
                         "cannot be measured on it; give an .onnx file with weights")
    source = load_labelled(path, graph) if args.data else load_inputs(path, graph)
    return AccuracyModel(graph, source=source)


def _measured_plan_loss(problem, plan) -> float | None:  # type: ignore[no-untyped-def]
    """The plan's changes run together on the accuracy source (None without measured curves)."""
    return problem.accuracy.combined_loss({p.layer: p.variant for p in plan.placements})


def _plan_lines(plan) -> list[str]:  # type: ignore[no-untyped-def]
    gap = "n/a" if plan.gap is None else f"{plan.gap:.2g}"
    lines = [
        f"planner {plan.planner}: {plan.status}; solver {plan.solver or '-'}, "
        f"{plan.solve_time_s * 1000:.1f} ms, gap {gap}",
        f"latency {plan.latency_s * 1000:.2f} ms (deadline {plan.constraints.deadline_s * 1000:g} ms)"
        f", device energy {plan.energy_j * 1000:.2f} mJ, accuracy loss {plan.accuracy_loss:.4f}",
        "energy by part: " + ", ".join(f"{k} {v * 1000:.2f} mJ"
                                       for k, v in plan.energy_breakdown_j.items()),
        "memory: " + ", ".join(f"{k} {_mib(v)}" for k, v in plan.memory_bytes.items()),
        "blocks:",
    ]
    ranks = {p.layer: p.variant for p in plan.placements}
    for proc, layers in plan.blocks():
        compressed = [f"{n}(k={ranks[n].rank})" for n in layers if ranks[n].rank is not None]
        extra = f"  compressed: {', '.join(compressed)}" if compressed else ""
        lines.append(f"  {proc:<6} {layers[0]} .. {layers[-1]} ({len(layers)} layers){extra}")
    return lines


def cmd_plan(args: argparse.Namespace) -> None:
    import dataclasses

    from deepx_sim.model.profiled import notes_for
    from deepx_sim.plan import get_planner

    problem = _problem(args)
    options = {"solver": args.solver, "time_limit_s": args.time_limit_s, "gap": args.gap}
    planner = get_planner(args.planner, **(options if args.planner == "deepx" else {}))
    plan = planner.plan(problem)
    measured = _measured_plan_loss(problem, plan)
    spectra = problem.accuracy.spectra_note() if problem.accuracy else ""
    plan = dataclasses.replace(plan, notes=(*plan.notes, *notes_for(problem.graph), *filter(None, [spectra])))
    if args.json:
        record = plan.to_dict()
        if measured is not None:
            record["accuracy_loss_measured"] = measured
        _print_json(record)
        return
    print(f"{problem.model_name} on {problem.platform.name} "
          f"(link {problem.conditions.link or '-'})")
    print("\n".join(_plan_lines(plan)))
    if measured is not None:
        print(f"accuracy: {problem.accuracy.accuracy_source}; the plan's changes run together lose "
              f"{measured:.4f} (the planner's budget adds the curves up: {plan.accuracy_loss:.4f})")
    for note in plan.notes:
        print(f"note: {note}")


def cmd_compare(args: argparse.Namespace) -> None:
    from deepx_sim.plan import get_planner, planner_names

    problem = _problem(args)
    results: dict[str, object] = {}
    for name in [n for n in planner_names() if n != "oracle"]:  # brute force is for tiny graphs
        try:
            results[name] = get_planner(name).plan(problem)
        except DeepxError as exc:
            results[name] = str(exc)
    deepx = results["deepx"] if not isinstance(results["deepx"], str) else None
    rows = []
    for name, plan in results.items():
        if isinstance(plan, str):
            rows.append([name, "-", "-", "-", "-", "-", "-", plan.split(": ", 1)[-1]])
            continue
        measured = _measured_plan_loss(problem, plan)
        ratio = f"{plan.energy_j / deepx.energy_j:.2f}x" if deepx and deepx.energy_j > 0 else "-"
        lat_ratio = f"{plan.latency_s / deepx.latency_s:.2f}x" if deepx else "-"
        rows.append([name, f"{plan.energy_j * 1000:.2f}", ratio, f"{plan.latency_s * 1000:.1f}",
                     lat_ratio, f"{plan.accuracy_loss:.3f}", "-" if measured is None else f"{measured:.3f}",
                     plan.status])
    print(f"{problem.model_name} on {problem.platform.name}, link {problem.conditions.link or '-'}"
          f", deadline {problem.constraints.deadline_s * 1000:g} ms, accuracy budget "
          f"{problem.constraints.max_accuracy_loss:g}\n")
    print(_table(rows, ["planner", "energy mJ", "vs deepx", "latency ms", "vs deepx",
                        "acc loss", "measured", "status"]))
    print(f"\nacc loss: {problem.accuracy.accuracy_source if problem.accuracy else '-'}; the planners' "
          "budget adds per-layer losses up; 'measured' runs each plan's changes together on the same rows")
    print("\n'vs deepx' is the baseline's energy (latency) divided by DeepX's: the papers' "
          "'DeepX improves energy by N x'.")


COMPARED_POLICIES = ("static", "replan", "oracle")


def _simulate_compare(args: argparse.Namespace) -> None:
    """The scenario under each policy kind, everything else equal: one table."""
    from deepx_sim.scenario import build_simulation, load_scenario

    scenario, base = load_scenario(args.scenario)
    rows, summaries = [], {}
    for kind in COMPARED_POLICIES:
        variant = scenario.model_copy(update={"policy": scenario.policy.model_copy(update={"kind": kind})})
        s = build_simulation(variant, base, args.scenario).run().summary
        summaries[kind] = s
        rows.append([kind, f"{s['energy_mean_j'] * 1000:.1f}", f"{s['deadline_miss_rate'] * 100:.1f}",
                     f"{s['offload_rate'] * 100:.1f}", str(s["distinct_plans"]),
                     f"{s['latency_p95_s'] * 1000:.1f}", str(s["radio_promotions"]),
                     str(s["planner_full_solves"]), str(s["planner_pool_size"] or "-")])
    if args.json:
        print(json.dumps(summaries, indent=2, default=float))
        return
    oracle_j = summaries["oracle"]["energy_mean_j"]
    for row, kind in zip(rows, COMPARED_POLICIES, strict=True):
        row.insert(2, f"{summaries[kind]['energy_mean_j'] / oracle_j:.3f}x" if oracle_j else "-")
    print(f"{scenario.name}: {summaries['replan']['requests']} requests, planner "
          f"{scenario.policy.planner}, each policy on the same conditions\n")
    print(_table(rows, ["policy", "energy/request mJ", "vs oracle", "deadline misses %", "sent to cloud %",
                        "distinct plans", "p95 latency ms", "radio promotions", "full solves",
                        "pool"]))
    print("\nstatic: one plan at the run's average conditions; replan: per request from the last "
          "estimate (with deepx,\nthe fast path re-ranks a pool of plans); oracle: per request from "
          "the true conditions (full solves).")


def cmd_simulate(args: argparse.Namespace) -> None:
    from deepx_sim.results import check_table_path, write_table
    from deepx_sim.scenario import run_scenario

    if args.compare:
        if args.out:
            raise DeepxError("--out writes one run's records; it cannot be used with --compare")
        _simulate_compare(args)
        return
    if args.out:
        check_table_path(args.out, "--out")
    try:
        result = run_scenario(args.scenario)
        summary = dict(result.summary)
        if args.out:
            summary["records_file"] = str(write_table(result.records, args.out))
    except KeyboardInterrupt:  # the records file is written atomically: nothing half-written
        print(f"\ninterrupted: nothing written{f' to {args.out}' if args.out else ''}", file=sys.stderr)
        raise SystemExit(130) from None
    if args.json:
        _print_json({"summary": summary, "run_energy_j": result.run_energy_j, "events": result.events})
        return
    s = summary
    print(f"{s['scenario']}: {s['requests']} requests, policy {s['policy']}, "
          f"{s['horizon_s']:.1f} s simulated in {s['wall_s']:.2f} s\n")
    rows = [
        ["latency p50 / p95 / p99", f"{s['latency_p50_s'] * 1000:.1f} / {s['latency_p95_s'] * 1000:.1f}"
         f" / {s['latency_p99_s'] * 1000:.1f} ms"],
        ["deadline misses", f"{s['deadline_miss_rate'] * 100:.2f} %"],
        ["fell back on device", f"{s['fallback_rate'] * 100:.2f} %"],
        ["sent to the cloud", f"{s['offload_rate'] * 100:.2f} %"],
        ["energy per request (mean)", f"{s['energy_mean_j'] * 1000:.2f} mJ"],
        ["distinct plans used", str(s["distinct_plans"])
         + (f" (fast-path pool {s['planner_pool_size']})" if s.get("planner_pool_size") else "")],
        ["radio promotions", str(s["radio_promotions"])],
        ["mean device power", f"{s['mean_power_w'] * 1000:.1f} mW"],
        ["battery drain", f"{s['battery_drain_pct_per_h']:.2f} %/h (inference alone "
         f"{s['inference_drain_pct_per_h']:.2f} %/h)"],
    ]
    print(_table(rows, ["metric", "value"]))
    total_j = sum(result.run_energy_j.values())
    parts = [[k.removesuffix("_j"), f"{v:.3f}", f"{v / total_j * 100:.1f} %" if total_j else "-"]
             for k, v in result.run_energy_j.items() if v]
    print()
    print(_table(parts, ["run energy", "J", "share"]))
    if args.out:
        print(f"\nper-request records: {summary['records_file']}")


def _progress_bar(state: object) -> None:
    from deepx_sim.sweep import Progress

    assert isinstance(state, Progress)
    todo = state.total - state.skipped
    width = 30
    filled = int(width * state.finished / todo) if todo else width
    eta_s = state.eta_s
    eta = "ETA -" if math.isnan(eta_s) else f"ETA {eta_s:.0f} s"
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {state.finished}/{todo} runs"
          f" ({state.failed} failed, {state.skipped} already done), {eta}   ",
          end="" if state.finished < todo else "\n", file=sys.stderr, flush=True)


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that a sweep ends its workers and keeps
    its finished runs (a BaseException, so no run records it as its own failure)."""


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
        raise _Terminated

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: SIGTERM keeps its default
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def cmd_sweep(args: argparse.Namespace) -> None:
    from deepx_sim.results import check_output_path
    from deepx_sim.sweep import folder_state, load_sweep, run_sweep

    check_output_path(args.out, "dir", "--out")
    sweep = load_sweep(args.sweep)
    before = folder_state(sweep, args.out)  # read now: the sweep rewrites the folder's index
    try:
        with _sigterm_raises():
            table = run_sweep(sweep, args.out, workers=args.workers, dask_address=args.dask,
                              progress=None if args.quiet else _progress_bar, csv=args.csv)
    except (KeyboardInterrupt, _Terminated) as exc:
        how, code = ("interrupted", 130) if isinstance(exc, KeyboardInterrupt) else ("terminated", 143)
        print(f"\n{how}: finished runs are saved in {args.out}; run the same command to resume",
              file=sys.stderr)
        raise SystemExit(code) from None
    _report_folder(before, sweep, args.out)
    _report_sweep(sweep, table, args)


def _report_folder(state: FolderState, sweep: Sweep, out: str) -> None:
    """Say what an old folder held: runs kept from before, stale runs set aside."""
    hidden = "left on disk, not in the table; results and plot --all-runs show them"
    if state.changed:
        made_from = ("an earlier version of " if state.previous == sweep.source_file else "") + (
            state.previous or "another sweep")
        print(f"{out} was made from {made_from}: {state.kept} runs kept, {state.stale} stale ({hidden})")
    elif state.stale:
        print(f"{out} also holds {state.stale} stale runs of earlier sweeps ({hidden})")


def _report_sweep(sweep: Sweep, table: pd.DataFrame, args: argparse.Namespace) -> None:
    """The summary; with failed runs, a last line naming them and exit status 1."""
    ok = int((table.status == "ok").sum())
    print(f"{sweep.name}: {ok} of {len(sweep.runs)} runs ok; table {args.out}/results.parquet"
          + (" and results.csv" if args.csv else ""))
    failed = table[table.status != "ok"]
    named = []
    for _, row in failed.iterrows():
        swept = ", ".join(f"{a}={row[a]}" for a in sweep.axes if a in row)
        named.append(f"{row['key']}" + (f" ({swept})" if swept else ""))
        if len(named) <= 5:
            print(f"  failed {named[-1]}: {row['error']}")
    if len(failed) > 5:
        print(f"  ... and {len(failed) - 5} more (deepx-sim results {args.out} --where status=failed)")
    if len(failed):
        more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
        print(f"deepx-sim: error: {len(failed)} of {len(sweep.runs)} runs failed: {'; '.join(named[:3])}"
              f"{more}; the {ok} that succeeded are saved in {args.out}", file=sys.stderr)
        raise SystemExit(1)


def _load_table(args: argparse.Namespace) -> pd.DataFrame:
    from deepx_sim.plots import apply_filters
    from deepx_sim.sweep import load_results

    return apply_filters(load_results(args.dir, all_runs=args.all_runs), args.where or [])


def cmd_results(args: argparse.Namespace) -> None:
    if args.max_rows < 0:
        raise DeepxError(f"--max-rows must be >= 0 (0 prints every row), got {args.max_rows}")
    table = _load_table(args)
    if args.columns:
        missing = [c for c in args.columns if c not in table.columns]
        if missing:
            raise DeepxError(f"no column {missing[0]!r}; columns: {', '.join(table.columns)}")
        table = table[args.columns]
    if args.csv:
        table.to_csv(sys.stdout, index=False)
        return
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 30,
                           "display.float_format", "{:.6g}".format):
        print(table.to_string(index=False, max_rows=args.max_rows or None) if len(table)
              else "no rows match" if args.where else f"{args.dir}: no runs yet")


def cmd_plot(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deepx_sim.plots import check_figure_path, plot_metric, save_figure

    check_figure_path(args.output, "-o")
    table = _load_table(args)
    table = table[table.status == "ok"]
    if table.empty:
        raise DeepxError(f"{args.dir}: no successful runs to plot")
    ax = plot_metric(table, args.x, args.y, args.hue, logx=args.logx)
    ax.set_title(args.title or f"{args.y} vs {args.x}")
    ax.figure.tight_layout()
    save_figure(ax.figure, args.output)
    plt.close(ax.figure)
    print(f"wrote {args.output}")


def cmd_compress(args: argparse.Namespace) -> None:
    from deepx_sim.accuracy import load_inputs, load_labelled
    from deepx_sim.compress.search import compress, parse_optimizers
    from deepx_sim.model.memory import stored_sizes
    from deepx_sim.model.onnx import load_onnx, save_onnx

    out = Path(args.out)
    if out.suffix != ".onnx":
        raise DeepxError(f"-o {out}: the output must end in .onnx")
    if out.resolve() == Path(args.model).resolve():
        raise DeepxError(f"-o {out}: would overwrite the input model; choose another name")
    if not 0 <= args.max_accuracy_loss < 1:
        raise DeepxError(f"--max-accuracy-loss must be in [0, 1), got {args.max_accuracy_loss!r}")
    optimizers = parse_optimizers(args.optimizers)
    graph = load_onnx(args.model, _input_shapes(args.input_shape))
    source = (load_labelled(args.data, graph) if args.data
              else load_inputs(args.inputs, graph) if args.inputs else None)
    outcome = compress(graph, optimizers, args.max_accuracy_loss, source)
    save_onnx(outcome.graph, out)
    before, after = stored_sizes(graph).as_dict(), stored_sizes(outcome.graph).as_dict()
    rows = [[label, f"{before[key]:,}", f"{after[key]:,}",
             f"{before[key] / after[key]:.2f}x" if after[key] else "-"]
            for label, key in (("parameters", "params"), ("multiply-adds", "macs"),
                               ("weight bytes", "weight_bytes"), ("memory bytes (with training state)",
                                                                  "memory_bytes"))]
    print(f"{args.model} -> {out} ({', '.join(optimizers)}, budget {args.max_accuracy_loss:g} "
          f"{outcome.unit})\n")
    print(_table(rows, ["", "before", "after", "ratio"]))
    print()
    print("\n".join(_compress_judgement(outcome)))
    changes = [[c.layer, c.optimizer, c.setting, f"{c.params_before:,}", f"{c.params_after:,}",
                f"{c.rel_error:.4f}",
                f"{outcome.layer_losses[c.layer]:.4f}" if c.layer in outcome.layer_losses else "-"]
               for r in outcome.reports for c in r.changes]
    if changes:
        print()
        print(_table(changes, ["layer", "optimiser", "setting", "params before", "after", "rel. error",
                               "curve loss alone"]))
    for note in (n for r in outcome.reports for n in r.notes):
        print(f"note: {note}")


def _compress_judgement(outcome: Outcome) -> list[str]:
    """How compress judged its choice: the source, its unit, and the scores on both parts."""
    source = outcome.source
    lines = [f"judged on {source.origin}: {source.unit} = {source.meaning}"]
    if source.kind == "synthetic":
        lines.append("no --data or --inputs: this is a fidelity ESTIMATE, not a measured accuracy; give "
                     "--inputs or --data to measure on real inputs")
    parts = [("chosen on", outcome.chosen_on, outcome.chosen_score, outcome.before["chosen"]),
             ("held apart", outcome.held_apart, outcome.held_score, outcome.before["held"])]
    rows = []
    for label, part, score, base in parts:
        assert score is not None
        row = [f"{label} ({part.rows} rows)", f"{score.loss:.4f}", f"{score.agreement:.4f}",
               f"{score.output_error:.4f}"]
        if base is not None:
            row += [f"{base:.4f}", f"{score.accuracy:.4f}"]
        rows.append(row)
    header = ["", "loss", "top-1 agreement", "output error"]
    if outcome.before["chosen"] is not None:
        header += ["accuracy before", "after"]
    lines += ["", _table(rows, header), "", f"ranks chosen from {outcome.curves}" if outcome.curves else ""]
    if outcome.backoffs:
        lines.append(f"the held-apart loss exceeded the budget by more than 1 point; the choice was redone "
                     f"{outcome.backoffs} time(s) within a smaller budget, so the held-apart rows steered "
                     "it and their figure is not an independent check")
    return lines


def cmd_profile(args: argparse.Namespace) -> None:
    from deepx_sim.measure.profiling import profile_model

    profile = profile_model(args.model, processor=args.processor, threads=args.threads,
                            repeats=args.repeats, warmup=args.warmup, optimization=args.optimization,
                            input_shapes=_input_shapes(args.input_shape),
                            progress=None if args.quiet else lambda msg: print(msg, file=sys.stderr))
    path = profile.save(args.out)
    meta = profile.meta
    print(f"{meta['model']} on {meta['processor']} ({meta['cpu_model']}), {meta['threads']} thread(s), "
          f"{meta['repeats']} runs after {meta['warmup']} warm-up, graph optimisation {meta['optimization']}")
    print(f"end to end {profile.end_to_end_s * 1000:.3f} ms median (interquartile range "
          f"{profile.end_to_end_spread_s * 1000:.3f} ms), "
          f"wall clock {float(meta['end_to_end_wall_s']) * 1000:.3f} ms: this process had "
          f"{float(meta['cpu_share']):.0%} of a core (load average {meta['load_average_before']}; "
          f"hypervisor steal {meta['steal_share']} of the machine's CPU time)")
    print(f"energy: {meta['energy']}")
    print(f"wrote {len(profile.entries)} layers to {path} in {meta['profiling_s']} s")


def _calibration_tables(result) -> list[str]:  # type: ignore[no-untyped-def]
    before, after = result.prior, result.params
    fit = [[k, str(result.counts.get(k, 0)), f"{before.efficiency_for(k):.4g}",
            f"{after.efficiency_for(k):.4g}"] for k in result.kinds]
    errors = [[key.replace("/", " "), f"{e.mape:.1f} %", f"{e.within_10:.0%}", f"{e.within_20:.0%}",
               str(e.count)] for key, e in result.errors.items()]

    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x * 1000:.3f}"

    models = [[r.model, ms(r.measured_s), ms(r.before_s), ms(r.calibrated_s), ms(r.learned_s)]
              for r in result.cv_models]
    lines = [f"fit of {result.processor} on {len(result.models)} profiles:",
             _table(fit, ["kind", "layers", "efficiency before", "after"]),
             f"memory efficiency {before.memory_efficiency:.4g} -> {after.memory_efficiency:.4g}; "
             f"launch overhead {before.launch_overhead_s * 1e6:.2f} -> "
             f"{after.launch_overhead_s * 1e6:.2f} us; convolutions' matrix products at half speed with "
             f"rows, depth, columns {_sizes(before.gemm_half_size)} -> {_sizes(after.gemm_half_size)}; "
             f"channel planes at half speed with {_planes(before.plane_half_size)} -> "
             f"{_planes(after.plane_half_size)} positions (0: no loss)"]
    if result.predictor is not None:
        lines.append("learned correction for: " + ", ".join(
            f"{k} ({n} layers)" for k, n in result.predictor.samples.items()))
    return [*lines, "", "leave one model out (fit on the others, predict it):",
            _table(errors, ["level and prediction", "MAPE", "+-10 %", "+-20 %", "n"]), "",
            _table(models, ["model", "measured ms", "before", "calibrated", "learned"])]


def _sizes(half: tuple[float, float, float]) -> str:
    return "/".join(f"{h:.3g}" for h in half)


def _planes(half: dict[str, float]) -> str:
    return ", ".join(f"{k} {h:.3g}" for k, h in sorted(half.items())) or "none"


def cmd_calibrate(args: argparse.Namespace) -> None:
    from deepx_sim.calibration import calibrate, write_calibrated
    from deepx_sim.platform import load_platform

    platform = load_platform(args.platform)
    result = calibrate(args.profiles, platform, args.processor, args.min_layers, args.predictor, args.seed)
    out = write_calibrated(result, platform, args.output)
    print("\n".join(_calibration_tables(result)))
    print(f"wrote {out}")


def cmd_quality(args: argparse.Namespace) -> None:
    import pandas as pd

    from deepx_sim.errors import closest_names
    from deepx_sim.plan.quality import default_instances, run_quality
    from deepx_sim.results import check_table_path, write_table

    if args.out:
        check_table_path(args.out, "--out")
    instances = default_instances()
    if args.models is not None:
        known = sorted({i.model for i in instances})
        for name in args.models or [""]:
            if name not in known:
                raise DeepxError(f"--models: {name!r} is not in the quality suite: "
                                 f"{closest_names(name, known)}")
        instances = [i for i in instances if i.model in args.models]
    if args.limit is not None:
        instances = instances[: args.limit]
    planners = args.planner or ["deepx", "neurosurgeon", "dads", "greedy", "cpu-only",
                                "gpu-only", "cloud-only"]
    frame = pd.DataFrame(run_quality(planners, instances))
    if args.out:
        write_table(frame, args.out)
    summary = frame.groupby("planner").agg(
        instances=("instance", "count"), feasible=("feasible", "sum"),
        mean_ratio=("ratio", "mean"), worst_ratio=("ratio", "max"),
        mean_time_ms=("time_s", lambda t: 1000 * t.mean()))
    print(f"{len(instances)} instances; ratio = objective / best feasible objective known\n")
    print(summary.to_string(float_format=lambda v: f"{v:.3f}"))


def _add_problem_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="zoo model, .onnx file or profiled graph .json (data/profiled_graphs/)")
    p.add_argument("--platform", help="platform name or YAML file (default for a profiled graph: "
                                      "the platform its file describes)")
    p.add_argument("--link", help="wireless link to the cloud (default: the platform's first)")
    bandwidth = _option(_spec_field("ConditionsSpec", "bandwidth_mbps"))
    p.add_argument("--bandwidth-mbps", type=bandwidth, help="uplink bandwidth (default: the link's)")
    p.add_argument("--downlink-mbps", type=bandwidth, help="downlink bandwidth (default: the link's)")
    p.add_argument("--rtt-ms", type=_option(_spec_field("ConditionsSpec", "rtt_ms")),
                   help="round-trip time (default: the link's)")
    p.add_argument("--no-cloud", action="store_true", help="the cloud is unreachable")
    deadline_ms = DEFAULT_DEADLINE_S * 1000
    p.add_argument("--deadline-ms", default=deadline_ms, help=f"default {deadline_ms:g} (DeepX)",
                   type=_option(_spec_field("ConstraintsSpec", "deadline_ms")))
    p.add_argument("--max-accuracy-loss", default=DEFAULT_MAX_ACCURACY_LOSS,
                   type=_option(_spec_field("ConstraintsSpec", "max_accuracy_loss")),
                   help=f"default {DEFAULT_MAX_ACCURACY_LOSS:g} (DeepX)")
    p.add_argument("--energy-budget-j",
                   type=_option(_spec_field("ConstraintsSpec", "energy_budget_j")))
    p.add_argument("--objective", choices=["energy", "latency", "weighted"], default="energy")
    p.add_argument("--profile", help="measured per-layer latencies (CSV or JSON)")
    p.add_argument("--precisions", type=_precisions,
                   help="weight precisions the planner may pick, e.g. 32,16,8 "
                        "(default: 32, or a processor's widest)")
    p.add_argument("--input-shape", action="append", metavar="[NAME=]DxDx...")
    p.add_argument("--no-fusion", action="store_true",
                   help="place single operators, not the units runtimes fuse them into")
    given = p.add_mutually_exclusive_group()
    given.add_argument("--data", help="ONNX model with weights: .npz with x and y to measure accuracy "
                                      "loss on (as compress)")
    given.add_argument("--inputs", help="ONNX model with weights: .npy of unlabelled inputs to measure "
                                        "fidelity loss on (as compress)")


# ------------------------------------------------------------------ parser

class _Parser(argparse.ArgumentParser):
    """argparse, except that a bad option is one ``deepx-sim: error:`` line, like
    every other input error, instead of the usage text and a second line."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("deepx-sim").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"deepx-sim: error: {where}{message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="deepx-sim",
        description="Plan and simulate deep models across mobile processors and the cloud.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the model zoo")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("inspect", help="per-layer table, totals and memory footprints")
    p.add_argument("model", help="zoo model name or path to an .onnx file")
    p.add_argument("--precision", type=int, choices=[64, 32, 16, 8], default=32,
                   help="weight precision in bits for the footprints (default 32)")
    p.add_argument("--input-shape", action="append", metavar="[NAME=]DxDx...",
                   help="fix a dynamic ONNX input, e.g. input=1x3x224x224")
    p.add_argument("--totals-only", action="store_true", help="skip the per-layer table")
    p.add_argument("--fuse", action="store_true",
                   help="show fused units (conv/fc + batchnorm + activation, add + activation)")
    p.add_argument("--json", action="store_true", help="machine-readable output (see README)")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("platforms", help="list the shipped hardware platforms")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_platforms)

    p = sub.add_parser("platform", help="show one platform's processors and links")
    p.add_argument("name", help="platform name or path to a YAML file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_platform)

    from deepx_sim.plan import planner_names

    p = sub.add_parser("plan", help="plan one inference (DeepX ILP or a baseline)")
    _add_problem_args(p)
    p.add_argument("--planner", default="deepx", choices=planner_names())
    p.add_argument("--solver", choices=["highs", "cbc"], default="highs")
    p.add_argument("--time-limit-s", type=_option(lambda: Positive), default=60.0)
    p.add_argument("--gap", type=_option(lambda: UnitInterval), default=1e-6,
                   help="relative MIP gap to stop at, in [0, 1]")
    p.add_argument("--json", action="store_true", help="machine-readable plan (see README)")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("compare", help="DeepX against every baseline, with energy ratios")
    _add_problem_args(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("simulate", help="simulate a scenario file: latency, energy, misses")
    p.add_argument("scenario", help="scenario YAML (see scenarios/ and the README)")
    p.add_argument("--out", help="write per-request records here (.parquet or .csv)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--compare", action="store_true",
                   help="run the scenario as static, replan and oracle and print them side by side")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("sweep", help="run a sweep of scenarios in parallel (resumable)")
    p.add_argument("sweep", help="sweep YAML: a base scenario plus grid/zip axes")
    p.add_argument("--out", required=True, help="results folder (re-running skips finished runs)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="local worker processes, >= 1 (default: one per core)")
    p.add_argument("--dask", metavar="ADDRESS", help="run on this Dask scheduler (host:port) instead")
    p.add_argument("--csv", action="store_true", help="also write results.csv")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sweep)
    all_runs_help = "also show stale runs (left by an earlier version of the sweep file), marked stale"

    p = sub.add_parser("results", help="print a sweep's results table, filtered")
    p.add_argument("dir")
    p.add_argument("--where", action="append", metavar="FIELD OP VALUE",
                   help="keep rows where it holds, e.g. 'policy.planner=deepx' or 'latency_p95_s<0.5'")
    p.add_argument("--columns", nargs="+")
    p.add_argument("--csv", action="store_true", help="CSV on stdout")
    p.add_argument("--max-rows", type=int, default=200, help="0 prints every row (default 200)")
    p.add_argument("--all-runs", action="store_true", help=all_runs_help)
    p.set_defaults(func=cmd_results)

    p = sub.add_parser("plot", help="plot a metric of a sweep's runs")
    p.add_argument("dir")
    p.add_argument("--x", required=True)
    p.add_argument("--y", required=True)
    p.add_argument("--hue")
    p.add_argument("--where", action="append", metavar="FIELD OP VALUE")
    p.add_argument("--logx", action="store_true")
    p.add_argument("--title")
    p.add_argument("--all-runs", action="store_true", help=all_runs_help)
    p.add_argument("-o", "--output", required=True, help="image file (.png, .pdf, .svg, ...)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("compress", help="DXTK optimisers on an ONNX model within an accuracy budget")
    p.add_argument("model", help="input .onnx file (any model the importer reads; fc and conv layers change)")
    p.add_argument("-o", "--out", required=True, help="output .onnx file (written only on success)")
    p.add_argument("--input-shape", action="append", help="NAME=1x3x224x224 for dynamic inputs")
    p.add_argument("--optimizers", default="pc,wf,cs,ps",
                   help="comma list of wf, sf, cs, ps, pc (default pc,wf,cs,ps)")
    p.add_argument("--max-accuracy-loss", type=float, default=DEFAULT_MAX_ACCURACY_LOSS,
                   help=f"budget as a fraction (default {DEFAULT_MAX_ACCURACY_LOSS:g}), in the unit of "
                        "--data, --inputs or synthetic inputs")
    given = p.add_mutually_exclusive_group()
    given.add_argument("--data", help=".npz with x (inputs) and y (labels): the budget is an accuracy loss; "
                                      "an optional groups array (one source id per row) keeps a "
                                      "source's rows on one side when rows are held apart")
    given.add_argument("--inputs", help=".npy of unlabelled inputs: the budget is a fidelity loss "
                                        "(1 - top-1 agreement with the original)")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("quality", help="planner quality suite: objective vs best known")
    p.add_argument("--planner", action="append", choices=planner_names())
    p.add_argument("--models", nargs="*", help="restrict to these models")
    p.add_argument("--limit", type=_option(lambda: PositiveInt, int),
                   help="run only the first N instances (N >= 1)")
    p.add_argument("--out", help="write every row to this file (.csv or .parquet)")
    p.set_defaults(func=cmd_quality)

    from deepx_sim.calibration import MIN_LAYERS_PER_KIND
    from deepx_sim.measure.profiling import (
        DEFAULT_REPEATS,
        DEFAULT_THREADS,
        DEFAULT_WARMUP,
        OPTIMIZATION_LEVELS,
    )

    p = sub.add_parser("profile", help="time every layer of a model on this machine (onnxruntime)")
    p.add_argument("model", help="zoo model, .onnx file, heldout:NAME or sampled:SEED")
    p.add_argument("--out", required=True, help="profile to write (.csv, the format --profile reads)")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                   help=f"onnxruntime intra-op threads (default {DEFAULT_THREADS}: reproducible)")
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help=f"timed runs ({DEFAULT_REPEATS})")
    p.add_argument("--warmup", type=int, default=DEFAULT_WARMUP,
                   help=f"untimed runs first ({DEFAULT_WARMUP})")
    p.add_argument("--optimization", choices=OPTIMIZATION_LEVELS, default=OPTIMIZATION_LEVELS[0],
                   help="onnxruntime graph optimisation (default none: one kernel per layer)")
    p.add_argument("--processor", help="processor name in the rows (default: this host's name)")
    p.add_argument("--input-shape", action="append", metavar="[NAME=]DxDx...")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("calibrate", help="fit a processor's cost-model parameters to profiles")
    p.add_argument("profiles", nargs="+", help="profiles written by deepx-sim profile")
    p.add_argument("--platform", required=True, help="platform name or YAML with the processor")
    p.add_argument("--processor", required=True, help="the processor the profiles measured")
    p.add_argument("-o", "--output", required=True, help="calibrated platform YAML to write")
    p.add_argument("--predictor", action="store_true",
                   help="also fit a learned per-kind correction, saved beside the YAML")
    p.add_argument("--min-layers", type=int, default=MIN_LAYERS_PER_KIND,
                   help=f"measured layers a kind needs to fit its efficiency ({MIN_LAYERS_PER_KIND})")
    p.add_argument("--seed", type=int, default=0, help="seed of the learned correction's forests")
    p.set_defaults(func=cmd_calibrate)
    return parser


def _report_bug(exc: Exception) -> int:
    """The last resort: one line saying it is a bug, the traceback saved to a file."""
    first_line = (str(exc).splitlines() or [""])[0]
    try:
        with tempfile.NamedTemporaryFile("w", prefix="deepx-sim-bug-", suffix=".txt",
                                         delete=False) as handle:
            handle.write(f"deepx-sim {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}")
        saved = f"traceback saved in {handle.name}"
    except OSError as err:
        saved = f"the traceback could not be saved ({err.strerror})"
    print(f"deepx-sim: internal error (a bug in deepx-sim, please report it): {type(exc).__name__}: "
          f"{first_line}; {saved}", file=sys.stderr)
    return EXIT_BUG


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()  # planner choices load the user's plugins
    except DeepxError as exc:
        print(f"deepx-sim: error: {exc}", file=sys.stderr)
        return 2
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a bad option (already reported)
        return exc.code if isinstance(exc.code, int) else 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            args.func(args)
        except DeepxError as exc:
            for line in str(exc).splitlines() or [type(exc).__name__]:
                print(f"deepx-sim: error: {line}", file=sys.stderr)
            return 2
        except BrokenPipeError:
            return 0
        except KeyboardInterrupt:
            print("deepx-sim: interrupted", file=sys.stderr)
            return 130
        except Exception as exc:
            if os.environ.get("DEEPX_SIM_DEBUG"):
                raise
            return _report_bug(exc)
        finally:
            for w in caught:
                print(f"deepx-sim: warning: {w.message}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
