"""Imported models plan as fast as zoo models: first and second `plan` of large exports.

Writes ONNX files with random weights (VGG-16 from the zoo, with its 4096 x 25088
fc6; BERT-base- and ViT-B/16-sized stacks of linear layers on 3-D inputs, the
shapes of their weight-bearing MatMuls), then times `deepx-sim plan` on each in a
fresh process twice: the first with an empty spectrum cache, the second reading it.
Prints wall time, CPU time and peak memory (VmHWM of the child) beside the targets,
and the load average before each run, since this machine is shared: wall time
includes waiting for a core, CPU time does not.  Then each model's accuracy source
from the first plan: it names the layers whose singular values were estimated, and
the stated error.

Run: ``python benchmarks/bench_import.py [--models vgg16,bert,vit]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import networkx as nx

from deepx_sim.model import load_model
from deepx_sim.model.builder import GraphBuilder
from deepx_sim.model.onnx import save_onnx
from deepx_sim.model.weights import random_weights

TARGET_FIRST_S, TARGET_SECOND_S, TARGET_VGG_PEAK_GB = 5.0, 1.0, 1.5


def linear_stack(name: str, tokens: int, width: int, hidden: int, blocks: int) -> nx.DiGraph:
    """A transformer's weight-bearing layers: per block q, k, v, out (width x width), then
    the MLP (width -> hidden -> width), on a (1, tokens, width) input."""
    b = GraphBuilder(name, (1, tokens, width))
    for i in range(blocks):
        for part in ("q", "k", "v", "out"):
            b.fc(width, name=f"b{i}.{part}")
        b.fc(hidden, name=f"b{i}.mlp1")
        b.relu(name=f"b{i}.act")
        b.fc(width, name=f"b{i}.mlp2")
    return b.build()


def build(name: str) -> nx.DiGraph:
    if name == "bert":  # BERT-base: 12 blocks, 768 wide, 3072 MLP, sequence 128 (Devlin et al. 2019)
        return linear_stack("bert_base_sized", 128, 768, 3072, 12)
    if name == "vit":  # ViT-B/16: 12 blocks, 768 wide, 3072 MLP, 197 tokens (Dosovitskiy et al. 2021)
        return linear_stack("vit_b16_sized", 197, 768, 3072, 12)
    return load_model(name)


def timed_plan(path: Path, cache: Path) -> tuple[float, float, float, float, str]:
    """(wall s, CPU s, peak GB, load average before, accuracy source) of one `deepx-sim plan
    --json` in a fresh process."""
    env = {**_child_env(), "DEEPX_SIM_CACHE": str(cache)}
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the parent that forked
    code = ("import sys; from deepx_sim.cli import main; rc = main(sys.argv[1:]); "
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]; "
            "print('PEAK', hwm, file=sys.stderr); sys.exit(rc)")
    args = [sys.executable, "-c", code, "plan", "--model", str(path), "--platform", "tegra_k1",
            "--link", "wifi", "--json"]
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"plan failed on {path}:\n{done.stderr}")
    peak_kb = int(next(line.split()[1] for line in done.stderr.splitlines() if line.startswith("PEAK")))
    return wall, cpu, peak_kb / 1024**2, load, json.loads(done.stdout)["accuracy_source"]


def _child_env() -> dict[str, str]:
    """This process's environment, keeping Python's bytecode cache: a sandbox may set
    PYTHONDONTWRITEBYTECODE, and then every start compiles ~850 modules again (0.4 s), which a
    user's installed copy does not."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _compile_once() -> None:
    """Start the CLI once untimed, so the timed runs read compiled bytecode as a user's do."""
    subprocess.run([sys.executable, "-c", "import deepx_sim.cli"], env=_child_env(), check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vgg16,bert,vit")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; wall time counts waiting for a core on a shared machine, CPU time "
          "(user + sys of the child) does not; 'load' is the 1-minute load average before each run\n")
    print(f"{'model':<8}{'MB':>5}  {'first: wall s':>13}{'CPU s':>7}{'load':>6}  {'second: wall s':>14}"
          f"{'CPU s':>7}{'load':>6}{'peak GB':>9}  ratios to the targets (wall)")
    sources: dict[str, str] = {}
    _compile_once()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in args.models.split(","):
            graph = build(name)
            random_weights(graph, seed=0)
            path = save_onnx(graph, root / f"{name}.onnx")
            del graph
            cache = root / f"cache-{name}"  # empty: the first run computes every spectrum
            first, first_cpu, peak, first_load, source = timed_plan(path, cache)
            second, second_cpu, _, second_load, _ = timed_plan(path, cache)
            sources[name] = source
            verdict = (f"first {first / TARGET_FIRST_S:.2f}x of {TARGET_FIRST_S:g} s, "
                       f"second {second / TARGET_SECOND_S:.2f}x of {TARGET_SECOND_S:g} s")
            if name == "vgg16":
                verdict += f", peak {peak / TARGET_VGG_PEAK_GB:.2f}x of {TARGET_VGG_PEAK_GB:g} GB"
            size_mb = path.stat().st_size / 1e6
            print(f"{name:<8}{size_mb:>5.0f}  {first:>13.2f}{first_cpu:>7.2f}{first_load:>6.1f}"
                  f"  {second:>14.2f}{second_cpu:>7.2f}{second_load:>6.1f}{peak:>9.2f}  {verdict}")
            path.unlink()
        for name, source in sources.items():
            print(f"{name} accuracy source: {source}")
        print(f"\nload average at end: {os.getloadavg()[0]:.1f}; "
              f"this process peaked at {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2:.2f} GB")


if __name__ == "__main__":
    main()
