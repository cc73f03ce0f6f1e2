"""The bridge with a real collector (simulated JK BMS over the real codec) and HA's availability rules.

HA itself is not run; two small pieces of HA behaviour are modelled here instead, from the reference:
- availability: every entry of the (component's or device's) `availability` list must say `payload_available`
  (`availability_mode: all`), evaluated on the last retained payload of each topic;
- value templates: the bridge only uses `{{ value_json.<key> }}`, so rendering is a key lookup.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from typing import Any

import pytest

from bmsbus.collector.service import Collector
from bmsbus.ha_bridge.discovery import GROUP_AVAILABLE, LINK_AVAILABLE
from bmsbus.ha_bridge.service import HaBridge
from bmsbus.shared.config import parse_config
from bmsbus.shared.models import Link, Meta
from support.services import running_tasks as running

pytestmark = pytest.mark.broker

ROOT = "bmsbus/v1/t"
TEMPLATE = re.compile(r"^\{\{ value_json\.([a-z0-9_]+) \}\}$")


def last(w, topic: str) -> bytes | None:
    for t, payload, _ in reversed(w.messages):
        if t == topic:
            return payload
    return None


def render(component: dict[str, Any], w) -> Any:
    """What HA shows for a component: its value template applied to the last state message."""
    key = TEMPLATE.match(component["value_template"]).group(1)  # type: ignore[union-attr]
    payload = last(w, component["state_topic"])
    return None if payload is None else json.loads(payload)[key]


def available(config: dict[str, Any], key: str, w) -> bool:
    c = config["components"][key]
    entries = c.get("availability", config["availability"])
    assert c.get("availability_mode", config["availability_mode"]) == "all"
    for a in entries:
        payload = last(w, a["topic"])
        if payload is None:
            return False
        template = a.get("value_template")
        if template is None:
            value = payload.decode()
        elif template == LINK_AVAILABLE:
            value = "online" if json.loads(payload)["ok"] else "offline"
        elif template == GROUP_AVAILABLE:
            value = "offline" if json.loads(payload)["stale"] else "online"
        else:
            raise AssertionError(f"unknown availability template {template}")
        if value != a.get("payload_available", "online"):
            return False
    return True


def discovery(w, device: str) -> dict[str, Any] | None:
    payload = last(w, f"homeassistant/device/bmsbus_t_{device}/config")
    return json.loads(payload) if payload else None


async def test_availability_follows_collector_and_link(bridge, publish, watcher_factory) -> None:
    async with watcher_factory("homeassistant/#", f"{ROOT}/#") as w, bridge():
        await publish("collector/col/status", "online", retain=True)
        for bms in ("p1", "p2"):
            await publish(f"bms/{bms}/meta", Meta(bms=bms, collector="col", name=bms, type="jk",
                                                  quantities=["voltage"]), retain=True)
            await publish(f"bms/{bms}/link", Link(bms=bms, state="connected", ok=True, ts=time.time()), retain=True)
        await w.wait_for(lambda: discovery(w, "p1") and discovery(w, "p2"), what="discovery")
        p1, p2 = discovery(w, "p1"), discovery(w, "p2")
        await w.wait_for(lambda: available(p1, "voltage", w) and available(p2, "voltage", w), what="available")

        # One BMS link drops: only that pack's telemetry goes unavailable; its link diagnostics stay.
        await publish("bms/p2/link", Link(bms="p2", state="disconnected", ok=False, ts=time.time(),
                                          last_error="TimeoutError"), retain=True)
        await w.wait_for(lambda: not available(p2, "voltage", w), what="p2 unavailable")
        assert available(p1, "voltage", w) and available(p2, "link_state", w)
        await w.wait_for(lambda: render(p2["components"]["link_state"], w) == "disconnected", what="link state")
        assert render(p2["components"]["last_error"], w) == "TimeoutError"

        # The collector dies: its last will makes every entity of both packs unavailable.
        await publish("collector/col/status", "offline", retain=True)
        await w.wait_for(lambda: not available(p1, "voltage", w), what="p1 unavailable")
        assert not available(p1, "link_state", w) and not available(p2, "link_state", w)

        await publish("collector/col/status", "online", retain=True)
        await w.wait_for(lambda: available(p1, "voltage", w), what="p1 back")
        assert not available(p2, "voltage", w)


async def test_bridge_death_publishes_its_last_will(mosquitto, watcher_factory) -> None:
    """The bridge's own status is in every availability list (it feeds the HA state topics): killed, it says
    offline through its last will."""
    script = ("import asyncio\n"
              "from bmsbus.shared.config import parse_config, MqttConfig\n"
              "from bmsbus.ha_bridge.service import HaBridge\n"
              "cfg = parse_config({'site': 't', 'ha_bridge': {'remove_stale': False}})\n"
              f"cfg.mqtt = MqttConfig(host='127.0.0.1', port={mosquitto.port})\n"
              "asyncio.run(HaBridge(cfg).run())\n")
    async with watcher_factory(f"{ROOT}/ha/status") as w:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script)
        try:
            await w.wait_for(lambda: w.on("/ha/status")[-1:] == [b"online"], what="bridge online")
        finally:
            proc.kill()
            await proc.wait()
        await w.wait_for(lambda: w.on("/ha/status")[-1:] == [b"offline"], what="bridge last will")


async def test_switch_round_trip_with_a_real_collector(mqtt_config, watcher_factory, publish) -> None:
    cfg = parse_config({"site": "t", "collector": {"id": "col", "sample_period": 0.3},
                        "devices": [{"alias": "p1", "type": "simulated", "protocol": "jk_32s", "cells": 4}],
                        "ha_bridge": {"remove_stale": False}})
    cfg.mqtt = mqtt_config
    async with watcher_factory("homeassistant/#", f"{ROOT}/#") as w, running(Collector(cfg).run(),
                                                                             HaBridge(cfg).run()):
        await w.wait_for(lambda: (d := discovery(w, "p1")) and "switch_charge" in d["components"]
                         and "cell_voltages_4" in d["components"], what="discovery with switches and cells")
        config = discovery(w, "p1")
        switch = config["components"]["switch_charge"]
        assert switch["platform"] == "switch" and "optimistic" not in switch
        await w.wait_for(lambda: render(switch, w) == "ON" and available(config, "switch_charge", w),
                         what="charge ON and available")
        assert 2.5 < render(config["components"]["cell_voltages_1"], w) < 4.3

        # HA switches charge off: command -> collector -> emulated BMS -> read-back -> next sample -> HA state.
        await publish(switch["command_topic"], "OFF")
        await w.wait_for(lambda: w.json_on("/bms/p1/cmd/result"), what="command result")
        cmd, result = w.json_on("/bms/p1/cmd")[-1], w.json_on("/bms/p1/cmd/result")[-1]
        assert (cmd["switch"], cmd["value"], cmd["origin"]) == ("charge", False, "ha_bridge")
        assert (result["id"], result["status"]) == (cmd["id"], "ok")
        await w.wait_for(lambda: render(switch, w) == "OFF", what="HA state OFF from a sample")
        await w.wait_for(lambda: render(config["components"]["last_command"], w) == "charge OFF: ok",
                         what="last command ok")

        await publish(switch["command_topic"], "ON")
        await w.wait_for(lambda: render(switch, w) == "ON", what="HA state back ON")
        assert all(c["status"] == "ok" for c in w.json_on("/bms/p1/cmd/result"))


async def test_bms_setting_number_round_trip_with_a_real_collector(mqtt_config, watcher_factory, publish) -> None:
    """A setting the BMS declares (JK cell_ovp) is an HA number: discovered from the meta's setting_specs, its
    state the value read from the BMS (meta setting_values); HA sets it -> Command set_setting -> the collector
    writes it through the JK protocol into the emulated BMS and reads it back -> the number follows. A change
    made on the BMS itself (the JK app) shows too, on the driver's next settings read."""
    cfg = parse_config({"site": "t", "collector": {"id": "col", "sample_period": 0.3},
                        "devices": [{"alias": "p1", "type": "simulated", "protocol": "jk_32s", "cells": 4,
                                     "options": {"settings_interval": 1}}],
                        "ha_bridge": {"remove_stale": False}})
    cfg.mqtt = mqtt_config
    collector = Collector(cfg)
    async with watcher_factory("homeassistant/#", f"{ROOT}/#") as w, running(collector.run(), HaBridge(cfg).run()):
        await w.wait_for(lambda: (d := discovery(w, "p1")) and "bms_cell_ovp" in d["components"],
                         what="discovery with the BMS's settings")
        config = discovery(w, "p1")
        assert config is not None
        number = config["components"]["bms_cell_ovp"]
        assert (number["platform"], number["min"], number["max"], number["step"], number["unit_of_measurement"],
                number["device_class"], number["mode"], number["entity_category"]) == (
            "number", 1.2, 4.5, 0.001, "V", "voltage", "box", "config")
        assert number["command_topic"] == f"{ROOT}/ha/p1/number/bms_cell_ovp/set" and "optimistic" not in number
        assert {"bms_cell_uvp", "bms_balance_trigger_delta", "bms_balance_start_voltage"} <= set(config["components"])
        meta = w.json_on("/bms/p1/meta")[-1]
        assert meta["settings"] == [s["name"] for s in meta["setting_specs"]]  # the old field is kept
        await w.wait_for(lambda: render(number, w) == 3.65 and available(config, "bms_cell_ovp", w),
                         what="the emulated BMS's cell_ovp as the number's state")

        # HA sets the number.
        await publish(number["command_topic"], "3.6")
        await w.wait_for(lambda: w.json_on("/bms/p1/cmd/result"), what="command result")
        cmd, result = w.json_on("/bms/p1/cmd")[-1], w.json_on("/bms/p1/cmd/result")[-1]
        assert (cmd["action"], cmd["setting"], cmd["number"], cmd["origin"]) == ("set_setting", "cell_ovp", 3.6,
                                                                                  "ha_bridge")
        assert cmd["id"].startswith("ha-") and 0 < cmd["expires"] - cmd["issued"] <= 60
        assert (result["id"], result["status"]) == (cmd["id"], "ok"), result
        emulator = collector.runners["p1"].driver.link.emulator  # type: ignore[union-attr]
        assert emulator.state.settings["cell_ovp"] == pytest.approx(3.6)
        await w.wait_for(lambda: render(number, w) == 3.6, what="the number follows the BMS")
        assert w.json_on("/bms/p1/meta")[-1]["setting_values"]["cell_ovp"] == 3.6
        await w.wait_for(lambda: (render(config["components"]["last_command"], w) or "").startswith(
            "Cell OVP 3.6 V: ok"), what="last command ok")

        # Out of the declared range: refused by the bridge with the reason; nothing reaches the bus.
        await publish(number["command_topic"], "9")
        await w.wait_for(lambda: "refused" in (render(config["components"]["last_command"], w) or ""),
                         what="refusal shown")
        assert render(config["components"]["last_command"], w) == (
            "Cell OVP 9: refused (cell_ovp: 9 is outside 1.2..4.5 V)")
        assert len(w.json_on("/bms/p1/cmd")) == 1

        # Changed on the BMS itself: seen on the next settings read, and the number follows.
        emulator.state.settings["cell_ovp"] = 3.55
        await w.wait_for(lambda: render(number, w) == 3.55, what="a change made on the BMS")
