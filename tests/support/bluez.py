"""BlueZ without Bluetooth: a private dbus-daemon, BlueZoo (an `org.bluez` mock) and fake BMS peripherals.

The collector's BLE code runs unmodified bleak (BlueZ D-Bus backend) against this; the only thing fake is
the radio. Three kinds of process, each started in the test's temp dir and stopped by PID:

- `dbus-daemon` on a private socket; `DBUS_SYSTEM_BUS_ADDRESS` points bleak (dbus-fast) and sdbus at it.
- BlueZoo, started through `python bluez.py zoo` so a few behaviours real BlueZ has can be patched in:
  passkey pairing through the registered agent (`--passkey ADDR=123456`; plain BlueZoo only knows
  "Just Works" and silently ignores other agents), GATT writes refused with ATT "Insufficient
  Authentication" until such a device is paired, and GATT objects torn down on disconnect (so a
  reconnect exports them afresh instead of doubling every notification).
- `python bluez.py peripheral`: a GATT application + LE advertisement registered over sdbus on its own
  BlueZoo adapter (one peripheral per adapter; the adapter address is the device address), backed by
  one of OUR emulators (`--protocol jk` -> protocols.REGISTRY["jk"].emulator) or by `echo`. Writes go to
  `emulator.receive()`, its frames come back as 20-byte notifications (PropertiesChanged on Value),
  `emulator.tick()` runs every second. Control lines on stdin: `stats` (prints a JSON line), `quit`.
  An emulator that declares a GATT table (`SERVICE`, `GATT` = ((uuid, flags), ...), the Victron shunt)
  is served characteristic by characteristic instead: ReadValue of a characteristic = `receive(tag)`,
  WriteValue = `receive(tag + value)` (tag = the UUID's 4-byte prefix), and every tagged frame the
  emulator emits becomes a notification of the characteristic its tag names.

BlueZoo gives every device RSSI 0 and an MTU of 23; manufacturer data is not carried (its
LEAdvertisement signature differs from BlueZ's), so scan tests match on names and service UUIDs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

HERE = Path(__file__).resolve()
SUPPORT_DIR = HERE.parent
TESTS_DIR = SUPPORT_DIR.parent


def missing() -> str | None:
    """Why the BlueZ fakes cannot run here, or None when they can."""
    if shutil.which("dbus-daemon") is None:
        return "dbus-daemon is not installed (apt-get install dbus-daemon)"
    try:
        import bluezoo  # noqa: F401
        import sdbus  # noqa: F401
    except ImportError as exc:
        return f"bluezoo/sdbus are not installed ({exc}); pip install bluezoo"
    return None


def mac(index: int, prefix: str = "C8:47:80:00:00") -> str:
    return f"{prefix}:{index:02X}"


def _read_line(stream: IO[str], proc: subprocess.Popen[str], what: str, timeout: float, log: Path) -> str:
    """The next stdout line of a child, or a clear error with its log when it died or hung."""
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(stream, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise TimeoutError(f"{what} did not answer in {timeout} s; log: {log.read_text()[-2000:]}")
    finally:
        sel.close()
    line = stream.readline()
    if not line:
        proc.wait(2)
        raise RuntimeError(f"{what} exited ({proc.returncode}); log: {log.read_text()[-2000:]}")
    return line.strip()


def _stop(proc: subprocess.Popen | None, timeout: float = 5.0) -> None:
    if proc is None:
        return
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


@dataclass
class BluezStack:
    """dbus-daemon + patched BlueZoo with the given adapters (hci0, hci1, ... in order), all powered."""

    workdir: Path
    adapters: list[str]
    passkeys: dict[str, int] = field(default_factory=dict)  # peripheral address -> passkey it demands
    rssi: dict[str, int] = field(default_factory=dict)  # peripheral address -> RSSI the centrals see
    dbus: subprocess.Popen[bytes] | None = None
    zoo: subprocess.Popen[str] | None = None

    @property
    def bus_address(self) -> str:
        return f"unix:path={self.workdir / 'bus.sock'}"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DBUS_SYSTEM_BUS_ADDRESS"] = self.bus_address
        env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")])
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self) -> BluezStack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        sock = self.workdir / "bus.sock"
        conf = self.workdir / "bus.conf"
        conf.write_text(
            "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n"
            " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
            f"<busconfig><listen>unix:path={sock}</listen><auth>EXTERNAL</auth>"
            "<policy context=\"default\"><allow send_destination=\"*\" eavesdrop=\"true\"/>"
            "<allow eavesdrop=\"true\"/><allow own=\"*\"/></policy></busconfig>\n")
        dbus_log = open(self.workdir / "dbus.log", "ab")  # noqa: SIM115 - the child owns it
        self.dbus = subprocess.Popen(["dbus-daemon", f"--config-file={conf}", "--nofork", "--nopidfile"],
                                     stdout=dbus_log, stderr=dbus_log, cwd=self.workdir)
        dbus_log.close()
        deadline = time.monotonic() + 5
        while not sock.exists():
            if self.dbus.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dbus-daemon did not start: {(self.workdir / 'dbus.log').read_text()}")
            time.sleep(0.02)
        args = [sys.executable, str(HERE), "zoo"]
        for a in self.adapters:
            args += ["-a", a]
        for addr, key in self.passkeys.items():
            args += ["--passkey", f"{addr}={key}"]
        for addr, value in self.rssi.items():
            args += ["--rssi", f"{addr}={value}"]
        log = self.workdir / "bluezoo.log"
        with open(log, "ab") as err:
            self.zoo = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.PIPE,
                                        env=self.env, cwd=self.workdir, text=True)
        line = _read_line(self.zoo.stdout, self.zoo, "bluezoo", 15, log)  # type: ignore[arg-type]
        if line != "READY":
            raise RuntimeError(f"bluezoo said {line!r}")
        return self

    def stop(self) -> None:
        _stop(self.zoo)
        _stop(self.dbus)
        self.zoo = self.dbus = None

    def peripheral(self, adapter: int, *, name: str, protocol: str = "echo", **kw: object) -> Peripheral:
        return Peripheral(self, adapter, name=name, protocol=protocol, **kw).start()  # type: ignore[arg-type]


@dataclass
class Peripheral:
    """A fake BMS on adapter `hci{adapter}` of a running BluezStack (see module docstring)."""

    stack: BluezStack
    adapter: int
    name: str
    protocol: str = "echo"
    service: str = "ffe0"
    notify: str = "ffe1"
    write: str = "ffe1"
    split: bool = False  # two characteristics with the same UUID: write-only + notify-only (newer JK modules)
    gatt_delay: float = 0.0  # register the GATT application this long after advertising (empty GATT at first)
    cells: int = 16
    current: float = 0.0  # A (+ = charging) of the emulated pack
    proc: subprocess.Popen[str] | None = None

    @property
    def address(self) -> str:
        return self.stack.adapters[self.adapter]

    def start(self) -> Peripheral:
        args = [sys.executable, str(HERE), "peripheral", "--adapter", f"hci{self.adapter}", "--name", self.name,
                "--protocol", self.protocol, "--service", self.service, "--notify", self.notify,
                "--write", self.write, "--gatt-delay", str(self.gatt_delay), "--cells", str(self.cells),
                "--current", str(self.current)]
        if self.split:
            args.append("--split")
        self.log = self.stack.workdir / f"peripheral-hci{self.adapter}.log"
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stdin=subprocess.PIPE, stderr=err,
                                         env=self.stack.env, cwd=self.stack.workdir, text=True)
        assert self.proc.stdout is not None
        line = _read_line(self.proc.stdout, self.proc, f"peripheral {self.name}", 20, self.log)
        if line != "READY":
            raise RuntimeError(f"peripheral said {line!r}")
        return self

    def stats(self) -> dict:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        assert self.proc.stdout is not None
        return json.loads(_read_line(self.proc.stdout, self.proc, "peripheral stats", 5, self.log))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(3)
            except (OSError, subprocess.TimeoutExpired):
                pass
        _stop(self.proc)
        self.proc = None


async def drop_link(bus_address: str, adapter: str, address: str) -> None:
    """What BlueZ does when the radio link drops: Disconnect the device object on the central's
    adapter from a connection that is not bleak's, so bleak sees an unexpected Connected=False."""
    from dbus_fast import Message, MessageType
    from dbus_fast.aio import MessageBus

    bus = await MessageBus(bus_address=bus_address).connect()
    try:
        reply = await bus.call(Message(destination="org.bluez", interface="org.bluez.Device1",
                                       path=f"/org/bluez/{adapter}/dev_{address.upper().replace(':', '_')}",
                                       member="Disconnect"))
        assert reply is not None and reply.message_type == MessageType.METHOD_RETURN, reply and reply.body
    finally:
        bus.disconnect()


