"""BleLink with unmodified bleak over BlueZoo (BlueZ's D-Bus API, no radio) and fake peripherals backed by
our own emulators (tests/support/bluez.py). Runs only when dbus-daemon and bluezoo are installed."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bmsbus.collector import protocols
from bmsbus.collector.driver import BleSpec, DriverOptions
from bmsbus.collector.emulation.base import make_pack
from bmsbus.collector.links.base import DeviceNotFound, LinkClosed, LinkError
from bmsbus.collector.links.ble import BleLink, PairingFailed
from bmsbus.collector.diag import read_capture
from bmsbus.shared.cli import main as bmsbus
from support.bluez import BluezStack, Peripheral, drop_link, mac, missing

pytestmark = pytest.mark.skipif(missing() is not None, reason=missing() or "")

CENTRAL = ["00:00:00:00:00:01", "00:00:00:00:00:02"]  # hci0, hci1
PERIPHERALS = [mac(i) for i in range(2, 15)]  # hci2 .. hci14, one fake device each
SHUNT = 9  # adapter index of the peripheral that demands a passkey
VICTRON = 13  # a Victron SmartShunt (one characteristic per value) that demands a passkey
VICTRON_RUNNER = 14  # the same, read by the collector's DeviceRunner
PASSKEY = 314159
ECHO = BleSpec(service="ffe0", notify="ffe1", write="ffe1")


@pytest.fixture(scope="module")
def bluez(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BluezStack]:
    stack = BluezStack(tmp_path_factory.mktemp("bluez"), CENTRAL + PERIPHERALS,
                       passkeys={mac(SHUNT): PASSKEY, mac(VICTRON): PASSKEY, mac(VICTRON_RUNNER): PASSKEY},
                       rssi={mac(3): -71, mac(4): -48}).start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def system_bus(bluez: BluezStack, monkeypatch: pytest.MonkeyPatch) -> BluezStack:
    """Point bleak and dbus-fast at the private bus for this test."""
    from bleak_retry_connector.bleak_manager import _reset_dbus_socket_cache

    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bluez.bus_address)
    _reset_dbus_socket_cache()
    return bluez


@pytest.fixture
def peripheral(system_bus: BluezStack) -> Iterator:
    started: list[Peripheral] = []

    def start(adapter: int, name: str, protocol: str = "echo", **kw: object) -> Peripheral:
        p = system_bus.peripheral(adapter, name=name, protocol=protocol, **kw)
        started.append(p)
        return p

    try:
        yield start
    finally:
        for p in started:
            p.stop()


def jk_link(address: str, **kw: object) -> BleLink:
    entry = protocols.get("jk")
    assert entry.ble is not None
    return BleLink(address, entry.ble, scan_timeout=5.0, **kw)  # type: ignore[arg-type]


async def test_jk_frames_stream_through_bluez_and_decode(peripheral) -> None:  # noqa: ANN001
    """Newer JK module layout (two FFE1 characteristics, write-only + notify-only), found by its
    advertised name; the JK driver's handshake and a streamed 300-byte cell frame arrive as 20-byte
    notifications and decode to the emulated pack."""
    dev = peripheral(2, "JK_B2A16S20P", "jk", split=True)
    entry = protocols.get("jk")
    chunks: list[bytes] = []
    link = jk_link("JK_B2A16S20P", adapter="hci0")
    async with asyncio.timeout(20):
        async with link:
            assert link.notify_char is not None and link.tx_char is not None
            assert link.notify_char.handle != link.tx_char.handle  # resolved by property, not UUID alone
            assert "notify" in link.notify_char.properties and "write" in link.tx_char.properties
            assert link.write_response is False  # JK writes without response
            driver = entry.driver(link, DriverOptions())
            driver.on_chunk = chunks.append
            info = await driver.open()
            reading = await driver.read()
    expected = make_pack(cells=16, name="JK_B2A16S20P", seed=7)
    assert info.model and info.sw_version
    assert reading["cell_voltages"] == pytest.approx(expected.cell_voltages, abs=0.002)
    assert reading["soc"] == pytest.approx(expected.soc, abs=1)
    assert chunks and max(len(c) for c in chunks) == 20 and sum(len(c) for c in chunks) >= 600
    writes = dev.stats()["writes"]
    assert writes and all(kind == "command" for _, kind in writes)  # write-without-response on the wire
    assert bytes.fromhex(writes[0][0])[:4] == bytes.fromhex("aa5590eb")


async def test_link_loss_is_link_closed_and_the_link_reconnects(peripheral,  # noqa: ANN001
                                                                system_bus: BluezStack) -> None:
    peripheral(3, "JK_LOSS", "jk")
    entry = protocols.get("jk")
    link = jk_link(mac(3), adapter="hci0")
    async with asyncio.timeout(30):
        async with link:
            assert link.rssi is not None and -74 <= link.rssi <= -68  # as the fake radio reports it
            driver = entry.driver(link, DriverOptions())
            await driver.open()
            await driver.read()
            await drop_link(system_bus.bus_address, "hci0", mac(3))
            t0 = time.monotonic()
            with pytest.raises(LinkClosed):
                while True:  # drain what arrived before the drop
                    await asyncio.wait_for(link.receive(), 3)
            assert time.monotonic() - t0 < 3
            with pytest.raises(LinkClosed):
                await link.send(b"\x00")
        # What the supervisor does: enter the same link again.
        t0 = time.monotonic()
        async with link:
            reconnect = time.monotonic() - t0
            driver = entry.driver(link, DriverOptions())
            await driver.open()
            assert (await driver.read())["cell_voltages"]
    assert reconnect < 2.0, f"reconnect took {reconnect:.2f} s"


async def test_keep_alive_false_connect_per_sample(peripheral) -> None:  # noqa: ANN001
    """Connect, read one sample, disconnect, three times: after the first, no scan is needed."""
    peripheral(4, "JK_PERSAMPLE", "jk")
    entry = protocols.get("jk")
    link = jk_link("JK_PERSAMPLE", adapter="hci0")
    times = []
    async with asyncio.timeout(30):
        for _ in range(3):
            t0 = time.monotonic()
            async with link:
                driver = entry.driver(link, DriverOptions())
                await driver.open()
                assert (await driver.read())["cell_voltages"]
            times.append(link.connect_seconds)
    assert all(t is not None and t < 0.5 for t in times[1:]), times
    assert link.rssi is not None and -51 <= link.rssi <= -45


async def test_empty_gatt_after_connect_is_waited_out(peripheral) -> None:  # noqa: ANN001
    """The JK 19.x quirk: connected, but the GATT table is empty. The link waits, then reconnects once."""
    peripheral(5, "JK_EMPTYGATT", "echo", gatt_delay=1.5)
    link = BleLink("JK_EMPTYGATT", ECHO, adapter="hci0", services_wait=2.0, scan_timeout=5)
    async with asyncio.timeout(20):
        async with link:
            await link.send(b"ping")
            assert await asyncio.wait_for(link.receive(), 3) == b"ping"
    assert link.connect_seconds is not None and link.connect_seconds >= 1.0


async def test_gatt_that_never_appears_is_a_clear_error(peripheral) -> None:  # noqa: ANN001
    peripheral(6, "JK_NOGATT", "echo", gatt_delay=600)
    link = BleLink("JK_NOGATT", ECHO, adapter="hci0", services_wait=0.5, scan_timeout=5)
    async with asyncio.timeout(20):
        with pytest.raises(LinkError, match="no GATT service 0000ffe0"):
            async with link:
                pass


async def test_device_that_is_not_advertising(system_bus: BluezStack) -> None:
    link = BleLink("NOT_THERE", ECHO, adapter="hci0", scan_timeout=1.5)
    with pytest.raises(DeviceNotFound, match="NOT_THERE"):
        async with link:
            pass


async def test_pairing_with_pin(peripheral) -> None:  # noqa: ANN001
    """A device that serves GATT only to a bonded central (Victron style): no PIN -> a clear
    PairingFailed on the first write; wrong PIN -> PairingFailed at connect; right PIN -> works,
    and the bond then holds without the PIN."""
    peripheral(SHUNT, "SmartShunt HQ2", "echo")
    async with asyncio.timeout(30):
        link = BleLink(mac(SHUNT), ECHO, adapter="hci0", scan_timeout=5)
        async with link:
            with pytest.raises(PairingFailed, match="set `pin:`"):
                await link.send(b"x")
        with pytest.raises(PairingFailed, match="refused the PIN"):
            async with BleLink(mac(SHUNT), ECHO, adapter="hci0", pin="271828"):
                pass
        with pytest.raises(PairingFailed, match="numeric"):
            async with BleLink(mac(SHUNT), ECHO, adapter="hci0", pin="abc"):
                pass
        link = BleLink(mac(SHUNT), ECHO, adapter="hci0", pin=str(PASSKEY))
        async with link:
            assert link.paired_now
            await link.send(b"bonded")
            assert await asyncio.wait_for(link.receive(), 3) == b"bonded"
        async with BleLink(mac(SHUNT), ECHO, adapter="hci0") as again:
            await again.send(b"still")
            assert await asyncio.wait_for(again.receive(), 3) == b"still"


async def test_two_adapters_two_devices_at_once(peripheral) -> None:  # noqa: ANN001
    """One device per adapter; the second adapter is named by its controller MAC (batmon-ha style)."""
    peripheral(7, "JK_LEFT", "jk")
    peripheral(8, "JK_RIGHT", "jk")
    entry = protocols.get("jk")
    left = jk_link(mac(7), adapter="hci0")
    right = jk_link("JK_RIGHT", adapter=CENTRAL[1])

    async def sample(link: BleLink) -> list[float]:
        async with link:
            driver = entry.driver(link, DriverOptions())
            await driver.open()
            return (await driver.read())["cell_voltages"]

    async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
        a, b = tg.create_task(sample(left)), tg.create_task(sample(right))
    assert a.result() and b.result()
    assert left.device is not None and left.device.details["path"].startswith("/org/bluez/hci0/")
    assert right.adapter == "hci1"
    assert right.device is not None and right.device.details["path"].startswith("/org/bluez/hci1/")


async def test_no_system_bus_is_a_link_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from bleak_retry_connector.bleak_manager import _reset_dbus_socket_cache

    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path / 'nothing.sock'}")
    _reset_dbus_socket_cache()
    try:
        with pytest.raises(LinkError, match="system D-Bus"):
            async with BleLink("AA:BB:CC:DD:EE:FF", ECHO, adapter="hci0", scan_timeout=1):
                pass
    finally:
        _reset_dbus_socket_cache()


def test_bmsbus_scan_lists_devices_with_a_type_guess(peripheral,  # noqa: ANN001
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    peripheral(10, "ANT-BLE24BHUB", "echo")
    assert bmsbus(["scan", "--adapter", "hci1", "--timeout", "2.5", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    ant = next(r for r in rows if r["address"] == mac(10))
    assert ant["name"] == "ANT-BLE24BHUB" and ant["rssi"] is not None
    assert "ant" in ant["guess"]
    assert bmsbus(["scan", "--adapter", "hci1", "--timeout", "1.5"]) == 0
    table = capsys.readouterr().out
    assert "ANT-BLE24BHUB" in table and "RSSI" in table.splitlines()[0]


def test_bmsbus_snoop_dumps_gatt_and_notifications_and_probes(peripheral, tmp_path: Path,  # noqa: ANN001
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    peripheral(11, "JK_SNOOPED", "jk", split=True)
    assert bmsbus(["snoop", "JK_SNOOPED", "--adapter", "hci0", "--seconds", "0.2", "--probe",
                   "--capture", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "service 0000ffe0-0000-1000-8000-00805f9b34fb" in out
    assert out.count("char 0000ffe1-0000-1000-8000-00805f9b34fb") == 2  # the split JK layout, both shown
    assert "notify handle=" in out and "55 aa eb 90" in out  # a JK frame header in the hex log
    suggested = next(line for line in out.splitlines() if line.startswith("# suggested type:"))
    assert "jk" in suggested.split(":", 1)[1].replace(" ", "").split(",")
    meta, records = read_capture(list(tmp_path.glob("*.jsonl")))
    assert meta["tool"] == "snoop" and any(d == "tx" for _, d, _ in records) and any(d == "rx" for _, d, _ in records)


async def test_the_collector_supervisor_reads_loses_and_regains_a_bluez_device(peripheral,  # noqa: ANN001
                                                                               system_bus: BluezStack) -> None:
    """The lead's DeviceRunner, unmodified, with open_link -> factory -> BleLink: samples flow, a radio
    drop is reported as `disconnected`, and the runner reconnects by itself."""
    from bmsbus.collector.outbox import Outbox
    from bmsbus.collector.service import DeviceRunner
    from bmsbus.shared.config import Config
    from bmsbus.shared.topics import Topics

    peripheral(12, "JK_SUPERVISED", "jk")
    cfg = Config(devices=[{"type": "jk", "address": mac(12), "alias": "garage", "adapter": "hci0"}],
                 collector={"sample_period": 0.5})
    runner = DeviceRunner(cfg.devices[0], cfg, Topics(cfg.topic_root, cfg.site), Outbox(), "boot1")

    async def until(predicate, what: str, timeout: float = 15.0) -> None:  # noqa: ANN001
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.05)

    states: list[str] = []
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(runner.run())
        await until(lambda: runner.last_sample is not None, "a first sample")
        first_seq = runner.last_sample.seq  # type: ignore[union-attr]
        assert runner.link_state is not None and runner.link_state.state == "connected"
        assert runner.link_state.rssi is not None
        t0 = time.monotonic()
        await drop_link(system_bus.bus_address, "hci0", mac(12))
        await until(lambda: runner.link_state is not None and runner.link_state.state != "connected", "the drop")
        states.append(runner.link_state.state)  # type: ignore[union-attr]
        await until(lambda: runner.link_state is not None and runner.link_state.state == "connected"
                    and runner.last_sample is not None and runner.last_sample.seq > first_seq + 1, "recovery", 20)
        recovered = time.monotonic() - t0
        task.cancel()
    assert states == ["disconnected"]
    assert recovered < 10, f"recovered after {recovered:.1f} s"


async def test_victron_smartshunt_characteristics_with_pin(peripheral) -> None:  # noqa: ANN001
    """The SmartShunt as BlueZ serves it: one GATT characteristic per value plus the keep-alive one, a
    passkey bond. Unmodified bleak -> BleLink (CharLink) -> VictronDriver: without `pin:` the first GATT
    write is a PairingFailed that says to set it; with the PIN the driver subscribes to every value,
    writes the keep-alive, reads every value, and the shunt's notifications arrive tagged."""
    from bmsbus.collector.links.base import CharLink
    from bmsbus.collector.links.gatt import char_tag
    from bmsbus.collector.protocols.victron import codec as vcodec

    dev = peripheral(VICTRON, "SmartShunt BLUEZ", "victron", cells=4, current=-3.217)
    entry = protocols.get("victron")
    assert entry.ble is not None
    pack = make_pack(cells=4, name="SmartShunt BLUEZ", seed=7)
    pack.current = -3.217
    async with asyncio.timeout(40):
        async with BleLink(mac(VICTRON), entry.ble, adapter="hci0", scan_timeout=5) as link:
            assert link.notifying == {}  # GattCharsSpec: nothing subscribed at connect
            with pytest.raises(PairingFailed, match="set `pin:`"):
                await entry.driver(link, DriverOptions(request_timeout=5)).open()
        link = BleLink(mac(VICTRON), entry.ble, adapter="hci0", pin=str(PASSKEY), scan_timeout=5)
        async with link:
            assert isinstance(link, CharLink) and link.paired_now
            driver = entry.driver(link, DriverOptions(request_timeout=5, options={"capacity_ah": pack.capacity}))
            info = await driver.open()
            reading = await driver.read()
            assert sorted(link.notifying.values()) == sorted(c.uuid for c in vcodec.VALUES)
            frame = await asyncio.wait_for(driver.next_frame(), 4)  # the first tick after the keep-alive
            assert frame.raw[:4] in {char_tag(c.uuid) for c in vcodec.VALUES}
            with pytest.raises(LinkError, match="has no write"):
                await link.write_char(vcodec.SOC.uuid, b"\x00\x00")
    stats = dev.stats()
    assert info.manufacturer == "Victron Energy"
    keepalive = [w for w in stats["writes"] if w[2] == vcodec.KEEPALIVE.uuid]
    assert keepalive and keepalive[0][:2] == [vcodec.KEEPALIVE_VALUE.hex(), "command"]  # without response
    assert sorted(set(stats["reads"])) == sorted(c.uuid for c in vcodec.VALUES)
    assert all(stats["subscribers"][c.uuid] >= 1 for c in vcodec.VALUES)
    assert stats["notified_bytes"] > 0
    assert reading["voltage"] == pytest.approx(pack.voltage, abs=0.006)
    assert reading["current"] == pytest.approx(-3.217, abs=1e-9)
    assert reading["power"] == pytest.approx(pack.power, abs=0.51)
    assert reading["soc"] == pytest.approx(pack.soc, abs=0.006)
    assert reading["charge"] == pytest.approx(pack.charge, abs=0.051)


