"""DeepX is never worse than any feasible baseline, on every zoo model x platform."""

from __future__ import annotations

import math

import pytest

from deepx_sim.model import model_names
from deepx_sim.plan.quality import Instance, run_quality
from deepx_sim.platform import load_platform, platform_names

BIG = {"vgg16", "resnet50", "mobilenetv2", "bert_base", "vit_b16", "densenet121", "googlenet"}
BASELINES = ["cpu-only", "gpu-only", "lowpower-only", "npu-only", "cloud-only", "neurosurgeon",
             "dads", "greedy"]


def cases() -> list[object]:
    out = []
    for platform in platform_names():
        link = load_platform(platform).links[0].name if load_platform(platform).links else None
        for model in model_names():
            marks = [pytest.mark.slow] if model in BIG else []
            out.append(pytest.param(model, platform, link, marks=marks, id=f"{model}-{platform}"))
    return out


@pytest.mark.parametrize(("model", "platform", "link"), cases())
def test_deepx_never_worse(model: str, platform: str, link: str | None) -> None:
    rows = run_quality(["deepx", *BASELINES], [Instance(model, platform, link, 5.0, None)])
    deepx = next(r for r in rows if r["planner"] == "deepx")
    feasible = [r for r in rows if r["feasible"] and r["planner"] != "deepx"]
    if not deepx["feasible"]:
        assert not feasible, f"deepx found nothing but {feasible[0]['planner']} did"
        return
    assert deepx["ratio"] == pytest.approx(1.0, rel=1e-6)
    for r in feasible:
        assert deepx["objective"] <= r["objective"] * (1 + 1e-6), r["planner"]
        assert not math.isnan(r["ratio"]) and r["ratio"] >= 1 - 1e-6
