"""Calibrating the cost model: parameters recovered from profiles of a known processor,
the learned correction and its hook in the cost model, errors, and bad input."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepx_sim import calibration
from deepx_sim.calibration import (
    PRIOR_WEIGHT,
    ErrorSummary,
    calibrate,
    load_measured,
    predict_rows,
    summaries,
    write_calibrated,
)
from deepx_sim.cli import main
from deepx_sim.costs import FREE_KINDS, FULL, CostModel
from deepx_sim.errors import CostError, ProfileError
from deepx_sim.measure.nets import is_net_name, write_net
from deepx_sim.measure.predictor import producers_of
from deepx_sim.measure.profiling import read_model_profile
from deepx_sim.model import load_model
from deepx_sim.model.layers import Layer, LayerKind, get_layer, layers_in_order
from deepx_sim.model.profiles import ProfileEntry, save_profile
from deepx_sim.platform import Platform, load_platform

TRUTH = {"efficiency": {"default": 0.05, "conv": 0.45, "depthwise_conv": 0.05, "fc": 0.2, "lrn": 0.01,
                        "softmax": 0.004},
         "memory_efficiency": 0.35, "launch_overhead_ms": 0.012}
#: convolutions' matrix products at half speed with 16 rows or 24 columns (none with depth),
#: BatchNorms and depthwise convolutions with planes of 40 and 80 positions (pools: none)
SHORT_LOOPS = {"gemm_half_size": {"rows": 16.0, "depth": 0.0, "columns": 24.0},
               "plane_half_size": {"batchnorm": 40.0, "depthwise_conv": 80.0}}


def platform_with(**fields: object) -> Platform:
    """vm_datasheet with its processor's fields replaced: a processor whose numbers we know."""
    data = load_platform("vm_datasheet").model_dump()
    data["processors"][0].update(fields)  # validated anew (a model_copy would keep the cached lookup)
    return Platform.model_validate(data)