async def test_the_collector_supervisor_reads_a_paired_victron_shunt(peripheral) -> None:  # noqa: ANN001
    """config `type: victron` with `pin:` -> factory -> BleLink (pairs) -> VictronDriver -> samples."""
    from bmsbus.collector.outbox import Outbox
    from bmsbus.collector.service import DeviceRunner
    from bmsbus.shared.config import Config
    from bmsbus.shared.topics import Topics

    peripheral(VICTRON_RUNNER, "SmartShunt RUNNER", "victron", cells=4, current=2.5)
    cfg = Config(devices=[{"type": "victron", "address": mac(VICTRON_RUNNER), "alias": "shunt", "adapter": "hci0",
                           "pin": str(PASSKEY), "options": {"capacity_ah": 100}}],
                 collector={"sample_period": 0.5})
    runner = DeviceRunner(cfg.devices[0], cfg, Topics(cfg.topic_root, cfg.site), Outbox(), "boot1")
    async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
        task = tg.create_task(runner.run())
        while runner.last_sample is None:
            await asyncio.sleep(0.05)
        task.cancel()
    sample = runner.last_sample
    pack = make_pack(cells=4, seed=7)
    assert runner.link_state is not None and runner.link_state.state == "connected"
    assert sample.current == pytest.approx(2.5) and sample.voltage == pytest.approx(pack.voltage, abs=0.006)
    assert sample.soc == pytest.approx(pack.soc, abs=0.006)
