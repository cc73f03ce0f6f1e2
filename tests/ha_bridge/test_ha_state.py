"""Pure parts of the bridge: HA state flattening and rounding, command translation."""

from __future__ import annotations

import json
import re

import pytest

from bmsbus.ha_bridge import commands as cmds
from bmsbus.ha_bridge.entities import (ENUM_OPTIONS, GroupFacts, PackFacts, group_entities, pack_entities)
from bmsbus.ha_bridge.state import (charge_mode, control_values, group_switch_values, render, sample_values,
                                    state_values)
from bmsbus.shared.models import (BatteryState, Command, CommandResult, Control, Limit, MetersReset, Sample,
                                  SettingsRequest, parse)
from bmsbus.shared.settings import SETTING_SPECS

TS = 1763700000.0


def test_counters_keep_their_resolution_and_stay_monotonic() -> None:
    entities = group_entities(GroupFacts(state_keys=frozenset({"energy_in_kwh", "energy_out_kwh"})))
    previous = -1.0
    for raw in (123456.7891, 123456.7894, 123456.7899, 999999.9995):
        out = render(entities, "state", state_values(BatteryState(id="g", kind="group", energy_in_kwh=raw)))
        assert abs(out["energy_in_kwh"] - raw) <= 0.0005  # decimal places, never significant digits
        assert out["energy_in_kwh"] >= previous
        previous = out["energy_in_kwh"]


def test_absent_values_are_null_and_every_declared_key_is_present() -> None:
    q = frozenset({"voltage", "current", "soc", "charge", "cell_voltages", "switches"})
    entities = pack_entities(PackFacts(quantities=q, writable_switches=("charge",), cells=3))
    out = render(entities, "sample", sample_values(Sample(bms="p", ts=TS, boot="b", seq=0, voltage=52.0)))
    assert set(out) == {e.key for e in entities if e.source == "sample"}
    assert out["voltage"] == 52.0 and out["soc"] is None and out["cell_voltages_2"] is None
    assert out["switch_charge"] is None
    json.dumps(out, allow_nan=False)


def test_sample_derivations() -> None:
    s = Sample(bms="p", ts=TS, boot="b", seq=0, voltage=50.0, current=20.0, charge=50.0, capacity=100.0,
               cell_voltages=[3.30, 3.35, 3.28], balancing=[1], alarms=["cell_ovp"], problem_code=0,
               switches={"charge": False})
    v = sample_values(s)
    assert v["power_flow"] == -1000.0  # charging is negative in HA's power-flow convention
    assert "time_to_full" not in v  # the aggregator's value (battery/<id>/state), never computed twice
    assert (v["cell_min_index"], v["cell_max_index"]) == (3, 2)
    assert v["cell_delta"] == pytest.approx(0.07)
    assert (v["balancing"], v["problem"], v["alarms"], v["switch_charge"]) == ("ON", "ON", "cell_ovp", "OFF")


def test_state_indices_are_one_based_and_aggregator_values_pass_through() -> None:
    st = BatteryState(id="g", kind="group", cell_min_index=0, cell_max_index=3, current=-1.0, charge=10.0,
                      time_to_empty=1.0, cycles_soc=2.5, stale_members=["b", "c"])
    v = state_values(st)
    assert (v["cell_min_index"], v["cell_max_index"], v["time_to_empty"]) == (1, 4, 1.0)
    assert v["cycles_soc"] == 2.5 and v["stale_members"] == "b, c"
    assert v["alarm"] == "OFF" and v["degraded"] == "OFF"
    # Idle or charging: the aggregator sends no time to empty, and the bridge does not make one up.
    idle = state_values(BatteryState(id="g", kind="group", current=0.0, charge=10.0))
    assert "time_to_empty" not in idle and "time_to_full" not in idle


def test_time_to_go_entities_exist_before_their_first_value() -> None:
    """Declared by their inputs (current and charge in the state), so they do not come and go with the current;
    and they are the catalog's specs, fed by the aggregator's state."""
    entities = {e.key: e for e in group_entities(GroupFacts(state_keys=frozenset({"current", "charge"})))}
    assert "time_to_empty" in entities and "time_to_full" not in entities
    tte = entities["time_to_empty"]
    assert (tte.source, tte.unit, tte.device_class, tte.state_class) == ("state", "s", "duration", "measurement")
    pack = {e.key: e for e in pack_entities(PackFacts(quantities=frozenset({"current", "charge"}),
                                                      state_keys=frozenset({"current", "charge", "capacity"})))}
    assert pack["time_to_full"].source == "state" and pack["current"].source == "sample"


