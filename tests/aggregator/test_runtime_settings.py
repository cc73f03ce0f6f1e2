"""Runtime settings (battery/<id>/settings/set) and per-battery charge-control overrides, on the pure engine
and through the service's state store (persistence across a restart, journal replay)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bmsbus.aggregator.engine import Engine
from bmsbus.aggregator.service import Aggregator, check
from bmsbus.shared.bus import Message
from bmsbus.shared.config import AggregatorConfig, ConfigError, DeviceConfig, parse_config
from bmsbus.shared.models import SettingsRequest
from bmsbus.shared.settings import SETTING_SPECS
from helpers import T0, sample

CELLS = [3.30] * 16
_ids = iter(range(1_000_000))


def request(**settings: Any) -> SettingsRequest:
    return SettingsRequest(id=f"r{next(_ids)}", settings=settings, issued=T0, expires=T0 + 10_000)


def engine(*, overrides: dict | None = None, algorithm: str | None = None, **cc: Any) -> Engine:
    devices = [DeviceConfig(type="simulated", alias="a", algorithm=algorithm),
               DeviceConfig(type="simulated", alias="b")]
    cfg = AggregatorConfig(groups=[{"id": "g", "members": ["a", "b"]}], charge_control=cc,
                           charge_control_overrides=overrides or {})
    eng = Engine(cfg, devices)
    for i in range(3):
        for bms in ("a", "b"):
            eng.on_sample(sample(bms, T0 + i, i, voltage=52.8, current=5.0, soc=60.0, capacity=100.0,
                                 cell_voltages=CELLS, temperatures=[20.0]), T0 + i)
    return eng


def values(eng: Engine, id: str) -> dict:
    return eng.settings_state(id, T0).values


# --- validation -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("battery", "settings", "reason"), [
    ("a", {"max_charge_current": 20, "bogus": 1}, "bogus: unknown setting"),
    ("a", {"max_charge_current": 20, "max_cell_voltage": 9.0}, "max_cell_voltage: 9.0 is outside 2..4.4 V"),
    ("a", {"charge_control": "turbo"}, "charge_control: 'turbo' is not one of"),
    ("a", {"max_charge_current": "lots"}, "max_charge_current: must be a number"),
    ("a", {"float_cell_voltage": 3.5}, "float_cell_voltage (3.5 V) <= max_cell_voltage (3.45 V)"),
    ("a", {"soc_charge_stop": 80, "soc_charge_start": 80}, "soc_charge_start (80 %) must be below soc_charge_stop"),
    ("a", {"soc_charge_stop": 90}, "this battery has no SoC window in the config (`algorithm`), so set both"),
    ("g", {"max_cell_voltage": 3.4}, "a group's charge voltage follows its members"),
    ("g", {"charge_control": "float"}, "a group takes ['auto', 'off']"),
])
def test_an_invalid_request_changes_nothing_and_says_why(battery, settings, reason) -> None:
    eng = engine()
    before = (values(eng, "a"), values(eng, "g"), eng.control("a", T0), eng.control("g", T0))
    verdict = eng.request_settings(battery, request(**settings), T0 + 3)
    assert verdict.status == "rejected" and reason in verdict.reason, verdict
    assert (values(eng, "a"), values(eng, "g"), eng.control("a", T0), eng.control("g", T0)) == before
    assert eng.settings.runtime == {}


def test_expired_duplicate_misaddressed_and_unknown_requests_are_rejected() -> None:
    eng = engine()
    late = SettingsRequest(id="late", settings={"max_charge_current": 10}, issued=T0, expires=T0 + 1)
    assert eng.request_settings("a", late, T0 + 3).reason == "expired 2.0 s ago"
    wrong = SettingsRequest(id="w", battery="b", settings={"max_charge_current": 10}, issued=T0, expires=T0 + 30)
    assert "names battery 'b'" in eng.request_settings("a", wrong, T0 + 3).reason
    assert "unknown battery 'zz'" in eng.request_settings("zz", request(max_charge_current=10), T0 + 3).reason
    assert eng.settings.runtime == {}
    once = request(max_charge_current=10)
    assert eng.request_settings("a", once, T0 + 3).ok
    eng.request_settings("a", request(max_charge_current=None), T0 + 3)  # back to 50 A
    # The same id again (a redelivery) is not applied a second time: the 10 A does not come back.
    assert eng.request_settings("a", once, T0 + 4).reason == "duplicate request id (already applied)"
    assert values(eng, "a")["max_charge_current"] == 50.0


def test_every_declared_setting_is_accepted_for_a_pack() -> None:
    eng = engine(algorithm="soc 90% 80%")
    for spec in SETTING_SPECS.values():
        value = spec.options[0] if spec.options else (spec.min + spec.max) / 2
        if spec.key == "soc_charge_stop":
            value = 95.0  # above the configured start (80 %)
        elif spec.key == "soc_charge_start":
            value = 10.0
        elif spec.key in ("max_cell_voltage", "float_cell_voltage"):
            value = 3.40
        assert eng.request_settings("a", request(**{spec.key: value}), T0 + 3).ok, spec.key
    assert sorted(eng.settings_state("a", T0).overridden) == sorted(SETTING_SPECS)


# --- what a change does -------------------------------------------------------------------------------

def test_a_lower_max_charge_current_applies_at_once_with_its_reason_and_null_restores_it() -> None:
    eng = engine()
    assert eng.control("a", T0).charge_current.value == 50.0
    assert eng.request_settings("a", request(max_charge_current=20), T0 + 3).ok
    # No new sample: the last reading is evaluated again.
    assert eng.control("a", T0).charge_current.model_dump() == {"value": 20.0,
                                                                "reason": "configured maximum (set at run time)"}
    assert {"a", "g"} <= eng.control_dirty and {"a", "g"} <= eng.settings_dirty
    state = eng.settings_state("a", T0)
    assert state.values["max_charge_current"] == 20.0 and state.overridden == ["max_charge_current"]
    assert eng.settings_state("g", T0).values["max_charge_current"] == 70.0  # what the members allow
    assert eng.request_settings("a", request(max_charge_current=None), T0 + 3).ok
    assert eng.settings_state("a", T0).overridden == [] and values(eng, "a")["max_charge_current"] == 50.0


def test_a_raised_bulk_target_applies_at_once() -> None:
    eng = engine()
    assert eng.control("a", T0).charge_voltage.value == pytest.approx(16 * 3.45)
    assert eng.request_settings("a", request(max_cell_voltage=3.5), T0 + 3).ok
    assert eng.control("a", T0).charge_voltage.model_dump() == {"value": pytest.approx(56.0),
                                                                "reason": "bulk: 16 × 3.500 V"}


def test_charge_control_holds_float_and_bulk_and_auto_resumes() -> None:
    eng = engine()
    assert eng.request_settings("a", request(charge_control="float"), T0 + 3).ok
    c = eng.control("a", T0)
    # Into float the usual way: ramping down from the bulk CVL at float_ramp_rate, starting now.
    assert c.mode.startswith("Float Transition (held)") and c.charge_voltage.value == pytest.approx(16 * 3.45)
    # Held: a SoC far below bulk_soc would re-bulk in auto, not now.
    for i in range(3, 1300, 20):
        eng.on_sample(sample("a", T0 + i, i, soc=10.0, cell_voltages=CELLS), T0 + i)
    c = eng.control("a", T0)
    assert c.mode.startswith("Float (held)") and c.charge_voltage.value == pytest.approx(16 * 3.375)
    assert c.charge_voltage.reason == "float held by the charge_control setting: 16 × 3.375 V"
    assert eng.request_settings("a", request(charge_control="bulk"), T0 + 1300).ok
    c = eng.control("a", T0)
    assert c.mode.startswith("Bulk (held)") and c.charge_voltage.value == pytest.approx(16 * 3.45)
    # Held bulk never enters absorption, however long the pack sits at the target.
    full = [3.45] * 16
    for i in range(1300, 2300, 50):
        eng.on_sample(sample("a", T0 + i, i, soc=99.0, cell_voltages=full), T0 + i)
    assert eng.control("a", T0).mode.startswith("Bulk (held)")
    assert eng.request_settings("a", request(charge_control="auto"), T0 + 2300).ok
    eng.on_sample(sample("a", T0 + 2301, 2301, soc=99.0, cell_voltages=full), T0 + 2301)
    assert eng.control("a", T0).mode.startswith("Absorption")


def test_charge_control_off_publishes_no_limits_and_the_group_leaves_the_pack_out() -> None:
    eng = engine(overrides={"a": {"max_charge_current": 10}})
    assert eng.control("g", T0).charge_current.reason.startswith("a: configured maximum")
    assert eng.request_settings("a", request(charge_control="off"), T0 + 3).ok
    c = eng.control("a", T0)
    assert c.mode == "Off" and c.charge_voltage is None and c.charge_current is None and c.discharge_current is None
    g = eng.control("g", T0)
    assert g.members["a"] == "Off" and g.charge_current.reason.startswith("b: ")
    assert eng.request_settings("g", request(charge_control="off"), T0 + 3).ok
    assert eng.control("g", T0).mode == "Off" and eng.control("g", T0).charge_current is None


def test_a_group_cap_limits_the_bank_with_its_own_reason() -> None:
    eng = engine()
    assert eng.control("g", T0).charge_current.value == 100.0
    assert eng.request_settings("g", request(max_charge_current=30, max_discharge_current=40), T0 + 3).ok
    g = eng.control("g", T0)
    assert g.charge_current.model_dump() == {"value": 30.0,
                                             "reason": "configured maximum of the group (set at run time)"}
    assert g.discharge_current.value == 40.0
    assert values(eng, "g") == {"max_charge_current": 30.0, "max_discharge_current": 40.0, "charge_control": "auto"}


def test_soc_window_created_changed_and_removed_at_run_time() -> None:
    eng = engine()
    assert "soc_charge_stop" not in values(eng, "a") and eng.control("a", T0).soc_window is None
    assert eng.request_settings("a", request(soc_charge_stop=55, soc_charge_start=45), T0 + 3).ok
    assert values(eng, "a")["soc_charge_stop"] == 55.0 and eng.control("a", T0).soc_window == "charging"
    eng.effects.clear()
    eng.on_sample(sample("a", T0 + 3, 3, soc=60.0, cell_voltages=CELLS, switches={"charge": True}), T0 + 3)
    (cmd,) = [e for e in eng.effects if e.kind == "command"]
    assert cmd.data["value"] is False and "stop level 55 %" in cmd.data["origin"]
    eng.effects.clear()
    assert eng.request_settings("a", request(soc_charge_stop=None, soc_charge_start=None), T0 + 4).ok
    assert "a" not in eng.windows and "soc_charge_stop" not in values(eng, "a")
    # The window had switched charging off: without it nothing would switch it on again, so this does.
    (cmd,) = [e for e in eng.effects if e.kind == "command"]
    assert (cmd.target, cmd.data["switch"], cmd.data["value"]) == ("a", "charge", True)


def test_a_configured_window_takes_one_key_and_null_returns_to_the_config() -> None:
    eng = engine(algorithm="soc 90% 80%")
    assert eng.request_settings("a", request(soc_charge_stop=95), T0 + 3).ok
    assert (values(eng, "a")["soc_charge_stop"], values(eng, "a")["soc_charge_start"]) == (95.0, 80.0)
    assert "must be below" in eng.request_settings("a", request(soc_charge_stop=75), T0 + 3).reason
    assert eng.request_settings("a", request(soc_charge_stop=None), T0 + 3).ok
    assert values(eng, "a")["soc_charge_stop"] == 90.0 and eng.window_specs["a"].stop == 90.0


def test_layers_global_then_override_then_runtime() -> None:
    eng = engine(overrides={"a": {"max_charge_current": 20, "charge_soc_curve": [[50, 1.0], [70, 0.5]]}},
                 max_charge_current=40)
    assert eng.control("a", T0).charge_current.value == pytest.approx(20 * 0.75)  # SoC 60 on the override curve
    assert eng.control("b", T0).charge_current.value == 40.0
    assert eng.request_settings("a", request(max_charge_current=10), T0 + 3).ok
    assert eng.control("a", T0).charge_current.value == pytest.approx(7.5)
    assert eng.request_settings("a", request(max_charge_current=None), T0 + 3).ok
    assert values(eng, "a")["max_charge_current"] == 20.0  # the override, not the global 40


# --- persistence --------------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def service(tmp_path: Path, clock: Clock) -> Aggregator:
    cfg = parse_config({
        "site": "t", "devices": [{"alias": a, "type": "simulated"} for a in ("a", "b")],
        "aggregator": {"state_dir": str(tmp_path / "state"), "reorder_window": 0.0,
                       "groups": [{"id": "g", "members": ["a", "b"]}]}})
    agg = Aggregator(cfg, clock=clock)
    agg.restore()
    return agg


def send(agg: Aggregator, topic: str, model: Any) -> None:
    agg.handle(Message(f"bmsbus/v1/t/{topic}", model.to_json(), False))


def answers(agg: Aggregator) -> list[tuple[str, str | None]]:
    return [(json.loads(p)["status"], json.loads(p).get("reason")) for t, p, _ in agg.bus_out
            if t.endswith("/cmd/result")]


@pytest.mark.parametrize("snapshot_works", [True, False], ids=["snapshot", "journal-only"])
def test_settings_survive_a_restart_and_a_repeat_is_still_a_duplicate(tmp_path: Path, snapshot_works: bool,
                                                                      monkeypatch) -> None:
    clock = Clock()
    first = service(tmp_path, clock)
    for i in range(3):
        send(first, "bms/a/sample", sample("a", T0 + i, i, cell_voltages=CELLS, temperatures=[20.0]))
    if not snapshot_works:  # a full disk: the journal line alone must carry the change
        def broken(_engine: dict) -> None:
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(first.store, "snapshot", broken)
    change = request(max_charge_current=12, soc_charge_stop=70, soc_charge_start=60)
    send(first, "battery/a/settings/set", change)
    assert answers(first) == [("ok", None)]
    assert first.engine.control("a", T0).charge_current.value == 12.0
    monkeypatch.undo()
    # kill -9: nothing else is written; the next process starts from the files.
    second = service(tmp_path, clock)
    state = second.engine.settings_state("a", T0)
    assert state.values["max_charge_current"] == 12.0 and state.values["soc_charge_stop"] == 70.0
    assert state.overridden == ["max_charge_current", "soc_charge_start", "soc_charge_stop"]
    assert second.engine.control("a", T0).charge_current.value == 12.0
    assert "a" in second.engine.windows
    send(second, "battery/a/settings/set", change)
    assert answers(second) == [("rejected", "duplicate request id (already applied)")]


def test_stored_settings_that_no_longer_fit_the_config_are_dropped(tmp_path: Path, caplog) -> None:
    clock = Clock()
    first = service(tmp_path, clock)
    send(first, "battery/a/settings/set", request(float_cell_voltage=3.42))
    assert answers(first) == [("ok", None)]
    first.save()
    # The config now says max 3.40 V: a float target of 3.42 V would be above it.
    eng = Engine(AggregatorConfig(charge_control={"max_cell_voltage": 3.40, "float_cell_voltage": 3.35}),
                 [DeviceConfig(type="x", alias="a")])
    eng.load(first.engine.dump())
    assert eng.settings.runtime == {} and "no longer fit the config" in caplog.text
    assert values(eng, "a")["float_cell_voltage"] == 3.35


def test_a_retained_or_malformed_request_is_counted_and_skipped(tmp_path: Path) -> None:
    agg = service(tmp_path, Clock())
    agg.handle(Message("bmsbus/v1/t/battery/a/settings/set", request(max_charge_current=5).to_json(), True))
    agg.handle(Message("bmsbus/v1/t/battery/a/settings/set", b'{"id": "x", "settings": {}}', False))
    agg.handle(Message("bmsbus/v1/t/battery/a/meters/reset", b"not json", False))
    assert agg.inbox.bad["settings_set"] == 2 and agg.inbox.bad["meters_reset"] == 1
    assert agg.engine.settings.runtime == {} and answers(agg) == []


# --- config ---------------------------------------------------------------------------------------------

def config(overrides: dict) -> Any:
    return parse_config({"devices": [{"alias": "a", "type": "simulated"}, {"alias": "b", "type": "simulated"}],
                         "aggregator": {"groups": [{"id": "g", "members": ["a", "b"]}],
                                        "charge_control_overrides": overrides}})


@pytest.mark.parametrize(("overrides", "problem"), [
    ({"zz": {"max_charge_current": 1}},
     "aggregator.charge_control_overrides.zz: unknown id 'zz'; allowed: devices ['a', 'b'], groups ['g']"),
    ({"g": {"max_cell_voltage": 3.5}}, "aggregator.charge_control_overrides.g: a group takes only ['enabled', "
                                       "'max_charge_current', 'max_discharge_current']"),
    ({"a": {"float_cell_voltage": 3.6}}, "aggregator.charge_control_overrides.a: need min_cell_voltage (2.9 V) < "
                                         "float_cell_voltage (3.6 V) <= max_cell_voltage (3.45 V)"),
    ({"a": {"safe_cell_min": 3.5}}, "aggregator.charge_control_overrides.a: need safe_cell_min < safe_cell_max"),
])
def test_override_problems_name_the_field(overrides, problem) -> None:
    problems = check(config(overrides))
    assert any(p.startswith(problem) for p in problems), problems


def test_a_valid_override_passes_the_check() -> None:
    assert check(config({"a": {"max_charge_current": 100, "bulk_soc": None}, "g": {"max_charge_current": 150}})) == []


@pytest.mark.parametrize(("fields", "message"), [
    ({"max_charge_current": -1}, "charge_control_overrides.a.max_charge_current: Input should be greater than"),
    ({"max_charge_current": None}, "max_charge_current: may not be null"),
    ({"max_chrage_current": 5}, "charge_control_overrides.a.max_chrage_current: unknown field"),
])
def test_override_fields_are_validated_like_the_global_ones(fields, message) -> None:
    with pytest.raises(ConfigError) as err:
        config({"a": fields})
    assert message in str(err.value)
