"""Groups: live sums, capacity weighting, stale members, and group meters on the group's own flow."""

from __future__ import annotations

import pytest

from bmsbus.aggregator.engine import Engine
from bmsbus.shared.config import AggregatorConfig
from helpers import T0, close, sample

KWH = 3.6e6


def engine(topology: str = "parallel", **kw) -> Engine:
    return Engine(AggregatorConfig(groups=[{"id": "g", "members": ["a", "b"], "topology": topology}],
                                   reorder_window=0.0, **kw))


def test_parallel_live_values() -> None:
    eng = engine()
    eng.on_sample(sample("a", T0, 0, voltage=53.0, current=10.0, power=530.0, soc=50.0, soh=90.0, capacity=280.0,
                         cell_voltages=[3.30, 3.31, 3.29], temperatures=[20.0, 21.0], mos_temperature=30.0), T0)
    eng.on_sample(sample("b", T0, 0, voltage=53.2, current=-4.0, power=-212.8, soc=100.0, soh=100.0,
                         capacity=100.0, cell_voltages=[3.35, 3.28], temperatures=[25.0]), T0)
    g = eng.state("g", now=T0 + 1)
    assert g.kind == "group" and g.members == ["a", "b"] and not g.degraded and not g.stale
    assert g.voltage == pytest.approx(53.1) and g.current == pytest.approx(6.0) and g.power == pytest.approx(317.2)
    assert g.capacity == 380.0 and g.charge == pytest.approx(140.0 + 100.0)
    assert g.soc == pytest.approx((50 * 280 + 100 * 100) / 380)  # capacity-weighted, not 75
    assert g.soh == pytest.approx((90 * 280 + 100 * 100) / 380)
    assert (g.cell_min, g.cell_min_member, g.cell_min_index) == (3.28, "b", 1)
    assert (g.cell_max, g.cell_max_member, g.cell_max_index) == (3.35, "b", 0)
    assert g.cell_delta == pytest.approx(0.07)
    assert g.member_temperatures == {"a": [20.0, 21.0], "b": [25.0]} and g.mos_temperature == 30.0


def test_series_live_values() -> None:
    eng = engine("series")
    eng.on_sample(sample("a", T0, 0, voltage=26.5, current=10.0, soc=60.0, capacity=100.0), T0)
    eng.on_sample(sample("b", T0, 0, voltage=26.7, current=10.2, soc=55.0, capacity=105.0), T0)
    g = eng.state("g", now=T0)
    assert g.voltage == pytest.approx(53.2) and g.current == pytest.approx(10.1)
    assert g.soc == 55.0 and g.capacity == 100.0
    assert g.power == pytest.approx(26.5 * 10 + 26.7 * 10.2)


def test_a_stale_member_is_left_out_visibly() -> None:
    eng = engine(timeout=120.0)
    for i in range(124):
        eng.on_sample(sample("a", T0 + i, i, current=10.0, power=500.0, capacity=100.0, soc=50.0), T0 + i)
        if i < 3:
            eng.on_sample(sample("b", T0 + i, i, current=5.0, power=250.0, capacity=100.0, soc=70.0), T0 + i)
    now = T0 + 2 + 121  # b silent for 121 s
    eng.tick(now)
    g = eng.state("g", now=now)
    assert g.degraded and not g.stale and g.stale_members == ["b"]
    assert g.current == 10.0 and g.soc == 50.0 and g.capacity == 100.0  # a alone, not an old b
    assert [a.code for a in g.alarms] == ["degraded", "b:stale", "b:telemetry_lost"]
    assert g.alarms[0].text == "Silent members left out: b"
    b = eng.state("b", now=now)
    assert b.stale and b.alarms[0].code == "stale" and b.alarms[0].since == T0 + 2 + 120
    # b comes back: the group is whole again and the alarms clear.
    eng.on_sample(sample("b", now + 0.5, 3, current=5.0, power=250.0, capacity=100.0), now + 0.5)
    eng.tick(now + 1)
    g = eng.state("g", now=now + 1)
    assert not g.degraded and g.alarms == [] and g.current == 15.0


