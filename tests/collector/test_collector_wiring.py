"""The collector's wiring of transports and supervision (issue #5), with real parts: a private Mosquitto,
serial devices on pseudo-terminals answered by our emulators, simulated devices decoded through the real
codecs, emulated ESPHome proxies spoken to by the real aioesphomeapi client, real subprocesses.
BLE through BlueZ (pairing refused, per-adapter connect turns) is in test_collector_wiring_ble.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import tty
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bmsbus.collector import protocols
from bmsbus.collector.emulation.base import make_pack
from bmsbus.collector.outbox import Outbox
from bmsbus.collector.protocols.jk import emulator as jk_emulator
from bmsbus.collector.service import Collector, Coordination, DeviceRunner, check
from bmsbus.shared.bus import Backoff, Bus
from bmsbus.shared.cli import main as bmsbus
from bmsbus.shared.config import Config, MqttConfig, parse_config
from bmsbus.shared.models import Command
from bmsbus.shared.topics import Topics
from support.esphome_proxy import FakeDevice, FakeProxy, noise_key
from support.services import running_tasks as running

ROOT = "bmsbus/v1/t"


# --- helpers ---------------------------------------------------------------------------------------

async def until(predicate: Callable[[], Any], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


def config(devices: list[dict], **collector: Any) -> Config:
    return parse_config({"site": "t", "collector": {"id": "c1", "sample_period": 0.3, **collector},
                         "devices": devices})


def runners(cfg: Config) -> dict[str, DeviceRunner]:
    """Device runners sharing one Coordination and outbox, as the Collector builds them (no broker)."""
    shared = Coordination(cfg)
    topics, outbox = Topics(cfg.topic_root, cfg.site), Outbox()
    return {d.id: DeviceRunner(d, cfg, topics, outbox, "boot1", shared) for d in cfg.devices}  # type: ignore[misc]


def with_broker(cfg: Config, mqtt: MqttConfig) -> Collector:
    cfg.mqtt = mqtt
    return Collector(cfg)


async def send(mqtt: MqttConfig, topic: str, payload: str) -> None:
    async with Bus(mqtt, client_id=f"test-sender-{time.monotonic_ns()}") as bus:
        await bus.publish(topic, payload)


def command(cid: str, switch: str, value: bool) -> str:
    now = time.time()
    return Command(id=cid, switch=switch, value=value, issued=now, expires=now + 30).to_json().decode()


class PtyDevice:
    """A serial BMS on a pseudo-terminal: the collector opens the slave path; the emulator answers on the master
    side `delay` s after each request. `busy` holds (request heard, answer written) loop times per request."""

    def __init__(self, emulator: Any, *, delay: float = 0.0) -> None:
        self.emulator = emulator
        self.delay = delay
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.busy: list[tuple[float, float]] = []
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.master, self._on_read)

    def _on_read(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except OSError:
            self.loop.remove_reader(self.master)
            return
        frames = self.emulator.receive(data)
        if frames:
            self.loop.call_later(self.delay, self._answer, frames, self.loop.time())

    def _answer(self, frames: list[bytes], heard: float) -> None:
        with contextlib.suppress(OSError):
            for frame in frames:
                os.write(self.master, frame)
        self.busy.append((heard, self.loop.time()))

    def close(self) -> None:
        self.loop.remove_reader(self.master)
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
async def pty_devices() -> AsyncIterator[Callable[..., PtyDevice]]:
    made: list[PtyDevice] = []

    def make(emulator: Any, **kw: Any) -> PtyDevice:
        made.append(PtyDevice(emulator, **kw))
        return made[-1]

    yield make
    for d in made:
        d.close()


# --- 2. config check ---------------------------------------------------------------------------------

def test_config_check_names_transport_problems_with_field_and_allowed_values() -> None:
    cfg = config([
        {"alias": "a", "type": "jk", "address": "/dev/ttyUSB0"},  # BLE protocol on a serial path
        {"alias": "b", "type": "jk_uart", "address": "C8:47:8C:E4:54:0F"},  # serial protocol on a MAC
        {"alias": "c", "type": "jk", "address": "JK_C", "transport": "esphome"},  # no proxies configured
        {"alias": "d", "type": "jk_uart", "address": "/dev/ttyUSB1", "transport": "ble"},
        {"alias": "e", "type": "jk_uart", "address": "serial"},  # batmon style without the port
        {"alias": "f", "type": "jk", "address": "JK_F", "proxy": "garage"},  # proxy on a BLE device
        {"alias": "g", "type": "simulated", "protocol": "jk_32s", "capture": True},  # no capture_dir
        {"alias": "h", "type": "jk_pb", "address": "/dev/ttyUSB2", "options": {"addresses": [1, 16]}},
    ])
    assert check(cfg) == [
        "devices[0].address: jk is a BLE protocol; it cannot run over a serial port ('/dev/ttyUSB0')",
        "devices[1].address: jk_uart needs a serial port as address (/dev/serial/by-id/..., COM3, "
        "socket://host:port); got 'C8:47:8C:E4:54:0F'",
        "devices[2].transport: esphome needs at least one proxy in collector.esphome_proxies (none configured)",
        "devices[3].transport: jk_uart has no BLE side; give a serial port as its address",
        "devices[4].adapter: `address: serial` needs the port in `adapter:` (e.g. /dev/serial/by-id/usb-FTDI_...)",
        "devices[5].proxy: only used with transport: esphome (this device uses ble)",
        "devices[6].capture: needs collector.capture_dir (the folder the capture files go to)",
        "devices[7].options.addresses: must be a list of pack addresses 1..15 (the packs' DIP switches), "
        "got [1, 16]",
    ]


def test_config_check_proxies_pins_and_good_configs() -> None:
    proxies = [{"name": "garage", "host": "10.0.0.9"}, {"host": "10.0.0.10", "port": 6054}]
    cfg = config([
        {"alias": "a", "type": "jk", "address": "JK_A", "transport": "esphome", "proxy": "cellar"},
        {"alias": "b", "type": "victron", "address": "E1:23:45:67:89:AB", "transport": "esphome", "pin": "123456"},
        {"alias": "ok1", "type": "jk", "address": "JK_OK", "transport": "esphome", "proxy": "garage"},
        {"alias": "ok2", "type": "jk", "address": "JK_OK2", "transport": "esphome", "proxy": "10.0.0.10:6054"},
        {"alias": "ok3", "type": "jk_uart", "address": "socket://10.0.0.7:8899"},
        {"alias": "ok4", "type": "jk", "address": "C8:47:8C:E4:54:0F", "adapter": "hci1", "keep_alive": False},
        {"alias": "ok5", "type": "jk_pb", "address": "/dev/ttyUSB3", "options": {"addresses": [1, 2, 3]}},
    ], esphome_proxies=proxies + [{"name": "garage", "host": "10.0.0.11"}])
    assert check(cfg) == [
        "devices[0].proxy: no ESPHome proxy named 'cellar'; allowed: garage, 10.0.0.10",
        "devices[1].pin: pairing with a PIN through an ESPHome proxy is not supported; use a local adapter "
        "(transport: ble) for this device",
        "collector.esphome_proxies[2].name: 'garage' is already used by esphome_proxies[0]; give each proxy its "
        "own name",
    ]


def test_bmsbus_config_check_prints_transport_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bmsbus.yaml"
    path.write_text("devices:\n  - {alias: garage, type: jk, address: JK_G, transport: esphome}\n")
    assert bmsbus(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: devices[0].transport: esphome needs at least one proxy in collector.esphome_proxies" in err


# --- 1 + 3. ESPHome proxies: one connection held by the collector; a refused key fails at once ------------

def jk_on_proxy(address: str, name: str, seed: int) -> FakeDevice:
    entry = protocols.get("jk")
    assert entry.emulator is not None
    return FakeDevice(address, name, entry.emulator(make_pack(cells=8, name=name, seed=seed)))


@pytest.mark.broker
async def test_devices_share_the_proxy_connection_the_collector_holds(mqtt_config, watcher_factory) -> None:
    """Two keep_alive: false devices through one proxy, connecting for every sample: the proxy's API connection
    is made once, by the collector, not once per device per sample."""
    async with asyncio.timeout(60), FakeProxy(name="garage", noise_psk=noise_key(4)) as proxy:
        proxy.add(jk_on_proxy("C8:47:80:00:50:01", "JK_P1", 1))
        proxy.add(jk_on_proxy("C8:47:80:00:50:02", "JK_P2", 2))
        cfg = config([{"alias": "p1", "type": "jk", "address": "JK_P1", "transport": "esphome",
                       "keep_alive": False},
                      {"alias": "p2", "type": "jk", "address": "C8:47:80:00:50:02", "transport": "esphome",
                       "proxy": "garage", "keep_alive": False}],
                     sample_period=0.5, esphome_proxies=[{"name": "garage", "host": "127.0.0.1",
                                                          "port": proxy.port, "noise_psk": noise_key(4)}])
        collector = with_broker(cfg, mqtt_config)
        assert check(cfg) == []
        async with watcher_factory(f"{ROOT}/#") as w, running(collector.run()):
            await w.wait_for(lambda: len(w.on("/bms/p1/sample")) >= 3 and len(w.on("/bms/p2/sample")) >= 3, 40,
                             "samples of both devices")
            assert collector.runners["p1"].connects >= 3 and collector.runners["p2"].connects >= 3
            assert proxy.api_connections == 1
            meta = w.json_on("/bms/p1/meta")[-1]
            assert meta["transport"] == "esphome" and "cell_ovp" in meta["settings"]
        assert proxy.in_use == 0


async def test_without_the_collector_holding_it_every_connect_makes_an_api_connection() -> None:
    """The control for the test above: the same runners, nobody holding the pool."""
    async with asyncio.timeout(40), FakeProxy(name="garage") as proxy:
        proxy.add(jk_on_proxy("C8:47:80:00:50:03", "JK_P3", 3))
        cfg = config([{"alias": "p3", "type": "jk", "address": "JK_P3", "transport": "esphome",
                       "keep_alive": False}],
                     sample_period=0.3, esphome_proxies=[{"name": "garage", "host": "127.0.0.1", "port": proxy.port}])
        runner = runners(cfg)["p3"]
        async with running(runner.run()):
            await until(lambda: runner.connects >= 2 and runner.seq >= 2, "two per-sample connects", 30)
        assert proxy.api_connections >= 2


async def test_a_refused_proxy_key_goes_straight_to_the_longest_backoff() -> None:
    async with asyncio.timeout(30), FakeProxy(name="garage", noise_psk=noise_key(5)) as proxy:
        proxy.add(jk_on_proxy("C8:47:80:00:50:04", "JK_KEY", 4))
        cfg = config([{"alias": "k", "type": "jk", "address": "JK_KEY", "transport": "esphome"}],
                     esphome_proxies=[{"name": "garage", "host": "127.0.0.1", "port": proxy.port,
                                       "noise_psk": noise_key(6)}])
        runner = runners(cfg)["k"]
        async with runner.shared.hold_proxies(True), running(runner.run()):
            await until(lambda: runner.retry_in is not None, "the first failure", 20)
            link = runner.link_state
            assert link is not None and runner.failures == 1
            assert link.state == "failed" and not link.ok  # at once, not after three tries
            assert "noise_psk" in (link.last_error or "") and "retrying cannot fix this" in (link.last_error or "")
            assert runner.retry_in >= 0.8 * runner.backoff.cap
            await asyncio.sleep(1.0)
            assert runner.failures == 1 and proxy.connect_requests == 0  # no spinning


# --- 4 + 8. keep_alive: false; settings in meta; commands between samples ---------------------------

@pytest.mark.broker
async def test_keep_alive_false_connects_per_sample_and_commands_connect_for_themselves(
        mqtt_config, watcher_factory) -> None:
    cfg = config([{"alias": "p1", "type": "simulated", "protocol": "jk_32s", "cells": 8, "keep_alive": False},
                  {"alias": "p2", "type": "simulated", "protocol": "jk_uart", "cells": 4}])
    collector = with_broker(cfg, mqtt_config)
    p1 = collector.runners["p1"]
    async with watcher_factory(f"{ROOT}/#") as w, running(collector.run()):
        await w.wait_for(lambda: len(w.on("/bms/p1/sample")) >= 4 and len(w.on("/bms/p2/sample")) >= 2, 30,
                         "samples")
        assert p1.connects >= 4 and collector.runners["p2"].connects == 1
        assert [s["seq"] for s in w.json_on("/bms/p1/sample")][:4] == [0, 1, 2, 3]
        # Connecting per sample is not a link going up and down: `connected` once, nothing after it
        # (a `connecting` before it may have been superseded in the outbox before the broker was up).
        for bms in ("p1", "p2"):
            states = [m["state"] for m in w.json_on(f"/bms/{bms}/link")]
            assert states[-1] == "connected" and states.count("connected") == 1 and len(states) <= 2, states
        assert len(w.on("/bms/p1/meta")) == 1  # retained meta is not re-sent for every connect
        assert "cell_ovp" in w.json_on("/bms/p1/meta")[0]["settings"]
        assert w.json_on("/bms/p2/meta")[0]["settings"] == []  # jk_uart declares no writable settings

        await send(mqtt_config, f"{ROOT}/bms/p1/cmd", command("c-ka", "charge", False))
        await w.wait_for(lambda: w.json_on("/bms/p1/cmd/result"), 20, "the command result")
        result = w.json_on("/bms/p1/cmd/result")[0]
        assert (result["status"], result["readback"]) == ("ok", False), result
        n = len(w.on("/bms/p1/sample"))
        await w.wait_for(lambda: len(w.on("/bms/p1/sample")) >= n + 2, 20, "samples after the command")
        # The next connects reach the same emulated BMS, which kept the new switch state.
        assert w.json_on("/bms/p1/sample")[-1]["switches"]["charge"] is False


# --- 5. concurrent_sampling: false --------------------------------------------------------------------

@pytest.mark.parametrize("concurrent", [False, True], ids=["one-at-a-time", "concurrent"])
async def test_concurrent_sampling_false_reads_one_device_at_a_time(pty_devices, concurrent: bool) -> None:
    """Two serial BMSes that take 0.25 s to answer. Off: no request reaches one while the other is still
    answering; on (the default, the control): they overlap."""
    entry = protocols.get("jk_uart")
    assert entry.emulator is not None
    a = pty_devices(entry.emulator(make_pack(cells=4, seed=1)), delay=0.25)
    b = pty_devices(entry.emulator(make_pack(cells=4, seed=2)), delay=0.25)
    cfg = config([{"alias": "a", "type": "jk_uart", "address": a.path},
                  {"alias": "b", "type": "jk_uart", "address": b.path}],
                 sample_period=0.3, concurrent_sampling=concurrent)
    rs = runners(cfg)
    async with asyncio.timeout(30), running(*(r.run() for r in rs.values())):
        await until(lambda: len(a.busy) >= 6 and len(b.busy) >= 6, "reads of both devices", 20)
    windows = sorted(a.busy[1:] + b.busy[1:])  # the first of each is driver.open(), not a sampling read
    overlaps = sum(1 for (s1, e1), (s2, _) in zip(windows, windows[1:], strict=False) if s2 < e1 - 0.01)
    if concurrent:
        assert overlaps > 0, windows
    else:
        assert overlaps == 0, windows


# --- 6. capture and replay -------------------------------------------------------------------------------

async def test_capture_writes_what_a_device_sends_and_replay_decodes_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config([{"alias": "garage", "type": "simulated", "protocol": "jk_32s", "cells": 8, "capture": True},
                  {"alias": "quiet", "type": "simulated", "protocol": "jk_32s", "cells": 8}],
                 capture_dir=str(tmp_path / "captures"), capture_max_bytes=20_000, capture_keep=2)
    rs = runners(cfg)
    garage = rs["garage"]
    assert garage.capture is not None and rs["quiet"].capture is None
    assert (garage.capture.capture.max_bytes, garage.capture.capture.backups) == (20_000, 2)
    async with asyncio.timeout(30), running(garage.run(), rs["quiet"].run()):
        await until(lambda: garage.seq >= 3, "three samples", 20)
        published = garage.last_sample
    assert published is not None
    files = sorted(p.name for p in (tmp_path / "captures").iterdir())
    assert files[0] == "garage.jsonl" and "quiet.jsonl" not in files
    lines = [json.loads(x) for x in (tmp_path / "captures" / "garage.jsonl").read_text().splitlines()]
    assert lines[0]["device"] == "garage" and lines[0]["protocol"] == "jk_32s" and lines[0]["transport"] == "emulated"
    assert {x["dir"] for x in lines[1:]} == {"rx", "tx"}

    assert bmsbus(["replay", *sorted(str(p) for p in (tmp_path / "captures").glob("garage.jsonl*"))[::-1]]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["type"] == "jk_32s"
    cells = [f["cell_voltages"] for f in out["frames"] if "cell_voltages" in f]
    assert len(cells) >= 3
    assert any(c == pytest.approx(published.cell_voltages, abs=0.003) for c in cells)  # type: ignore[attr-defined]


async def test_a_capture_that_cannot_be_written_never_stops_sampling(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the capture folder should be")
    cfg = config([{"alias": "garage", "type": "simulated", "protocol": "jk_32s", "cells": 8, "capture": True}],
                 capture_dir=str(blocker))
    runner = runners(cfg)["garage"]
    async with asyncio.timeout(20), running(runner.run()):
        await until(lambda: runner.seq >= 3, "samples despite the capture failing", 15)
    assert runner.capture is not None and runner.capture.error and runner.failures == 0
    assert runner.connects == 1


# --- 7. a driver's background() -----------------------------------------------------------------------

def background_tasks(bms: str) -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == f"background:{bms}" and not t.done()]


async def test_driver_background_runs_for_the_session_and_ends_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Victron's background() keeps the shunt's keep-alive going between reads far apart; it lives exactly as
    long as the session: one task while connected, none after the link drops, a new one after reconnecting."""
    from bmsbus.collector.protocols.victron.driver import VictronDriver

    monkeypatch.setattr(VictronDriver, "keepalive_interval", 0.2)
    cfg = config([{"alias": "shunt", "type": "simulated", "protocol": "victron", "sample_period": 30}])
    runner = runners(cfg)["shunt"]
    runner.backoff = Backoff(first=0.2, factor=1.0, cap=0.2)
    async with asyncio.timeout(30), running(runner.run()):
        await until(lambda: runner.seq >= 1, "the first sample")
        emulator = runner.driver.link.emulator.inner  # type: ignore[union-attr]  # the VictronEmulator
        first = emulator.keepalive_writes
        await asyncio.sleep(1.5)
        assert emulator.keepalive_writes >= first + 4, "keep-alives between reads come from background()"
        assert runner.seq == 1  # no read in between: the reads are 30 s apart
        [task] = background_tasks("shunt")

        runner.driver.link._lost("radio link dropped")  # type: ignore[union-attr]
        await until(lambda: task.done(), "the old background task to end", 5)
        await until(lambda: runner.connects == 2 and background_tasks("shunt"), "the reconnect", 10)
        [again] = background_tasks("shunt")
        assert again is not task and runner.failures == 0
        assert "background task ended" in (runner.link_state.last_error or "") or runner.link_state.state == \
            "connected"  # type: ignore[union-attr]
    assert background_tasks("shunt") == []


