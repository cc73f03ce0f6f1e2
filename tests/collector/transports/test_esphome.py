"""EsphomeLink through the real aioesphomeapi APIClient against emulated ESPHome Bluetooth proxies
(tests/support/esphome_proxy.py) serving fake BMSes backed by our emulators."""

from __future__ import annotations

import asyncio
import time

import pytest

from bmsbus.collector import protocols
from bmsbus.collector.driver import BleSpec, DriverOptions
from bmsbus.collector.emulation.base import make_pack
from bmsbus.collector.links.base import DeviceNotFound, LinkClosed, LinkError, LinkTimeout
from bmsbus.collector.links.esphome import EsphomeLink, ProxyAuthError, ProxyConfig, parse_ad
from support.esphome_proxy import FakeDevice, FakeProxy, ad_structures, noise_key

JK = protocols.get("jk")
ECHO = BleSpec(service="ffe0", notify="ffe1", write="ffe1", write_with_response=True)


def jk_device(address: str, name: str, rssi: int = -60, **kw: object) -> FakeDevice:
    assert JK.emulator is not None
    emulator = JK.emulator(make_pack(cells=16, name=name, seed=7))
    return FakeDevice(address, name, emulator, rssi=rssi, **kw)  # type: ignore[arg-type]


def config(*proxies: FakeProxy, psk: str | None = None) -> list[ProxyConfig]:
    return [ProxyConfig("127.0.0.1", p.port, noise_psk=psk or p.noise_psk, name=p.name) for p in proxies]


async def sample(link: EsphomeLink) -> dict:
    driver = JK.driver(link, DriverOptions())
    await driver.open()
    return await driver.read()


def test_advertisement_parsing() -> None:
    name, uuids, mfr = parse_ad(ad_structures("JK_B2A24S15P", ["ffe0"], {0x0B65: b"\x01\x02"}))
    assert name == "JK_B2A24S15P"
    assert uuids == ("0000ffe0-0000-1000-8000-00805f9b34fb",)
    assert mfr == {0x0B65: b"\x01\x02"}


async def test_jk_frames_through_a_noise_proxy() -> None:
    """Noise-encrypted API, device found by its advertised name, split JK characteristics, CCCD written
    by us, writes without response, a full JK handshake and cell frame decoded."""
    key = noise_key(3)
    async with asyncio.timeout(20), FakeProxy(noise_psk=key) as proxy:
        dev = proxy.add(jk_device("C8:47:80:00:10:01", "JK_VIA_PROXY", split=True))
        link = EsphomeLink("JK_VIA_PROXY", JK.ble, config(proxy))  # type: ignore[arg-type]
        async with link:
            assert link.mac == dev.address and link.rssi == -60
            assert link.choice is not None and link.choice.notify.handle == 3 and link.choice.write.handle == 2
            reading = await sample(link)
        assert proxy.in_use == 0  # released on exit
    expected = make_pack(cells=16, name="JK_VIA_PROXY", seed=7)
    assert reading["cell_voltages"] == pytest.approx(expected.cell_voltages, abs=0.002)
    assert proxy.cccd_writes == [(dev.int_address, 4, b"\x01\x00")]
    assert dev.writes and not any(response for _, response in dev.writes)


async def test_wrong_key_and_missing_key_are_auth_errors() -> None:
    async with asyncio.timeout(20), FakeProxy(noise_psk=noise_key(3)) as proxy:
        proxy.add(jk_device("C8:47:80:00:10:02", "JK_KEYS"))
        with pytest.raises(ProxyAuthError, match="noise_psk"):
            wrong = config(proxy, psk=noise_key(9))
            async with EsphomeLink("JK_KEYS", JK.ble, wrong, scan_timeout=5):  # type: ignore[arg-type]
                pass
        plain = [ProxyConfig("127.0.0.1", proxy.port, name="no-key")]
        with pytest.raises(ProxyAuthError, match="noise_psk"):
            async with EsphomeLink("JK_KEYS", JK.ble, plain, scan_timeout=5):  # type: ignore[arg-type]
                pass


async def test_the_proxy_that_hears_best_is_used() -> None:
    async with asyncio.timeout(20), FakeProxy(name="garage", mac="AA:BB:CC:00:00:01") as far, \
            FakeProxy(name="cellar", mac="AA:BB:CC:00:00:02") as near:
        far.add(jk_device("C8:47:80:00:10:03", "JK_RSSI", rssi=-88))
        near.add(jk_device("C8:47:80:00:10:03", "JK_RSSI", rssi=-55))
        link = EsphomeLink("C8:47:80:00:10:03", JK.ble, config(far, near))  # type: ignore[arg-type]
        async with link:
            assert link.proxy is not None and link.proxy.cfg.name == "cellar"
            assert link.rssi == -55
            assert (await sample(link))["cell_voltages"]
        assert far.connect_requests == 0 and near.connect_requests == 1


