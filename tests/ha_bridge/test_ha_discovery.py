"""Discovery payloads without a broker: golden files, and every entity checked against HA's valid combinations.

Regenerate the golden files after an intended change with `UPDATE_GOLDEN=1 pytest tests/ha_bridge`, then
review the diff by eye before committing.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from bmsbus.ha_bridge.discovery import Origin
from bmsbus.ha_bridge.entities import (HA_SENSOR_CLASSES, LOCAL, GroupFacts, PackFacts, group_entities,
                                      pack_entities, setting_options)
from bmsbus.ha_bridge.service import HaBridge, config_json
from bmsbus.shared.bus import Message
from bmsbus.shared.config import MqttConfig, parse_config
from bmsbus.shared.models import (ActiveAlarm, BatteryState, Birth, BirthDevice, BmsSettingSpec, BusModel, Control,
                                  Limit, Link, Meta, Sample, SettingsState, SwitchSpec)
from bmsbus.shared.quantities import CATALOG, SAMPLE_KEYS, STATE_QUANTITIES
from bmsbus.shared.settings import SETTING_SPECS

GOLDEN = Path(__file__).parent / "golden"
ROOT = "bmsbus/v1/home"
ORIGIN = Origin(sw="0.1.0", url="https://example.invalid/bmsbus")
TS = 1763700000.0

# ---------------------------------------------------------------------------------------------------
# HA's valid combinations, encoded from /work/shared/reference/home-assistant.md §4 (HA core sensor/const.py
# DEVICE_CLASS_UNITS and DEVICE_CLASS_STATE_CLASSES) -- deliberately NOT from the bridge's own table.
REFERENCE: dict[str | None, tuple[set[str | None], set[str | None] | None]] = {
    # device_class: (allowed state classes, allowed units or None = free)
    "voltage": ({"measurement"}, {"V", "mV", "µV", "kV", "MV"}),
    "current": ({"measurement"}, {"A", "mA"}),
    "power": ({"measurement"}, {"mW", "W", "kW", "MW", "GW", "TW"}),
    "energy": ({"total", "total_increasing"}, {"Wh", "kWh", "MWh", "GJ", "MJ"}),
    "energy_storage": ({"measurement"}, {"Wh", "kWh", "MWh", "GJ", "MJ"}),
    "battery": ({"measurement"}, {"%"}),
    "temperature": ({"measurement"}, {"°C", "°F", "K"}),
    "duration": ({"measurement", "total", "total_increasing"}, {"d", "h", "min", "s", "ms", "µs"}),
    "signal_strength": ({"measurement"}, {"dB", "dBm"}),
    "enum": ({None}, {None}),  # no state class, no unit; options required
    None: ({None, "measurement", "total", "total_increasing"}, None),  # SoH %, cycles, Ah counters, text
}
BINARY_DEVICE_CLASSES = {None, "battery_charging", "problem", "power", "running", "heat"}
NUMBER_DEVICE_CLASSES = {None, "voltage", "current", "battery", "power"}
ID_PART = re.compile(r"^[a-zA-Z0-9_-]+$")


def check_component(key: str, c: dict[str, Any]) -> None:
    p = c["platform"]
    assert c["unique_id"] and ID_PART.match(c["unique_id"]), (key, c)
    domain, _, object_id = c["default_entity_id"].partition(".")
    assert domain == p and object_id == c["object_id"] and ID_PART.match(object_id), (key, c)
    assert "_" not in c["name"], f"entity names without underscores: {c['name']!r}"
    if p == "sensor":
        dc, sc, unit = c.get("device_class"), c.get("state_class"), c.get("unit_of_measurement")
        assert dc in REFERENCE, (key, dc)
        states, units = REFERENCE[dc]
        assert sc in states, f"{key}: state_class {sc!r} not allowed with device_class {dc!r}"
        if units is not None:
            assert unit in units, f"{key}: unit {unit!r} not allowed with device_class {dc!r}"
        if dc == "enum":
            assert c.get("options"), f"{key}: enum sensors need options"
        if dc == "battery":
            assert unit == "%"
        if "expire_after" in c:
            assert c["expire_after"] > 0
    elif p == "binary_sensor":
        assert c.get("device_class") in BINARY_DEVICE_CLASSES, (key, c)
        assert "state_class" not in c and "unit_of_measurement" not in c
    elif p in ("switch", "button", "number", "select"):
        assert c["command_topic"].startswith(f"{ROOT}/ha/"), "command topics live in our tree"
        assert not c["command_topic"].startswith("homeassistant/")
        assert "expire_after" not in c, "no expire_after on controllable entities"
        assert c.get("entity_category") == "config"
        if p == "number":
            assert c.get("device_class") in NUMBER_DEVICE_CLASSES and c["min"] < c["max"] and c["step"] > 0
            assert c["mode"] == "box" and "optimistic" not in c and c["state_topic"]
            dc = c.get("device_class")
            units = REFERENCE[dc][1] if dc is not None else None
            if units is not None:
                assert c.get("unit_of_measurement") in units, f"{key}: unit not allowed with {dc}"
        if p == "select":
            assert c["options"]
        if p == "switch":
            assert c["state_topic"], "switch state comes from the BMS read-back, never optimistic"
    else:
        raise AssertionError(f"unexpected platform {p}")
    if c.get("state_class") in ("total", "total_increasing") or c.get("device_class") == "energy":
        assert c.get("state_class") != "measurement"


def check_config(cfg: dict[str, Any]) -> None:
    assert cfg["device"]["identifiers"] and cfg["device"]["name"]
    assert cfg["origin"]["name"] == "bmsbus"
    assert cfg["availability_mode"] == "all" and len(cfg["availability"]) >= 2
    uids = [c["unique_id"] for c in cfg["components"].values()]
    assert len(uids) == len(set(uids))
    for key, c in cfg["components"].items():
        assert ID_PART.match(key)
        check_component(key, c)


# ---------------------------------------------------------------------------------------------------
# Scenarios: messages fed through the real bridge (no broker; publishing is a no-op without a bus).

def msg(topic: str, model: BusModel | bytes, retain: bool = True) -> Message:
    payload = model if isinstance(model, bytes) else model.to_json()
    return Message(f"{ROOT}/{topic}", payload, retain)


FULL_QUANTITIES = sorted(SAMPLE_KEYS)


JK_SETTINGS = [  # what the collector declares for a JK02 32S BMS (JkBleDriver.setting_specs)
    BmsSettingSpec(name="cell_ovp", unit="V", min=1.2, max=4.5, step=0.001, description="Cell over-voltage protection"),
    BmsSettingSpec(name="balance_trigger_delta", unit="V", min=0.001, max=1.0, step=0.001,
                   description="Cell voltage difference that starts balancing"),
]


def full_pack() -> list[Message]:
    meta = Meta(bms="shed_lfp", collector="shed-pi", name="Shed LFP", type="jk", protocol="jk_32s", transport="ble",
                manufacturer="Jikong", model="JK_PB2A16S20P", hw_version="15A", sw_version="15.38",
                serial="4052434002", cell_count=4, temperature_count=2, quantities=FULL_QUANTITIES,
                switches=[SwitchSpec(name="charge"), SwitchSpec(name="discharge"), SwitchSpec(name="balance"),
                          SwitchSpec(name="heater", writable=False)],
                settings=[s.name for s in JK_SETTINGS], setting_specs=JK_SETTINGS,
                setting_values={"cell_ovp": 3.65, "balance_trigger_delta": 0.005})
    sample = Sample(bms="shed_lfp", ts=TS, boot="b", seq=1, voltage=13.28, current=-12.5, power=-166.0, soc=71.0,
                    soh=100.0, charge=198.8, capacity=280.0, cycles=17, cell_voltages=[3.321, 3.319, 3.322, 3.32],
                    temperatures=[21.5, 21.9], switches={"charge": True, "discharge": True, "balance": True,
                                                          "heater": False, "float_charge": False})
    state = BatteryState(id="shed_lfp", kind="pack", ts=TS, voltage=13.28, current=-12.5, power=-166.0, soc=71.0,
                         charge=198.8, capacity=280.0, cell_min=3.319, cell_max=3.322, cell_delta=0.003,
                         cell_avg=3.3205, cell_min_index=1, cell_max_index=2, energy_in_kwh=12.5, energy_out_kwh=10.1,
                         energy_net_kwh=2.4,
                         cycles=17, cycles_soc=20.5, cycles_throughput=19.8, time_to_empty=57254.0,
                         alarms=[ActiveAlarm(code="cell_ovp", text="Cell overvoltage", since=TS)])
    control = Control(id="shed_lfp", kind="pack", ts=TS, mode="Absorption (Cell OVP) + Balancing",
                      charge_voltage=Limit(value=13.8, reason="max cell voltage"),
                      charge_current=Limit(value=100.0, reason="configured maximum"),
                      discharge_current=Limit(value=150.0, reason="configured maximum"), soc_window="charging")
    settings = SettingsState(id="shed_lfp", kind="pack", values={"soc_charge_stop": 90, "soc_charge_start": 80,
                                                    "max_cell_voltage": 3.45, "charge_control": "auto"})
    link = Link(bms="shed_lfp", state="connected", ok=True, ts=TS, rssi=-67)
    return [msg("bms/shed_lfp/meta", meta), msg("bms/shed_lfp/link", link), msg("bms/shed_lfp/sample", sample, False),
            msg("battery/shed_lfp/state", state), msg("battery/shed_lfp/control", control),
            msg("battery/shed_lfp/settings", settings)]


def minimal_pack() -> list[Message]:
    meta = Meta(bms="van", collector="van-pi", name="Van battery", type="daly",
                quantities=["voltage", "current", "soc"])
    return [msg("bms/van/meta", meta), msg("bms/van/link", Link(bms="van", state="connected", ok=True, ts=TS))]


def group() -> list[Message]:
    out = []
    for bms in ("a1", "a2"):
        out.append(msg(f"bms/{bms}/meta", Meta(
            bms=bms, collector="col", name=bms, type="jk", quantities=["voltage", "switches"],
            switches=[SwitchSpec(name="charge"), SwitchSpec(name="discharge")]
            + ([SwitchSpec(name="heater")] if bms == "a1" else []))))
    state = BatteryState(id="bank", kind="group", ts=TS, members=["a1", "a2"], voltage=53.1, current=-20.4,
                         power=-1083.2, soc=68.2, soh=99.0, charge=348.1, capacity=510.0, cell_min=3.311,
                         cell_max=3.329, cell_delta=0.018, cell_avg=3.32, cell_min_index=4, cell_max_index=0,
                         temperatures=[20.0, 21.0, 22.0], energy_in_kwh=12.482, energy_out_kwh=10.115,
                         energy_net_kwh=2.367, charge_in_ah=236.1, charge_out_ah=191.3, charge_net_ah=44.8,
                         cycles=12, cycles_soc=10.2, cell_min_member="a1", cell_max_member="a2", degraded=False)
    control = Control(id="bank", kind="group", ts=TS, mode="Float", charge_voltage=Limit(value=54.0, reason="float"),
                      allow_charge=True, allow_discharge=True)
    settings = SettingsState(id="bank", kind="group", values={"max_charge_current": 100.0, "charge_control": "auto"})
    return [*out, msg("battery/bank/state", state), msg("battery/bank/control", control),
            msg("battery/bank/settings", settings)]


SCENARIOS = {"pack_full": (full_pack, "shed_lfp"), "pack_minimal": (minimal_pack, "van"), "group": (group, "bank")}


def run_scenario(messages: list[Message]) -> HaBridge:
    cfg = parse_config({"site": "home", "aggregator": {"groups": [{"id": "bank", "name": "Shed bank",
                                                                   "members": ["a1", "a2"]}]},
                        "devices": [{"id": "a1", "type": "jk", "address": "x"},
                                    {"id": "a2", "type": "jk", "address": "y"}]})
    cfg.mqtt = MqttConfig()
    bridge = HaBridge(cfg, origin=ORIGIN)

    async def feed() -> None:
        for m in messages:
            await bridge.handle(m)

    asyncio.run(feed())
    return bridge


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_golden(name: str) -> None:
    make, device = SCENARIOS[name]
    bridge = run_scenario(make())
    config = bridge.views[device].config
    assert config is not None
    check_config(config)
    text = config_json(config)
    path = GOLDEN / f"{name}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"{name}: discovery differs from {path} (UPDATE_GOLDEN=1 to accept)"


def test_every_catalog_quantity_maps_to_valid_entities() -> None:
    """The maximal device: every catalog key, every state key, control and settings."""
    state_keys = frozenset(BatteryState.model_fields) | {q.key for q in STATE_QUANTITIES}
    control_keys = frozenset(Control.model_fields)

    bms_settings = (*JK_SETTINGS, BmsSettingSpec(name="max_charge_current", unit="A", min=1, max=600, step=1),
                    BmsSettingSpec(name="charge_otp", unit="C", min=0, max=100, step=0.1),
                    BmsSettingSpec(name="precharge_time", min=0, max=255, step=1))
    pack = pack_entities(PackFacts(quantities=frozenset(SAMPLE_KEYS), writable_switches=("charge",),
                                   readonly_switches=("heater",), cells=32, temperatures=8, state_keys=state_keys,
                                   control_keys=control_keys, settings=tuple(SETTING_SPECS), rssi=True,
                                   bms_settings=bms_settings))
    grp = group_entities(GroupFacts(state_keys=state_keys, temperatures=4, control_keys=control_keys,
                                    settings=tuple(SETTING_SPECS), writable_switches=("charge", "discharge")))
    bridge = run_scenario([])
    from bmsbus.ha_bridge.discovery import component

    for entities in (pack, grp):
        keys = [e.key for e in entities]
        assert len(keys) == len(set(keys))
        for e in entities:
            check_component(e.key, component(e, topics=bridge.ha, device="x", entity_base="x", expire_after=60,
                                             collector="c"))
    # Every scalar catalog quantity got an entity (a pack or a group one); none is silently dropped.
    keys = {e.key for e in pack} | {e.key for e in grp}
    for q in CATALOG.values():
        if q.shape.value == "scalar":
            assert q.key in keys, q.key
    # Every shared setting became a number/select with the shared spec's range, step, unit and options (a group's
    # select: only the options a group takes).
    for entities, is_group in ((pack, False), (grp, True)):
        settings = {e.key: e for e in entities if e.platform in ("number", "select") and e.key in SETTING_SPECS}
        assert list(settings) == list(SETTING_SPECS)
        for key, e in settings.items():
            spec = SETTING_SPECS[key]
            if spec.options is not None:
                assert e.platform == "select" and e.options == setting_options(spec, group=is_group)
                assert e.options and set(e.options) <= set(spec.options)
            else:
                assert e.platform == "number" and e.unit == spec.unit
                assert dict(e.extra) == {"min": spec.min, "max": spec.max, "step": spec.step, "mode": "box"}
    # Every declared BMS setting became a number of its own (no clash with the aggregator's max_charge_current).
    numbers = {e.key: e for e in pack if e.platform == "number" and e.key.startswith("bms_")}
    assert list(numbers) == [f"bms_{s.name}" for s in bms_settings]
    assert numbers["bms_cell_ovp"].device_class == "voltage" and numbers["bms_max_charge_current"].device_class == (
        "current")
    assert numbers["bms_charge_otp"].device_class is None and numbers["bms_charge_otp"].unit == "C"
    assert numbers["bms_precharge_time"].unit is None and "max_charge_current" in {e.key for e in pack}
    # Bridge-local entities never stand in for a catalog quantity (the aggregator's values are catalog keys).
    assert not LOCAL.keys() & CATALOG.keys()
    assert {"cycles_soc", "cycles_throughput", "time_to_empty", "time_to_full"} <= CATALOG.keys()
    # The table covers every (semantic, kind) the catalog uses for scalars and elements.
    for q in CATALOG.values():
        if q.shape.value in ("scalar", "per_cell", "per_sensor"):
            assert (q.semantic, q.kind) in HA_SENSOR_CLASSES, q.key


def test_energy_dashboard_ready() -> None:
    bridge = run_scenario(full_pack())
    cmps = bridge.views["shed_lfp"].config["components"]
    for key in ("energy_in_kwh", "energy_out_kwh"):
        assert cmps[key]["device_class"] == "energy" and cmps[key]["state_class"] == "total_increasing"
        assert cmps[key]["unit_of_measurement"] == "kWh"
    flow = cmps["power_flow"]
    assert flow["device_class"] == "power" and flow["unit_of_measurement"] == "W"


def test_minimal_pack_declares_only_what_it_reports() -> None:
    bridge = run_scenario(minimal_pack())
    keys = set(bridge.views["van"].config["components"])
    assert keys == {"voltage", "current", "soc", "link_state", "last_error"}


def test_per_cell_counts_come_from_the_sample_when_meta_has_none() -> None:
    meta = Meta(bms="p", collector="c", name="P", type="jk", quantities=["cell_voltages", "temperatures"])
    sample = Sample(bms="p", ts=TS, boot="b", seq=0, cell_voltages=[3.3] * 3, temperatures=[20.0])
    bridge = run_scenario([msg("bms/p/meta", meta), msg("bms/p/sample", sample, False)])
    keys = set(bridge.views["p"].config["components"])
    assert {"cell_voltages_1", "cell_voltages_3", "temperatures_1"} <= keys and "cell_voltages_4" not in keys
    c = bridge.views["p"].config["components"]["cell_voltages_1"]
    assert c["enabled_by_default"] is False and c["entity_category"] == "diagnostic"


def test_serial_identifier_only_when_unique() -> None:
    metas = [msg(f"bms/{b}/meta", Meta(bms=b, collector="c", name=b, type="jk", serial="0000", quantities=["soc"]))
             for b in ("x", "y")]
    bridge = run_scenario(metas[:1])
    assert bridge.views["x"].config["device"]["identifiers"] == ["bmsbus_home_x", "bmsbus_sn_0000"]
    bridge = run_scenario(metas)
    assert bridge.views["y"].config["device"]["identifiers"] == ["bmsbus_home_y"]


def test_birth_without_device_removes_it() -> None:
    meta = Meta(bms="x", collector="c", name="x", type="jk", quantities=["soc"])
    birth = Birth(collector="c", version="1", boot="b", started=TS, devices=[BirthDevice(bms="z", type="jk", name="z")])
    bridge = run_scenario([msg("collector/c/birth", birth), msg("bms/x/meta", meta)])
    assert bridge.views["x"].config is None
    json.dumps(bridge.views["x"].states)  # nothing published for it either


def test_removed_component_goes_through_hass_two_steps() -> None:
    meta4 = Meta(bms="p", collector="c", name="P", type="jk", quantities=["cell_voltages"], cell_count=4)
    meta2 = meta4.model_copy(update={"cell_count": 2})
    bridge = run_scenario([msg("bms/p/meta", meta4)])
    sent: list[tuple[str, bytes, bool]] = []

    async def record(topic: str, payload: bytes, *, retain: bool = False) -> None:
        sent.append((topic, payload, retain))

    bridge._publish = record  # type: ignore[method-assign]
    asyncio.run(bridge.handle(msg("bms/p/meta", meta2)))
    assert [t for t, _, _ in sent] == ["homeassistant/device/bmsbus_home_p/config"] * 2 and all(r for *_, r in sent)
    first, second = (json.loads(p)["components"] for _, p, _ in sent)
    assert first["cell_voltages_4"] == {"platform": "sensor"} and first["cell_voltages_2"]["platform"] == "sensor"
    assert "cell_voltages_3" not in second and "cell_voltages_2" in second


def test_group_charge_control_offers_only_what_a_group_takes() -> None:
    """A group's charge_control select offers the options the aggregator accepts for a group (auto/off): the
    bridge refuses bulk/float there itself; a pack's select keeps every option."""
    from bmsbus.aggregator.battery_settings import GROUP_MODES
    from bmsbus.ha_bridge.commands import CommandError, setting_value

    spec = SETTING_SPECS["charge_control"]
    assert setting_options(spec, group=True) == GROUP_MODES
    assert setting_options(spec, group=False) == spec.options
    bridge = run_scenario(group())
    select = bridge.views["bank"].config["components"]["charge_control"]
    assert select["options"] == list(GROUP_MODES)
    sent: list[tuple[str, bytes]] = []

    async def record(topic: str, payload: bytes, *, retain: bool = False) -> None:
        sent.append((topic, payload))

    bridge._publish = record  # type: ignore[method-assign]
    for value in ("bulk", "off"):
        asyncio.run(bridge.handle(Message(select["command_topic"], value.encode(), False)))
    requests = [json.loads(p) for t, p in sent if t == f"{ROOT}/battery/bank/settings/set"]
    assert [r["settings"] for r in requests] == [{"charge_control": "off"}]
    diags = [json.loads(p)["last_command"] for t, p in sent if t == f"{ROOT}/ha/bank/diag"]
    assert diags[0].startswith("Charge control bulk: refused (charge_control: 'bulk' is not one of ['auto', 'off']")
    assert diags[-1] == "Charge control off: sent"
    with pytest.raises(CommandError):
        setting_value(spec, b"float", ("auto", "off"))
    assert setting_value(spec, b"float") == "float"  # a pack