def test_all_members_stale_makes_the_group_stale() -> None:
    eng = engine(timeout=10.0)
    eng.on_sample(sample("a", T0, 0, current=1.0), T0)
    eng.on_sample(sample("b", T0, 0, current=1.0), T0)
    eng.tick(T0 + 11)
    assert eng.state("g", now=T0 + 11).stale


def test_group_meter_interpolates_unsynchronised_members_exactly() -> None:
    eng = engine()
    for i in range(100):
        eng.on_sample(sample("a", T0 + i, i, power=100.0 + i, current=(100.0 + i) / 50), T0 + i)
        t = i + 0.5
        eng.on_sample(sample("b", T0 + t, i, power=200.0 - 2 * t, current=(200.0 - 2 * t) / 50), T0 + t)
    # The group exists from b's first point (0.5) to a's last (99): ∫ 300 - t dt
    expected = (300 * 99 - 99 ** 2 / 2) - (300 * 0.5 - 0.5 ** 2 / 2)
    g = eng.state("g", now=T0 + 100)
    assert close(g.energy_in_kwh, expected / KWH) and g.energy_out_kwh == 0.0
    assert close(g.charge_in_ah, expected / 50 / 3600)


def test_circulating_current_is_not_group_energy() -> None:
    eng = engine()
    for i in range(61):
        eng.on_sample(sample("a", T0 + i, i, power=100.0, current=2.0), T0 + i)
        eng.on_sample(sample("b", T0 + i, i, power=-100.0, current=-2.0), T0 + i)
    g, a, b = (eng.state(x, now=T0 + 61) for x in ("g", "a", "b"))
    assert close(a.energy_in_kwh, 6000 / KWH) and close(b.energy_out_kwh, 6000 / KWH)
    assert g.energy_in_kwh == 0.0 and g.energy_out_kwh == 0.0


def test_a_member_never_heard_of_is_awaited_then_left_out() -> None:
    eng = engine(timeout=30.0)
    for i in range(100):
        eng.on_sample(sample("a", T0 + i, i, power=100.0, current=2.0), T0 + i)
    g = eng.groups["g"]
    # Times up to 30 s after the first were held for b, then integrated without it.
    assert g.evaluated_ts == T0 + 99
    assert close(eng.state("g", now=T0 + 99).energy_in_kwh, 100.0 * 99 / KWH)


def test_a_member_silent_mid_trace_stops_holding_the_group_after_timeout() -> None:
    eng = engine(timeout=20.0)
    for i in range(100):
        eng.on_sample(sample("a", T0 + i, i, power=100.0, current=2.0), T0 + i)
        if i <= 10:
            eng.on_sample(sample("b", T0 + i, i, power=50.0, current=1.0), T0 + i)
    g = eng.state("g", now=T0 + 99)
    # 0..10: 150 W; b's last point is 10. Once a is 20 s ahead, the group stops waiting for b and
    # goes on with a alone after b's last point: 10 -> 11 spans 150 -> 100 W, then 100 W.
    expected = 150 * 10 + (150 + 100) / 2 + 100 * (99 - 11)
    assert close(g.energy_in_kwh, expected / KWH)


def test_group_cycles_keep_growing_when_a_member_goes_stale_or_changes_capacity() -> None:
    eng = engine(timeout=30.0)
    seen = []
    for i in range(200):
        soc = 50.0 + 10.0 * ((i // 10) % 2)  # a square wave: 10 % steps
        eng.on_sample(sample("a", T0 + i, i, current=1.0, capacity=100.0 if i < 120 else 60.0, soc=soc), T0 + i)
        if i < 60:
            eng.on_sample(sample("b", T0 + i, i, current=1.0, capacity=300.0, soc=2 * soc - 50.0), T0 + i)
        eng.tick(T0 + i)
        seen.append(eng.state("g", now=T0 + i).cycles_soc or 0.0)
    assert seen[-1] > seen[100] > 0
    assert all(b >= a for a, b in zip(seen, seen[1:], strict=False)), "group cycles went down"
