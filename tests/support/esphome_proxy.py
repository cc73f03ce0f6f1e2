"""An emulated ESPHome Bluetooth proxy: the native API on a loopback port, built on aioesphomeapi's own
protobuf messages, serving fake BLE devices backed by OUR emulators.

What a real proxy does and this one does too: plaintext or Noise (`Noise_NNpsk0_25519_ChaChaPoly_SHA256`,
the firmware's handshake, "Handshake MAC failure" on a wrong key), device info with the proxy feature
flags, raw advertisements streamed every `adv_interval` s to subscribers, a fixed number of connection
slots reported through BluetoothConnectionsFreeResponse (with the allocated addresses) and refused when
full, V3 connects, GATT service listing with CCCD descriptors, notify enable + CCCD write, writes with and
without response, notifications split into `chunk`-byte pieces, ping, disconnect. `restart()` drops
every API connection and listens again on the same port, like a proxy that rebooted.

A device whose emulator declares a GATT table (`SERVICE`, `GATT` = ((uuid, flags), ...), the Victron
shunt) is served characteristic by characteristic: one handle per characteristic (+ CCCD for notify
ones), GATT reads (`receive(tag)`), writes to the characteristic they name (`receive(tag + value)`), and
each tagged frame it emits is a notification of the characteristic its tag names (tag = the UUID's
4-byte prefix). `bond_required=True` makes its reads and writes fail with GATT error 5 (insufficient
authentication), as a device that wants a bond does towards a proxy that cannot pair with a PIN.

Runs inside the test's event loop: `async with FakeProxy(...) as proxy:`; every task it starts belongs to
it and ends in `stop()`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aioesphomeapi import api_pb2 as pb
from aioesphomeapi.core import MESSAGE_TYPE_TO_PROTO

log = logging.getLogger("fake-esphome-proxy")

TYPE_OF = {cls: t for t, cls in MESSAGE_TYPE_TO_PROTO.items()}
FEATURES = 1 | 2 | 4 | 16 | 32  # passive scan, active connections, remote caching, cache clearing, raw adverts
BASE_UUID_LO = 0x800000805F9B34FB
GATT_NO_RESOURCES = 0x80
PROP_READ, PROP_WRITE_NR, PROP_WRITE, PROP_NOTIFY, PROP_INDICATE = 0x02, 0x04, 0x08, 0x10, 0x20


def mac_to_int(mac: str) -> int:
    return int(mac.replace(":", ""), 16)


def uuid_words(uuid: str) -> list[int]:
    """A 16-bit or 128-bit UUID as aioesphomeapi's two 64-bit halves of the 128-bit form."""
    if len(uuid) <= 4:
        return [(int(uuid, 16) << 32) | 0x1000, BASE_UUID_LO]
    value = int(uuid.replace("-", ""), 16)
    return [value >> 64, value & ((1 << 64) - 1)]


def uuid_tag(uuid: str) -> bytes:
    """The 4-byte prefix that tags a characteristic's values (16-bit UUIDs in their 128-bit form)."""
    return bytes.fromhex(f"{int(uuid, 16):08x}" if len(uuid) <= 4 else uuid[:8])


PROPERTY_BITS = {"read": PROP_READ, "write-without-response": PROP_WRITE_NR, "write": PROP_WRITE,
                 "notify": PROP_NOTIFY, "indicate": PROP_INDICATE}


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def ad_structures(name: str, service_uuids: list[str], manufacturer: dict[int, bytes] | None = None) -> bytes:
    data = bytearray(b"\x02\x01\x06")
    short = [u for u in service_uuids if len(u) <= 4]
    if short:
        body = b"".join(int(u, 16).to_bytes(2, "little") for u in short)
        data += bytes((len(body) + 1, 0x03)) + body
    for u in service_uuids:
        if len(u) > 4:
            body = int(u.replace("-", ""), 16).to_bytes(16, "little")
            data += bytes((len(body) + 1, 0x07)) + body
    for company, payload in (manufacturer or {}).items():
        body = company.to_bytes(2, "little") + payload
        data += bytes((len(body) + 1, 0xFF)) + body
    raw = name.encode()
    data += bytes((len(raw) + 1, 0x09)) + raw
    return bytes(data)