async def test_slot_limit_is_never_exceeded_and_waiters_get_freed_slots() -> None:
    """Two slots, three devices wanting to connect at once: the third waits until one is released."""
    async with asyncio.timeout(30), FakeProxy(slots=2) as proxy:
        for i in range(3):
            proxy.add(FakeDevice(f"C8:47:80:00:20:0{i}", f"ECHO_{i}"))
        cfg = config(proxy)
        got: dict[int, float] = {}
        release = asyncio.Event()

        async def use(i: int, hold: bool) -> None:
            async with EsphomeLink(f"ECHO_{i}", ECHO, cfg, slot_timeout=20) as link:
                got[i] = time.monotonic()
                await link.send(f"hi {i}".encode())
                assert await asyncio.wait_for(link.receive(), 3) == f"hi {i}".encode()
                if hold:
                    await release.wait()

        async with asyncio.TaskGroup() as tg:
            tg.create_task(use(0, True))
            tg.create_task(use(1, True))
            while len(got) < 2:
                await asyncio.sleep(0.05)
            third = tg.create_task(use(2, False))
            await asyncio.sleep(1.0)
            assert 2 not in got, "the third link connected although both slots were taken"
            released_at = time.monotonic()
            release.set()
            await third
        assert got[2] - released_at < 2.0
        assert proxy.max_in_use == 2 and proxy.refused == 0


async def test_slots_held_by_someone_else_time_out_clearly() -> None:
    async with asyncio.timeout(20), FakeProxy(slots=1) as proxy:
        proxy.add(FakeDevice("C8:47:80:00:30:01", "ECHO_BUSY"))
        proxy.allocated[0x112233445566] = None  # type: ignore[assignment]  # Home Assistant holds the only slot
        with pytest.raises(LinkTimeout, match="no free connection slot"):
            async with EsphomeLink("ECHO_BUSY", ECHO, config(proxy), slot_timeout=1.0):
                pass
        assert proxy.connect_requests == 0


async def test_proxy_restart_closes_the_link_and_it_reconnects() -> None:
    async with asyncio.timeout(30), FakeProxy() as proxy:
        proxy.add(jk_device("C8:47:80:00:40:01", "JK_REBOOT"))
        link = EsphomeLink("C8:47:80:00:40:01", JK.ble, config(proxy))  # type: ignore[arg-type]
        async with link:
            await sample(link)
            await proxy.restart(down_for=0.5)
            with pytest.raises(LinkClosed, match="proxy"):
                while True:
                    await asyncio.wait_for(link.receive(), 5)
        t0 = time.monotonic()
        async with link:  # the supervisor enters it again
            reconnect = time.monotonic() - t0
            assert (await sample(link))["cell_voltages"]
        assert proxy.api_connections == 2
        assert reconnect < 5.0


async def test_device_dropping_off_the_proxy_is_link_closed() -> None:
    async with asyncio.timeout(20), FakeProxy() as proxy:
        proxy.add(FakeDevice("C8:47:80:00:50:01", "ECHO_DROP"))
        async with EsphomeLink("ECHO_DROP", ECHO, config(proxy)) as link:
            proxy.drop_device("C8:47:80:00:50:01")
            with pytest.raises(LinkClosed, match="device disconnected"):
                await asyncio.wait_for(link.receive(), 3)
            with pytest.raises(LinkClosed):
                await link.send(b"x")
        assert proxy.in_use == 0


async def test_a_device_no_proxy_hears() -> None:
    async with asyncio.timeout(20), FakeProxy() as proxy:
        with pytest.raises(DeviceNotFound, match="no proxy heard"):
            async with EsphomeLink("NOT_THERE", ECHO, config(proxy), scan_timeout=1.0):
                pass


