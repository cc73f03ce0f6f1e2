"""Charge control on table-driven traces: every limit and every mode change, with its reason."""

from __future__ import annotations

import pytest

from bmsbus.aggregator.control import ChargeVoltage, Curve, Curves, Limit, Output, PackControl, Reading, group_output
from bmsbus.aggregator.engine import Engine
from bmsbus.aggregator.socwindow import SocWindow, SocWindowSpec
from bmsbus.shared.config import AggregatorConfig, ChargeControlConfig, DeviceConfig
from helpers import T0, sample

CC = ChargeControlConfig()


def cells(v: float, n: int = 16, **override: float) -> tuple[float, ...]:
    out = [v] * n
    for k, val in override.items():
        out[int(k[1:])] = val  # c15=3.5 sets cell index 15
    return tuple(out)


def run(readings, cfg: ChargeControlConfig = CC, control: PackControl | None = None):
    control = control or PackControl()
    curves = Curves.of(cfg)
    return control, [control.evaluate(r, cfg, curves) for r in readings]


# --- curves ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("mode", "x", "y"), [
    ("linear", -5.0, 0.0), ("linear", 1.0, 0.125), ("linear", 2.0, 0.25), ("linear", 20.0, 1.0),
    ("linear", 47.5, 0.375), ("linear", 60.0, 0.0),
    ("step", 1.0, 0.0), ("step", 3.0, 0.25), ("step", 47.5, 0.25), ("step", 5.0, 0.5),
])
def test_charge_temperature_curve(mode, x, y) -> None:
    curve = Curve.of(CC.charge_temperature_curve, mode)
    assert curve(x) == pytest.approx(y)


# --- bulk -> absorption -> float -> re-bulk -------------------------------------------------------

def test_absorption_held_900_s_then_float_transition_then_float() -> None:
    full = cells(3.45)  # sum 55.2 V = 16 × max, delta 0
    trace = [Reading(T0 + t, full, soc=99.0) for t in range(0, 901, 10)]
    control, outs = run(trace)
    assert outs[0].mode.startswith("Absorption") and outs[0].cvl.value == pytest.approx(55.2)
    assert outs[-2].mode.startswith("Absorption")  # 890 s
    assert outs[-1].mode.startswith("Float Transition")  # 900 s
    assert control.voltage.last_full_charge == T0 + 900
    # The CVL ramps down at 0.001 V/s: 1.2 V takes 1200 s.
    _, outs = run([Reading(T0 + 900 + t, full, soc=99.0) for t in (600, 1199, 1200, 1300)], control=control)
    assert outs[0].cvl.value == pytest.approx(55.2 - 0.6)
    assert outs[1].mode.startswith("Float Transition")
    assert outs[2].mode.startswith("Float │") and outs[2].cvl.value == pytest.approx(54.0)
    assert outs[3].cvl.reason == "float: 16 × 3.375 V"


@pytest.mark.parametrize(("name", "disturbance", "expect_timer"), [
    ("cells drift apart: restart", cells(3.45, c0=3.43, c15=3.47), "restarted"),
    ("pack falls away: cancel", cells(3.40), "cancelled"),
])
def test_absorption_timer_restart_and_cancel(name, disturbance, expect_timer) -> None:
    control, _ = run([Reading(T0, cells(3.45)), Reading(T0 + 500, disturbance)])
    if expect_timer == "restarted":
        assert control.voltage.absorption_since == T0 + 500
    else:
        assert control.voltage.absorption_since is None
        assert control.output.mode.startswith("Bulk")


@pytest.mark.parametrize(("name", "reading", "rebulk"), [
    ("SoC below 80 %", Reading(0, cells(3.3), soc=79.0), True),
    ("cell delta 80 mV", Reading(0, cells(3.3, c3=3.38), soc=95.0), True),
    ("neither", Reading(0, cells(3.3), soc=95.0), False),
])
def test_rebulk_from_float(name, reading, rebulk) -> None:
    control = PackControl(voltage=ChargeVoltage(allow_max=False))
    _, (out,) = run([Reading(T0, reading.cells, soc=reading.soc)], control=control)
    assert out.mode.startswith("Bulk") is rebulk
    if rebulk:
        assert out.cvl.value == pytest.approx(55.2)  # at once, not a slow recovery


