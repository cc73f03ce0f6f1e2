"""Every service survives malformed JSON and schema-invalid messages on every topic it subscribes to:
they are counted and logged, and good messages after them are still processed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import pytest

from bmsbus.shared.bus import Bus
from bmsbus.shared.config import parse_config
from bmsbus.shared.models import Meta, Sample, SwitchSpec
from bmsbus.shared.runner import installed_services
from bmsbus.shared.topics import MODEL_OF_KIND, Topics

pytestmark = pytest.mark.broker

GARBAGE = [b"{not json", b"[]", b'{"schema_version": 99}', b"\xff\xfe", b'{"bms": "has space", "ts": "x"}']


@pytest.mark.parametrize("service,expect_suffix", [
    ("aggregator", "battery/p1/state"),
    ("ha-bridge", "homeassistant/device/"),
    ("influx-writer", None),
])
async def test_service_survives_garbage_on_every_topic(service, expect_suffix, mqtt_config, watcher_factory, tmp_path,
                                                       caplog) -> None:
    cfg = parse_config({"site": "r", "devices": [{"alias": "p1", "type": "simulated"}],
                        "aggregator": {"state_dir": str(tmp_path / "state")},
                        "influx": {"url": "http://127.0.0.1:9"}})
    cfg.mqtt = mqtt_config
    topics = Topics(cfg.topic_root, cfg.site)
    spec = installed_services()[service]
    caplog.set_level(logging.WARNING)
    async with watcher_factory("bmsbus/v1/r/battery/#", "homeassistant/#") as w:
        task = asyncio.create_task(spec.run(cfg))
        try:
            await asyncio.sleep(1.5)  # let it subscribe
            async with Bus(mqtt_config, client_id="test-garbage") as bus:
                for kind in [*MODEL_OF_KIND, "status"]:
                    for junk in GARBAGE:
                        await bus.publish(topics.topic(kind, "p1"), junk)
                await bus.publish("homeassistant/status", b"\x00garbage")
                await asyncio.sleep(1.0)
                assert not task.done(), task.exception() if task.done() else None
                now = time.time()
                await bus.publish(topics.bms_meta("p1"), Meta(
                    bms="p1", collector="c", name="p1", type="jk", quantities=["voltage", "current", "soc"],
                    switches=[SwitchSpec(name="charge")]), retain=True)
                for seq in range(3):
                    await bus.publish(topics.bms_sample("p1"), Sample(
                        bms="p1", ts=now + seq, boot="b", seq=seq, voltage=52.0, current=5.0, soc=50.0,
                        cell_voltages=[3.25, 3.26]))
                await bus.publish(topics.bms_meta("p1"), b"", retain=True)
            if expect_suffix:
                await w.wait_for(lambda: any(expect_suffix in t and p for t, p, _ in w.messages), 20,
                                 f"{service} output after the garbage")
            await asyncio.sleep(0.5)
            assert not task.done()
            skipped = [r for r in caplog.records if "bad message" in r.getMessage()]
            assert skipped, f"{service} did not log the bad messages it skipped"
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_a_message_is_acknowledged_only_after_it_was_processed(mqtt_config) -> None:
    """A consumer that dies while handling a message gets it (and everything after it) again from its
    persistent session; messages it finished are not redelivered."""
    topic = "bmsbus/v1/ack/bms/p1/sample"
    async with Bus(mqtt_config, client_id="ack-consumer", persistent=True) as bus:
        await bus.subscribe(topic)
    async with Bus(mqtt_config, client_id="ack-producer") as producer:
        for n in range(6):
            await producer.publish(topic, f"m{n}".encode())

    handled: list[bytes] = []
    async with Bus(mqtt_config, client_id="ack-consumer", persistent=True) as bus:
        async with asyncio.timeout(10):
            async for msg in bus.messages():
                if msg.payload == b"m2":
                    break  # "crashes" while handling m2: never finishes it
                handled.append(msg.payload)
    assert handled == [b"m0", b"m1"]

    again: list[bytes] = []
    async with Bus(mqtt_config, client_id="ack-consumer", persistent=True) as bus:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3):
                async for msg in bus.messages():
                    again.append(msg.payload)
    assert again == [b"m2", b"m3", b"m4", b"m5"]