# --- 9. JK-PB multi-pack ----------------------------------------------------------------------------------

def pack_of(bus: Any, cells: list[float]) -> str:
    """The emulated pack whose cells these are (each pack has its own seed)."""
    def distance(slave: Any) -> float:
        return sum(abs(x - y) for x, y in zip(slave.state.cell_voltages, cells, strict=True))

    return min(bus.slaves, key=distance).state.name


@pytest.mark.broker
async def test_jk_pb_bus_publishes_every_pack_under_its_name(mqtt_config, watcher_factory, pty_devices) -> None:
    bus = jk_emulator.make_bus(slaves=3, cells=8, seed=10)
    port = pty_devices(bus)
    device = {"alias": "rack", "type": "jk_pb", "address": port.path,
              "options": {"addresses": [1, 2, 3], "master_timeout": 0.3}}
    expected = ["rack_pack-1", "rack_pack-2", "rack_pack-3"]

    async def run_collector(w: Any) -> dict[str, Any]:
        collector = with_broker(config([device], sample_period=0.5), mqtt_config)
        async with running(collector.run()):
            await w.wait_for(lambda: all(len(w.on(f"/bms/{b}/sample")) >= 2 for b in expected), 40, "every pack")
            await w.wait_for(lambda: sorted(d["bms"] for d in w.json_on("/collector/c1/birth")[-1]["devices"])
                             == expected, 10, "a birth listing every pack")
        return {b: (w.json_on(f"/bms/{b}/sample"), w.json_on(f"/bms/{b}/meta")[-1], w.json_on(f"/bms/{b}/link"))
                for b in expected}

    async with asyncio.timeout(120):
        async with watcher_factory(f"{ROOT}/#") as w:
            seen = await run_collector(w)
            births = w.json_on("/collector/c1/birth")
        assert births[0]["devices"] == []  # nothing heard yet at start; re-published as packs appear
        assert len(births) >= 2
        for bms, (samples, meta, links) in seen.items():
            name = bms.removeprefix("rack_")
            assert [s["seq"] for s in samples[:2]] == [0, 1]
            assert pack_of(bus, samples[-1]["cell_voltages"]) == name
            assert meta["extra"]["bus_address"] == name[-1] and meta["protocol"] == "jk_pb"
            assert links[-1]["state"] == "connected"
        assert "rack" not in {t.split("/")[4] for t, _, _ in w.messages if "/bms/" in t}  # the bus is no bms

        # Swap the DIP addresses of packs 2 and 3: after a restart each keeps its id, found by its name.
        bus.slaves[1].address, bus.slaves[2].address = 3, 2
        async with watcher_factory(f"{ROOT}/#") as w2:
            again = await run_collector(w2)
        for bms, (samples, meta, _) in again.items():
            name = bms.removeprefix("rack_")
            assert pack_of(bus, samples[-1]["cell_voltages"]) == name
        assert again["rack_pack-2"][1]["extra"]["bus_address"] == "3"
        assert again["rack_pack-3"][1]["extra"]["bus_address"] == "2"