def test_soc_too_low_to_float_is_flagged() -> None:
    control, outs = run([Reading(T0 + t, cells(3.45), soc=70.0) for t in (0, 900)])
    assert outs[-1].mode.startswith("Float")
    assert control.voltage.soc_too_low_to_float


# --- cell overvoltage controllers ----------------------------------------------------------------

HIGH = cells(3.40, c15=3.50)  # sum 54.5 V, one cell 50 mV over 3.45 V


@pytest.mark.parametrize(("controller", "cvl", "reason"), [
    ("penalty", 54.45, "cell overvoltage: cell 16 3.500 V > 3.450 V, penalty 0.050 V over 1 cell(s)"),
    ("clipped", 54.46, "cell overvoltage (clipped sum): cell 16 3.500 V > 3.450 V"),
    ("i", 55.2 - (3.50 - 3.45 - 0.01) * 0.2, "cell overvoltage (I-controller): cell 16 3.500 V, regulating to 3.460 V"),
    ("off", 55.2, "bulk: 16 × 3.450 V"),
])
def test_one_high_cell_reduces_the_cvl_with_a_reason(controller, cvl, reason) -> None:
    _, (out,) = run([Reading(T0, HIGH)], ChargeControlConfig(cvl_controller=controller))
    assert out.cvl.value == pytest.approx(cvl)
    assert out.cvl.reason == reason
    assert ("(Cell OVP)" in out.mode) is (controller != "off")


def test_reduced_cvl_holds_then_ramps_back() -> None:
    control, _ = run([Reading(T0, HIGH)])
    ok = cells(3.40)
    _, outs = run([Reading(T0 + t, ok) for t in (1, 30, 61, 71, 161, 2000)], control=control)
    assert [round(o.cvl.value, 4) for o in outs] == [54.45, 54.45, 54.45, 54.46, 54.55, 55.2]
    assert "recovering after cell overvoltage" in outs[0].cvl.reason
    assert outs[-1].cvl.reason == "bulk: 16 × 3.450 V"


def test_soc_reset_raises_the_target_until_float() -> None:
    cfg = ChargeControlConfig(soc_reset_after_days=30)
    _, (out,) = run([Reading(T0, cells(3.5))], cfg)
    assert out.soc_reset_due and "& SoC Reset" in out.mode
    assert out.cvl.value == pytest.approx(16 * 3.65)
    control, outs = run([Reading(T0 + t, cells(3.65)) for t in (0, 900)], cfg)
    assert outs[-1].mode.startswith("Float") and not outs[-1].soc_reset_due
    assert control.voltage.last_soc_reset == T0 + 900


# --- current limits --------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "reading", "ccl", "ccl_reason", "dcl", "dcl_reason"), [
    ("normal", Reading(T0, cells(3.3), temperatures=(20.0, 22.0)), 50.0, "configured maximum", 60.0,
     "configured maximum"),
    ("cold", Reading(T0, cells(3.3), temperatures=(-1.0, 5.0)), 0.0, "temperature: lowest -1.0 °C", 60 * 0.225,
     "temperature: lowest -1.0 °C"),
    ("hot", Reading(T0, cells(3.3), temperatures=(20.0, 47.5)), 50 * 0.375, "temperature: highest 47.5 °C",
     60 * 0.375, "temperature: highest 47.5 °C"),
    ("full cell", Reading(T0, cells(3.3, c4=3.41)), 50 * 0.17, "cell voltage: cell 5 3.410 V", 60.0,
     "configured maximum"),
    ("empty cell", Reading(T0, cells(3.3, c0=2.95)), 50.0, "configured maximum", 60 * 0.0275,
     "cell voltage: cell 1 2.950 V"),
    ("hot MOSFET", Reading(T0, cells(3.3), mos_temperature=85.0), 50 * 0.125, "MOSFET temperature 85.0 °C",
     60 * 0.125, "MOSFET temperature 85.0 °C"),
    ("charge FET off", Reading(T0, cells(3.3), charge_switch=False), 0.0, "BMS charge switch off", 60.0,
     "configured maximum"),
])
def test_current_limits_name_their_reason(name, reading, ccl, ccl_reason, dcl, dcl_reason) -> None:
    _, (out,) = run([reading])
    assert out.ccl == Limit(pytest.approx(ccl), ccl_reason)
    assert out.dcl == Limit(pytest.approx(dcl), dcl_reason)
    assert out.allow_charge is (ccl > 0)


