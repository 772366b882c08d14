"""Every class of bad input gets one clear line and exit status 2 (issue 16).

Each case is a command line, the files it reads (written into a fresh folder;
``{tmp}`` in the arguments is that folder), and words the message must hold:
the file or option, the field and what is allowed.  The suite runs with
DEEPX_SIM_DEBUG=1 (tests/conftest.py), so a case that reached the CLI's
last-resort handler would fail here with the traceback.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from deepx_sim import cli
from deepx_sim.cli import main
from tests.test_platform import edited_tegra

PROBLEM = ["--model", "speakerid", "--platform", "tegra_k1"]


def scenario(**changes: object) -> bytes:
    data: dict[str, object] = {"model": "speakerid", "platform": "tegra_k1", "duration_s": 10,
                               "conditions": {"link": "wifi", "bandwidth_mbps": 8},
                               "workload": {"arrivals": "periodic", "interval_s": 0.5},
                               "policy": {"kind": "static"}}
    data.update(changes)
    return yaml.safe_dump(data).encode()


def hardware(edit: dict[str, object]) -> bytes:
    return yaml.safe_dump(edited_tegra(edit)).encode()


@dataclass(frozen=True)
class Case:
    argv: list[str]
    words: list[str]
    files: dict[str, bytes] = field(default_factory=dict)


def graph_file(edges: list[tuple[int, int]] | None = None, cost: float = 1.0, **nodes: dict) -> bytes:
    """A two-node profiled graph (a -> b) with node fields changed."""
    base = {"supportedOnFpga": 1, "cpuLatency": 2.0, "fpgaLatency": 0.5, "size": 1024.0,
            "isBackwardNode": False}
    data = {"maxSizePerFPGA": 2.0**20, "maxFPGAs": 2, "maxCPUs": 1,
            "nodes": [{**base, "id": i, "name": n, "colorClass": i, **nodes.get(n, {})}
                      for i, n in enumerate("ab")],
            "edges": [{"sourceId": u, "destId": v, "cost": cost, "size": 8.0}
                      for u, v in (edges or [(0, 1)])]}
    return json.dumps(data).encode()


S = ["simulate", "{tmp}/s.yaml"]
GRAPH = ["plan", "--model", "{tmp}/g.json", "--objective", "latency"]
HW = [*PROBLEM[:2], "--platform", "{tmp}/hw.yaml"]
PROFILE = ["plan", *PROBLEM, "--profile"]

CASES: dict[str, Case] = {
    # ---- non-finite and out-of-range numbers on the command line
    "deadline inf": Case(["plan", *PROBLEM, "--deadline-ms", "inf"],
                         ["argument --deadline-ms: must be a finite number, got inf"]),
    "deadline negative": Case(["compare", *PROBLEM, "--deadline-ms", "-5"], ["--deadline-ms: must be > 0"]),
    "bandwidth inf": Case(["plan", *PROBLEM, "--bandwidth-mbps", "inf"],
                          ["--bandwidth-mbps: must be a finite number, got inf"]),
    "downlink nan": Case(["plan", *PROBLEM, "--downlink-mbps", "nan"], ["--downlink-mbps: must be a finite"]),
    "bandwidth text": Case(["plan", *PROBLEM, "--bandwidth-mbps", "fast"],
                           ["--bandwidth-mbps: must be a number, got 'fast'"]),
    "rtt negative": Case(["plan", *PROBLEM, "--rtt-ms", "-1"], ["--rtt-ms: must be in [0, 1e+09], got -1"]),
    "accuracy over 1": Case(["plan", *PROBLEM, "--max-accuracy-loss", "1.5"],
                            ["--max-accuracy-loss: must be in [0, 1], got 1.5"]),
    "energy budget inf": Case(["plan", *PROBLEM, "--energy-budget-j", "inf"], ["--energy-budget-j"]),
    "model file of another kind": Case(["plan", "--model", "{tmp}/m.txt", "--platform", "tegra_k1"],
                                       ["m.txt: a model file must be .onnx, or .json"],
                                       {"m.txt": b"not a model"}),
    "gap nan": Case(["plan", *PROBLEM, "--gap", "nan"], ["--gap: must be a finite number, got nan"]),
    "gap negative": Case(["plan", *PROBLEM, "--gap", "-0.1"], ["--gap: must be in [0, 1], got -0.1"]),
    "time limit negative": Case(["plan", *PROBLEM, "--time-limit-s", "-3"], ["--time-limit-s: must be > 0"]),
    "precisions empty": Case(["plan", *PROBLEM, "--precisions", ""], ["--precisions: must be bits"]),
    "precisions 12": Case(["compare", *PROBLEM, "--precisions", "32,12"], ["--precisions: [12] not allowed"]),
    "quality limit 0": Case(["quality", "--limit", "0"], ["--limit: must be >= 1, got 0"]),
    "quality limit -1": Case(["quality", "--limit", "-1"], ["--limit: must be >= 1, got -1"]),
    "quality limit 1.5": Case(["quality", "--limit", "1.5"], ["--limit: must be a whole number"]),
    "quality unknown model": Case(["quality", "--models", "alexnett"],
                                  ["--models: 'alexnett' is not in the quality suite", "alexnet"]),
    "link option without a link": Case(["compare", "--model", "speakerid", "--platform", "cortex_m0",
                                        "--bandwidth-mbps", "5"],
                                       ["--bandwidth-mbps: platform 'cortex_m0' has no wireless link"]),
    "unknown command": Case(["simulat"], ["invalid choice: 'simulat'"]),
    "missing option": Case(["plan", "--model", "speakerid"], ["--platform is required: model 'speakerid'"]),
    # ---- non-finite and out-of-range numbers in YAML
    "duration inf": Case(S, ["s.yaml: duration_s must be a finite number, got inf"],
                         {"s.yaml": scenario(duration_s=float("inf"))}),
    "rate inf": Case(S, ["s.yaml: workload.rate_per_s must be a finite number, got inf"],
                     {"s.yaml": scenario(workload={"arrivals": "poisson", "rate_per_s": float("inf")})}),
    "rtt inf": Case(S, ["s.yaml: conditions.rtt_ms must be a finite number, got inf"],
                    {"s.yaml": scenario(conditions={"rtt_ms": float("inf")})}),
    "seed negative": Case(S, ["s.yaml: seed must be >= 0, got -1"], {"s.yaml": scenario(seed=-1)}),
    "seed text": Case(S, ["s.yaml: seed must be a whole number, got 'one'"],
                      {"s.yaml": scenario(seed="one")}),
    "boolean as a number": Case(S, ["s.yaml: battery.capacity_mah must be a number, got True"],
                                {"s.yaml": scenario(battery={"capacity_mah": True})}),
    "outage pair": Case(S, ["s.yaml: conditions.outages[0][1] must be a finite number, got inf"],
                        {"s.yaml": scenario(conditions={"link": "wifi", "outages": [[1, float("inf")]]})}),
    "outages wrong type": Case(S, ["s.yaml: conditions.outages must be a list or a mapping of fields"],
                               {"s.yaml": scenario(conditions={"outages": "often"})}),
    "replan overhead": Case(S, ["s.yaml: policy.replan_overhead_s must be in [0, 1e+09] or 'measured', "
                                "got -1"],
                            {"s.yaml": scenario(policy={"replan_overhead_s": -1})}),
    "misspelt field": Case(S, ["s.yaml: policy.planer is not a known field; did you mean planner?"],
                           {"s.yaml": scenario(policy={"planer": "deepx"})}),
    "memory inf": Case(["plan", *HW], ["hw.yaml: processors[0].usable_memory_mib must be a finite number"],
                       {"hw.yaml": hardware({"processors.0.usable_memory_mib": float("inf")})}),
    "power inf": Case(["plan", *HW], ["hw.yaml: processors[2].active_power_w must be a finite number"],
                      {"hw.yaml": hardware({"processors.2.active_power_w": float("inf")})}),
    "power absurd": Case(["plan", *HW], ["hw.yaml: processors[2].active_power_w must be in [0, 1e+06], "
                                         "got 1e+300"],
                         {"hw.yaml": hardware({"processors.2.active_power_w": 1e300})}),
    # ---- sizes that would exhaust memory: refused up front with the limit stated
    "periodic too many": Case(S, ["requests (duration_s / interval_s) would be", "at most 1,000,000"],
                              {"s.yaml": scenario(duration_s=1e9, workload={"interval_s": 1e-3})}),
    "poisson too many": Case(S, ["requests (duration_s x rate_per_s) would be", "at most 1,000,000"],
                             {"s.yaml": scenario(workload={"arrivals": "poisson", "rate_per_s": 1e12})}),
    "duration absurd": Case(S, ["s.yaml: duration_s must be in (0, 1e+09], got 1e+300"],
                            {"s.yaml": scenario(duration_s=1e300)}),
    "random walk steps": Case(S, ["conditions.uplink: steps (duration_s / interval_s)",
                                  "at most 2,000,000"], {
        "s.yaml": scenario(conditions={"link": "wifi", "uplink": {"random_walk": {
            "start": 1, "step_sd": 1, "low": 0, "high": 9, "interval_s": 1e-9}}})}),
    "ewma samples": Case(S, ["policy.sample_interval_s: samples", "at most 2,000,000"], {
        "s.yaml": scenario(policy={"kind": "replan", "estimator": "ewma", "sample_interval_s": 1e-9})}),
    "mahimahi stamp": Case(S, ["t.up:2: timestamps must be in [0, 2**53] ms"], {
        "t.up": b"0\n" + b"9" * 30 + b"\n",
        "s.yaml": scenario(conditions={"link": "wifi", "uplink": {"trace": "t.up"}})}),
    # ---- binary and non-UTF-8 files
    "scenario binary": Case(S, ["s.yaml: a binary file, not text"], {"s.yaml": b"\x7fELF\x02\x01\x00\x00"}),
    "scenario latin-1": Case(S, ["s.yaml:1: not UTF-8 text (byte 0xe9"], {"s.yaml": b"name: caf\xe9\n"}),
    "hardware binary": Case(["platform", "{tmp}/hw.yaml"], ["hw.yaml: a binary file"],
                            {"hw.yaml": b"\x00" * 9}),
    "profile latin-1": Case([*PROFILE, "{tmp}/p.csv"], ["p.csv:2: not UTF-8 text"],
                            {"p.csv": b"layer,processor,latency_s\nfc\xe9,cpu,1\n"}),
    "profile json binary": Case([*PROFILE, "{tmp}/p.json"], ["p.json: a binary file"], {"p.json": b"[\x00]"}),
    "trace binary": Case(S, ["s.yaml: conditions.uplink.trace:", "t.up: a binary file"], {
        "t.up": b"\x00\x01", "s.yaml": scenario(conditions={"link": "wifi", "uplink": {"trace": "t.up"}})}),
    # ---- empty tables, timestamps out of order or past the end
    "profile header only": Case([*PROFILE, "{tmp}/p.csv"], ["p.csv: the profile has no rows"],
                                {"p.csv": b"layer,processor,latency_s\n"}),
    "profile json empty": Case([*PROFILE, "{tmp}/p.json"], ["p.json: the profile has no rows"],
                               {"p.json": b"[]"}),
    "profile inf": Case([*PROFILE, "{tmp}/p.csv"], ["p.csv: row 2.latency_s must be <= 1e+06, got 'inf'"],
                        {"p.csv": b"layer,processor,latency_s\nfc1,cpu,inf\n"}),
    "trace header only": Case(S, ["bw.csv: the trace has a header but no rows"], {
        "bw.csv": b"time_s,mbps\n",
        "s.yaml": scenario(conditions={"link": "wifi", "uplink": {"trace": "bw.csv"}})}),
    "stamps decrease": Case(S, ["s.yaml: workload.timestamps_s must not decrease, got 1.0 after 3.0"],
                            {"s.yaml": scenario(workload={"arrivals": "trace", "timestamps_s": [3, 1]})}),
    "stamps past end": Case(S, ["workload.timestamps_s has 1 past the run's end (duration_s 10)"],
                            {"s.yaml": scenario(workload={"arrivals": "trace", "timestamps_s": [3, 11]})}),
    "stamp file decreases": Case(S, ["a.csv:3: time_s must not decrease, got 1 after 3"], {
        "a.csv": b"time_s\n3\n1\n",
        "s.yaml": scenario(workload={"arrivals": "trace", "timestamps_file": "a.csv"})}),
    # ---- duplicate keys
    "duplicate scenario key": Case(S, ["s.yaml:3:1: not valid YAML: duplicate key 'seed' "
                                       "(first given on line 2)"],
                                   {"s.yaml": b"model: speakerid\nseed: 1\nseed: 2\nplatform: tegra_k1\n"}),
    "duplicate hardware key": Case(["platform", "{tmp}/hw.yaml"], ["hw.yaml", "duplicate key 'name'"],
                                   {"hw.yaml": b"name: a\nname: b\n"}),
    # ---- profiled graph files (issue 20): the file and the node, edge or class
    "graph cycle": Case(GRAPH, ["g.json: the edges form a cycle through nodes", "a -> b"],
                        {"g.json": graph_file(edges=[(0, 1), (1, 0)])}),
    "graph unknown node": Case(GRAPH, ["g.json: edges[1].destId 7 is not the id of a node"],
                               {"g.json": graph_file(edges=[(0, 1), (1, 7)])}),
    "graph negative time": Case(GRAPH, ["g.json: nodes[1] (b).fpgaLatency must be a finite number >= 0, "
                                        "got -2"], {"g.json": graph_file(b={"fpgaLatency": -2})}),
    "graph negative size": Case(GRAPH, ["g.json: nodes[0] (a).size must be a finite number >= 0, got -1"],
                                {"g.json": graph_file(a={"size": -1})}),
    "graph negative cost": Case(GRAPH, ["g.json: edges[0].cost must be a finite number >= 0, got -0.5"],
                                {"g.json": graph_file(cost=-0.5)}),
    "graph class too big": Case([*GRAPH, "--platform", "{tmp}/hw.yaml"],
                                ["colocation class '5'", "fits on no processor of platform 'tegra_k1'"],
                                {"g.json": graph_file(a={"colorClass": 5, "size": 2.0**31},
                                                      b={"colorClass": 5, "size": 2.0**31}),
                                 "hw.yaml": hardware({})}),
    "graph not json": Case(GRAPH, ["g.json: not valid JSON"], {"g.json": b"{nodes: ["}),
    "graph no accelerators": Case(GRAPH, ["g.json: maxFPGAs must be a whole number >= 1, got 0"],
                                  {"g.json": graph_file().replace(b'"maxFPGAs": 2', b'"maxFPGAs": 0')}),
    # ---- output paths, checked before the work starts
    "out is a folder": Case([*S, "--out", "{tmp}/dir.csv"], ["--out {tmp}/dir.csv: is a folder"],
                            {"s.yaml": scenario(), "dir.csv/keep": b""}),
    "out under a file": Case([*S, "--out", "{tmp}/f/r.csv"], ["--out {tmp}/f/r.csv: {tmp}/f is a file"],
                             {"s.yaml": scenario(), "f": b"x"}),
    "out folder missing": Case([*S, "--out", "{tmp}/new/r.csv"],
                               ["--out {tmp}/new/r.csv: folder {tmp}/new does not exist; create it first"],
                               {"s.yaml": scenario()}),
    "out suffix": Case([*S, "--out", "{tmp}/r.txt"], ["must end in .parquet or .csv"],
                       {"s.yaml": scenario()}),
    "quality out is a folder": Case(["quality", "--out", "{tmp}/q.csv"], ["--out {tmp}/q.csv: is a folder"],
                                    {"q.csv/keep": b""}),
}


def run_case(case: Case, tmp: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    for name, content in case.files.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(content)
    code = main([a.replace("{tmp}", str(tmp)) for a in case.argv])
    out, err = capsys.readouterr()
    return code, out, err.replace(str(tmp), "{tmp}")


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_line(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = CASES[name]
    code, out, err = run_case(case, tmp_path, capsys)
    assert code == 2, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("deepx-sim: error: "), err
    for words in case.words:
        assert words in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    case = Case([*S, "--out", "{tmp}/locked/r.csv"], ["cannot write in folder"], {"s.yaml": scenario()})
    code, _, err = run_case(case, tmp_path, capsys)
    assert code == 2 and "cannot write in folder {tmp}/locked" in err


def test_json_never_holds_nan_or_infinity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run without requests has no latencies: the summary says null, not NaN."""
    case = Case([*S, "--json"], [], {"s.yaml": scenario(workload={"arrivals": "trace", "timestamps_s": []})})
    code, out, err = run_case(case, tmp_path, capsys)
    assert code == 0, err

    def refuse(constant: str) -> None:
        raise AssertionError(f"invalid JSON constant {constant}")

    summary = json.loads(out, parse_constant=refuse)["summary"]
    assert summary["requests"] == 0 and summary["latency_p50_s"] is None


def test_last_resort_handler(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(args: object) -> None:
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr(cli, "cmd_platforms", broken)
    with pytest.raises(ZeroDivisionError):  # the suite's setting: a bug fails the test
        main(["platforms"])
    monkeypatch.delenv("DEEPX_SIM_DEBUG")
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    code = main(["platforms"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_BUG == 70
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("deepx-sim: internal error (a bug in deepx-sim, please report it): "
                          "ZeroDivisionError: division by zero; traceback saved in ")
    report = Path(err.split("traceback saved in ")[1].strip())
    assert report.parent == tmp_path
    assert "Traceback" in report.read_text() and "in broken" in report.read_text()
