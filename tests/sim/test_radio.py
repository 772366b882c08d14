"""Radio state machine against hand-computed Huang et al. examples."""

from __future__ import annotations

import pytest

from deepx_sim.costs import Conditions
from deepx_sim.model import load_model
from deepx_sim.plan import Problem
from deepx_sim.platform import RADIO_PRESETS, load_platform
from deepx_sim.sim import Simulation, StaticPolicy, World
from deepx_sim.sim.radio import Radio, RadioEnergy

# Huang et al. MobiSys 2012 (FACTS.md): LTE promotion 1210.7 mW x 260.1 ms, tail 1060 mW x 11.576 s,
# transfer power 438.39 mW/Mbps up + 1288.04 mW; WiFi promotion 124.4 mW x 79.1 ms, tail 119.3 mW x 238.1 ms.


def test_lte_back_to_back_requests_share_one_tail() -> None:
    radio = Radio(RADIO_PRESETS["lte"])
    a, b = RadioEnergy(), RadioEnergy()
    assert radio.connect(0.0, a) == pytest.approx(0.2601)
    radio.transferred(a, 1.0, 2.0, 0.0, end_s=1.2601)  # 2 Mb up in 1 s
    assert radio.connect(5.0, b) == 0.0  # still in the tail: no promotion
    radio.transferred(b, 0.5, 1.0, 0.0, end_s=5.5)
    horizon = radio.finish(10.0)
    assert a.promotion_j == pytest.approx(1.2107 * 0.2601)
    assert a.transfer_j == pytest.approx(0.43839 * 2 + 1.28804 * 1.0)
    assert a.tail_j == pytest.approx(1.060 * (5.0 - 1.2601))  # cut short by b
    assert b.promotion_j == 0.0
    assert b.transfer_j == pytest.approx(0.43839 * 1 + 1.28804 * 0.5)
    assert b.tail_j == pytest.approx(1.060 * 11.576)  # the full tail
    assert radio.promotions == 1
    assert horizon == pytest.approx(5.5 + 11.576)
    assert radio.idle_j == 0.0  # never idle between the first promotion and the horizon


def test_wifi_sparse_requests_each_pay_promotion_and_tail() -> None:
    radio = Radio(RADIO_PRESETS["wifi"])
    idle_w = 0.0772 * 7.6 / 308.2  # beacon: 77.2 mW for 7.6 ms every 308.2 ms
    users = [RadioEnergy() for _ in range(3)]
    for i, user in enumerate(users):
        start = 10.0 * i
        assert radio.connect(start, user) == pytest.approx(0.0791)
        radio.transferred(user, 0.2, 1.0, 0.0, end_s=start + 0.0791 + 0.2)
    radio.finish(30.0)
    for user in users:
        assert user.promotion_j == pytest.approx(0.1244 * 0.0791)
        assert user.tail_j == pytest.approx(0.1193 * 0.2381)
    on_s = 0.0791 + 0.2 + 0.2381
    assert radio.idle_j == pytest.approx(idle_w * (30.0 - 3 * on_s))
    assert radio.promotions == 3


def test_3g_tail_cut_in_its_second_stage() -> None:
    radio = Radio(RADIO_PRESETS["3g"])
    a, b = RadioEnergy(), RadioEnergy()
    radio.connect(0.0, a)
    radio.transferred(a, 1.0, 1.0, 0.0, end_s=2.0)
    radio.connect(2.0 + 8.0882 + 0.5, b)  # DCH tail over, 0.5 s into FACH
    assert a.tail_j == pytest.approx(0.8039 * 8.0882 + 0.6013 * 0.5)
    assert b.promotion_j == 0.0


def _cloud_problem(link: str) -> Problem:
    return Problem(load_model("speakerid"), load_platform("tegra_k1"), Conditions(link=link))


