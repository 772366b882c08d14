"""A user's planner and policy, registered by a plugin module, work everywhere a
name is accepted: the CLI's plan, compare and quality commands, scenario files
and sweeps (whose worker processes load the plugin themselves)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

PLUGIN = textwrap.dedent("""
    from deepx_sim.plan import get_planner, register_planner
    from deepx_sim.plan.baselines import SingleProcessorPlanner
    from deepx_sim.platform import ProcessorKind
    from deepx_sim.sim import StaticPolicy, register_policy

    class LowPower(SingleProcessorPlanner):
        def __init__(self):
            super().__init__((ProcessorKind.LPC, ProcessorKind.DSP), "my-lowpower")

    register_planner("my-lowpower", LowPower)
    register_policy("my-static", lambda problem, world, s: StaticPolicy(problem, world, s.planner))
""")


def cli(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "my_plugin.py").write_text(PLUGIN)
    env = {**os.environ, "DEEPX_SIM_PLUGINS": "my_plugin",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "deepx_sim.cli", *argv], capture_output=True,
                          text=True, env=env, cwd=tmp_path, check=False)


def test_plugin_planner_in_plan_compare_and_quality(tmp_path: Path) -> None:
    out = cli(tmp_path, "plan", "--model", "speakerid", "--platform", "tegra_k1",
              "--planner", "my-lowpower", "--json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["planner"] == "my-lowpower"
    assert {a["processor"] for a in plan["assignment"][1:]} == {"lpc"}
    out = cli(tmp_path, "compare", "--model", "speakerid", "--platform", "tegra_k1")
    assert out.returncode == 0 and "my-lowpower" in out.stdout
    out = cli(tmp_path, "quality", "--planner", "my-lowpower", "--planner", "deepx", "--limit", "1")
    assert out.returncode == 0, out.stderr
    assert "my-lowpower" in out.stdout


def test_plugin_planner_and_policy_in_a_scenario_and_a_sweep(tmp_path: Path) -> None:
    base = {"model": "speakerid", "platform": "tegra_k1", "duration_s": 5,
            "workload": {"arrivals": "periodic", "interval_s": 1},
            "policy": {"kind": "my-static", "planner": "my-lowpower"}}
    (tmp_path / "s.yaml").write_text(json.dumps(base))
    out = cli(tmp_path, "simulate", "s.yaml", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["summary"]["policy"] == "static:my-lowpower"
    sweep = {"base_file": "s.yaml", "grid": {"policy.planner": ["my-lowpower", "cpu-only"]}}
    (tmp_path / "w.yaml").write_text(json.dumps(sweep))
    out = cli(tmp_path, "sweep", "w.yaml", "--out", "res", "--workers", "2", "--quiet")
    assert out.returncode == 0, out.stderr
    assert "2 of 2 runs ok" in out.stdout


def test_a_missing_plugin_module_is_a_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "DEEPX_SIM_PLUGINS": "no_such_plugin_module"}
    out = subprocess.run([sys.executable, "-m", "deepx_sim.cli", "plan", "--model", "speakerid",
                          "--platform", "tegra_k1"], capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 2
    assert out.stderr.startswith("deepx-sim: error: DEEPX_SIM_PLUGINS: cannot import plugin module "
                                 "'no_such_plugin_module'")
