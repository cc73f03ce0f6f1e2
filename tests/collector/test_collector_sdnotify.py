"""systemd notification and watchdog: a real unix datagram socket stands in for systemd (NOTIFY_SOCKET)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from pathlib import Path

import pytest

from bmsbus.collector.emulation.base import Faults
from bmsbus.collector.service import Collector
from bmsbus.collector.systemd import notify, watchdog_interval
from bmsbus.shared.config import MqttConfig, parse_config

pytestmark = pytest.mark.broker


class FakeSystemd:
    """A bound AF_UNIX datagram socket that records what is sent to it, with arrival times."""

    def __init__(self, address: str) -> None:
        self.address = address  # as NOTIFY_SOCKET spells it
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.setblocking(False)
        self.messages: list[tuple[float, str]] = []
        self._task: asyncio.Task[None] | None = None

    async def _recv(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 4096)
            self.messages.append((time.monotonic(), data.decode()))

    async def __aenter__(self) -> FakeSystemd:
        self._task = asyncio.create_task(self._recv())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.sock.close()

    def lines(self, prefix: str) -> list[tuple[float, str]]:
        return [(t, line) for t, m in self.messages for line in m.split("\n") if line.startswith(prefix)]

    async def wait_for(self, prefix: str, count: int = 1, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.lines(prefix)) < count:
            assert time.monotonic() < deadline, f"{count} x {prefix!r} not received; got {self.messages[-10:]}"
            await asyncio.sleep(0.05)


def make_collector(mqtt: MqttConfig, faults: Faults | None = None) -> Collector:
    options = {"faults": faults} if faults is not None else {}
    cfg = parse_config({"site": "t", "collector": {"id": "c1", "sample_period": 0.3},
                        "devices": [{"alias": "p1", "type": "simulated", "protocol": "jbd", "cells": 4,
                                     "options": options}]})
    cfg.mqtt = mqtt
    return Collector(cfg)


@pytest.mark.parametrize("kind", ["path", "abstract"])
async def test_notify_reaches_a_unix_datagram_socket(tmp_path: Path, kind: str) -> None:
    address = str(tmp_path / "notify") if kind == "path" else f"@bmsbus-test-{uuid.uuid4().hex}"
    async with FakeSystemd(address) as systemd:
        assert notify("READY=1\nSTATUS=fine", {"NOTIFY_SOCKET": address})
        await systemd.wait_for("STATUS=fine")
        assert systemd.messages[0][1] == "READY=1\nSTATUS=fine"


def test_notify_without_systemd_or_with_a_dead_socket_does_nothing(tmp_path: Path) -> None:
    assert notify("READY=1", {}) is False
    assert notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")}) is False
    assert notify("READY=1", {"NOTIFY_SOCKET": "vsock:2:1234"}) is False


def test_watchdog_interval_is_half_of_watchdog_usec_and_only_for_this_process() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "20000000"}) == 10.0
    assert watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}) == 10.0
    assert watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


async def test_ready_after_first_connect_then_pings_that_stop_while_stalled(
        tmp_path: Path, mosquitto, monkeypatch) -> None:
    address = str(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "600000")  # ping every 0.3 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    mosquitto.stop()  # no broker yet: samples wait in the outbox, READY waits for the first connect
    faults = Faults()
    collector = make_collector(MqttConfig(host="127.0.0.1", port=mosquitto.port), faults)
    async with FakeSystemd(address) as systemd:
        task = asyncio.create_task(collector.run())
        try:
            await systemd.wait_for("WATCHDOG=1", 3)
            await asyncio.sleep(1.0)
            assert not systemd.lines("READY=1"), "READY before the bus ever connected (and before 10 s)"
            assert "bus DISCONNECTED" in systemd.lines("STATUS=")[-1][1]

            with monkeypatch.context() as env:
                env.delenv("NOTIFY_SOCKET")  # mosquitto speaks sd_notify too: keep it off our fake systemd
                mosquitto.start()
            await systemd.wait_for("READY=1", timeout=20)
            assert collector.health.bus_connects >= 1
            ready = next(m for _, m in systemd.messages if m.startswith("READY=1"))
            assert ready.startswith("READY=1\nSTATUS=bus connected;"), ready
            await systemd.wait_for("STATUS=bus connected; 1/1 devices sampling")

            # Every device task quiet beyond the stall limit: the pings stop, and systemd would restart us.
            collector.health.stall_floor = 2.0
            faults.silence = True
            await systemd.wait_for("STATUS=stalled: every device task shows no activity", timeout=20)
            stalled_at = systemd.lines("STATUS=stalled")[0][0]
            await asyncio.sleep(1.5)
            pings = [t for t, _ in systemd.lines("WATCHDOG=1")]
            assert not [t for t in pings if stalled_at < t], "pinged while stalled"

            # The device answers again: its task shows activity and the pings resume.
            faults.silence = False
            resumed = len(pings)
            await systemd.wait_for("WATCHDOG=1", resumed + 5, timeout=30)
            pings = [t for t, _ in systemd.lines("WATCHDOG=1")][resumed:]
            assert max(b - a for a, b in zip(pings, pings[1:], strict=False)) < 1.0
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await systemd.wait_for("STOPPING=1", timeout=5)


async def test_ready_after_a_timeout_without_broker_and_no_pings_for_another_pid(
        tmp_path: Path, mosquitto, monkeypatch) -> None:
    address = f"@bmsbus-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # the watchdog is someone else's
    monkeypatch.setattr("bmsbus.collector.systemd.READY_TIMEOUT", 1.5)
    mosquitto.stop()
    collector = make_collector(MqttConfig(host="127.0.0.1", port=mosquitto.port))
    async with FakeSystemd(address) as systemd:
        task = asyncio.create_task(collector.run())
        try:
            started = time.monotonic()
            await systemd.wait_for("READY=1", timeout=10)
            assert systemd.lines("READY=1")[0][0] - started >= 1.0
            assert collector.health.bus_connects == 0
            await asyncio.sleep(1.0)
            assert not systemd.lines("WATCHDOG=1")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