@dataclass
class FakeDevice:
    """A BLE peripheral the proxy can see: an emulator behind service/notify/write characteristics."""

    address: str
    name: str
    emulator: Any = None  # None: echo
    rssi: int = -60
    service: str = "ffe0"
    notify: str = "ffe1"
    write: str = "ffe1"
    split: bool = False
    manufacturer: dict[int, bytes] = field(default_factory=dict)
    writes: list[tuple[bytes, bool]] = field(default_factory=list)
    bond_required: bool = False
    reads: list[int] = field(default_factory=list)  # handles read (characteristic mode)
    char_writes: list[tuple[int, bytes, bool]] = field(default_factory=list)  # (handle, data, response)
    last_value: bytes = b""  # the stream characteristic's value (its last notification)

    def __post_init__(self) -> None:
        # characteristic mode: handle -> (uuid, flags); handles 2, 4, 6, ... (CCCD at +1 for notify ones)
        self.chars: dict[int, tuple[str, tuple[str, ...]]] = {}
        table = getattr(self.emulator, "GATT", None)
        if table:
            self.service = self.emulator.SERVICE
            for i, (uuid, flags) in enumerate(table):
                self.chars[2 + 2 * i] = (uuid, tuple(flags))
        self.by_tag = {uuid_tag(uuid): handle for handle, (uuid, _flags) in self.chars.items()}

    @property
    def int_address(self) -> int:
        return mac_to_int(self.address)

    def gatt(self) -> pb.BluetoothGATTService:
        """Handles like the newer JK module: service 1, write char 2, notify char 3 (CCCD 4) when split."""
        service = pb.BluetoothGATTService(uuid=uuid_words(self.service), handle=1)
        if self.chars:
            for handle, (uuid, flags) in self.chars.items():
                char = pb.BluetoothGATTCharacteristic(uuid=uuid_words(uuid), handle=handle,
                                                      properties=sum(PROPERTY_BITS[f] for f in set(flags)))
                if {"notify", "indicate"} & set(flags):
                    char.descriptors.append(pb.BluetoothGATTDescriptor(uuid=uuid_words("2902"), handle=handle + 1))
                service.characteristics.append(char)
            return service
        if self.split or self.notify != self.write:
            service.characteristics.append(pb.BluetoothGATTCharacteristic(
                uuid=uuid_words(self.write), handle=2, properties=PROP_WRITE | PROP_WRITE_NR))
            notify_char = pb.BluetoothGATTCharacteristic(uuid=uuid_words(self.notify), handle=3,
                                                         properties=PROP_READ | PROP_NOTIFY)
        else:
            notify_char = pb.BluetoothGATTCharacteristic(
                uuid=uuid_words(self.notify), handle=3,
                properties=PROP_READ | PROP_WRITE | PROP_WRITE_NR | PROP_NOTIFY)
        notify_char.descriptors.append(pb.BluetoothGATTDescriptor(uuid=uuid_words("2902"), handle=4))
        service.characteristics.append(notify_char)
        return service

    def receive(self, data: bytes) -> list[bytes]:
        return [data] if self.emulator is None else self.emulator.receive(data)

    def read_char(self, handle: int) -> tuple[bytes, list[bytes]]:
        """Characteristic mode: the value of `handle` and any other frames the emulator emitted."""
        self.reads.append(handle)
        tag = uuid_tag(self.chars[handle][0])
        value, others = b"", []
        for frame in self.emulator.receive(tag):
            if frame[:4] == tag and not value:
                value = frame[4:]
            else:
                others.append(frame)
        return value, others

    def write_char(self, handle: int, data: bytes, response: bool) -> list[bytes]:
        self.char_writes.append((handle, data, response))
        return self.emulator.receive(uuid_tag(self.chars[handle][0]) + data)

    def tick(self, now: float) -> list[bytes]:
        return [] if self.emulator is None else self.emulator.tick(now)


class _Noise:
    """The responder side of ESPHome's Noise handshake and framing."""

    def __init__(self, psk: str, name: str, mac: str) -> None:
        from noise.connection import NoiseConnection

        self.proto = NoiseConnection.from_name(b"Noise_NNpsk0_25519_ChaChaPoly_SHA256")
        self.proto.set_as_responder()
        self.proto.set_psks(base64.b64decode(psk))
        self.proto.set_prologue(b"NoiseAPIInit\x00\x00")
        self.proto.start_handshake()
        self.name, self.mac = name, mac

    @staticmethod
    async def read_frame(reader: asyncio.StreamReader) -> bytes:
        header = await reader.readexactly(3)
        if header[0] != 0x01:
            raise ValueError(f"not a noise frame: {header[0]:#x}")
        return await reader.readexactly((header[1] << 8) | header[2])

    @staticmethod
    def frame(payload: bytes) -> bytes:
        return bytes((0x01, len(payload) >> 8, len(payload) & 0xFF)) + payload

    async def handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        client = await self.read_frame(reader)
        writer.write(self.frame(b"\x01" + self.name.encode() + b"\x00" + self.mac.encode() + b"\x00"))
        try:
            if client[:1] != b"\x00":
                raise ValueError("bad handshake preamble")
            self.proto.read_message(client[1:])
        except Exception:  # noqa: BLE001 - any failure here is a wrong key to the client
            writer.write(self.frame(b"\x01Handshake MAC failure"))
            await writer.drain()
            return False
        writer.write(self.frame(b"\x00" + self.proto.write_message()))
        await writer.drain()
        return True

    async def read_msg(self, reader: asyncio.StreamReader) -> tuple[int, bytes]:
        plain = self.proto.decrypt(await self.read_frame(reader))
        return (plain[0] << 8) | plain[1], plain[4:]

    def encode(self, msg_type: int, body: bytes) -> bytes:
        return self.frame(self.proto.encrypt(bytes((msg_type >> 8, msg_type & 0xFF, len(body) >> 8,
                                                    len(body) & 0xFF)) + body))


