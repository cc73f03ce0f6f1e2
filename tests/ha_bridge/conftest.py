"""Fixtures for the HA bridge: a running bridge against the test's private broker, and a bus publisher."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bmsbus.ha_bridge.discovery import Origin
from bmsbus.ha_bridge.service import HaBridge
from bmsbus.shared.bus import Bus
from bmsbus.shared.config import Config, MqttConfig, parse_config
from bmsbus.shared.models import BusModel

SITE = "t"
ROOT = f"bmsbus/v1/{SITE}"
ORIGIN = Origin(sw="0.1.0", url="https://example.invalid/bmsbus")


def bridge_config(mqtt: MqttConfig, **ha: Any) -> Config:
    cfg = parse_config({"site": SITE, "collector": {"id": "col"},
                        "ha_bridge": {"republish_jitter": 0, "settle_time": 0.5, **ha},
                        "aggregator": {"groups": []}})
    cfg.mqtt = mqtt
    return cfg


class Publisher:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def __call__(self, topic: str, payload: BusModel | str | bytes, *, retain: bool = False) -> None:
        if not topic.startswith(("homeassistant/", "bmsbus/")):
            topic = f"{ROOT}/{topic}"
        await self.bus.publish(topic, payload, retain=retain)


@pytest.fixture
async def publish(mqtt_config: MqttConfig) -> AsyncIterator[Publisher]:
    async with Bus(mqtt_config, client_id="test-publisher") as bus:
        yield Publisher(bus)


@contextlib.asynccontextmanager
async def running(cfg: Config) -> AsyncIterator[HaBridge]:
    bridge = HaBridge(cfg, origin=ORIGIN)
    task = asyncio.create_task(bridge.run())
    try:
        yield bridge
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
def bridge(mqtt_config: MqttConfig):
    """`async with bridge(**ha_bridge_options) as b:` runs an HaBridge against the test's broker."""
    def make(**ha: Any):
        return running(bridge_config(mqtt_config, **ha))
    return make
