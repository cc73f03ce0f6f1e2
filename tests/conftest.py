"""Fixtures shared by every test: a private Mosquitto per test, a bus client to watch it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bmsbus.shared.bus import Bus
from bmsbus.shared.config import MqttConfig
from support.procs import Mosquitto

REPO = Path(__file__).resolve().parent.parent
VECTORS = REPO.parent / "shared" / "vectors"


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A private broker for this test only; no test uses a broker it did not start."""
    (tmp_path / "mosquitto").mkdir()
    broker = Mosquitto(tmp_path / "mosquitto").start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mqtt_config(mosquitto: Mosquitto) -> MqttConfig:
    return MqttConfig(host="127.0.0.1", port=mosquitto.port)


class Watcher:
    """Subscribes to filters and records every message, for assertions."""

    def __init__(self, mqtt: MqttConfig, *filters: str) -> None:
        self.mqtt = mqtt
        self.filters = filters
        self.messages: list[tuple[str, bytes, bool]] = []
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def _run(self) -> None:
        async with Bus(self.mqtt, client_id=f"test-watcher-{id(self)}") as bus:
            await bus.subscribe(*self.filters)
            self._subscribed.set()
            async for m in bus.messages():
                self.messages.append((m.topic, m.payload, m.retain))

    async def __aenter__(self) -> Watcher:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._subscribed.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass

    def on(self, suffix: str) -> list[bytes]:
        return [p for t, p, _ in self.messages if t.endswith(suffix)]

    def json_on(self, suffix: str) -> list[dict]:
        return [json.loads(p) for p in self.on(suffix) if p]

    async def wait_for(self, predicate, timeout: float = 20.0, what: str = "condition") -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; "
                                     f"saw {len(self.messages)} messages: "
                                     f"{sorted({t for t, _, _ in self.messages})[:20]}")
            await asyncio.sleep(0.05)


@pytest.fixture
def watcher_factory(mqtt_config: MqttConfig):
    def make(*filters: str) -> Watcher:
        return Watcher(mqtt_config, *filters)
    return make