def test_soc_curves_when_enabled() -> None:
    cfg = ChargeControlConfig(charge_soc_curve=[(85, 1), (90, .5), (95, .2), (98, .1)])
    _, (out,) = run([Reading(T0, cells(3.3), soc=92.5)], cfg)
    assert out.ccl == Limit(pytest.approx(50 * 0.35), "SoC 92.5 %")


def test_recovery_from_zero_waits_for_the_threshold_holds_then_ramps() -> None:
    cold, warm = (-1.0,), (20.0,)
    trace = [Reading(T0, cells(3.3), temperatures=cold),
             Reading(T0 + 1, cells(3.3), temperatures=(0.001,)),  # 0.0125 % of max: below the 1.5 % threshold
             Reading(T0 + 2, cells(3.3), temperatures=warm),  # hold starts
             Reading(T0 + 31, cells(3.3), temperatures=warm),  # still held
             Reading(T0 + 32, cells(3.3), temperatures=warm),  # 30 s held: the ramp starts
             Reading(T0 + 33, cells(3.3), temperatures=warm),  # 5 A/s
             Reading(T0 + 35, cells(3.3), temperatures=warm),
             Reading(T0 + 100, cells(3.3), temperatures=warm)]
    _, outs = run(trace)
    assert [o.ccl.value for o in outs] == pytest.approx([0, 0, 0, 0, 0, 5, 15, 50])
    assert "holding 30 s" in outs[3].ccl.reason
    assert outs[6].ccl.reason.startswith("recovering at 5 A/s towards 50.0 A")
    assert outs[-1].ccl.reason == "configured maximum"


def test_small_rises_are_throttled_large_ones_are_not() -> None:
    at = lambda t, temp: Reading(T0 + t, cells(3.3), temperatures=(temp,))  # noqa: E731
    # 44 °C -> 0.6 × 50 = 30 A; 43 °C -> 35 A (+17 %: throttled for 60 s); 20 °C -> 50 A (+67 %: at once)
    _, outs = run([at(0, 44.0), at(10, 43.0), at(20, 43.0), at(61, 43.0)])
    assert [o.ccl.value for o in outs] == pytest.approx([30, 30, 30, 35])
    _, outs = run([at(0, 44.0), at(10, 20.0)])
    assert [o.ccl.value for o in outs] == pytest.approx([30, 50])


# --- telemetry loss ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "cfg", "last_cells", "blocked_at"), [
    ("safe cells: grace", CC, cells(3.30), 60 + 1800 + 1),
    ("cells too high: block", CC, cells(3.30, c2=3.40), 61),
    ("block_on_disconnect", ChargeControlConfig(block_on_disconnect=True), cells(3.30), 61),
])
def test_telemetry_lost_blocks_after_the_window(name, cfg, last_cells, blocked_at) -> None:
    control, _ = run([Reading(T0, last_cells, temperatures=(20.0,))], cfg)
    assert not control.silence(60.0, cfg)
    for silent in (61.0, 600.0, 1860.0):
        control.silence(silent, cfg)
        if silent < blocked_at:
            assert control.output.ccl.value == 50.0 and control.blocked is None
            assert "telemetry lost, holding limits" in control.output.mode
    control.silence(float(blocked_at), cfg)
    assert control.blocked is not None
    assert control.output.ccl.value == 0 and control.output.dcl.value == 0
    assert control.output.ccl.reason.startswith("telemetry lost for")
    assert control.output.mode == "Blocked (telemetry lost)"
    # Telemetry back: limits recover through the anti-flap rules (held at 0 first).
    _, (out,) = run([Reading(T0 + blocked_at, last_cells, temperatures=(20.0,))], cfg, control)
    assert out.ccl.value == 0 and "holding" in out.ccl.reason


# --- the SoC window (batmon `algorithm`) ------------------------------------------------------------

def test_soc_window_parse() -> None:
    assert SocWindowSpec.parse("soc 90% 80%") == SocWindowSpec(90, 80, 336 * 3600)
    assert SocWindowSpec.parse("soc 100%") == SocWindowSpec(100, 100, 336 * 3600)
    assert SocWindowSpec.parse("soc 80% 70% 10% 20% 48").interval_s == 48 * 3600
    for bad in ("soc", "soc 80% 90%", "charge 90%", "soc abc", "soc 120%"):
        with pytest.raises(ValueError):
            SocWindowSpec.parse(bad)


