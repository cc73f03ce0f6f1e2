"""The collector service against a private Mosquitto, with simulated JK BMSes decoded through the real codec."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest

from bmsbus.collector.outbox import Outbox
from bmsbus.collector.service import Collector
from bmsbus.shared.bus import Bus
from bmsbus.shared.config import MqttConfig, parse_config
from bmsbus.shared.models import Command
from support.services import running

pytestmark = pytest.mark.broker
ROOT = "bmsbus/v1/t"


def make_collector(mqtt: MqttConfig, **collector: object) -> Collector:
    cfg = parse_config({"site": "t", "collector": {"id": "c1", "sample_period": 0.3, **collector},
                        "devices": [{"alias": "p1", "type": "simulated", "protocol": "jk_32s", "cells": 8},
                                    {"alias": "p2", "type": "simulated", "protocol": "jk_24s", "cells": 4}]})
    cfg.mqtt = mqtt
    return Collector(cfg)


async def send(mqtt: MqttConfig, topic: str, payload: bytes | str, retain: bool = False) -> None:
    async with Bus(mqtt, client_id=f"test-sender-{time.monotonic_ns()}") as bus:
        await bus.publish(topic, payload, retain=retain)


def command(cid: str, switch: str, value: bool, ttl: float = 30.0) -> str:
    now = time.time()
    return Command(id=cid, switch=switch, value=value, issued=now, expires=now + ttl).to_json().decode()


async def test_switch_command_is_executed_once_read_back_and_answered(mqtt_config, watcher_factory) -> None:
    async with watcher_factory(f"{ROOT}/#") as w, running(make_collector(mqtt_config)) as col:
        await w.wait_for(lambda: len(w.on("/bms/p1/sample")) >= 2, 20, "samples")
        assert json.loads(w.on("/bms/p1/sample")[-1])["switches"]["charge"] is True
        await send(mqtt_config, f"{ROOT}/bms/p1/cmd", command("c-1", "charge", False))
        await w.wait_for(lambda: w.json_on("/bms/p1/cmd/result"), 20, "result")
        result = w.json_on("/bms/p1/cmd/result")[0]
        assert (result["id"], result["status"], result["readback"]) == ("c-1", "ok", False)
        n = len(w.on("/bms/p1/sample"))
        await w.wait_for(lambda: len(w.on("/bms/p1/sample")) >= n + 2, 20, "later samples")
        assert json.loads(w.on("/bms/p1/sample")[-1])["switches"]["charge"] is False
        # The emulator itself holds the new state: the write went through the protocol.
        emulator = col.runners["p1"].driver.link.emulator  # type: ignore[union-attr]
        assert emulator.state.switches["charge"] is False

        # Same id again: not executed a second time (state unchanged, same answer).
        emulator.state.switches["charge"] = True
        await send(mqtt_config, f"{ROOT}/bms/p1/cmd", command("c-1", "charge", False))
        await w.wait_for(lambda: len(w.json_on("/bms/p1/cmd/result")) >= 2, 20, "second result")
        assert w.json_on("/bms/p1/cmd/result")[1]["id"] == "c-1"
        assert emulator.state.switches["charge"] is True


def setting_command(cid: str, setting: str, number: float) -> str:
    now = time.time()
    return Command(id=cid, action="set_setting", setting=setting, number=number, issued=now,
                   expires=now + 30).to_json().decode()


async def test_a_declared_bms_setting_is_written_through_the_protocol_and_read_back(mqtt_config,
                                                                                     watcher_factory) -> None:
    async with watcher_factory(f"{ROOT}/#") as w, running(make_collector(mqtt_config)) as col:
        await w.wait_for(lambda: w.json_on("/bms/p1/meta") and w.on("/bms/p1/sample"), 20, "meta and samples")
        assert "cell_ovp" in w.json_on("/bms/p1/meta")[-1]["settings"]
        await send(mqtt_config, f"{ROOT}/bms/p1/cmd", setting_command("s-1", "cell_ovp", 3.6))
        await send(mqtt_config, f"{ROOT}/bms/p1/cmd", setting_command("s-2", "cell_ovp", 9.0))
        await send(mqtt_config, f"{ROOT}/bms/p1/cmd", setting_command("s-3", "warp_factor", 1.0))
        await w.wait_for(lambda: len(w.json_on("/bms/p1/cmd/result")) >= 3, 30, "three results")
        results = {r["id"]: r for r in w.json_on("/bms/p1/cmd/result")}
        assert results["s-1"]["status"] == "ok", results["s-1"]
        emulator = col.runners["p1"].driver.link.emulator  # type: ignore[union-attr]
        assert emulator.state.settings["cell_ovp"] == pytest.approx(3.6)
        assert results["s-2"]["status"] == "rejected" and "outside" in results["s-2"]["reason"]
        assert results["s-3"]["status"] == "rejected" and "not writable" in results["s-3"]["reason"]
        assert emulator.state.settings["cell_ovp"] == pytest.approx(3.6)  # the refused ones never reached it


@pytest.mark.parametrize("payload_fn,reason", [
    (lambda: command("c-exp", "charge", False, ttl=-5), "expired"),
    (lambda: command("c-unk", "warp_drive", True), "not writable"),
])
async def test_invalid_commands_are_rejected_with_a_reason(mqtt_config, watcher_factory, payload_fn, reason) -> None:
    async with watcher_factory(f"{ROOT}/#") as w, running(make_collector(mqtt_config)) as col:
        await w.wait_for(lambda: w.on("/bms/p1/sample"), 20, "samples")
        await send(mqtt_config, f"{ROOT}/bms/p1/cmd", payload_fn())
        await w.wait_for(lambda: w.json_on("/bms/p1/cmd/result"), 20, "result")
        result = w.json_on("/bms/p1/cmd/result")[0]
        assert result["status"] == "rejected" and reason in result["reason"]
        assert col.runners["p1"].driver.link.emulator.state.switches["charge"] is True  # type: ignore[union-attr]


async def test_bad_bus_messages_are_counted_and_good_ones_still_processed(mqtt_config, watcher_factory) -> None:
    # A retained command left on the broker is stale by definition: replayed on subscribe, never run.
    await send(mqtt_config, f"{ROOT}/bms/p2/cmd", command("c-ret", "discharge", False, ttl=600), retain=True)
    async with watcher_factory(f"{ROOT}/#") as w, running(make_collector(mqtt_config)) as col:
        await w.wait_for(lambda: w.on("/bms/p2/sample"), 20, "samples")
        for junk in (b"{not json", b'{"id": "x"}', b"[1,2]", b'{"id":"a","switch":"charge","value":"maybe",'
                     b'"issued":1,"expires":2}'):
            await send(mqtt_config, f"{ROOT}/bms/p2/cmd", junk)
        await send(mqtt_config, f"{ROOT}/bms/p2/cmd", command("c-good", "discharge", False))
        await w.wait_for(lambda: w.json_on("/bms/p2/cmd/result"), 20, "result of the good command")
        assert [r["id"] for r in w.json_on("/bms/p2/cmd/result")] == ["c-good"]
        assert col.inbox.bad["cmd"] == 5
        await send(mqtt_config, f"{ROOT}/bms/p2/cmd", b"", retain=True)  # clean up the retained one
        n = len(w.on("/bms/p2/sample"))
        await w.wait_for(lambda: len(w.on("/bms/p2/sample")) > n, 10, "still sampling")


async def test_broker_outage_loses_no_sample_and_keeps_order(tmp_path, mosquitto) -> None:
    """Broker down while sampling: afterwards every sample has arrived, once, in order."""
    mqtt = MqttConfig(host="127.0.0.1", port=mosquitto.port)
    seen: list[int] = []
    subscribed = asyncio.Event()

    async def consume(bus: Bus) -> None:
        # A persistent session: the broker queues what is published while this consumer is away.
        await bus.subscribe(f"{ROOT}/bms/p1/sample")
        subscribed.set()
        async for m in bus.messages():
            seen.append(json.loads(m.payload)["seq"])

    from bmsbus.shared.bus import Backoff, run_connected

    consumer = asyncio.create_task(run_connected(
        "consumer", lambda: Bus(mqtt, client_id="test-persistent-consumer", persistent=True), consume,
        backoff=Backoff(first=0.2, cap=0.5)))
    await asyncio.wait_for(subscribed.wait(), 10)
    collector = make_collector(mqtt)
    try:
        async with running(collector):
            while len(seen) < 3:
                await asyncio.sleep(0.1)
            mosquitto.stop()
            await asyncio.sleep(5)
            assert len(collector.outbox.pending) >= 5, "samples taken while the broker was down wait"
            mosquitto.start()
            deadline = time.monotonic() + 40
            while collector.outbox.pending or len(seen) < collector.runners["p1"].seq:
                assert time.monotonic() < deadline, f"backlog not delivered: {len(seen)} seen"
                await asyncio.sleep(0.1)
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
    # QoS 1 is at-least-once: a publish cut off by the outage may arrive twice (consumers dedupe on
    # boot+seq); none may be missing and the first arrivals must be in order.
    assert list(dict.fromkeys(seen)) == list(range(collector.runners["p1"].seq)), seen
    assert collector.outbox.dropped == 0


def test_outbox_keeps_latest_retained_and_bounds_samples() -> None:
    box = Outbox(max_pending=3)
    box.put("a/link", b"1", retain=True)
    box.put("a/link", b"2", retain=True)
    for i in range(5):
        box.put("a/sample", str(i).encode())
    assert box.dropped == 2 and [o.payload for o in box.pending] == [b"2", b"3", b"4"]

    async def drain() -> list[tuple[bytes, bool]]:
        out = []
        while box.dirty or box.pending:
            item = await box.next()
            out.append((item.payload, item.retain))
            box.done(item)
        return out

    assert asyncio.run(drain()) == [(b"2", True), (b"2", False), (b"3", False), (b"4", False)]
    box.resend_retained()
    assert asyncio.run(drain()) == [(b"2", True)]
