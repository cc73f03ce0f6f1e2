"""The HA bridge against a private Mosquitto: discovery, availability, birth, removal, HA state topics."""

from __future__ import annotations

import json
import time

import pytest

from bmsbus.shared.models import (BatteryState, Birth, BirthDevice, CommandResult, Link, Meta, MetersReset, Sample,
                                  SettingsRequest, SettingsState, SwitchSpec, parse)

pytestmark = pytest.mark.broker

ROOT = "bmsbus/v1/t"
CONFIG = "homeassistant/device/bmsbus_t_p1/config"
QUANTITIES = ["voltage", "current", "power", "soc", "charge", "capacity", "cell_voltages", "temperatures",
              "switches", "alarms"]


def meta(bms: str = "p1", collector: str = "col", **kw) -> Meta:
    return Meta(bms=bms, collector=collector, name=f"Pack {bms}", type="simulated", manufacturer="Jikong",
                model="JK-B2A8S20P", sw_version="11.26", serial=f"SN-{bms}", quantities=QUANTITIES,
                switches=[SwitchSpec(name="charge"), SwitchSpec(name="discharge")], **kw)


def sample(bms: str = "p1", seq: int = 0, **kw) -> Sample:
    values = dict(voltage=53.123456, current=-10.0, power=-531.23456, soc=71.04, charge=200.0, capacity=280.0,
                  cell_voltages=[3.3211, 3.3191, 3.3221, 3.3201], temperatures=[21.55, 22.04],
                  switches={"charge": True, "discharge": True}, alarms=[])
    values.update(kw)
    return Sample(bms=bms, ts=time.time(), boot="b1", seq=seq, **values)


def link(bms: str = "p1", ok: bool = True) -> Link:
    return Link(bms=bms, state="connected" if ok else "disconnected", ok=ok, ts=time.time(), rssi=-70,
                last_error=None if ok else "TimeoutError")


def configs(w, topic: str = CONFIG) -> list[bytes]:
    return w.on(topic)


async def test_discovery_state_and_availability(bridge, publish, watcher_factory) -> None:
    async with watcher_factory("homeassistant/#", f"{ROOT}/ha/#") as w, bridge():
        await publish("collector/col/status", "online", retain=True)
        await publish("bms/p1/meta", meta(), retain=True)
        await publish("bms/p1/link", link(), retain=True)
        await w.wait_for(lambda: configs(w), what="discovery")
        await publish("bms/p1/sample", sample())
        await w.wait_for(lambda: w.json_on("/ha/p1/sample"), what="HA sample state")
        cfg = json.loads(configs(w)[-1])
        cmps = cfg["components"]
        assert cfg["origin"]["name"] == "bmsbus" and cfg["device"]["name"] == "Pack p1"
        assert cfg["availability_mode"] == "all"
        avty = [a["topic"] for a in cfg["availability"]]
        assert avty == [f"{ROOT}/ha/status", f"{ROOT}/collector/col/status", f"{ROOT}/bms/p1/link"]
        assert {"voltage", "current", "power", "power_flow", "soc", "cell_min", "cell_max", "cell_voltages_4",
                "temperatures_2", "switch_charge", "problem", "link_state"} <= set(cmps)
        assert cmps["voltage"]["unique_id"] == "bmsbus_t_p1_voltage"
        assert cmps["voltage"]["default_entity_id"] == "sensor.pack_p1_voltage"
        assert cmps["voltage"]["expire_after"] == 120
        assert "expire_after" not in cmps["switch_charge"]
        state = w.json_on("/ha/p1/sample")[-1]
        assert state["voltage"] == 53.12 and state["power_flow"] == 531.2 and state["soc"] == 71.0
        assert state["cell_voltages_1"] == 3.321 and state["cell_min_index"] == 2
        assert state["switch_charge"] == "ON" and state["problem"] == "OFF"
        assert "time_to_empty" not in state  # the aggregator's value, on the state topic
        # Meters and time to go arrive with the aggregator's state: the device grows those entities.
        await publish("battery/p1/state", BatteryState(id="p1", kind="pack", current=-10.0, charge=200.0,
                                                       capacity=280.0, time_to_empty=72000.0, cycles_soc=1.234,
                                                       energy_in_kwh=12345.67891, energy_out_kwh=3.0), retain=True)
        await w.wait_for(lambda: "energy_in_kwh" in json.loads(configs(w)[-1])["components"], what="meters")
        await w.wait_for(lambda: w.json_on("/ha/p1/state"), what="HA meter state")
        st = w.json_on("/ha/p1/state")[-1]
        assert st["energy_in_kwh"] == 12345.679 and st["cycles_soc"] == 1.23
        assert st["time_to_empty"] == 72000 and st["time_to_full"] is None
        cmps = json.loads(configs(w)[-1])["components"]
        assert cmps["time_to_full"]["state_topic"] == f"{ROOT}/ha/p1/state"
        assert cmps["cycles_soc"]["state_class"] == "total_increasing"
        assert w.on(f"{ROOT}/ha/status")[-1] == b"online"


