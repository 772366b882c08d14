"""The ``deepx-sim`` command: parse arguments, call the library, print.

Every DeepxError becomes one ``deepx-sim: error: ...`` line on stderr and exit
status 2; nothing else here decides anything.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from deepx_sim.errors import DeepxError

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


def _input_shapes(values: list[str] | None) -> dict[str | None, tuple[int, ...]]:
    from deepx_sim.model.onnx_import import parse_input_shape

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
        print(json.dumps(out, indent=2))
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


def cmd_platforms(args: argparse.Namespace) -> None:
    from deepx_sim.platform import load_platform, platform_names

    names = platform_names()
    if args.json:
        print(json.dumps([load_platform(n).summary() for n in names], indent=2))
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
        print(json.dumps(report, indent=2))
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
    from deepx_sim.model.profiles import load_profile
    from deepx_sim.plan import Constraints, Problem
    from deepx_sim.platform import load_platform

    graph = load_model(args.model, _input_shapes(getattr(args, "input_shape", None)))
    platform = load_platform(args.platform)
    link = args.link
    if link is None and platform.links:
        link = platform.links[0].name
    conditions = Conditions(link=link, uplink_mbps=args.bandwidth_mbps,
                            downlink_mbps=args.downlink_mbps, rtt_ms=args.rtt_ms,
                            cloud_reachable=not args.no_cloud)
    constraints = Constraints(deadline_s=args.deadline_ms / 1000.0,
                              max_accuracy_loss=args.max_accuracy_loss,
                              energy_budget_j=args.energy_budget_j, objective=args.objective)
    profile = load_profile(args.profile, graph, platform) if args.profile else None
    precisions = None
    if args.precisions:
        try:
            precisions = tuple(int(b) for b in args.precisions.split(","))
        except ValueError:
            raise DeepxError(f"--precisions {args.precisions!r}: expected bits such as 32,16,8") from None
        bad = [b for b in precisions if b not in (64, 32, 16, 8)]
        if bad:
            raise DeepxError(f"--precisions: {bad} not allowed; choose from 64, 32, 16, 8")
    return Problem(graph, platform, conditions, constraints, profile=profile,
                   precisions=precisions)


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
    from deepx_sim.plan import get_planner

    problem = _problem(args)
    options = {"solver": args.solver, "time_limit_s": args.time_limit_s, "gap": args.gap}
    planner = get_planner(args.planner, **(options if args.planner == "deepx" else {}))
    plan = planner.plan(problem)
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
        return
    print(f"{problem.model_name} on {problem.platform.name} "
          f"(link {problem.conditions.link or '-'})")
    print("\n".join(_plan_lines(plan)))


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
            rows.append([name, "-", "-", "-", "-", "-", plan.split(": ", 1)[-1]])
            continue
        ratio = f"{plan.energy_j / deepx.energy_j:.2f}x" if deepx and deepx.energy_j > 0 else "-"
        lat_ratio = f"{plan.latency_s / deepx.latency_s:.2f}x" if deepx else "-"
        rows.append([name, f"{plan.energy_j * 1000:.2f}", ratio, f"{plan.latency_s * 1000:.1f}",
                     lat_ratio, f"{plan.accuracy_loss:.3f}", plan.status])
    print(f"{problem.model_name} on {problem.platform.name}, link {problem.conditions.link or '-'}"
          f", deadline {problem.constraints.deadline_s * 1000:g} ms, accuracy budget "
          f"{problem.constraints.max_accuracy_loss:g}\n")
    print(_table(rows, ["planner", "energy mJ", "vs deepx", "latency ms", "vs deepx",
                        "acc loss", "status"]))
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
                     str(s["planner_full_solves"])])
    if args.json:
        print(json.dumps(summaries, indent=2, default=float))
        return
    oracle_j = summaries["oracle"]["energy_mean_j"]
    for row, kind in zip(rows, COMPARED_POLICIES, strict=True):
        row.insert(2, f"{summaries[kind]['energy_mean_j'] / oracle_j:.3f}x" if oracle_j else "-")
    print(f"{scenario.name}: {summaries['replan']['requests']} requests, planner "
          f"{scenario.policy.planner}, each policy on the same conditions\n")
    print(_table(rows, ["policy", "energy/request mJ", "vs oracle", "deadline misses %", "sent to cloud %",
                        "distinct plans", "p95 latency ms", "radio promotions", "full solves"]))
    print("\nstatic: one plan at the run's average conditions; replan: per request from the last "
          "estimate (fast path);\noracle: per request from the true conditions (full solves).")


def cmd_simulate(args: argparse.Namespace) -> None:
    from deepx_sim.results import check_table_path, write_table
    from deepx_sim.scenario import run_scenario

    if args.compare:
        if args.out:
            raise DeepxError("--out writes one run's records; it cannot be used with --compare")
        _simulate_compare(args)
        return
    if args.out:
        check_table_path(args.out)
    result = run_scenario(args.scenario)
    summary = dict(result.summary)
    if args.out:
        summary["records_file"] = str(write_table(result.records, args.out))
    if args.json:
        print(json.dumps({"summary": summary, "run_energy_j": result.run_energy_j,
                          "events": result.events}, indent=2, default=float))
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
        ["distinct plans used", str(s["distinct_plans"])],
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


def cmd_sweep(args: argparse.Namespace) -> None:
    from deepx_sim.sweep import load_sweep, run_sweep

    sweep = load_sweep(args.sweep)
    try:
        table = run_sweep(sweep, args.out, workers=args.workers, dask_address=args.dask,
                          progress=None if args.quiet else _progress_bar, csv=args.csv)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished runs are saved in {args.out}; run the same command to resume",
              file=sys.stderr)
        raise SystemExit(130) from None
    ok = int((table.status == "ok").sum()) if len(table) else 0
    print(f"{sweep.name}: {ok} of {len(sweep.runs)} runs ok; table {args.out}/results.parquet"
          + (" and results.csv" if args.csv else ""))
    failed = table[table.status != "ok"] if len(table) else table
    for _, row in failed.head(5).iterrows():
        print(f"  failed {row['key']}: {row['error']}")
    if len(failed) > 5:
        print(f"  ... and {len(failed) - 5} more (see the error column)")


def cmd_results(args: argparse.Namespace) -> None:
    from deepx_sim.plots import apply_filters
    from deepx_sim.sweep import load_results

    table = apply_filters(load_results(args.dir), args.where or [])
    if args.columns:
        missing = [c for c in args.columns if c not in table.columns]
        if missing:
            raise DeepxError(f"no column {missing[0]!r}; columns: {', '.join(table.columns)}")
        table = table[args.columns]
    if args.csv:
        table.to_csv(sys.stdout, index=False)
        return
    import pandas as pd

    with pd.option_context("display.max_rows", args.max_rows, "display.width", 200,
                           "display.max_columns", 30, "display.float_format", "{:.6g}".format):
        print(table.to_string(index=False) if len(table) else "no rows match")


def cmd_plot(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deepx_sim.plots import apply_filters, plot_metric
    from deepx_sim.sweep import load_results

    table = apply_filters(load_results(args.dir), args.where or [])
    table = table[table.status == "ok"]
    if table.empty:
        raise DeepxError(f"{args.dir}: no successful runs to plot")
    ax = plot_metric(table, args.x, args.y, args.hue, logx=args.logx)
    ax.set_title(args.title or f"{args.y} vs {args.x}")
    ax.figure.tight_layout()
    ax.figure.savefig(args.output, dpi=120)
    plt.close(ax.figure)
    print(f"wrote {args.output}")


def cmd_compress(args: argparse.Namespace) -> None:
    from deepx_sim.compress.onnx_io import load_network, save_onnx
    from deepx_sim.compress.search import compress, load_data, parse_optimizers

    out = Path(args.out)
    if out.suffix != ".onnx":
        raise DeepxError(f"-o {out}: the output must end in .onnx")
    if out.resolve() == Path(args.model).resolve():
        raise DeepxError(f"-o {out}: would overwrite the input model; choose another name")
    optimizers = parse_optimizers(args.optimizers)
    net = load_network(args.model)
    data = load_data(args.data, net) if args.data else None
    outcome = compress(net, optimizers, args.max_accuracy_loss, data)
    save_onnx(outcome.network, out)
    before, after = net.summary(), outcome.network.summary()
    rows = [[label, f"{before[key]:,}", f"{after[key]:,}",
             f"{before[key] / after[key]:.2f}x" if after[key] else "-"]
            for label, key in (("parameters", "params"), ("multiply-adds", "macs"),
                               ("weight bytes", "weight_bytes"), ("memory bytes (with training state)",
                                                                  "memory_bytes"))]
    if outcome.base_accuracy is not None and outcome.accuracy is not None:
        rows.append(["accuracy", f"{outcome.base_accuracy:.4f}", f"{outcome.accuracy:.4f}",
                     f"loss {outcome.measured_loss:.4f}"])
    print(f"{args.model} -> {out} ({', '.join(optimizers)}, budget {args.max_accuracy_loss:g})\n")
    print(_table(rows, ["", "before", "after", "ratio"]))
    print(f"\nestimated accuracy loss {outcome.estimated_loss:.4f}"
          + ("" if data else " (no --data: settings chosen by the estimator)"))
    changes = [[c.layer, c.optimizer, c.setting, f"{c.params_before:,}", f"{c.params_after:,}",
                f"{c.rel_error:.4f}"] for r in outcome.reports for c in r.changes]
    if changes:
        print()
        print(_table(changes, ["layer", "optimiser", "setting", "params before", "after", "rel. error"]))
    for note in (n for r in outcome.reports for n in r.notes):
        print(f"note: {note}")


def cmd_quality(args: argparse.Namespace) -> None:
    import pandas as pd

    from deepx_sim.plan.quality import default_instances, run_quality

    instances = default_instances()
    if args.models:
        instances = [i for i in instances if i.model in args.models]
    if args.limit:
        instances = instances[: args.limit]
    planners = args.planner or ["deepx", "neurosurgeon", "dads", "greedy", "cpu-only",
                                "gpu-only", "cloud-only"]
    frame = pd.DataFrame(run_quality(planners, instances))
    if args.out:
        frame.to_csv(args.out, index=False)
    summary = frame.groupby("planner").agg(
        instances=("instance", "count"), feasible=("feasible", "sum"),
        mean_ratio=("ratio", "mean"), worst_ratio=("ratio", "max"),
        mean_time_ms=("time_s", lambda t: 1000 * t.mean()))
    print(f"{len(instances)} instances; ratio = objective / best feasible objective known\n")
    print(summary.to_string(float_format=lambda v: f"{v:.3f}"))


def _add_problem_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="zoo model or .onnx file")
    p.add_argument("--platform", required=True, help="platform name or YAML file")
    p.add_argument("--link", help="wireless link to the cloud (default: the platform's first)")
    p.add_argument("--bandwidth-mbps", type=float, help="uplink bandwidth (default: the link's)")
    p.add_argument("--downlink-mbps", type=float, help="downlink bandwidth (default: the link's)")
    p.add_argument("--rtt-ms", type=float, help="round-trip time (default: the link's)")
    p.add_argument("--no-cloud", action="store_true", help="the cloud is unreachable")
    p.add_argument("--deadline-ms", type=float, default=5000.0, help="default 5000 (DeepX)")
    p.add_argument("--max-accuracy-loss", type=float, default=0.05, help="default 0.05 (DeepX)")
    p.add_argument("--energy-budget-j", type=float)
    p.add_argument("--objective", choices=["energy", "latency", "weighted"], default="energy")
    p.add_argument("--profile", help="measured per-layer latencies (CSV or JSON)")
    p.add_argument("--precisions", help="weight precisions the planner may pick, e.g. 32,16,8 "
                                        "(default: 32, or a processor's widest)")
    p.add_argument("--input-shape", action="append", metavar="[NAME=]DxDx...")


# ------------------------------------------------------------------ parser

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    p.add_argument("--time-limit-s", type=float, default=60.0)
    p.add_argument("--gap", type=float, default=1e-6, help="relative MIP gap to stop at")
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
                   help="local worker processes (default: one per core)")
    p.add_argument("--dask", metavar="ADDRESS", help="run on this Dask scheduler instead")
    p.add_argument("--csv", action="store_true", help="also write results.csv")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("results", help="print a sweep's results table, filtered")
    p.add_argument("dir")
    p.add_argument("--where", action="append", metavar="FIELD OP VALUE",
                   help="keep rows where it holds, e.g. 'policy.planner=deepx' or 'latency_p95_s<0.5'")
    p.add_argument("--columns", nargs="+")
    p.add_argument("--csv", action="store_true", help="CSV on stdout")
    p.add_argument("--max-rows", type=int, default=200)
    p.set_defaults(func=cmd_results)

    p = sub.add_parser("plot", help="plot a metric of a sweep's runs")
    p.add_argument("dir")
    p.add_argument("--x", required=True)
    p.add_argument("--y", required=True)
    p.add_argument("--hue")
    p.add_argument("--where", action="append", metavar="FIELD OP VALUE")
    p.add_argument("--logx", action="store_true")
    p.add_argument("--title")
    p.add_argument("-o", "--output", required=True, help="image file (.png, .pdf, .svg)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("compress", help="DXTK optimisers on an ONNX model within an accuracy budget")
    p.add_argument("model", help="input .onnx file (a chain of Gemm/MatMul/Conv/Relu/MaxPool/... nodes)")
    p.add_argument("-o", "--out", required=True, help="output .onnx file (written only on success)")
    p.add_argument("--optimizers", default="pc,wf,cs,ps",
                   help="comma list of wf, sf, cs, ps, pc (default pc,wf,cs,ps)")
    p.add_argument("--max-accuracy-loss", type=float, default=0.05,
                   help="accuracy budget as a fraction (default 0.05)")
    p.add_argument("--data", help=".npz with x (inputs) and y (labels): measure accuracy, do not estimate")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("quality", help="planner quality suite: objective vs best known")
    p.add_argument("--planner", action="append", choices=planner_names())
    p.add_argument("--models", nargs="*", help="restrict to these models")
    p.add_argument("--limit", type=int, help="run only the first N instances")
    p.add_argument("--out", help="write every row to this CSV")
    p.set_defaults(func=cmd_quality)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()  # planner choices load the user's plugins
    except DeepxError as exc:
        print(f"deepx-sim: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            args.func(args)
        except DeepxError as exc:
            print(f"deepx-sim: error: {exc}", file=sys.stderr)
            return 2
        except BrokenPipeError:
            return 0
        finally:
            for w in caught:
                print(f"deepx-sim: warning: {w.message}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