async def test_the_collector_supervisor_over_a_proxy_that_reboots() -> None:
    """The lead's DeviceRunner with a device routed to a proxy through `options` (until config.py has
    `collector.esphome_proxies`): samples flow, the proxy reboots, the runner is back on its own."""
    from bmsbus.collector.outbox import Outbox
    from bmsbus.collector.service import DeviceRunner
    from bmsbus.shared.config import Config
    from bmsbus.shared.topics import Topics

    async def until(predicate, timeout: float = 15.0) -> None:  # noqa: ANN001
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.05)

    key = noise_key(5)
    async with FakeProxy(noise_psk=key) as proxy:
        proxy.add(jk_device("C8:47:80:00:60:01", "JK_SUPERVISED"))
        cfg = Config(devices=[{"type": "jk", "address": "C8:47:80:00:60:01", "alias": "shed", "transport": "esphome"}],
                     collector={"sample_period": 0.5, "esphome_proxies": [
                         {"host": "127.0.0.1", "port": proxy.port, "noise_psk": key}]})
        runner = DeviceRunner(cfg.devices[0], cfg, Topics(cfg.topic_root, cfg.site), Outbox(), "boot1")
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(runner.run())
            await until(lambda: runner.last_sample is not None)
            assert runner.link_state is not None and runner.link_state.rssi == -60
            seq = runner.last_sample.seq  # type: ignore[union-attr]
            await proxy.restart(down_for=0.5)
            await until(lambda: runner.link_state is not None and runner.link_state.state != "connected")
            await until(lambda: runner.link_state is not None and runner.link_state.state == "connected"
                        and runner.last_sample is not None and runner.last_sample.seq > seq + 1, 20)
            task.cancel()
        assert proxy.api_connections == 2 and proxy.in_use == 0


# --- characteristic-level access (CharLink): the Victron SmartShunt ------------------------------------

VICTRON = protocols.get("victron")


def shunt_device(address: str, name: str, current: float, **kw: object) -> FakeDevice:
    assert VICTRON.emulator is not None
    state = make_pack(cells=4, name=name, seed=11)
    state.current = current
    return FakeDevice(address, name, VICTRON.emulator(state), **kw)  # type: ignore[arg-type]


async def test_victron_characteristics_through_a_proxy() -> None:
    """Per-characteristic GATT through the real APIClient: nothing subscribed at connect, the driver
    subscribes to the five value characteristics (each CCCD written by us), writes the keep-alive to its
    own characteristic, reads every value by handle, and the shunt's notifications arrive tagged."""
    from bmsbus.collector.links.base import CharLink
    from bmsbus.collector.links.gatt import char_tag
    from bmsbus.collector.protocols.victron import codec as vcodec

    async with asyncio.timeout(20), FakeProxy() as proxy:
        dev = proxy.add(shunt_device("C8:47:80:00:70:01", "SmartShunt PROXY", current=-12.345))
        state = dev.emulator.state
        link = EsphomeLink("SmartShunt PROXY", VICTRON.ble, config(proxy))  # type: ignore[arg-type]
        async with link:
            assert isinstance(link, CharLink)
            assert link.notifying == {} and proxy.cccd_writes == []  # GattCharsSpec: nothing at connect
            driver = VICTRON.driver(link, DriverOptions(request_timeout=5, options={"capacity_ah": state.capacity}))
            info = await driver.open()
            reading = await driver.read()
            value_handles = {h for h, (u, _f) in dev.chars.items() if u != vcodec.KEEPALIVE.uuid}
            assert set(link.notifying) == value_handles
            assert sorted(h for _a, h, _v in proxy.cccd_writes) == sorted(h + 1 for h in value_handles)
            # the shunt notifies once its keep-alive is running (first tick): tagged chunks through receive()
            frame = await asyncio.wait_for(driver.next_frame(), 3)
            assert frame.raw[:4] in {char_tag(c.uuid) for c in vcodec.VALUES}
            with pytest.raises(LinkError, match="has no read characteristic"):
                await link.read_char(vcodec.KEEPALIVE.uuid)
        assert proxy.in_use == 0
    assert info.manufacturer == "Victron Energy"
    keepalive_handle = next(h for h, (u, _f) in dev.chars.items() if u == vcodec.KEEPALIVE.uuid)
    assert dev.char_writes[0] == (keepalive_handle, vcodec.KEEPALIVE_VALUE, False)
    assert set(dev.reads) == value_handles
    assert reading["voltage"] == pytest.approx(state.voltage, abs=0.006)
    assert reading["current"] == pytest.approx(-12.345, abs=1e-9)
    assert reading["power"] == pytest.approx(state.power, abs=0.51)
    assert reading["soc"] == pytest.approx(state.soc, abs=0.006)
    assert reading["charge"] == pytest.approx(state.charge, abs=0.051)


async def test_a_device_that_wants_a_bond_is_a_clear_pairing_error_through_a_proxy() -> None:
    from bmsbus.collector.links.base import PairingFailed

    async with asyncio.timeout(20), FakeProxy() as proxy:
        proxy.add(shunt_device("C8:47:80:00:70:02", "SmartShunt BONDED", current=1.0, bond_required=True))
        async with EsphomeLink("SmartShunt BONDED", VICTRON.ble, config(proxy)) as link:  # type: ignore[arg-type]
            with pytest.raises(PairingFailed, match="cannot pair with a PIN"):
                await VICTRON.driver(link, DriverOptions(request_timeout=3)).open()