def write_truth(folder: Path, models: list[str], truth: Platform,
                factor: Callable[[Layer], float] = lambda _: 1.0, **meta: str) -> list[Path]:
    """Profiles whose times are the cost model's under ``truth`` (times ``factor``)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in models:
        graph = load_model(write_net(name, folder) if is_net_name(name) else name)
        costs = CostModel(graph, truth)
        entries = {}
        for lay in layers_in_order(graph):
            if lay.kind not in FREE_KINDS:
                busy = costs.layer_cost(lay.name, "vm").busy_s * factor(lay)
                entries[(lay.name, "vm")] = ProfileEntry(busy)
        e2e = sum(e.latency_s for e in entries.values())
        header = {"model": name, "threads": "1", "optimization": "none", "clock": "synthetic",
                  "end_to_end_s": f"{e2e:.9g}", **meta}
        paths.append(save_profile(folder / f"{name.replace(':', '_')}.csv", entries, header))
    return paths


# a Concat does no arithmetic: SqueezeNet's pin the memory efficiency, which element-wise
# kinds alone cannot tell from their own efficiency (their FLOPs and bytes are proportional)
MODELS = ["alexnet", "agenet", "resnet50", "mobilenetv2", "speakerid", "heldout:squeezenet1_1"]


@pytest.fixture(scope="module")
def truth_profiles(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_truth(tmp_path_factory.mktemp("truth"), MODELS, platform_with(**TRUTH, **SHORT_LOOPS))


@pytest.mark.parametrize(("prior_weight", "tolerance"), [(0.0, 1e-4), (PRIOR_WEIGHT, 1e-2)])
def test_fit_recovers_the_processor_that_made_the_profiles(
        truth_profiles: list[Path], monkeypatch: pytest.MonkeyPatch, prior_weight: float,
        tolerance: float) -> None:
    # without the pull towards the estimates, noise-free profiles give the truth back;
    # with it, a kind of few layers moves by under 1 %
    monkeypatch.setattr(calibration, "PRIOR_WEIGHT", prior_weight)
    prior = load_platform("vm_datasheet")
    result = calibrate(truth_profiles, prior, "vm")
    truth = platform_with(**TRUTH, **SHORT_LOOPS).processor("vm")
    # only a kind with a compute-bound layer, whose compute outweighs the launch overhead,
    # says anything about its efficiency
    identifiable = set()
    for m in result.models:
        for lay, c, mem in zip(m.layers, m.compute_s, m.memory_s, strict=True):
            compute = c / truth.efficiency_for(lay.kind)
            if compute > max(mem / truth.memory_efficiency, truth.launch_overhead_s):
                identifiable.add(lay.kind.value)
    assert {"conv", "depthwise_conv", "lrn"} <= identifiable
    for kind in identifiable:
        expected = truth.efficiency_for(LayerKind(kind))
        assert result.params.efficiency_for(kind) == pytest.approx(expected, rel=tolerance), kind
    assert result.params.memory_efficiency == pytest.approx(0.35, rel=tolerance)
    assert result.params.launch_overhead_s == pytest.approx(12e-6, rel=tolerance)
    rows, depth, columns = result.params.gemm_half_size
    assert (rows, columns) == pytest.approx((16.0, 24.0), rel=tolerance)
    assert depth < 0.1  # no loss with depth: fitted at its bound, which has no effect
    planes = result.params.plane_half_size
    assert (planes["batchnorm"], planes["depthwise_conv"]) == pytest.approx((40.0, 80.0), rel=tolerance)
    assert planes["pool"] < 0.1
    groups, _ = predict_rows(result.models, result.prior, result.params, None)
    assert summaries(groups, [])["layer/calibrated"].mape < 100 * tolerance
    # left out, a model whose kinds the others all have is predicted as well
    resnet = [r for r in result.cv_groups if r.model == "resnet50"]
    assert summaries(resnet, [])["layer/calibrated"].mape < 100 * tolerance
    assert result.errors["layer/before"].mape > 10  # the datasheet estimates were not the truth


def test_written_platform_loads_with_provenance(truth_profiles: list[Path], tmp_path: Path) -> None:
    prior = load_platform("vm_datasheet")
    result = calibrate(truth_profiles, prior, "vm")
    out = write_calibrated(result, prior, tmp_path / "host_cal.yaml")
    platform = load_platform(out)
    proc = platform.processor("vm")
    assert platform.name == "host_cal"
    assert proc.memory_efficiency == pytest.approx(result.params.memory_efficiency, rel=1e-3)  # 4 digits
    assert proc.calibration is not None and proc.calibration.measured_at and "least squares" in \
        proc.calibration.method
    assert "cloud" in platform.by_name and platform.links  # remote inlined: no remote/ folder beside it
    assert CostModel(load_model("alexnet"), platform).layer_cost("conv2", "vm").busy_s > 0
    with pytest.raises(CostError, match="written as .yaml"):
        write_calibrated(result, prior, tmp_path / "x.json")


def test_provenance_gives_the_load_and_why_no_energy(tmp_path: Path) -> None:
    truth = platform_with(**TRUTH)
    note = "not measured: /sys/class/powercap does not exist"
    paths = [*write_truth(tmp_path, ["alexnet"], truth, load_average_before="2.50 1.00 0.50 / 7.50 3.00 2.00",
                          energy=note, steal_share="0.0000 / 0.2000"),
             *write_truth(tmp_path, ["agenet"], truth, load_average_before="4.00 4.00 4.00", energy=note,
                          steal_share="0.0100")]
    result = calibrate(paths, load_platform("vm_datasheet"), "vm", min_layers=1)
    # the 1-minute loads of the three rounds: 2.5, 7.5 and 4.0; their steal 0, 20 and 1 %
    assert result.provenance["load_average"].startswith("2.50 .. 7.50 (median 4.00;")
    assert result.provenance["steal"].startswith("median 1.00%, max 20.00%")
    assert result.provenance["energy"] == note
    bare = write_truth(tmp_path / "bare", ["alexnet", "agenet"], truth)
    unknown = calibrate(bare, load_platform("vm_datasheet"), "vm", min_layers=1).provenance
    assert unknown["load_average"] == "unknown" and unknown["steal"].startswith("not recorded")


def three_by_three_slow(layer: Layer) -> float:
    """A processor whose 3x3 convolutions run 1.6 times slower than the roofline says."""
    return 1.6 if layer.conv is not None and layer.conv.kernel == (3, 3) and layer.conv.groups == 1 else 1.0


def test_learned_correction_is_used_by_the_cost_model(tmp_path: Path) -> None:
    truth = platform_with(**TRUTH)
    paths = write_truth(tmp_path, ["resnet50", "vgg16", "alexnet", "agenet", "gendernet"], truth,
                        three_by_three_slow)
    prior = load_platform("vm_datasheet")
    result = calibrate(paths, prior, "vm", predictor=True)
    assert result.errors["layer/learned"].mape < result.errors["layer/calibrated"].mape
    out = write_calibrated(result, prior, tmp_path / "learned.yaml")
    assert (tmp_path / "learned.predictor.joblib").is_file()
    platform = load_platform(out)
    # a model the fit never saw: its 3x3 and 1x1 convolutions, through the cost model's hook
    graph = load_model("mobilenetv2")
    costs, truth_costs = CostModel(graph, platform), CostModel(graph, truth)
    convs = [lay for lay in layers_in_order(graph) if lay.kind.value == "conv"]
    ratio = [costs.layer_cost(lay.name, "vm").busy_s
             / (truth_costs.layer_cost(lay.name, "vm").busy_s * three_by_three_slow(lay)) for lay in convs]
    assert np.median(np.abs(np.log(ratio))) < np.log(1.1)
    # the hook multiplies the fitted roofline by the predictor's factor, and a profile still wins
    m = load_measured(paths[0], platform, "vm")
    factors = result.predictor.factors(m.layers, producers_of(m.graph))  # type: ignore[union-attr]
    fitted = result.params.layer_s(m)
    resnet = CostModel(load_model("resnet50"), platform)
    for lay, busy in zip(m.layers, fitted, strict=True):
        assert resnet.layer_cost(lay.name, "vm").busy_s == pytest.approx(busy * factors[lay.name], rel=1e-3)
    roofline, _, _ = resnet.analytic_busy_s(m.layers[0], platform.processor("vm"), FULL)
    assert roofline == pytest.approx(fitted[0], rel=1e-3)


def test_error_summary_closed_form() -> None:
    summary = ErrorSummary.of(np.array([1.0, 1.0, 1.0, 1.0]), np.array([1.05, 1.15, 0.7, 1.0]))
    assert summary.mape == pytest.approx(12.5)  # (5 + 15 + 30 + 0) / 4 %
    assert summary.within_10 == 0.5 and summary.within_20 == 0.75 and summary.count == 4


def test_too_few_layers_of_a_kind(tmp_path: Path) -> None:
    paths = write_truth(tmp_path, ["alexnet", "speakerid"], platform_with(**TRUTH))
    with pytest.raises(CostError, match=r"lrn \(2\).*at least 3"):
        calibrate(paths, load_platform("vm_datasheet"), "vm")
    assert calibrate(paths, load_platform("vm_datasheet"), "vm", min_layers=2).params


def rewrite(path: Path, old: str, new: str) -> Path:
    path.write_text(path.read_text().replace(old, new, 1))
    return path


@pytest.mark.parametrize(("edit", "expected"), [
    (("\nconv1,vm,", "\nconv9,vm,"), "layer 'conv9' is not a layer of model 'alexnet'"),
    (("\nconv1,vm,", "\nconv1,tpu,"), "processor 'tpu' is not on platform"),
    (("\nconv1,vm,", "\nconv1,cloud,"), "rows name processor(s) ['cloud']"),
    (("# model: alexnet\n", ""), "no '# model: NAME' line"),
])
def test_bad_profiles_for_calibration(truth_profiles: list[Path], tmp_path: Path, edit: tuple[str, str],
                                      expected: str) -> None:
    bad = tmp_path / "alexnet.csv"
    bad.write_text(truth_profiles[0].read_text())
    rewrite(bad, *edit)
    with pytest.raises(ProfileError) as err:
        calibrate([bad, *truth_profiles[1:]], load_platform("vm_datasheet"), "vm")
    assert expected in str(err.value) and str(bad) in str(err.value)


def test_zero_and_negative_times(truth_profiles: list[Path], tmp_path: Path) -> None:
    for value, rule in (("0", "must be > 0, got '0'"), ("-0.002", "must be > 0, got '-0.002'")):
        bad = tmp_path / "alexnet.csv"
        lines = truth_profiles[0].read_text().splitlines()
        row = next(i for i, line in enumerate(lines) if line.startswith("conv1,"))
        cells = lines[row].split(",")
        cells[2] = value
        lines[row] = ",".join(cells)
        bad.write_text("\n".join(lines) + "\n")
        with pytest.raises(ProfileError, match=rf"row {row + 1}\.latency_s {rule}"):
            calibrate([bad, *truth_profiles[1:]], load_platform("vm_datasheet"), "vm")


def test_mixed_settings_one_model_and_a_cloud_processor(tmp_path: Path) -> None:
    truth = platform_with(**TRUTH)
    one = write_truth(tmp_path / "a", ["alexnet", "agenet"], truth)
    two = write_truth(tmp_path / "b", ["resnet50"], truth, threads="2")
    prior = load_platform("vm_datasheet")
    with pytest.raises(CostError, match=r"mix threads \['1', '2'\]"):
        calibrate([*one, *two], prior, "vm")
    with pytest.raises(CostError, match="at least 2 models"):
        calibrate(one[:1] * 2, prior, "vm", min_layers=1)
    with pytest.raises(CostError, match="cloud processor"):
        calibrate(one, prior, "cloud")


def test_calibrate_cli(truth_profiles: list[Path], tmp_path: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cal.yaml"
    argv = ["calibrate", *map(str, truth_profiles), "--platform", "vm_datasheet", "--processor", "vm"]
    assert main([*argv, "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "leave one model out" in text and "conv" in text and out.is_file()
    assert main([*argv[:-1], "tpu", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deepx-sim: error:") and "no processor 'tpu'" in err[0]
    assert main([*argv[:2], "--platform", "vm_datasheet", "--processor", "vm", "-o", str(out)]) == 2
    assert "lrn (2)" in capsys.readouterr().err


@pytest.mark.slow
def test_experiment_quick_run_agrees_with_its_tables(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, str(repo / "experiments" / "cost_calibration.py"), "--quick",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert "target held-out model" in done.stdout and "noise:" in done.stdout
    layers = pd.read_csv(tmp_path / "layers.csv")
    models = pd.read_csv(tmp_path / "models.csv")
    summary = pd.read_csv(tmp_path / "summary.csv").set_index(["level", "prediction"])
    for frame, level in ((layers, "held-out layer"), (models, "held-out model")):
        for label in ("before", "zoo+sampled learned"):
            e = ErrorSummary.of(frame["measured_s"].to_numpy(), frame[label].to_numpy())
            assert summary.loc[(level, label), "mape_pct"] == pytest.approx(e.mape)
    # "before" is the datasheet platform's cost model, recomputed here independently
    row = models.iloc[0]
    profile = tmp_path / "profiles" / "q50" / "A" / f"heldout_{row['model']}.csv"
    m = load_measured(profile, load_platform("vm_datasheet"), "vm")
    costs = CostModel(m.graph, load_platform("vm_datasheet"))
    assert row["before"] == pytest.approx(sum(costs.layer_cost(lay.name, "vm").busy_s for lay in m.layers))
    # the noise floor: the held-out CNNs' second measurement (B) against the first (A), recomputed
    noise = pd.read_csv(tmp_path / "noise.csv").set_index("method")
    ratios = []
    for a in sorted((tmp_path / "profiles" / "q50" / "A").glob("heldout_*.csv")):
        pa, pb = read_model_profile(a), read_model_profile(a.parent.parent / "B" / a.name)
        graph = load_measured(a, load_platform("vm_datasheet"), "vm").graph
        ratios += [pb.entries[k].latency_s / e.latency_s for k, e in pa.entries.items()
                   if get_layer(graph, k[0]).kind not in FREE_KINDS]
    assert noise.loc["q50", "layers"] == len(ratios)
    assert noise.loc["q50", "layers within_20"] == pytest.approx(np.mean(np.abs(np.array(ratios) - 1) <= 0.2))
    for name in ("heldout_layers.png", "heldout_models.png", "vm_zoo_sampled.yaml",
                 "vm_zoo_sampled.predictor.joblib"):
        assert (tmp_path / name).stat().st_size > 0


def test_experiment_reanalysis_names_missing_rounds(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, str(repo / "experiments" / "cost_calibration.py"), "--quick",
                           "--out", str(tmp_path / "out"), "--profiles", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and "missing round profiles" in err[0] and str(tmp_path) in err[0]