async def test_birth_republish_and_removal(bridge, publish, watcher_factory) -> None:
    async with watcher_factory("homeassistant/#", f"{ROOT}/ha/#") as w, bridge():
        await publish("bms/p1/meta", meta(), retain=True)
        await publish("bms/p2/meta", meta("p2"), retain=True)
        await w.wait_for(lambda: configs(w) and configs(w, CONFIG.replace("p1", "p2")), what="two devices")
        await publish("bms/p1/sample", sample())
        await w.wait_for(lambda: w.on("/ha/p1/sample"), what="state")
        n_cfg, n_state = len(configs(w)), len(w.on("/ha/p1/sample"))
        await publish("homeassistant/status", "online")
        await w.wait_for(lambda: len(configs(w)) > n_cfg and len(w.on("/ha/p1/sample")) > n_state,
                         what="configs and states re-sent after HA's birth")
        # p2 leaves its collector's inventory; p1 has its meta cleared.
        await publish("collector/col/birth", Birth(collector="col", version="x", boot="b", started=1.0,
                                                   devices=[BirthDevice(bms="p1", type="jk", name="p1")]),
                      retain=True)
        await w.wait_for(lambda: configs(w, CONFIG.replace("p1", "p2"))[-1] == b"", what="p2 cleared")
        assert configs(w)[-1] != b""
        await publish("bms/p1/meta", b"", retain=True)
        await w.wait_for(lambda: configs(w)[-1] == b"", what="p1 cleared")


async def test_stale_discovery_removed_at_start(bridge, publish, watcher_factory) -> None:
    stale = "homeassistant/device/bmsbus_t_gone/config"
    other = "homeassistant/device/somebody_else/config"
    await publish(stale, '{"device": {}}', retain=True)
    await publish(other, '{"device": {}}', retain=True)
    await publish("bms/p1/meta", meta(), retain=True)
    async with watcher_factory("homeassistant/#") as w, bridge() as b:
        await w.wait_for(lambda: b.cleaned.is_set(), what="cleanup")
        await w.wait_for(lambda: w.on(stale)[-1:] == [b""], what="stale cleared")
        assert w.on(other)[-1] != b"" and configs(w)[-1] != b""


async def test_switch_command_translation(bridge, publish, watcher_factory) -> None:
    # A retained command left on the broker is replayed to every new subscriber: never acted on.
    await publish("bms/p1/meta", meta(), retain=True)
    await publish("ha/p1/switch/discharge/set", "OFF", retain=True)
    async with watcher_factory(f"{ROOT}/bms/+/cmd", f"{ROOT}/ha/#") as w, bridge() as b:
        await publish("bms/p1/link", link(), retain=True)
        await w.wait_for(lambda: w.json_on("/ha/p1/diag"), what="diag")
        assert b.inbox.bad["ha_command"] == 1
        await publish("ha/p1/switch/charge/set", "OFF")
        await w.wait_for(lambda: w.json_on("/bms/p1/cmd"), what="command")
        cmd = w.json_on("/bms/p1/cmd")[-1]
        assert cmd["switch"] == "charge" and cmd["value"] is False and 0 < cmd["expires"] - cmd["issued"] <= 15
        await publish("ha/p1/switch/nope/set", "ON")  # unknown switch: counted and skipped
        await publish("ha/p1/switch/charge/set", "MAYBE")  # bad payload: counted and skipped
        await publish("bms/p1/cmd/result", CommandResult(id=cmd["id"], bms="p1", status="rejected", ts=time.time(),
                                                         reason="expired 1.0 s ago"))
        await w.wait_for(lambda: "rejected" in (w.json_on("/ha/p1/diag")[-1]["last_command"] or ""),
                         what="rejected result visible")
        assert w.json_on("/ha/p1/diag")[-1]["last_command"] == "charge OFF: rejected (expired 1.0 s ago)"
        assert len(w.json_on("/bms/p1/cmd")) == 1 and b.inbox.bad["ha_command"] == 3


