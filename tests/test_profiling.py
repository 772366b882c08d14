"""Profiling with onnxruntime: layers mapped back, times that add up, clocks, energy, bad input."""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from deepx_sim.cli import main
from deepx_sim.errors import ModelError, ProfileError
from deepx_sim.measure.cpuclock import ThreadCpuSampler
from deepx_sim.measure.energy import open_meter
from deepx_sim.measure.host import cpu_jiffies, host_name, steal_share
from deepx_sim.measure.nets import HELDOUT, OnnxNet, sampled_cnn, write_net
from deepx_sim.measure.profiling import (
    ModelProfile,
    _kernel_times,
    interquartile_mean,
    merge_rounds,
    model_as_onnx,
    profile_model,
    read_model_profile,
)
from deepx_sim.model import load_model, total
from deepx_sim.model.layers import LayerKind, layers_in_order
from deepx_sim.model.profiles import ProfileEntry, load_profile, read_profile_meta
from deepx_sim.platform import load_platform


def small_cnn(path: Path) -> Path:
    """conv-bn-relu, pool, a branch pair joined by concat and add, global pool, classifier."""
    net = OnnxNet("small", (1, 3, 32, 32), seed=1)
    x = net.conv_bn_relu(16, 3, "stem")
    x = net.pool(2, 2, "pool", x=x)
    a = net.conv_bn_relu(8, 1, "a", x=x)
    b = net.conv_bn_relu(8, 3, "b", x=x)
    c = net.concat([a, b], "cat")
    net.relu("r", net.add(c, x, "res"))
    net.global_pool("gap")
    net.classifier(10)
    return net.save(path / "small.onnx")


def paid_layers(graph) -> list[str]:  # type: ignore[no-untyped-def]
    return [lay.name for lay in layers_in_order(graph) if lay.kind != LayerKind.INPUT]


@pytest.mark.parametrize("optimization", ["none", "basic", "extended", "all"])
def test_every_layer_once_and_rows_add_up(tmp_path: Path, optimization: str) -> None:
    path = small_cnn(tmp_path)
    profile = profile_model(path, processor="cpu", repeats=3, warmup=1, optimization=optimization)
    graph = load_model(path)
    # onnxruntime fuses differently at each level; every layer still gets exactly one row
    assert [name for name, _ in profile.entries] == paid_layers(graph)
    rows = sum(e.latency_s for e in profile.entries.values())
    assert rows + float(profile.meta["run_overhead_s"]) == pytest.approx(profile.end_to_end_s, abs=1e-6)
    # rows plus the binding's time per call make the unprofiled run
    assert float(profile.meta["run_overhead_s"]) == pytest.approx(float(profile.meta["binding_per_call_s"]),
                                                                  rel=1e-2, abs=1e-7)
    # one node per layer: its kernel (less the profiler's share), scaled, plus the executor's time
    executor, scale = float(profile.meta["executor_per_node_s"]), float(profile.meta["row_scale"])
    for entry in profile.entries.values():
        if optimization == "none":
            assert entry.latency_s == pytest.approx(entry.kernel_s * scale + executor, rel=1e-3, abs=1e-9)
    fused = {e.group for e in profile.entries.values() if e.group}
    if optimization == "none":
        assert not fused  # one kernel per layer
    elif optimization in ("extended", "all"):
        # conv+batchnorm folding and conv+relu fusion are what these levels do (onnxruntime docs)
        stem = {n for (n, _), e in profile.entries.items() if n.startswith("/stem")}
        assert len({profile.entries[(n, "cpu")].group for n in stem}) == 1


def test_profile_file_round_trip_and_metadata(tmp_path: Path) -> None:
    path = small_cnn(tmp_path)
    profile = profile_model(path, processor="cpu", repeats=2, warmup=1)
    out = profile.save(tmp_path / "p.csv")
    meta = read_profile_meta(out)
    assert meta["model"] == str(path) and meta["threads"] == "1" and meta["repeats"] == "2"
    assert "load_average_before" in meta and meta["energy"]
    loaded = load_profile(out, load_model(path), load_platform("snapdragon_800"))
    assert loaded.keys() == profile.entries.keys()
    for key, entry in loaded.items():
        assert entry.latency_s == pytest.approx(profile.entries[key].latency_s, rel=1e-5)


def test_zoo_model_is_exported_with_random_weights_and_named_by_layer() -> None:
    profile = profile_model("speakerid", repeats=2, warmup=1)
    assert profile.processor == host_name()
    assert [name for name, _ in profile.entries] == paid_layers(load_model("speakerid"))