class _Session:
    """One API client connected to the proxy."""

    def __init__(self, proxy: FakeProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.proxy, self.reader, self.writer = proxy, reader, writer
        self.noise: _Noise | None = None
        self.adverts = False
        self.free_updates = False
        self.connected: set[int] = set()
        self.notifying: set[tuple[int, int]] = set()

    def send(self, msg: Any) -> None:
        body = msg.SerializeToString()
        if self.noise is not None:
            self.writer.write(self.noise.encode(TYPE_OF[type(msg)], body))
        else:
            self.writer.write(b"\x00" + varint(len(body)) + varint(TYPE_OF[type(msg)]) + body)

    async def _read_varint(self) -> int:
        shift = result = 0
        while True:
            b = (await self.reader.readexactly(1))[0]
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result

    async def read(self) -> Any:
        if self.noise is not None:
            msg_type, body = await self.noise.read_msg(self.reader)
        else:
            preamble = await self.reader.readexactly(1)
            if preamble != b"\x00":
                raise ValueError("encrypted hello on a plaintext proxy")
            size = await self._read_varint()
            msg_type = await self._read_varint()
            body = await self.reader.readexactly(size)
        msg = MESSAGE_TYPE_TO_PROTO[msg_type]()
        msg.ParseFromString(body)
        return msg

    async def run(self) -> None:
        p = self.proxy
        if p.noise_psk:
            hello = await self.reader.readexactly(3)  # NOISE_HELLO is the empty frame 01 00 00
            if hello[0] != 0x01:
                self.writer.write(b"\x01\x00\x00")  # "this proxy wants encryption" to a plaintext client
                await self.writer.drain()
                return
            self.noise = _Noise(p.noise_psk, p.name, p.mac)
            if not await self.noise.handshake(self.reader, self.writer):
                return
        while True:
            msg = await self.read()
            if not await self.handle(msg):
                return
            await self.writer.drain()

    async def handle(self, msg: Any) -> bool:  # noqa: C901 - one branch per message type
        p = self.proxy
        match msg:
            case pb.HelloRequest():
                self.send(pb.HelloResponse(api_version_major=1, api_version_minor=12,
                                           server_info="bmsbus fake proxy", name=p.name))
            case pb.AuthenticationRequest():
                pass  # modern firmware answers nothing
            case pb.DeviceInfoRequest():
                self.send(pb.DeviceInfoResponse(name=p.name, mac_address=p.mac, esphome_version="2025.9.0",
                                                bluetooth_mac_address=p.mac, bluetooth_proxy_feature_flags=FEATURES,
                                                api_encryption_supported=bool(p.noise_psk)))
            case pb.ListEntitiesRequest():
                self.send(pb.ListEntitiesDoneResponse())
            case pb.PingRequest():
                self.send(pb.PingResponse())
            case pb.DisconnectRequest():
                self.send(pb.DisconnectResponse())
                return False
            case pb.SubscribeBluetoothLEAdvertisementsRequest():
                self.adverts = True
                self.send_adverts()
            case pb.UnsubscribeBluetoothLEAdvertisementsRequest():
                self.adverts = False
            case pb.SubscribeBluetoothConnectionsFreeRequest():
                self.free_updates = True
                self.send(p.free_message())
            case pb.BluetoothDeviceRequest():
                self.device_request(msg)
            case pb.BluetoothGATTGetServicesRequest():
                dev = p.devices.get(msg.address)
                if dev is None or msg.address not in self.connected:
                    self.send(pb.BluetoothGATTErrorResponse(address=msg.address, handle=0, error=0x85))
                else:
                    self.send(pb.BluetoothGATTGetServicesResponse(address=msg.address, services=[dev.gatt()]))
                    self.send(pb.BluetoothGATTGetServicesDoneResponse(address=msg.address))
            case pb.BluetoothGATTNotifyRequest():
                key = (msg.address, msg.handle)
                (self.notifying.add if msg.enable else self.notifying.discard)(key)
                self.send(pb.BluetoothGATTNotifyResponse(address=msg.address, handle=msg.handle))
            case pb.BluetoothGATTWriteDescriptorRequest():
                p.cccd_writes.append((msg.address, msg.handle, bytes(msg.data)))
                self.send(pb.BluetoothGATTWriteResponse(address=msg.address, handle=msg.handle))
            case pb.BluetoothGATTReadRequest():
                dev = p.devices.get(msg.address)
                if dev is None or msg.address not in self.connected:
                    self.send(pb.BluetoothGATTErrorResponse(address=msg.address, handle=msg.handle, error=0x85))
                elif not dev.chars:
                    self.send(pb.BluetoothGATTReadResponse(address=msg.address, handle=msg.handle,
                                                           data=dev.last_value))
                elif msg.handle not in dev.chars or "read" not in dev.chars[msg.handle][1]:
                    self.send(pb.BluetoothGATTErrorResponse(address=msg.address, handle=msg.handle, error=0x02))
                elif dev.bond_required:
                    self.send(pb.BluetoothGATTErrorResponse(address=msg.address, handle=msg.handle, error=0x05))
                else:
                    value, others = dev.read_char(msg.handle)
                    self.send(pb.BluetoothGATTReadResponse(address=msg.address, handle=msg.handle, data=value))
                    for frame in others:
                        self.notify(dev, frame)
            case pb.BluetoothGATTWriteRequest() if msg.address in p.devices and p.devices[msg.address].chars:
                dev = p.devices[msg.address]
                if msg.address not in self.connected or msg.handle not in dev.chars:
                    error = 0x85 if msg.address not in self.connected else 0x01
                    self.send(pb.BluetoothGATTErrorResponse(address=msg.address, handle=msg.handle, error=error))
                elif dev.bond_required:
                    self.send(pb.BluetoothGATTErrorResponse(address=msg.address, handle=msg.handle, error=0x05))
                else:
                    frames = dev.write_char(msg.handle, bytes(msg.data), msg.response)
                    if msg.response:
                        self.send(pb.BluetoothGATTWriteResponse(address=msg.address, handle=msg.handle))
                    for frame in frames:
                        self.notify(dev, frame)
            case pb.BluetoothGATTWriteRequest():
                dev = p.devices.get(msg.address)
                if dev is None or msg.address not in self.connected:
                    self.send(pb.BluetoothGATTErrorResponse(address=msg.address, handle=msg.handle, error=0x85))
                    return True
                dev.writes.append((bytes(msg.data), msg.response))
                if msg.response:
                    self.send(pb.BluetoothGATTWriteResponse(address=msg.address, handle=msg.handle))
                for frame in dev.receive(bytes(msg.data)):
                    self.notify(dev, frame)
            case _:
                log.debug("fake proxy ignores %s", type(msg).__name__)
        return True

    def device_request(self, msg: pb.BluetoothDeviceRequest) -> None:
        p = self.proxy
        t = pb.BluetoothDeviceRequestType
        if msg.request_type in (t.BLUETOOTH_DEVICE_REQUEST_TYPE_CONNECT_V3_WITH_CACHE,
                                t.BLUETOOTH_DEVICE_REQUEST_TYPE_CONNECT_V3_WITHOUT_CACHE):
            p.connect_requests += 1
            if msg.address not in p.devices:
                self.send(pb.BluetoothDeviceConnectionResponse(address=msg.address, connected=False, error=0x85))
            elif msg.address in p.allocated:
                self.send(pb.BluetoothDeviceConnectionResponse(address=msg.address, connected=True, mtu=247))
            elif len(p.allocated) >= p.slots:
                p.refused += 1
                self.send(pb.BluetoothDeviceConnectionResponse(address=msg.address, connected=False,
                                                               error=GATT_NO_RESOURCES))
            else:
                p.allocated[msg.address] = self
                self.connected.add(msg.address)
                p.max_in_use = max(p.max_in_use, len(p.allocated))
                self.send(pb.BluetoothDeviceConnectionResponse(address=msg.address, connected=True, mtu=247))
                p.broadcast_free()
        elif msg.request_type == t.BLUETOOTH_DEVICE_REQUEST_TYPE_DISCONNECT:
            p.release(msg.address)
            self.send(pb.BluetoothDeviceConnectionResponse(address=msg.address, connected=False))
        else:
            self.send(pb.BluetoothDeviceConnectionResponse(address=msg.address,
                                                           connected=msg.address in self.connected))

    def notify(self, dev: FakeDevice, frame: bytes) -> None:
        if dev.chars:  # a tagged value: a notification of the characteristic its tag names
            handle = dev.by_tag.get(frame[:4])
            if handle is not None and (dev.int_address, handle) in self.notifying:
                self.send(pb.BluetoothGATTNotifyDataResponse(address=dev.int_address, handle=handle, data=frame[4:]))
            return
        handle = 3
        step = self.proxy.chunk
        dev.last_value = frame[((len(frame) - 1) // step) * step:] if frame else dev.last_value
        if (dev.int_address, handle) not in self.notifying:
            return
        for i in range(0, len(frame), step):
            self.send(pb.BluetoothGATTNotifyDataResponse(address=dev.int_address, handle=handle,
                                                         data=frame[i:i + step]))

    def send_adverts(self) -> None:
        ads = [pb.BluetoothLERawAdvertisement(address=d.int_address, rssi=d.rssi, address_type=0,
                                              data=ad_structures(d.name, [d.service], d.manufacturer))
               for d in self.proxy.devices.values() if d.address not in self.proxy.hidden]
        if ads:
            self.send(pb.BluetoothLERawAdvertisementsResponse(advertisements=ads))


class FakeProxy:
    def __init__(self, *, name: str = "proxy-1", mac: str = "AA:BB:CC:00:00:01", slots: int = 3,
                 noise_psk: str | None = None, port: int = 0, adv_interval: float = 0.2, chunk: int = 20) -> None:
        self.name, self.mac, self.slots, self.noise_psk = name, mac, slots, noise_psk
        self.port, self.adv_interval, self.chunk = port, adv_interval, chunk
        self.devices: dict[int, FakeDevice] = {}
        self.hidden: set[str] = set()
        self.allocated: dict[int, _Session] = {}
        self.sessions: set[_Session] = set()
        self.max_in_use = 0
        self.refused = 0
        self.connect_requests = 0
        self.api_connections = 0
        self.cccd_writes: list[tuple[int, int, bytes]] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def in_use(self) -> int:
        return len(self.allocated)

    def add(self, device: FakeDevice) -> FakeDevice:
        self.devices[device.int_address] = device
        return device

    def free_message(self) -> pb.BluetoothConnectionsFreeResponse:
        return pb.BluetoothConnectionsFreeResponse(free=self.slots - len(self.allocated), limit=self.slots,
                                                   allocated=list(self.allocated))

    def broadcast_free(self) -> None:
        for s in self.sessions:
            if s.free_updates:
                s.send(self.free_message())

    def release(self, address: int) -> None:
        session = self.allocated.pop(address, None)
        if session is not None:
            session.connected.discard(address)
            session.notifying = {k for k in session.notifying if k[0] != address}
            self.broadcast_free()

    def drop_device(self, address: str) -> None:
        """The BLE link to a device broke (out of range, BMS reset)."""
        addr = mac_to_int(address)
        session = self.allocated.get(addr)
        self.release(addr)
        if session is not None:
            session.send(pb.BluetoothDeviceConnectionResponse(address=addr, connected=False, error=0x13))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(self, reader, writer)
        self.sessions.add(session)
        self.api_connections += 1
        try:
            await session.run()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            log.debug("session ended: %s", exc)
        finally:
            self.sessions.discard(session)
            for addr in list(session.connected):
                self.release(addr)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _background(self) -> None:
        last_tick = 0.0
        while True:
            now = time.time()
            for s in list(self.sessions):
                if s.adverts:
                    s.send_adverts()
                if now - last_tick >= 1.0:
                    for addr in list(s.connected):
                        dev = self.devices[addr]
                        for frame in dev.tick(now):
                            s.notify(dev, frame)
            if now - last_tick >= 1.0:
                last_tick = now
            await asyncio.sleep(self.adv_interval)

    async def start(self) -> FakeProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        self._spawn(self._background())
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()  # (every connection is a session: closed just below; close_clients is 3.13+)
        for s in list(self.sessions):
            s.writer.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._server.wait_closed()
        self._server = None
        self.allocated.clear()
        self.sessions.clear()

    async def restart(self, down_for: float = 0.3) -> None:
        """Power-cycle: every API connection drops, nothing listens for `down_for` s, then it is back."""
        await self.stop()
        await asyncio.sleep(down_for)
        await self.start()

    async def __aenter__(self) -> FakeProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def noise_key(seed: int = 1) -> str:
    return base64.b64encode(bytes((seed + i) & 0xFF for i in range(32))).decode()