@pytest.mark.parametrize("mode,base", [("Bulk", "bulk"), ("Absorption (Cell OVP) + Balancing", "absorption"),
                                       ("Float Transition", "float_transition"), ("Float", "float"),
                                       ("Blocked: cell undervoltage", "blocked"), ("Weird", "other")])
def test_charge_mode_base(mode: str, base: str) -> None:
    assert charge_mode(mode) == base and base in ENUM_OPTIONS["charge_mode"]


def test_control_values_always_carry_a_valid_enum() -> None:
    v = control_values(Control(id="g", kind="group", ts=TS, mode="Bulk", charge_current=Limit(value=0, reason="x")))
    assert v["soc_window"] in ENUM_OPTIONS["soc_window"] and v["charge_current"] == 0


def test_group_switch_state() -> None:
    assert group_switch_values([{"charge": True}, {"charge": True}], ["charge"]) == {"switch_charge": "ON"}
    assert group_switch_values([{"charge": False}, {"charge": False}], ["charge"]) == {"switch_charge": "OFF"}
    assert group_switch_values([{"charge": True}, {"charge": False}], ["charge"]) == {"switch_charge": None}
    assert group_switch_values([{"charge": True}, None], ["charge"]) == {"switch_charge": None}


def test_switch_command() -> None:
    c = cmds.switch_command("charge", b" on ", now=100.0, expiry=15.0)
    assert isinstance(c, Command) and c.value is True and c.expires == 115.0 and c.origin == "ha_bridge"
    assert c.id != cmds.switch_command("charge", b"ON", now=100.0, expiry=15.0).id  # fresh id each time
    with pytest.raises(cmds.CommandError):
        cmds.switch_command("charge", b"TOGGLE", now=100.0, expiry=15.0)


def test_setting_requests_are_shared_models_checked_against_the_shared_spec() -> None:
    req = cmds.setting_request("g", SETTING_SPECS["max_cell_voltage"], b"3.45", now=1.0, expiry=2.0, id="x")
    assert isinstance(req, SettingsRequest)
    assert json.loads(req.to_json()) == {"schema_version": 1, "id": "x", "battery": "g",
                                         "settings": {"max_cell_voltage": 3.45}, "issued": 1.0, "expires": 3.0,
                                         "origin": "ha_bridge"}
    assert parse(SettingsRequest, req.to_json()) == req  # what the aggregator will read
    select = cmds.setting_request("g", SETTING_SPECS["charge_control"], b"float", now=1.0, expiry=2.0)
    assert select.settings == {"charge_control": "float"}
    refused = {
        (b"nan", "max_cell_voltage"): "outside 2..4.4 V", (b"inf", "max_cell_voltage"): "outside",
        (b"abc", "max_cell_voltage"): "not a number", (b"4.5", "max_cell_voltage"): "outside 2..4.4 V",
        (b"101", "soc_charge_stop"): "outside 0..100 %", (b"-1", "max_charge_current"): "outside 0..2000 A",
        (b"turbo", "charge_control"): "is not one of ['auto', 'bulk', 'float', 'off']",
        (b"AUTO", "charge_control"): "is not one of",
    }
    for (payload, key), reason in refused.items():
        with pytest.raises(cmds.CommandError, match=re.escape(reason)):
            cmds.setting_request("g", SETTING_SPECS[key], payload, now=1.0, expiry=2.0)


def test_meters_reset_is_a_shared_model_with_a_fresh_id_and_expiry() -> None:
    a = cmds.meters_reset("g", b"PRESS", now=10.0, expiry=15.0)
    b = cmds.meters_reset("g", b"PRESS", now=10.0, expiry=15.0)
    assert isinstance(a, MetersReset) and a.battery == "g" and a.origin == "ha_bridge"
    assert a.id != b.id and (a.issued, a.expires) == (10.0, 25.0)
    assert parse(MetersReset, a.to_json()) == a
    with pytest.raises(cmds.CommandError, match="PRESS"):
        cmds.meters_reset("g", b"RESET", now=10.0, expiry=15.0)


def test_last_command_text() -> None:
    spec = SETTING_SPECS["soc_charge_stop"]
    assert cmds.describe(cmds.what_setting(spec, 85.0), None) == "SoC charge stop 85 %: sent"
    rejected = CommandResult(id="x", bms="g", status="rejected", ts=1.0, reason="expired")
    assert cmds.describe(cmds.WHAT_RESET, rejected) == "Reset meters: rejected (expired)"
    assert cmds.describe(cmds.what_switch("charge", False), rejected) == "charge OFF: rejected (expired)"
    assert cmds.describe_refusal("Max cell voltage 5", "x" * 300).startswith("Max cell voltage 5: refused (xxx")
    assert len(cmds.describe_refusal("a", "x" * 300)) == 255  # HA's state length limit