# --- 10. bt_power_cycle -----------------------------------------------------------------------------------

@pytest.fixture
def no_system_bus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """BLE devices fail at once: there is no system D-Bus at this address."""
    from bleak_retry_connector.bleak_manager import _reset_dbus_socket_cache

    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path / 'no-bus.sock'}")
    _reset_dbus_socket_cache()
    yield
    _reset_dbus_socket_cache()


async def test_bt_power_cycle_runs_once_per_adapter_after_repeated_failures(tmp_path: Path, no_system_bus) -> None:
    marker = tmp_path / "power-cycles.txt"
    record = [sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + '\\n')", str(marker),
              "{adapter}"]
    cfg = config([{"alias": "a1", "type": "jk", "address": "C8:47:80:00:60:01", "adapter": "hci3"},
                  {"alias": "a2", "type": "jk", "address": "C8:47:80:00:60:02", "adapter": "hci3"},
                  {"alias": "b1", "type": "jk", "address": "C8:47:80:00:60:03", "adapter": "hci4"},
                  {"alias": "serial", "type": "jk_uart", "address": str(tmp_path / "no-such-port")}],
                 bt_power_cycle=3, bt_power_cycle_command=record)
    rs = runners(cfg)
    for r in rs.values():
        r.backoff = Backoff(first=0.2, factor=1.0, cap=0.2, jitter=0.0)
    a1 = rs["a1"]
    async with asyncio.timeout(30):
        async with running(a1.run()):
            await until(lambda: a1.failures == 2, "two failures")
            assert "system D-Bus" in (a1.link_state.last_error or "")  # type: ignore[union-attr]
            assert not marker.exists()
            await until(marker.exists, "the power cycle", 10)
            assert a1.failures >= 3
        async with running(*(r.run() for r in rs.values())):
            await until(lambda: all(r.failures >= 6 for r in rs.values()), "many more failures", 20)
    assert sorted(marker.read_text().split()) == ["hci3", "hci4"]  # once per adapter per 5 minutes
    assert a1.shared.power_cycles == 2


