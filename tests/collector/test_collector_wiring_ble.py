"""The collector's supervision of BLE devices with unmodified bleak over BlueZoo (tests/support/bluez.py): a refused
PIN goes straight to the longest backoff, and connects on one adapter take turns while other adapters do not wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bmsbus.collector.outbox import Outbox
from bmsbus.collector.service import Coordination, DeviceRunner
from bmsbus.shared.config import Config, parse_config
from bmsbus.shared.topics import Topics
from support.bluez import BluezStack, Peripheral, mac, missing
from support.services import running_tasks as running

pytestmark = pytest.mark.skipif(missing() is not None, reason=missing() or "")

CENTRAL = ["00:00:00:00:00:01", "00:00:00:00:00:02"]  # hci0, hci1
PERIPHERALS = [mac(i) for i in range(2, 7)]  # hci2 .. hci6, one fake device each
LOCKED = 2  # adapter index of the peripheral that demands a passkey
PASSKEY = 271828


@pytest.fixture(scope="module")
def bluez(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BluezStack]:
    stack = BluezStack(tmp_path_factory.mktemp("bluez-wiring"), CENTRAL + PERIPHERALS,
                       passkeys={mac(LOCKED): PASSKEY}).start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def peripheral(bluez: BluezStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Peripheral]]:
    from bleak_retry_connector.bleak_manager import _reset_dbus_socket_cache

    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bluez.bus_address)
    _reset_dbus_socket_cache()
    started: list[Peripheral] = []

    def start(adapter: int, name: str, protocol: str = "jk") -> Peripheral:
        started.append(bluez.peripheral(adapter, name=name, protocol=protocol))
        return started[-1]

    try:
        yield start
    finally:
        for p in started:
            p.stop()
        _reset_dbus_socket_cache()


def runners(devices: list[dict[str, Any]], **collector: Any) -> dict[str, DeviceRunner]:
    cfg: Config = parse_config({"site": "t", "collector": {"sample_period": 0.5, **collector}, "devices": devices})
    shared = Coordination(cfg)
    topics, outbox = Topics(cfg.topic_root, cfg.site), Outbox()
    return {d.id: DeviceRunner(d, cfg, topics, outbox, "boot1", shared) for d in cfg.devices}  # type: ignore[misc]


async def until(predicate: Callable[[], Any], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.02)


async def test_a_refused_pin_is_failed_at_once_and_not_retried_soon(peripheral) -> None:  # noqa: ANN001
    peripheral(LOCKED, "JK_LOCKED")
    runner = runners([{"alias": "locked", "type": "jk", "address": mac(LOCKED), "adapter": "hci0",
                       "pin": "123456"}])["locked"]
    async with asyncio.timeout(60), running(runner.run()):
        await until(lambda: runner.retry_in is not None, "the first failure", 45)
        link = runner.link_state
        assert link is not None and runner.failures == 1
        assert link.state == "failed" and "refused the PIN" in (link.last_error or ""), link
        assert "retrying cannot fix this" in (link.last_error or "")
        assert runner.retry_in >= 0.8 * runner.backoff.cap
        await asyncio.sleep(1.0)
        assert runner.failures == 1 and runner.connects == 0


async def test_connects_on_one_adapter_take_turns(peripheral) -> None:  # noqa: ANN001
    """Two devices on hci0 start at the same moment: the second connect begins only when the first is done.
    Both then sample side by side on their held links."""
    peripheral(3, "JK_TURN_A")
    peripheral(4, "JK_TURN_B")
    rs = runners([{"alias": "a", "type": "jk", "address": "JK_TURN_A", "adapter": "hci0"},
                  {"alias": "b", "type": "jk", "address": mac(4), "adapter": "hci0"}])
    a, b = rs["a"], rs["b"]
    async with asyncio.timeout(60), running(a.run(), b.run()):
        await until(lambda: a.seq >= 2 and b.seq >= 2, "samples from both", 45)
    assert a.connect_window is not None and b.connect_window is not None
    first, second = sorted([a.connect_window, b.connect_window])
    assert second[0] >= first[1], f"connects overlapped: {first} {second}"
    assert a.connects == 1 and b.connects == 1


async def test_connects_on_different_adapters_do_not_wait_for_each_other(peripheral) -> None:  # noqa: ANN001
    """The control for the test above: the same two kinds of device, one per adapter, connect at once."""
    peripheral(5, "JK_FREE_A")
    peripheral(6, "JK_FREE_B")
    rs = runners([{"alias": "a", "type": "jk", "address": "JK_FREE_A", "adapter": "hci0"},
                  {"alias": "b", "type": "jk", "address": "JK_FREE_B", "adapter": "hci1"}])
    a, b = rs["a"], rs["b"]
    async with asyncio.timeout(60), running(a.run(), b.run()):
        await until(lambda: a.seq >= 1 and b.seq >= 1, "samples from both", 45)
    assert a.connect_window is not None and b.connect_window is not None
    first, second = sorted([a.connect_window, b.connect_window])
    assert second[0] < first[1], f"connects did not overlap: {first} {second}"