# ------------------------------------------------------------------------------------------------------
# Child processes. Everything below runs in `python bluez.py zoo|peripheral`, not in the test process.
# ------------------------------------------------------------------------------------------------------

def _zoo_main(argv: list[str]) -> None:
    import argparse
    import asyncio
    import logging
    import random

    import sdbus
    from bluezoo import bluezoo as bz
    from bluezoo import exceptions as bzerr
    from bluezoo.device import Device
    from bluezoo.gatt.characteristic import GattCharacteristicClientLink

    p = argparse.ArgumentParser()
    p.add_argument("-a", dest="adapters", action="append", default=[])
    p.add_argument("--passkey", action="append", default=[], help="ADDR=123456: this peripheral wants a passkey")
    p.add_argument("--rssi", action="append", default=[], help="ADDR=-70: signal strength seen for this device")
    args = p.parse_args(argv)
    passkeys = {k.upper(): int(v) for k, v in (x.split("=", 1) for x in args.passkey)}
    rssis = {k.upper(): int(v) for k, v in (x.split("=", 1) for x in args.rssi)}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    log = logging.getLogger("bluezoo-patch")

    async def pair(self: Device) -> None:
        """SMP as seen from D-Bus: Just Works for ordinary devices; for a passkey device ask the default
        agent (RequestPasskey), compare, and fail with AuthenticationFailed like BlueZ does."""
        wanted = passkeys.get(self.address.upper())
        agent = self.adapter.mock.root.agent
        if wanted is not None:
            if agent is None or agent.capability in ("NoInputNoOutput", "DisplayOnly"):
                raise bzerr.DBusBluezAuthenticationFailedError("Authentication Failed (no agent can enter a passkey)")
            try:
                got = await agent.RequestPasskey(self.get_object_path())
            except sdbus.DbusFailedError as exc:
                raise bzerr.DBusBluezAuthenticationRejectedError(f"Authentication Rejected: {exc}") from None
            if int(got) != wanted:
                log.info("passkey %06d for %s is wrong", int(got), self)
                raise bzerr.DBusBluezAuthenticationFailedError("Authentication Failed")
        self.peer.paired = True
        self.peer.bonded = True
        await self.peer_adapter.add_device(self.peer)
        await self.Paired.set_async(True)
        await self.Bonded.set_async(True)
        log.info("paired %s", self)

    original_disconnect = Device.disconnect

    async def disconnect(self: Device, uuid: str | None = None) -> None:
        for link in list(self.services.values()):
            sub = getattr(link, "client_props_changed_subscription", None)
            if sub is not None:
                sub.unsubscribe()
            try:
                self.peer_adapter.mock.remove_object(link)
            except KeyError:
                pass
        self.services.clear()
        self.services_resolved = False
        await original_disconnect(self, uuid)

    mangled = "_GattCharacteristicClientLink__prepare_options"  # a private helper of ReadValue / WriteValue
    original_prepare = getattr(GattCharacteristicClientLink, mangled)

    def prepare_options(self: GattCharacteristicClientLink, options: dict) -> dict:
        device = self.service.device
        if device.address.upper() in passkeys and not device.paired:
            raise bzerr.DBusBluezFailedError("Operation failed with ATT error: 0x05 (Insufficient Authentication)")
        return original_prepare(self, options)

    from bluezoo.adapter import Adapter

    original_add_device = Adapter.add_device

    async def add_device(self: Adapter, device: Device) -> None:
        """Every scan round re-reports RSSI (with a little jitter), as a radio does: bleak only hears
        about a device on InterfacesAdded or PropertiesChanged, and BlueZoo emits neither for a device
        it already knows, so a scan started after the first sighting would never see it."""
        base = rssis.get(device.address.upper(), -60)
        path = f"{self.get_object_path()}/dev_{device.address.replace(':', '_')}"
        known = self.devices.get(path)
        if known is None:
            device.rssi = base
        await original_add_device(self, device)
        if known is not None and not known.connected:
            known.rssi = base + random.choice((-1, 0, 1))
            known.properties_changed.emit(("org.bluez.Device1", {"RSSI": ("n", known.rssi)}, []))

    Adapter.add_device = add_device  # type: ignore[method-assign]
    Device.pair = pair  # type: ignore[method-assign]
    Device.disconnect = disconnect  # type: ignore[method-assign]
    setattr(GattCharacteristicClientLink, mangled, prepare_options)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(bz.startup(bus="system", adapters=[bz.BluetoothAddress(a) for a in args.adapters],
                                       auto_enable=True, scan_interval=1))
    loop.run_until_complete(asyncio.sleep(0.1))  # let the powering-on background tasks run

    def parent_gone() -> None:  # stdin closes when the test process ends, however it ends
        if not os.read(sys.stdin.fileno(), 1024):
            loop.stop()

    loop.add_reader(sys.stdin.fileno(), parent_gone)
    print("READY", flush=True)
    loop.run_forever()