def test_zoo_export_is_made_once_per_cache_and_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx

    from deepx_sim.model import onnx as writer

    saved: list[Path] = []
    real = writer.save_onnx
    monkeypatch.setattr(writer, "save_onnx",
                        lambda graph, path: saved.append(Path(path)) or real(graph, path))
    cache = tmp_path / "cache"
    first = [model_as_onnx("ambient", tmp_path / f"run{i}", cache=cache, seed=0)[1] for i in range(2)]
    other_seed = model_as_onnx("ambient", tmp_path, cache=cache, seed=1)[1]
    uncached = model_as_onnx("ambient", tmp_path, seed=0)[1]
    assert saved == [first[0], other_seed, uncached] and first[0] == first[1] != other_seed
    weights = [{t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(p)).graph.initializer}
               for p in (first[0], uncached, other_seed)]
    assert all(np.array_equal(weights[0][k], weights[1][k]) for k in weights[0])  # same seed, same file
    assert not all(np.array_equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_merge_rounds_takes_medians_and_keeps_the_sum() -> None:
    rounds = [profile_model("ambient", processor="cpu", repeats=2, warmup=1) for _ in range(3)]
    merged = merge_rounds(rounds)
    assert merged.meta["rounds"] == "3" and merged.meta["repeats"] == "6"
    assert merged.end_to_end_s == pytest.approx(sorted(r.end_to_end_s for r in rounds)[1])
    sums = sorted(sum(e.latency_s for e in r.entries.values()) for r in rounds)
    assert sum(e.latency_s for e in merged.entries.values()) == pytest.approx(sums[1])


def _round(compute: float, memory: float) -> ModelProfile:
    """A profile of a conv (1 ms at full speed) and a BatchNorm (0.1 ms), measured while
    compute ran ``compute`` times and memory ``memory`` times slower than the reference."""
    entries = {("c", "cpu"): ProfileEntry(1e-3 * compute, kernel_s=0.9e-3 * compute),
               ("m", "cpu"): ProfileEntry(1e-4 * memory, kernel_s=0.9e-4 * memory)}
    meta = {"repeats": "5", "speed_compute_s": f"{2e-4 * compute:.9g}",
            "speed_memory_s": f"{5e-5 * memory:.9g}"}
    return ModelProfile("toy", "cpu", entries, (1e-3 * compute + 1e-4 * memory) * 1.01, 0.0, meta)


def test_speed_normalised_merge_recovers_the_times_at_the_reference_speed() -> None:
    # drift that hits memory-bound kernels harder than compute-bound ones (as measured here)
    rounds = [_round(1.0, 1.0), _round(1.2, 1.5), _round(0.9, 1.3), _round(1.1, 0.8)]
    merged = merge_rounds(rounds, {"c": "compute", "m": "memory"}, {"compute": 2e-4, "memory": 5e-5})
    assert merged.entries[("c", "cpu")].latency_s == pytest.approx(1e-3)
    assert merged.entries[("m", "cpu")].latency_s == pytest.approx(1e-4)
    # the end-to-end time (rows plus 1 % overhead) is normalised as its rows were
    assert merged.end_to_end_s == pytest.approx(1.1e-3 * 1.01)
    # the raw median kernel time is kept, and the meta says what was done
    assert merged.entries[("m", "cpu")].kernel_s == pytest.approx(0.9e-4 * 1.15)
    assert "reference speed" in merged.meta["speed_normalised"]
    plain = merge_rounds(rounds)  # without: the median over rounds, memory-bound kernel 15 % slow
    assert plain.entries[("m", "cpu")].latency_s / plain.entries[("c", "cpu")].latency_s == pytest.approx(
        1e-4 * 1.15 / (1e-3 * 1.05))
    bare = ModelProfile("toy", "cpu", rounds[0].entries, 1e-3, 0.0, {})
    with pytest.raises(ProfileError, match="no speed probe"):
        merge_rounds([bare, *rounds], {"c": "compute"}, {"compute": 2e-4})


def test_steal_share_is_the_stolen_part_of_the_machine_time() -> None:
    assert steal_share((10, 1000), (60, 2000)) == pytest.approx(0.05)
    assert steal_share((10, 1000), (10, 1000)) is None  # no time passed
    steal, total = cpu_jiffies()
    assert total > 0 and 0 <= steal <= total  # Linux has /proc/stat


def test_lower_quartile_variant_of_the_same_runs(tmp_path: Path) -> None:
    path = small_cnn(tmp_path)
    profile = profile_model(path, processor="cpu", repeats=6, warmup=1, also=(0.25,))
    lower = profile.variants["q25"]
    assert profile.meta["statistic"].startswith("q50") and lower.meta["statistic"].startswith("q25")
    assert lower.end_to_end_s <= profile.end_to_end_s
    for key, entry in profile.entries.items():  # a lower quartile of the same runs is never above the median
        assert lower.entries[key].kernel_s <= entry.kernel_s + 1e-12
    assert float(profile.meta["speed_compute_s"]) > float(profile.meta["speed_memory_s"]) > 0
    assert 0.0 <= float(profile.meta["steal_share"]) <= 1.0
    back = read_model_profile(profile.save(tmp_path / "p.csv"))
    assert back.end_to_end_s == pytest.approx(profile.end_to_end_s, rel=1e-5)
    for key, entry in profile.entries.items():
        assert back.entries[key].latency_s == pytest.approx(entry.latency_s, rel=1e-5)
    (tmp_path / "bad.csv").write_text("# model: x\nlayer,processor\n")
    with pytest.raises(ProfileError, match="not a profile"):
        read_model_profile(tmp_path / "bad.csv")
    with pytest.raises(ProfileError, match="quantiles must be within"):
        profile_model(path, repeats=2, also=(1.5,))


def test_interquartile_mean_resolves_truncated_microseconds_where_the_median_cannot() -> None:
    # onnxruntime truncates each kernel's duration to whole microseconds; kernels jitter by
    # about 2 us.  A kernel less the probe's kernel, both read that way over 400 runs:
    rng = np.random.default_rng(0)
    probe_us, runs = 2.3, 400
    errors: dict[str, list[float]] = {"iqm": [], "median": []}
    for true_us in np.arange(4.0, 12.0, 0.1):
        readings = np.floor(true_us + probe_us + rng.normal(0, 2, runs))
        probe = np.floor(probe_us + rng.normal(0, 2, runs))
        errors["iqm"].append(interquartile_mean(list(readings)) - interquartile_mean(list(probe)) - true_us)
        errors["median"].append(float(np.median(readings) - np.median(probe)) - true_us)
    iqm, median = np.abs(errors["iqm"]), np.abs(errors["median"])
    # closed form: the difference of two iqms of sd 2 x ~1.1 / sqrt(400) each has sd 0.16 us;
    # no error past 3.5 sd, and no bias (truncation's half microsecond cancels)
    assert iqm.max() < 0.55 and abs(np.mean(errors["iqm"])) < 0.06
    # the median's difference is a whole number of microseconds: a uniform step error of
    # mean 0.25 us on top of its sampling error, whatever the number of runs
    assert np.mean(median) > 1.5 * np.mean(iqm)
    # a preempted run or two does not move it
    assert 5 <= interquartile_mean([5, 6, 5, 6, 5, 6, 5, 6, 900, 1200]) <= 6
    assert interquartile_mean([7, 3, 900]) == 7  # of three runs, the median


def test_kernel_times_split_runs_and_drop_warmup() -> None:
    trace = [{"cat": "Session", "name": "model_run", "ts": t, "dur": 100} for t in (0, 200, 400)]
    trace += [{"cat": "Node", "name": f"{n}_kernel_time", "ts": t + off, "dur": d}
              for t in (0, 200, 400) for n, off, d in (("conv", 5, 40), ("relu", 50, 10))]
    trace.append({"cat": "Node", "name": "conv_fence_before", "ts": 210, "dur": 1})
    kernels, inside = _kernel_times(trace, runs=3, skip=1, clock=None)
    assert [sorted(run) for run in kernels] == [["conv", "relu"]] * 2
    assert [run["conv"][0] for run in kernels] == pytest.approx([40e-6] * 2)
    assert [run["relu"][0] for run in kernels] == pytest.approx([10e-6] * 2)
    assert all(ok for run in kernels for _, ok in run.values())  # wall clock: nothing to doubt
    assert inside == pytest.approx([100e-6, 100e-6])
    with pytest.raises(ProfileError, match="2 runs, expected 3"):
        _kernel_times(trace[1:], runs=3, skip=0, clock=None)


def test_cpu_clock_sampler_sees_busy_and_idle_time() -> None:
    def spin(seconds: float) -> None:
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    with ThreadCpuSampler() as sampler:
        a = time.time_ns()
        spin(0.05)
        b = time.time_ns()
        time.sleep(0.05)
        c = time.time_ns()
    (busy, idle), (_, idle_clean) = sampler.cpu_s(np.array([a, b]), np.array([b, c]))
    assert busy == pytest.approx(0.05, abs=0.01)  # on-CPU time, however busy the machine is
    assert idle < 0.005 and not idle_clean  # asleep: off the core, and known to be
    assert threading.active_count() >= 1


def test_rapl_counters_read_and_wrap(tmp_path: Path) -> None:
    assert "does not exist" in open_meter(tmp_path / "none").unavailable
    zone = tmp_path / "intel-rapl:0"
    zone.mkdir()
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").write_text("999900\n")
    (zone / "max_energy_range_uj").write_text("1000000\n")
    (tmp_path / "intel-rapl:0:0").mkdir()  # a sub-zone (core): inside the package, not added
    meter = open_meter(tmp_path)
    assert meter.available and [d.name for d in meter.domains] == ["package-0"]
    start = meter.read_uj()
    (zone / "energy_uj").write_text("100\n")
    assert meter.joules_between(start, meter.read_uj()) == pytest.approx(200e-6)


def test_heldout_nets_match_published_sizes(tmp_path: Path) -> None:
    # torchvision's parameter counts; MobileNet v1: Howard et al. 2017, Table 8 (569M mult-adds)
    published = {"squeezenet1_0": 1_248_424, "squeezenet1_1": 1_235_496, "mobilenet_v1_1.0": 4_231_976,
                 "regnetx_200mf": 2_684_792, "regnetx_400mf": 5_495_976}
    for name, params in published.items():
        graph = load_model(write_net(f"heldout:{name}", tmp_path))
        assert total(graph, "params") == params, name
    mobilenet = load_model(tmp_path / "mobilenet_v1_1.0.onnx")
    assert total(mobilenet, "macs") / 1e6 == pytest.approx(569, abs=1)


def test_sampled_nets_are_seeded_and_valid(tmp_path: Path) -> None:
    one = sampled_cnn("s", 7).to_model()
    again = sampled_cnn("s", 7).to_model()
    assert one.SerializeToString() == again.SerializeToString()
    kinds = {lay.kind for lay in layers_in_order(load_model(write_net("sampled:7", tmp_path)))}
    assert LayerKind.CONV in kinds and LayerKind.FC in kinds
    assert len(HELDOUT) >= 10


@pytest.mark.parametrize(("model", "expected"), [
    ("heldout:resnet", "unknown held-out CNN 'resnet'"),
    ("sampled:x", "expected heldout:NAME or sampled:SEED"),
])
def test_bad_net_names(tmp_path: Path, model: str, expected: str) -> None:
    with pytest.raises(ModelError, match=expected):
        write_net(model, tmp_path)


def unrunnable(tmp_path: Path) -> Path:
    """A model the importer reads (an unknown op becomes 'other') but onnxruntime cannot run."""
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Frobnicate", ["x"], ["y"], name="frob", domain="example.custom")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid("example.custom", 1)])
    path = tmp_path / "custom.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.filterwarnings("ignore::deepx_sim.model.onnx.UnknownOperatorWarning")
def test_model_onnxruntime_cannot_run(tmp_path: Path) -> None:
    path = unrunnable(tmp_path)
    with pytest.raises(ProfileError, match=r"custom.onnx: onnxruntime cannot run this model"):
        profile_model(path, repeats=1)


@pytest.mark.parametrize(("argv", "expected"), [
    (["profile", "alexnet", "--repeats", "0"], "repeats must be >= 1"),
    (["profile", "nosuchnet", "--repeats", "1"], "unknown model 'nosuchnet'"),
    (["profile", "ambient", "--repeats", "1", "--out-as-json"], "unrecognized arguments: --out-as-json"),
])
def test_profile_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                            expected: str) -> None:
    assert main([*argv, "--quiet", "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deepx-sim: error:") and expected in err[0]


@pytest.mark.filterwarnings("ignore::deepx_sim.model.onnx.UnknownOperatorWarning")
def test_profile_cli_unrunnable_and_wrong_suffix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", str(unrunnable(tmp_path)), "--out", str(tmp_path / "p.csv"), "--quiet"]) == 2
    assert "onnxruntime cannot run this model" in capsys.readouterr().err
    assert main(["profile", "ambient", "--repeats", "1", "--quiet", "--out", str(tmp_path / "p.json")]) == 2
    assert "a profile is written as .csv" in capsys.readouterr().err


def test_profile_cli_writes_a_profile_plan_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "speakerid.csv"
    assert main(["profile", "speakerid", "--repeats", "2", "--quiet", "--processor", "cpu",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "end to end" in text and "energy:" in text
    assert main(["plan", "--model", "speakerid", "--platform", "snapdragon_800", "--profile", str(out),
                 "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert math.isfinite(plan["latency_s"])