async def test_a_silent_jk_pb_bus_ends_up_failed(pty_devices) -> None:
    """The port opens, but no pack ever answers: that is a failing device, not one that keeps `connecting`."""
    port = pty_devices(jk_emulator.JkPbBusEmulator([]))  # a bus with nobody on it
    cfg = config([{"alias": "rack", "type": "jk_pb", "address": port.path,
                   "options": {"addresses": [1], "master_timeout": 0.1}}], sample_period=0.1)
    runner = runners(cfg)["rack"]
    runner.BUS_SILENCE = 0.5
    runner.backoff = Backoff(first=0.05, factor=1.0, cap=0.05)
    async with asyncio.timeout(20), running(runner.run()):
        await until(lambda: runner.failures >= 3, "three failures", 15)
        assert runner.link_state is not None and runner.link_state.state == "failed"
        assert "no pack heard on the JK-PB bus" in (runner.link_state.last_error or "")
    assert runner.packs == {} and runner.birth_devices() == []


async def test_a_driver_bug_costs_its_device_a_reconnect_not_the_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception no driver should raise (here a KeyError from a read) is logged with its traceback and
    handled like a link failure: that device reconnects, the others never notice."""
    from bmsbus.collector.protocols.jk.driver import Jk24sDriver

    real_read = Jk24sDriver.read
    calls = {"n": 0}

    async def buggy_read(self: Jk24sDriver) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyError("cell_count")
        return await real_read(self)

    monkeypatch.setattr(Jk24sDriver, "read", buggy_read)
    cfg = config([{"alias": "buggy", "type": "simulated", "protocol": "jk_24s", "cells": 4},
                  {"alias": "fine", "type": "simulated", "protocol": "jk_32s", "cells": 4}])
    rs = runners(cfg)
    for r in rs.values():
        r.backoff = Backoff(first=0.1, factor=1.0, cap=0.1)
    async with asyncio.timeout(20), running(*(r.run() for r in rs.values())) as tasks:
        await until(lambda: rs["buggy"].connects >= 2 and rs["buggy"].seq >= 3, "the reconnect and more samples")
        assert rs["fine"].connects == 1 and rs["fine"].failures == 0
        assert not any(t.done() for t in tasks)