def _peripheral_main(argv: list[str]) -> None:
    import argparse
    import asyncio
    import logging

    import sdbus
    from sdbus import DbusInterfaceCommonAsync, DbusPropertyEmitsChangeFlag, dbus_method_async, dbus_property_async

    p = argparse.ArgumentParser()
    p.add_argument("--adapter", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--protocol", default="echo")
    p.add_argument("--service", default="ffe0")
    p.add_argument("--notify", default="ffe1")
    p.add_argument("--write", default="ffe1")
    p.add_argument("--split", action="store_true")
    p.add_argument("--gatt-delay", type=float, default=0.0)
    p.add_argument("--cells", type=int, default=16)
    p.add_argument("--current", type=float, default=0.0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    log = logging.getLogger("peripheral")

    def uuid128(u: str) -> str:
        u = u.lower()
        return f"0000{u}-0000-1000-8000-00805f9b34fb" if len(u) == 4 else u

    class Service(DbusInterfaceCommonAsync, interface_name="org.bluez.GattService1"):
        def __init__(self, uuid: str) -> None:
            super().__init__()
            self._uuid = uuid

        @dbus_property_async("s")
        def UUID(self) -> str:
            return self._uuid

        @dbus_property_async("b")
        def Primary(self) -> bool:
            return True

    class Characteristic(DbusInterfaceCommonAsync, interface_name="org.bluez.GattCharacteristic1"):
        def __init__(self, uuid: str, service: str, flags: list[str], on_write, on_read=None) -> None:  # noqa: ANN001
            super().__init__()
            self._uuid, self._service, self._flags, self._on_write = uuid, service, flags, on_write
            self._on_read = on_read
            self._value = b""
            self.subscribers = 0

        @dbus_method_async(input_signature="a{sv}", result_signature="ay", flags=sdbus.DbusUnprivilegedFlag)
        async def ReadValue(self, options: dict) -> bytes:
            return self._value if self._on_read is None else self._on_read(self)

        @dbus_method_async(input_signature="aya{sv}", result_signature="", flags=sdbus.DbusUnprivilegedFlag)
        async def WriteValue(self, value: bytes, options: dict) -> None:
            kind = options.get("type", ("s", "?"))[1]
            self._on_write(bytes(value), kind) if self._on_read is None else self._on_write(self, bytes(value), kind)

        @dbus_method_async(flags=sdbus.DbusUnprivilegedFlag)
        async def StartNotify(self) -> None:
            self.subscribers += 1

        @dbus_method_async(flags=sdbus.DbusUnprivilegedFlag)
        async def StopNotify(self) -> None:
            self.subscribers = max(0, self.subscribers - 1)

        @dbus_method_async(flags=sdbus.DbusUnprivilegedFlag)
        async def Confirm(self) -> None:
            pass

        @dbus_property_async("s")
        def UUID(self) -> str:
            return self._uuid

        @dbus_property_async("o")
        def Service(self) -> str:
            return self._service

        @dbus_property_async("as")
        def Flags(self) -> list[str]:
            return self._flags

        @dbus_property_async("ay", flags=DbusPropertyEmitsChangeFlag)
        def Value(self) -> bytes:
            return self._value

        @Value.setter_private
        def _set_value(self, value: bytes) -> None:
            self._value = value

    class Advertisement(DbusInterfaceCommonAsync, interface_name="org.bluez.LEAdvertisement1"):
        def __init__(self, name: str, uuids: list[str]) -> None:
            super().__init__()
            self._name, self._uuids = name, uuids

        @dbus_method_async(flags=sdbus.DbusUnprivilegedFlag)
        async def Release(self) -> None:
            pass

        @dbus_property_async("s")
        def Type(self) -> str:
            return "peripheral"

        @dbus_property_async("as")
        def ServiceUUIDs(self) -> list[str]:
            return self._uuids

        @dbus_property_async("s")
        def LocalName(self) -> str:
            return self._name

        @dbus_property_async("b")
        def Discoverable(self) -> bool:
            return True

    class GattManager(DbusInterfaceCommonAsync, interface_name="org.bluez.GattManager1"):
        @dbus_method_async(input_signature="oa{sv}", result_signature="")
        async def RegisterApplication(self, application: str, options: dict) -> None:
            raise NotImplementedError

    class AdvertisingManager(DbusInterfaceCommonAsync, interface_name="org.bluez.LEAdvertisingManager1"):
        @dbus_method_async(input_signature="oa{sv}", result_signature="")
        async def RegisterAdvertisement(self, path: str, options: dict) -> None:
            raise NotImplementedError

    emulator = None
    if args.protocol != "echo":
        from bmsbus.collector import protocols
        from bmsbus.collector.emulation.base import make_pack

        entry = protocols.get(args.protocol)
        assert entry.emulator is not None, f"{args.protocol} has no emulator"
        pack = make_pack(cells=args.cells, name=args.name, seed=7)
        pack.current = args.current
        emulator = entry.emulator(pack)

    stats: dict[str, object] = {"writes": [], "notified_bytes": 0, "reads": []}
    notify_queue: asyncio.Queue[bytes] = asyncio.Queue()
    gatt_table = getattr(emulator, "GATT", None)  # a characteristic-by-characteristic device (Victron)
    by_tag: dict[bytes, Characteristic] = {}

    def tag_of(uuid: str) -> bytes:
        return bytes.fromhex(uuid128(uuid)[:8])

    def on_char_read(ch: Characteristic) -> bytes:
        stats["reads"].append(ch._uuid)  # type: ignore[union-attr]
        tag = tag_of(ch._uuid)
        for frame in emulator.receive(tag):  # type: ignore[union-attr]
            if frame[:4] == tag:
                return frame[4:]
            notify_queue.put_nowait(frame)
        return b""

    def on_char_write(ch: Characteristic, data: bytes, kind: str) -> None:
        stats["writes"].append([data.hex(), kind, ch._uuid])  # type: ignore[union-attr]
        for frame in emulator.receive(tag_of(ch._uuid) + data):  # type: ignore[union-attr]
            notify_queue.put_nowait(frame)

    def on_write(data: bytes, kind: str) -> None:
        stats["writes"].append([data.hex(), kind])  # type: ignore[union-attr]
        frames = [data] if emulator is None else emulator.receive(data)
        for frame in frames:
            notify_queue.put_nowait(frame)

    async def main() -> None:
        bus = sdbus.sd_bus_open_system()
        sdbus.set_default_bus(bus)
        root = "/org/bmsbus/app"
        manager = sdbus.DbusObjectManagerInterfaceAsync()
        manager.export_to_dbus(root)
        service_path = f"{root}/service0"
        service = Service(uuid128(emulator.SERVICE if gatt_table else args.service))  # type: ignore[union-attr]
        chars: list[Characteristic] = []
        notifier: Characteristic | None = None
        if gatt_table:
            for uuid, flags in gatt_table:
                ch = Characteristic(uuid, service_path, list(flags), on_char_write, on_char_read)
                chars.append(ch)
                by_tag[tag_of(uuid)] = ch
        elif args.split or args.notify != args.write:
            writer = Characteristic(uuid128(args.write), service_path, ["write", "write-without-response"], on_write)
            notifier = Characteristic(uuid128(args.notify), service_path, ["read", "notify"], on_write)
            chars = [writer, notifier]
        else:
            notifier = Characteristic(uuid128(args.notify), service_path,
                                      ["read", "write", "write-without-response", "notify"], on_write)
            chars = [notifier]
        adv = Advertisement(args.name, [service._uuid])
        adv.export_to_dbus("/org/bmsbus/adv0")
        hci = f"/org/bluez/{args.adapter}"
        await AdvertisingManager.new_proxy("org.bluez", hci).RegisterAdvertisement("/org/bmsbus/adv0", {})

        async def register_gatt() -> None:
            await asyncio.sleep(args.gatt_delay)
            manager.export_with_manager(service_path, service)
            for i, ch in enumerate(chars):
                manager.export_with_manager(f"{service_path}/char{i}", ch)
            await GattManager.new_proxy("org.bluez", hci).RegisterApplication(root, {})
            log.info("GATT application registered")

        async def notifications() -> None:
            while True:
                frame = await notify_queue.get()
                if gatt_table:  # a tagged value: a notification of the characteristic it names
                    target = by_tag.get(frame[:4])
                    if target is not None:
                        await target.Value.set_async(frame[4:])
                        stats["notified_bytes"] = int(stats["notified_bytes"]) + len(frame) - 4  # type: ignore[arg-type]
                    continue
                assert notifier is not None
                for i in range(0, len(frame), 20):
                    chunk = frame[i:i + 20]
                    await notifier.Value.set_async(chunk)
                    stats["notified_bytes"] = int(stats["notified_bytes"]) + len(chunk)  # type: ignore[arg-type]
                    await asyncio.sleep(0.002)

        async def ticks() -> None:
            while emulator is not None:
                for frame in emulator.tick(time.time()):
                    notify_queue.put_nowait(frame)
                await asyncio.sleep(1.0)

        async def control() -> None:
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader()
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
            while line := (await reader.readline()).decode().strip():
                if line == "stats":
                    subscribers = ({c._uuid: c.subscribers for c in chars} if gatt_table
                                   else notifier.subscribers)  # type: ignore[union-attr]
                    print(json.dumps({**stats, "subscribers": subscribers}), flush=True)
                elif line == "quit":
                    return

        if args.gatt_delay <= 0:
            await register_gatt()
            print("READY", flush=True)
            gatt_task = None
        else:
            print("READY", flush=True)
            gatt_task = asyncio.ensure_future(register_gatt())
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(notifications()), tg.create_task(ticks())]
            await control()
            for t in tasks:
                t.cancel()
            if gatt_task is not None:
                gatt_task.cancel()

    asyncio.run(main())


if __name__ == "__main__":
    sys.path.insert(0, str(TESTS_DIR))
    {"zoo": _zoo_main, "peripheral": _peripheral_main}[sys.argv[1]](sys.argv[2:])
