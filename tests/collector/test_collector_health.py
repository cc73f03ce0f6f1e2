"""The collector's health endpoint (/healthz, /status, /metrics) against a private Mosquitto, over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import time

import pytest

from bmsbus.collector.emulation.base import Faults
from bmsbus.collector.service import Collector
from bmsbus.shared.config import MqttConfig, parse_config
from bmsbus.shared.models import Link, Sample

pytestmark = pytest.mark.broker

# One sample line of the text format 0.0.4: name, optional labels, value.
METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? '
                         r'(-?[0-9.e+-]+|NaN|[+-]Inf)$')


def make_collector(mqtt: MqttConfig, devices: list[dict] | None = None, **collector: object) -> Collector:
    devices = devices if devices is not None else [
        {"alias": "p1", "type": "simulated", "protocol": "jk_32s", "cells": 8, "capacity_ah": 120},
        {"alias": "p2", "type": "simulated", "protocol": "jbd", "cells": 4, "capacity_ah": 50}]
    cfg = parse_config({"site": "t", "collector": {"id": "c1", "sample_period": 0.3,
                                                   "http": {"host": "127.0.0.1", "port": 0}, **collector},
                        "devices": devices})
    cfg.mqtt = mqtt
    return Collector(cfg)


@contextlib.asynccontextmanager
async def running(collector: Collector):
    task = asyncio.create_task(collector.run())
    try:
        await asyncio.wait_for(collector.health.http_ready.wait(), 10)
        yield collector
        assert not task.done(), task.exception() if not task.cancelled() else "cancelled"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def raw(port: int, request: bytes, *, close_after_send: bool = False) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        if close_after_send:
            writer.write_eof()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    response = await raw(port, f"{method} {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: test\r\n\r\n".encode())
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    assert int(headers["content-length"]) == len(body)
    assert headers["connection"] == "close"
    return status, headers, body


def metric_values(text: str) -> dict[str, float]:
    """{'name{labels}': value}; asserts every line is a well-formed comment or sample."""
    values, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("gauge", "counter"), line
            assert name not in typed, f"TYPE twice for {name}"
            typed.add(name)
            continue
        if line.startswith("# HELP "):
            continue
        m = METRIC_LINE.match(line)
        assert m, f"not a metric line: {line!r}"
        assert m.group(1) in typed, f"{m.group(1)} has no TYPE line"
        values[line.rsplit(" ", 1)[0]] = float(line.rsplit(" ", 1)[1])
    return values


async def test_endpoints_report_live_devices(mqtt_config, watcher_factory) -> None:
    async with watcher_factory("bmsbus/v1/t/#") as w, running(make_collector(mqtt_config)) as col:
        port = col.health.http_port
        assert port
        await w.wait_for(lambda: len(w.on("/bms/p1/sample")) >= 3 and len(w.on("/bms/p2/sample")) >= 3, 20,
                         "samples")

        status, headers, body = await get(port, "/healthz")
        assert (status, body) == (200, b"ok\n")
        assert headers["content-type"].startswith("text/plain")

        status, headers, body = await get(port, "/status?verbose=1")  # a query string is ignored
        assert status == 200 and headers["content-type"] == "application/json"
        doc = json.loads(body)
        assert (doc["collector"], doc["boot"], doc["healthy"]) == ("c1", col.boot, True)
        assert doc["bus"]["connected"] is True and doc["bus"]["connects"] == 1
        p1, p2 = doc["devices"]["p1"], doc["devices"]["p2"]
        assert (p1["protocol"], p2["protocol"]) == ("jk_32s", "jbd")
        assert p1["link_state"] == "connected" and p1["consecutive_failures"] == 0 and p1["last_error"] is None
        assert p1["samples_published"] >= 3
        # The latest sample is the one the bus got: its JSON, for the right device.
        assert p1["sample"]["bms"] == "p1" and len(p1["sample"]["cell_voltages"]) == 8
        assert p2["sample"]["bms"] == "p2" and len(p2["sample"]["cell_voltages"]) == 4
        seq = p1["sample"]["seq"]
        await w.wait_for(lambda: any(s["seq"] == seq for s in w.json_on("/bms/p1/sample")), 10, "that sample")
        assert next(s for s in w.json_on("/bms/p1/sample") if s["seq"] == seq) == p1["sample"]
        assert p1["last_sample_age_s"] < 5
        assert doc["outbox"]["spool"] == {"enabled": False}

        status, headers, body = await get(port, "/metrics")
        assert status == 200 and headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        m = metric_values(body.decode())
        assert m['bmsbus_collector_bus_connected'] == 1 and m["bmsbus_collector_healthy"] == 1
        assert m[f'bmsbus_collector_info{{collector="c1",boot="{col.boot}",version="{doc["version"]}"}}'] == 1
        for bms in ("p1", "p2"):
            assert m[f'bmsbus_device_samples_total{{bms="{bms}"}}'] >= 3
            assert m[f'bmsbus_device_connected{{bms="{bms}"}}'] == 1
            assert m[f'bmsbus_device_consecutive_failures{{bms="{bms}"}}'] == 0
            assert 0 <= m[f'bmsbus_device_last_sample_age_seconds{{bms="{bms}"}}'] < 5
            assert m[f'bmsbus_device_codec_errors_total{{bms="{bms}"}}'] == 0
            assert m[f'bmsbus_device_rssi_dbm{{bms="{bms}"}}'] == -60  # what EmulatedLink reports
        assert m["bmsbus_outbox_dropped_total"] == 0 and m["bmsbus_outbox_spool_enabled"] == 0

        # Counters move with the collector.
        await asyncio.sleep(1.0)
        later = metric_values((await get(port, "/metrics"))[2].decode())
        assert later['bmsbus_device_samples_total{bms="p1"}'] > m['bmsbus_device_samples_total{bms="p1"}']


async def test_codec_errors_and_failures_are_counted_per_device(mqtt_config) -> None:
    noisy = Faults(junk=0.5)  # junk before frames: dropped and counted, the frames still decode
    devices = [{"alias": "good", "type": "simulated", "protocol": "jbd", "cells": 4},
               {"alias": "noisy", "type": "simulated", "protocol": "jbd", "cells": 5, "options": {"faults": noisy}},
               {"alias": "gone", "type": "simulated", "protocol": "jbd", "cells": 6,
                "options": {"faults": {"disconnect": True}}}]
    async with running(make_collector(mqtt_config, devices)) as col:
        port = col.health.http_port
        deadline = time.monotonic() + 30
        while True:
            m = metric_values((await get(port, "/metrics"))[2].decode())
            if m.get('bmsbus_device_codec_errors_total{bms="noisy"}', 0) >= 3 \
                    and m.get('bmsbus_device_consecutive_failures{bms="gone"}', 0) >= 1:
                break
            assert time.monotonic() < deadline, m
            await asyncio.sleep(0.3)
        assert m['bmsbus_device_codec_errors_total{bms="good"}'] == 0
        assert m['bmsbus_device_connected{bms="gone"}'] == 0
        assert 'bmsbus_device_samples_total{bms="gone"}' in m and m['bmsbus_device_samples_total{bms="gone"}'] == 0
        assert not any(k.startswith('bmsbus_device_last_sample_age_seconds{bms="gone"') for k in m)
        doc = json.loads((await get(port, "/status"))[2])
        assert doc["devices"]["gone"]["sample"] is None
        assert "not reachable" in doc["devices"]["gone"]["last_error"]
        assert doc["devices"]["noisy"]["codec_errors"] >= 3

        # The count is per device, not per session: a reconnect does not start it over.
        before = doc["devices"]["noisy"]["codec_errors"]
        noisy.disconnect = True
        deadline = time.monotonic() + 15
        while json.loads((await get(port, "/status"))[2])["devices"]["noisy"]["link_state"] == "connected":
            assert time.monotonic() < deadline, "the noisy device never dropped its link"
            await asyncio.sleep(0.1)
        noisy.disconnect, noisy.junk = False, 0.0
        deadline = time.monotonic() + 20
        while (after := json.loads((await get(port, "/status"))[2])["devices"]["noisy"])["link_state"] != "connected":
            assert time.monotonic() < deadline, after
            await asyncio.sleep(0.1)
        assert after["codec_errors"] >= before
        assert after["connects"] >= 2


async def test_bad_requests_get_an_error_and_never_hurt_the_collector(mqtt_config, watcher_factory) -> None:
    async with watcher_factory("bmsbus/v1/t/#") as w, running(make_collector(mqtt_config)) as col:
        port = col.health.http_port
        col.health.request_timeout = 1.0
        assert (await get(port, "/nope"))[0] == 404
        status, headers, _ = await get(port, "/healthz", method="POST")
        assert status == 405 and headers["allow"] == "GET"
        assert (await get(port, "/metrics", method="DELETE"))[0] == 405

        def status_of(response: bytes) -> int:
            return int(response.split(b" ", 2)[1])

        assert status_of(await raw(port, b"GARBAGE\r\n\r\n")) == 400
        assert status_of(await raw(port, b"\xff\xfe\x00\r\n\r\n")) == 400
        assert status_of(await raw(port, b"GET \xff\xfe HTTP/1.1\r\n\r\n")) == 400
        assert status_of(await raw(port, b"GET nopath HTTP/1.1\r\n\r\n")) == 400
        assert status_of(await raw(port, b"GET / SPDY/3\r\n\r\n")) == 400
        assert status_of(await raw(port, b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n")) == 400
        assert status_of(await raw(port, b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n")) == 400
        assert await raw(port, b"", close_after_send=True) == b""  # connect, say nothing, leave
        assert status_of(await raw(port, b"GET /healthz HT", close_after_send=True)) == 400  # half a line, EOF
        # A client that sends nothing and keeps the connection: closed after the request timeout.
        started = time.monotonic()
        assert await raw(port, b"GET /healthz HTTP/1.1\r\n") == b""
        assert 0.5 < time.monotonic() - started < 5
        # Many at once, beyond the connection cap: the extra ones are closed, the collector is fine.
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(col.health.max_clients + 5)]
        assert await asyncio.wait_for(idle[-1][0].read(), 0.5) == b"", "over the cap: closed at once"
        for _, writer in idle:
            writer.close()
        await asyncio.sleep(1.5)
        assert (await get(port, "/healthz"))[0] == 200
        assert col.health.bad_requests >= 6
        n = len(w.on("/bms/p1/sample"))
        await w.wait_for(lambda: len(w.on("/bms/p1/sample")) > n + 2, 10, "still sampling")


async def test_healthz_is_503_without_the_broker_and_200_when_it_is_back(mosquitto, watcher_factory) -> None:
    mqtt = MqttConfig(host="127.0.0.1", port=mosquitto.port)
    async with running(make_collector(mqtt)) as col:
        port = col.health.http_port
        await asyncio.wait_for(col.health.bus_up.wait(), 10)
        await asyncio.sleep(1.0)
        col.health.startup_grace = 0.0  # as if it had been up for a while
        assert (await get(port, "/healthz"))[0] == 200
        mosquitto.stop()
        deadline = time.monotonic() + 15
        while (response := await get(port, "/healthz"))[0] != 503:
            assert time.monotonic() < deadline, response
            await asyncio.sleep(0.2)
        assert b"bus disconnected" in response[2]
        m = metric_values((await get(port, "/metrics"))[2].decode())
        assert m["bmsbus_collector_bus_connected"] == 0 and m["bmsbus_collector_healthy"] == 0
        await asyncio.sleep(1.5)
        doc = json.loads((await get(port, "/status"))[2])
        assert doc["outbox"]["pending"] > 0, "samples taken meanwhile wait for the broker"
        mosquitto.start()
        deadline = time.monotonic() + 30
        while (await get(port, "/healthz"))[0] != 200:
            assert time.monotonic() < deadline, "not healthy again after the broker came back"
            await asyncio.sleep(0.2)
        assert col.health.bus_connects == 2


async def test_healthz_is_503_when_no_device_publishes(mqtt_config) -> None:
    silent = Faults(silence=True)
    devices = [{"alias": "quiet", "type": "simulated", "protocol": "jbd", "cells": 4, "options": {"faults": silent}}]
    async with running(make_collector(mqtt_config, devices)) as col:
        port = col.health.http_port
        await asyncio.wait_for(col.health.bus_up.wait(), 10)
        assert (await get(port, "/healthz"))[0] == 200, "inside the start-up grace period"
        col.health.startup_grace = 0.0
        status, _, body = await get(port, "/healthz")
        assert status == 503 and b"no device has published" in body and b"quiet" in body
        silent.silence = False  # the BMS answers again: after its reconnect it publishes
        deadline = time.monotonic() + 40
        while (await get(port, "/healthz"))[0] != 200:
            assert time.monotonic() < deadline, json.loads((await get(port, "/status"))[2])["devices"]
            await asyncio.sleep(0.3)


def test_health_rules_at_their_thresholds() -> None:
    """The /healthz and watchdog rules on a collector that is not running, with ages set by hand."""
    cfg = parse_config({"site": "t", "collector": {"id": "c1", "sample_period": 2.0},
                        "devices": [{"alias": "a", "type": "simulated", "protocol": "jbd"},
                                    {"alias": "b", "type": "simulated", "protocol": "jbd", "publish_period": 10}]})
    cfg.mqtt = MqttConfig()
    col = Collector(cfg)
    health = col.health
    a, b = col.runners["a"], col.runners["b"]
    now = time.time()

    def sample(bms: str, age: float) -> Sample:
        return Sample(bms=bms, ts=now - age, boot=col.boot, seq=0, voltage=13.0)

    assert health.check() == (True, "starting: waiting for the broker (since start)")
    health.startup_grace = 0.0
    assert health.check() == (False, "bus disconnected since start")
    health.bus_connected, health.bus_connects = True, 1
    ok, reason = health.check()
    assert not ok and "no device has published" in reason and "a: not started, no sample yet" in reason
    # a: period 2 s -> fresh within max(3 x 2, 10) = 10 s; b: publish period 10 s -> 30 s.
    a.last_sample = sample("a", 9.5)
    assert health.check() == (True, "ok: 1/2 devices sampling")
    a.last_sample = sample("a", 10.5)
    assert not health.check()[0]
    b.last_sample = sample("b", 29.0)
    assert health.check() == (True, "ok: 1/2 devices sampling")
    b.last_sample = sample("b", 31.0)
    assert not health.check()[0]

    # Watchdog: stalled only when every device task is quiet beyond max(4 x period, 300 s).
    col.started = now - 1000
    a.last_sample, b.last_sample = sample("a", 299), sample("b", 500)
    assert health.stalled() is None
    a.last_sample = sample("a", 301)
    assert "every device task" in (health.stalled() or "")
    # A failing device is not stalled: each attempt changes its link state.
    a.link_state = Link(bms="a", state="failed", ok=False, ts=now - 100, consecutive_failures=7)
    assert health.stalled() is None


async def test_a_taken_port_is_logged_and_retried_not_fatal(mqtt_config, watcher_factory, caplog) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        col = make_collector(mqtt_config, http={"host": "127.0.0.1", "port": port})
        async with watcher_factory("bmsbus/v1/t/#") as w:
            task = asyncio.create_task(col.run())
            try:
                with caplog.at_level(logging.ERROR, "bmsbus.collector.health"):
                    await w.wait_for(lambda: len(w.on("/bms/p1/sample")) >= 3, 20, "samples without the endpoint")
                assert "cannot listen" in caplog.text and str(port) in caplog.text
                assert not task.done() and col.health.http_port is None
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