def test_soc_window_switches_only_at_trigger_points() -> None:
    spec = SocWindowSpec.parse("soc 90% 80%")
    w = SocWindow()
    trace = [(0, 85, True, None), (1, 90, True, False), (2, 89, False, None),
             (3, 85, True, None),  # a manual override (switched on by hand) sticks
             (4, 80.5, True, None), (5, 80, False, True), (6, 88, True, None), (7, 90, True, False)]
    for t, soc, switch, expect in trace:
        got = w.evaluate(spec, T0 + t, soc, switch)
        assert (got[0] if got else None) == expect, (t, soc)


def test_soc_window_calibrates_every_interval() -> None:
    spec = SocWindowSpec.parse("soc 80% 70% 0 0 24")
    w = SocWindow()
    assert w.evaluate(spec, T0, 75, True) is None
    day = 86400
    assert w.evaluate(spec, T0 + day + 1, 75, False)[0] is True  # calibration: on, despite the window
    assert w.state == "calibrating"
    assert w.evaluate(spec, T0 + day + 2, 95, True) is None  # charging to 100 %
    assert w.evaluate(spec, T0 + day + 3, 100, True)[0] is False
    assert w.last_calibration == T0 + day + 3
    assert w.evaluate(spec, T0 + day + 4, 100, False) is None and w.state == "resting"


def test_engine_soc_window_issues_switch_commands() -> None:
    dev = DeviceConfig(type="simulated", alias="p", algorithm="soc 90% 80%")
    eng = Engine(AggregatorConfig(), [dev])
    eng.on_sample(sample("p", T0, 0, soc=85.0, switches={"charge": True}), T0)
    eng.on_sample(sample("p", T0 + 1, 1, soc=90.0, switches={"charge": True}), T0 + 1)
    (cmd,) = [e for e in eng.effects if e.kind == "command"]
    assert cmd.target == "p" and cmd.data["switch"] == "charge" and cmd.data["value"] is False
    assert "90.0 % reached the stop level 90 %" in cmd.data["origin"]
    assert eng.control("p", T0).soc_window == "resting"


# --- groups ----------------------------------------------------------------------------------------

def out(cvl: float, ccl: float, dcl: float, reason: str = "configured maximum", mode: str = "Bulk") -> Output:
    return Output(Limit(cvl, f"bulk {cvl}"), Limit(ccl, reason), Limit(dcl, reason), mode)


def test_parallel_group_limits_protect_the_weakest_pack() -> None:
    g = group_output("parallel", [("a", out(55.2, 50, 60), 280.0), ("b", out(54.45, 50, 60, mode="Bulk (Cell OVP)"),
                                                                          100.0)])
    assert g.cvl == Limit(54.45, "b: bulk 54.45")  # one high cell anywhere pulls the bank down
    assert g.ccl.value == pytest.approx(50 * 380 / 280)  # a carries 280/380 of the bank current
    assert g.ccl.reason.startswith("a: configured maximum")
    assert g.mode == "Bulk (Cell OVP) (b)"
    blocked = group_output("parallel", [("a", out(55.2, 50, 60), 280.0),
                                        ("b", out(55.2, 0, 60, "temperature: lowest -1.0 °C"), 100.0)])
    assert blocked.ccl == Limit(0.0, "b: temperature: lowest -1.0 °C") and not blocked.allow_charge


def test_series_group_limits() -> None:
    g = group_output("series", [("a", out(27.6, 50, 60), 100.0), ("b", out(27.5, 40, 60), 100.0)])
    assert g.cvl.value == pytest.approx(55.1)
    assert g.ccl == Limit(40, "b: configured maximum")


def test_switch_fets_follow_the_limits_but_never_fight_the_bms() -> None:
    eng = Engine(AggregatorConfig(charge_control=ChargeControlConfig(switch_fets=True)))
    temps = [20.0, -1.0, -2.0, 20.0]
    for i, t in enumerate(temps):
        eng.on_sample(sample("p", T0 + i, i, cell_voltages=list(cells(3.3)), temperatures=[t],
                             switches={"charge": i != 2}), T0 + i)
    cmds = [(e.data["switch"], e.data["value"]) for e in eng.effects if e.kind == "command"]
    assert cmds == [("charge", False), ("charge", True)]
