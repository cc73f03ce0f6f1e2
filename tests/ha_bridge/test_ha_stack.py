"""The bridge in the whole stack (`bmsbus stack`: simulated JK packs through the real collector, the real
aggregator, the bridge) on a private Mosquitto, with the demo configuration:
- every entity id the HA docs name (the example dashboard, the Energy dashboard steps) is one the bridge
  generates for it;
- HA's controls round-trip through the aggregator: a setting changed from HA is applied and comes back as the
  number's state, a meter reset is answered, and both answers show in the Last command sensor.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bmsbus.shared.config import Config, MqttConfig, parse_config
from bmsbus.shared.stack import run_stack

pytestmark = pytest.mark.broker

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "home-assistant.md"
ROOT = "bmsbus/v1/demo"
DEVICES = ("shed_lfp", "shed_lfp2", "shed_bank")
ENTITY_ID = re.compile(r"\b(?:sensor|binary_sensor|switch|number|select|button)\.[a-z0-9_]+\b")


def demo_config(mqtt: MqttConfig, state_dir: Path) -> Config:
    """examples/demo.yaml with its two shed packs and their group (the ones the docs use), faster."""
    data = yaml.safe_load((REPO / "examples" / "demo.yaml").read_text())
    data["devices"] = [d for d in data["devices"] if d["alias"] in DEVICES]
    data["collector"]["sample_period"] = 0.5
    data["aggregator"]["state_dir"] = str(state_dir)
    data["ha_bridge"].update(settle_time=0.5, republish_jitter=0)
    cfg = parse_config(data)
    cfg.mqtt = mqtt
    return cfg


@contextlib.asynccontextmanager
async def stack(cfg: Config) -> AsyncIterator[None]:
    task = asyncio.create_task(run_stack(cfg))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def discovery(w, device: str) -> dict[str, Any] | None:
    payloads = w.on(f"homeassistant/device/bmsbus_demo_{device}/config")
    return json.loads(payloads[-1]) if payloads and payloads[-1] else None


def generated(w) -> set[str]:
    return {c["default_entity_id"] for d in DEVICES if (cfg := discovery(w, d))
            for c in cfg["components"].values()}


def documented() -> set[str]:
    """Every concrete entity id of the demo devices the HA docs mention (YAML blocks and prose)."""
    text = DOC.read_text()
    for block in re.findall(r"```yaml\n(.*?)```", text, re.S):
        yaml.safe_load(block)  # every YAML example parses
    return {e for e in ENTITY_ID.findall(text) if e.split(".", 1)[1].startswith(DEVICES)}


async def test_documented_entity_ids_are_generated(mqtt_config, watcher_factory, tmp_path) -> None:
    want = documented()
    assert len(want) > 40 and {"button.shed_bank_reset_meters", "select.shed_bank_charge_control",
                               "number.shed_lfp_max_cell_voltage"} <= want
    async with watcher_factory("homeassistant/#") as w, stack(demo_config(mqtt_config, tmp_path / "state")):
        try:
            await w.wait_for(lambda: want <= generated(w), timeout=60, what="the documented entities")
        except AssertionError:
            raise AssertionError(f"documented but not generated: {sorted(want - generated(w))}") from None


async def test_settings_and_meter_reset_through_the_real_aggregator(mqtt_config, watcher_factory, publish,
                                                                     tmp_path) -> None:
    async with watcher_factory("homeassistant/#", f"{ROOT}/#") as w, \
            stack(demo_config(mqtt_config, tmp_path / "state")):
        def has(device: str, *keys: str) -> bool:
            cfg = discovery(w, device)
            return cfg is not None and set(keys) <= set(cfg["components"])

        await w.wait_for(lambda: has("shed_bank", "max_charge_current", "reset_meters", "last_command")
                         and has("shed_lfp", "max_cell_voltage", "reset_meters"), timeout=60, what="controls")
        bank, pack = discovery(w, "shed_bank"), discovery(w, "shed_lfp")
        assert bank and pack
        number = bank["components"]["max_charge_current"]
        await w.wait_for(lambda: w.json_on("/ha/shed_bank/settings"), what="group settings state")
        assert w.json_on("/ha/shed_bank/settings")[-1]["max_charge_current"] == 100.0  # 2 × 50 A from the config

        # HA sets the number: the aggregator applies it, the number's state follows its retained settings.
        await publish(number["command_topic"], "80")
        await w.wait_for(lambda: w.json_on("/ha/shed_bank/settings")[-1]["max_charge_current"] == 80.0,
                         what="applied setting as the number's state")
        await w.wait_for(lambda: w.json_on("/ha/shed_bank/diag")[-1]["last_command"] == "Max charge current 80 A: ok",
                         what="the aggregator's ok")
        stored = w.json_on("/battery/shed_bank/settings")[-1]
        assert stored["values"]["max_charge_current"] == 80.0 and "max_charge_current" in stored["overridden"]

        # Out of the shared range: refused by the bridge, nothing reaches the aggregator.
        requests = len(w.on("/battery/shed_bank/settings/set"))
        await publish(number["command_topic"], "5000")
        await w.wait_for(lambda: "refused" in w.json_on("/ha/shed_bank/diag")[-1]["last_command"], what="refusal")
        assert len(w.on("/battery/shed_bank/settings/set")) == requests

        # Reset meters on a pack: answered ok, shown in its Last command.
        await publish(pack["components"]["reset_meters"]["command_topic"], "PRESS")
        await w.wait_for(lambda: (w.json_on("/ha/shed_lfp/diag") or [{}])[-1].get("last_command")
                         == "Reset meters: ok", what="meter reset answered")
        result = w.json_on("/battery/shed_lfp/cmd/result")[-1]
        assert result["status"] == "ok" and result["id"] == w.json_on("/battery/shed_lfp/meters/reset")[-1]["id"]