async def test_group_controls_settings_and_meter_reset(bridge, publish, watcher_factory) -> None:
    from bmsbus.shared.models import Control, Limit

    group_config = CONFIG.replace("p1", "bank")
    async with watcher_factory("homeassistant/#", f"{ROOT}/#") as w, bridge():
        for bms in ("a1", "a2"):
            await publish(f"bms/{bms}/meta", meta(bms), retain=True)
        # The aggregator's settings before the group's first state: shown as soon as the entities exist.
        await publish("battery/bank/settings", SettingsState(id="bank", kind="group",
                                                             values={"soc_charge_stop": 90.0}), retain=True)
        await publish("battery/bank/state", BatteryState(id="bank", kind="group", members=["a1", "a2"], soc=50.0,
                                                         current=-2.0, charge=100.0, capacity=200.0,
                                                         time_to_empty=180000.0), retain=True)
        await publish("battery/bank/control", Control(id="bank", kind="group", ts=time.time(), mode="Float",
                                                      charge_voltage=Limit(value=54.0, reason="float")), retain=True)
        want = {"switch_charge", "switch_discharge", "charge_mode", "charge_voltage", "soc_charge_stop",
                "reset_meters", "last_command", "time_to_empty", "time_to_full"}
        await w.wait_for(lambda: configs(w, group_config) and want <= set(json.loads(
            configs(w, group_config)[-1])["components"]), what="group discovery")
        await w.wait_for(lambda: w.json_on("/ha/bank/control") and w.json_on("/ha/bank/settings"), what="states")
        assert w.json_on("/ha/bank/control")[-1]["charge_mode"] == "float"
        assert w.json_on("/ha/bank/control")[-1]["charge_voltage_reason"] == "float"
        assert w.json_on("/ha/bank/settings")[-1] == {"soc_charge_stop": 90.0}
        await w.wait_for(lambda: w.json_on("/ha/bank/state"), what="group state")
        assert w.json_on("/ha/bank/state")[-1]["time_to_empty"] == 180000

        # Group switch state: ON only when every member agrees.
        await publish("bms/a1/sample", sample("a1", switches={"charge": True, "discharge": True}))
        await publish("bms/a2/sample", sample("a2", switches={"charge": False, "discharge": True}))
        await w.wait_for(lambda: len(w.json_on("/ha/bank/sample")) >= 2, what="group switch state")
        assert w.json_on("/ha/bank/sample")[-1] == {"switch_charge": None, "switch_discharge": "ON"}

        await publish("ha/bank/switch/charge/set", "ON")
        await publish("ha/bank/number/soc_charge_stop/set", "85")
        await publish("ha/bank/button/reset_meters/set", "PRESS")
        await w.wait_for(lambda: w.json_on("/battery/bank/cmd") and w.json_on("/battery/bank/settings/set")
                         and w.json_on("/battery/bank/meters/reset"), what="translated commands")
        cmd = w.json_on("/battery/bank/cmd")[-1]
        assert (cmd["switch"], cmd["value"]) == ("charge", True)
        setting = w.json_on("/battery/bank/settings/set")[-1]
        assert setting["settings"] == {"soc_charge_stop": 85.0} and setting["battery"] == "bank"
        assert w.json_on("/battery/bank/meters/reset")[-1]["battery"] == "bank"
        # A member's result is not the group's; the group's own result is shown.
        await publish("battery/bank/cmd/result", CommandResult(id=f"{cmd['id']}.a1", bms="a1", status="ok",
                                                               ts=time.time()))
        await publish("battery/bank/cmd/result", CommandResult(id=cmd["id"], bms="bank", status="failed",
                                                               ts=time.time(), reason="a2: failed"))
        await w.wait_for(lambda: (w.json_on("/ha/bank/diag") or [{}])[-1].get("last_command")
                         == "charge ON: failed (a2: failed)", what="group result")
        # The settings request's own result, on the same topic.
        await publish("battery/bank/cmd/result", CommandResult(id=setting["id"], bms="bank", status="ok",
                                                               ts=time.time()))
        await w.wait_for(lambda: w.json_on("/ha/bank/diag")[-1]["last_command"] == "SoC charge stop 85 %: ok",
                         what="settings result")
        # Bad input never crashes the bridge; it is counted.
        await publish("battery/bank/settings", b"{not json", retain=True)
        await publish("battery/bank/settings", b'{"id": "other", "values": {}}')  # about another battery
        await publish("bms/a1/sample", b'{"bms": "a1"}')
        await publish("ha/bank/number/soc_charge_stop/set", "lots")
        await publish("ha/bank/number/no_such_setting/set", "1")
        await publish("bms/bad.id/meta", meta("a1"))
        await publish("bms/a2/meta", meta("a1"))
        await publish("bms/a2/sample", sample("a2", seq=1, switches={"charge": True, "discharge": True}))
        await w.wait_for(lambda: w.json_on("/ha/bank/sample")[-1]["switch_charge"] == "ON", what="still alive")
        assert len(w.json_on("/battery/bank/cmd")) == 1 and len(w.json_on("/battery/bank/settings/set")) == 1
        assert w.json_on("/ha/bank/diag")[-1]["last_command"] == (
            "SoC charge stop lots: refused (soc_charge_stop: not a number: 'lots')")
        assert w.json_on("/ha/bank/settings")[-1] == {"soc_charge_stop": 90.0}  # nothing was applied