@pytest.mark.parametrize("link", ["lte", "wifi"])
def test_engine_tail_sharing_against_the_planner(link: str) -> None:
    """Cloud-only requests: sparse ones each cost exactly the planner's prediction
    (promotion + full tail); back-to-back ones skip promotion and cut the tail."""
    problem = _cloud_problem(link)
    world = World.nominal(problem)
    policy = StaticPolicy(problem, world, "cloud-only")
    plan = policy.decide(0).compiled.plan
    tail_s = sum(s.duration_ms for s in RADIO_PRESETS[link].tail) / 1000
    sparse = Simulation(problem, world, policy, [0.0, tail_s + 5, 2 * tail_s + 10]).run().records
    assert sparse.energy_j.to_numpy() == pytest.approx([plan.energy_j] * 3, rel=1e-9)
    assert sparse.latency_s.to_numpy() == pytest.approx([plan.latency_s] * 3, rel=1e-9)

    gap_s = plan.latency_s + tail_s / 2  # the second arrives halfway through the first's tail
    dense = Simulation(problem, world, policy, [0.0, gap_s]).run().records
    first, second = dense.iloc[0], dense.iloc[1]
    promo_s = RADIO_PRESETS[link].promotion_s
    tail_w = RADIO_PRESETS[link].tail[0].power_mw / 1000
    # the first request's tail runs from its finish to the second's first transfer
    assert first.radio_tail_j == pytest.approx(
        plan.energy_breakdown_j["radio"] - first.radio_promotion_j - first.radio_transfer_j
        - RADIO_PRESETS[link].tail_energy_j + tail_w * (gap_s - first.finish_s), rel=1e-9)
    assert second.radio_promotion_j == 0.0
    assert second.latency_s == pytest.approx(plan.latency_s - promo_s, rel=1e-9)


def _scenario(tmp_path, **fields):  # type: ignore[no-untyped-def]
    import yaml

    from deepx_sim.scenario import build_simulation, load_scenario

    data = {"model": "speakerid", "platform": "tegra_k1", "duration_s": 5,
            "workload": {"arrivals": "periodic", "interval_s": 1}, **fields}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    scenario, base = load_scenario(path)
    return build_simulation(scenario, base, str(path)), path


def _wired_platform(tmp_path):  # type: ignore[no-untyped-def]
    import yaml

    from deepx_sim.platform import hardware_dir

    data = yaml.safe_load((hardware_dir() / "tegra_k1.yaml").read_text())
    data["remote"] = None
    remote = yaml.safe_load((hardware_dir() / "remote" / "cloud_a100.yaml").read_text())
    data["processors"] += remote["processors"]
    # an Ethernet link: no radio states, a constant 0.5 W while sending (estimate)
    data["links"] = [{"name": "eth", "remote": "cloud", "uplink_mbps": 100, "downlink_mbps": 100,
                      "rtt_ms": 5, "radio": {"promotion_power_mw": 0, "promotion_ms": 0, "tail": [],
                                             "a_up_mw_per_mbps": 0, "a_down_mw_per_mbps": 0,
                                             "base_mw": 500}}]
    data.pop("remote")
    path = tmp_path / "wired.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_a_tail_on_a_wired_link_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from deepx_sim.errors import ScenarioError

    with pytest.raises(ScenarioError, match=r"s\.yaml: conditions\.radio\.tail: link 'eth' of tegra_k1 "
                                            r"is wired .* cannot have tail"):
        _scenario(tmp_path, platform=_wired_platform(tmp_path),
                  conditions={"radio": {"tail": [{"power_mw": 1000, "duration_ms": 5000}]}})


def test_a_radio_override_changes_the_tail_the_run_charges(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """LTE with a 3 s tail (fast dormancy): a lone cloud-only request pays 1060 mW
    for 3 s of tail instead of 11.576 s."""
    lone = {"policy": {"kind": "static", "planner": "cloud-only"}, "duration_s": 1,
            "workload": {"arrivals": "periodic", "interval_s": 20}}  # no next request: the whole tail
    short, _ = _scenario(tmp_path, conditions={
        "link": "lte", "radio": {"tail": [{"power_mw": 1060, "duration_ms": 3000}]}}, **lone)
    default, _ = _scenario(tmp_path, conditions={"link": "lte"}, **lone)
    row, usual = short.run().records.iloc[0], default.run().records.iloc[0]
    assert usual.radio_tail_j - row.radio_tail_j == pytest.approx(1.060 * (11.576 - 3.0), rel=1e-9)
    assert row.energy_j == pytest.approx(row.predicted_energy_j, rel=1e-9)