async def test_pack_settings_and_meter_reset_end_to_end(bridge, publish, watcher_factory) -> None:
    """HA presses and sets on a pack: each becomes a shared bus model with a fresh id and an expiry, a bad value
    is refused in the bridge with its reason (nothing reaches the bus), and the aggregator's answer on
    battery/<id>/cmd/result is what HA shows. Number state is only ever the aggregator's retained settings."""
    async with watcher_factory(f"{ROOT}/#", "homeassistant/#") as w, bridge(command_expiry=15.0) as b:
        await publish("collector/col/status", "online", retain=True)
        await publish("bms/p1/meta", meta(), retain=True)
        await publish("bms/p1/link", link(), retain=True)
        await publish("battery/p1/state", BatteryState(id="p1", kind="pack", energy_in_kwh=1.0), retain=True)
        await publish("battery/p1/settings", SettingsState(
            id="p1", kind="pack", values={"max_cell_voltage": 3.45, "charge_control": "auto"}), retain=True)
        await w.wait_for(lambda: configs(w) and {"reset_meters", "max_cell_voltage", "charge_control",
                                                  "last_command"} <= set(json.loads(configs(w)[-1])["components"]),
                         what="controls in discovery")
        cmps = json.loads(configs(w)[-1])["components"]
        number = cmps["max_cell_voltage"]
        assert (number["min"], number["max"], number["step"], number["unit_of_measurement"]) == (2.0, 4.4, 0.005, "V")
        assert number["state_topic"] == f"{ROOT}/ha/p1/settings" and "optimistic" not in number
        assert cmps["charge_control"]["options"] == ["auto", "bulk", "float", "off"]
        assert cmps["reset_meters"]["command_topic"] == f"{ROOT}/ha/p1/button/reset_meters/set"
        await w.wait_for(lambda: w.json_on("/ha/p1/settings"), what="settings state")
        assert w.json_on("/ha/p1/settings")[-1] == {"max_cell_voltage": 3.45, "charge_control": "auto"}

        # The reset button, twice: two MetersReset with fresh ids and the configured expiry.
        before = time.time()
        await publish(cmps["reset_meters"]["command_topic"], "PRESS")
        await w.wait_for(lambda: w.on("/battery/p1/meters/reset"), what="meters reset")
        await publish(cmps["reset_meters"]["command_topic"], "PRESS")
        await w.wait_for(lambda: len(w.on("/battery/p1/meters/reset")) == 2, what="second meters reset")
        resets = [parse(MetersReset, m) for m in w.on("/battery/p1/meters/reset")]
        assert all(isinstance(r, MetersReset) for r in resets)
        first, second = resets
        assert first.id != second.id and first.battery == "p1" and first.origin == "ha_bridge"
        assert before <= first.issued <= time.time() and first.expires - first.issued == 15.0
        assert [r for t, _, r in w.messages if t.endswith("/meters/reset")] == [False, False]  # never retained
        await w.wait_for(lambda: w.json_on("/ha/p1/diag")[-1]["last_command"] == "Reset meters: sent",
                         what="reset shown as sent")
        await publish("battery/p1/cmd/result", CommandResult(id=second.id, bms="p1", status="rejected",
                                                             ts=time.time(), reason="duplicate id"))
        await w.wait_for(lambda: w.json_on("/ha/p1/diag")[-1]["last_command"]
                         == "Reset meters: rejected (duplicate id)", what="reset rejection visible")

        # A number in range: a SettingsRequest; the aggregator's answer and new settings are what HA shows.
        await publish("ha/p1/number/max_cell_voltage/set", "3.5")
        await w.wait_for(lambda: w.on("/battery/p1/settings/set"), what="settings request")
        req = parse(SettingsRequest, w.on("/battery/p1/settings/set")[-1])
        assert isinstance(req, SettingsRequest)
        assert req.settings == {"max_cell_voltage": 3.5} and req.battery == "p1" and req.expires - req.issued == 15.0
        assert w.json_on("/ha/p1/settings")[-1]["max_cell_voltage"] == 3.45  # not optimistic
        await publish("battery/p1/cmd/result", CommandResult(id=req.id, bms="p1", status="ok", ts=time.time()))
        await publish("battery/p1/settings", SettingsState(
            id="p1", kind="pack", values={"max_cell_voltage": 3.5, "charge_control": "auto"},
            overridden=["max_cell_voltage"]), retain=True)
        await w.wait_for(lambda: w.json_on("/ha/p1/settings")[-1]["max_cell_voltage"] == 3.5, what="new value")
        await w.wait_for(lambda: w.json_on("/ha/p1/diag")[-1]["last_command"] == "Max cell voltage 3.5 V: ok",
                         what="settings ok")

        # Out of range, and an unknown option: refused by the bridge with the spec's reason; nothing on the bus.
        await publish("ha/p1/number/max_cell_voltage/set", "5")
        await w.wait_for(lambda: "refused" in w.json_on("/ha/p1/diag")[-1]["last_command"], what="refusal")
        assert w.json_on("/ha/p1/diag")[-1]["last_command"] == (
            "Max cell voltage 5: refused (max_cell_voltage: 5.0 is outside 2..4.4 V)")
        await publish("ha/p1/select/charge_control/set", "turbo")
        await w.wait_for(lambda: "turbo" in w.json_on("/ha/p1/diag")[-1]["last_command"], what="select refusal")
        assert "is not one of ['auto', 'bulk', 'float', 'off']" in w.json_on("/ha/p1/diag")[-1]["last_command"]
        # The aggregator rejects a valid-looking request: its reason is shown.
        await publish("ha/p1/select/charge_control/set", "float")
        await w.wait_for(lambda: len(w.on("/battery/p1/settings/set")) == 2, what="select request")
        sel = parse(SettingsRequest, w.on("/battery/p1/settings/set")[-1])
        assert isinstance(sel, SettingsRequest) and sel.settings == {"charge_control": "float"}
        await publish("battery/p1/cmd/result", CommandResult(id=sel.id, bms="p1", status="rejected", ts=time.time(),
                                                             reason="expired 0.4 s ago"))
        await w.wait_for(lambda: w.json_on("/ha/p1/diag")[-1]["last_command"]
                         == "Charge control float: rejected (expired 0.4 s ago)", what="aggregator rejection")
        # A result for somebody else's id changes nothing.
        await publish("battery/p1/cmd/result", CommandResult(id="not-ours", bms="p1", status="ok", ts=time.time()))
        await publish("ha/p1/button/reset_meters/set", "HOLD")  # not HA's payload: refused
        await w.wait_for(lambda: "HOLD" in w.json_on("/ha/p1/diag")[-1]["last_command"], what="button refusal")
        assert len(w.on("/battery/p1/settings/set")) == 2 and len(w.on("/battery/p1/meters/reset")) == 2
        assert b.inbox.bad["ha_command"] == 3
