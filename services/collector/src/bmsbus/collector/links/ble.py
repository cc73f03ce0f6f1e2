"""BLE through bleak (BlueZ D-Bus on Linux): the one module that touches bleak and bleak-retry-connector.

`async with BleLink(address, spec, adapter="hci1")` finds the device (MAC or advertised name) on that
adapter, connects with bleak-retry-connector's `establish_connection`, waits up to `services_wait`
seconds for a GATT table that holds the protocol's service (JK firmware 19.x sometimes reports an empty
one right after connect; one reconnect is tried after the wait), resolves the notify and write
characteristics by UUID *and* property (newer JK modules have two FFE1 characteristics, write on one,
notify on the other), pairs with the configured PIN where one is set, and subscribes. Notifications go
to the queue (`receive()`); a disconnect from the far side ends it with LinkClosed.

It is also a CharLink (links/base.py): `read_char`, `write_char` and `start_notify` work on any
characteristic of the protocol's service; notifications of characteristics subscribed that way arrive
tagged (`gatt.char_tag`). With a `GattCharsSpec` (Victron) nothing is subscribed at connect.

Every bleak/D-Bus failure leaves this module as a LinkError subclass (`from exc` kept):
DeviceNotFound (not advertising / unknown), LinkTimeout, LinkClosed (link or D-Bus connection lost),
PairingFailed (wrong or missing PIN), LinkError (everything else, with BlueZ's error name).

Connects are serialised per adapter (BlueZ and most controllers handle one connection attempt at a
time badly). The link is re-enterable: `keep_alive: false` devices enter and leave it once per sample
and the second and later connects skip the scan while BlueZ still knows the device.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any, Self
from weakref import WeakKeyDictionary

from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import (
    BleakDBusError,
    BleakDeviceNotFoundError,
    BleakError,
    BleakGATTProtocolError,
    BleakGATTProtocolErrorCode,
)
from bleak.uuids import normalize_uuid_str
from bleak_retry_connector import BleakNotFoundError, establish_connection, get_device, get_device_by_adapter
from dbus_fast import DBusError

from ..driver import BleSpec
from .base import DeviceNotFound, LinkClosed, LinkError, LinkTimeout, PairingFailed, QueueLink, is_mac
from .gatt import NOTIFY_PROPS, READ_PROPS, WRITE_PROPS, Char, GattCharsSpec, char_tag, choose, find_char, short

log = logging.getLogger("bmsbus.collector.links.ble")

AUTH_ERRORS = {
    "org.bluez.Error.AuthenticationFailed": "the device refused the PIN (wrong pin?)",
    "org.bluez.Error.AuthenticationRejected": "the pairing agent rejected the request (is the pin numeric?)",
    "org.bluez.Error.AuthenticationCanceled": "pairing was cancelled",
    "org.bluez.Error.AuthenticationTimeout": "the device did not answer the pairing request",
    "org.bluez.Error.ConnectionAttemptFailed": "pairing needs a connection that could not be made",
}
INSUFFICIENT_AUTH = ("Insufficient Authentication", "Insufficient Encryption", "NotPermitted", "Not paired")

# (adapter, configured address) -> the device last found for it. Links are built afresh for every
# session, so a name-addressed device would otherwise be scanned for on every reconnect.
_resolved: dict[tuple[str | None, str], BLEDevice] = {}
_connect_locks: WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = WeakKeyDictionary()


def adapter_of(device: BLEDevice) -> str | None:
    """`hci1` from a BlueZ device path /org/bluez/hci1/dev_..."""
    path = device.details.get("path") if isinstance(device.details, dict) else None
    return path.split("/")[3] if isinstance(path, str) and path.count("/") >= 4 else None


def adapter_lock(adapter: str | None) -> asyncio.Lock:
    locks = _connect_locks.setdefault(asyncio.get_running_loop(), {})
    return locks.setdefault(adapter or "default", asyncio.Lock())


async def adapter_name(controller: str) -> str:
    """`hciN` for a controller MAC (batmon-ha accepts either in `adapter:`)."""
    from bluetooth_adapters import get_bluetooth_adapter_details

    details = await get_bluetooth_adapter_details()
    for name, props in details.items():
        if str(props.get("org.bluez.Adapter1", {}).get("Address", "")).upper() == controller.upper():
            return name
    raise LinkError(f"no Bluetooth adapter with address {controller}; have {sorted(details) or 'none'}")


@contextlib.contextmanager
def mapped(target: str, action: str) -> Iterator[None]:
    """bleak / bleak-retry-connector / dbus-fast / asyncio errors -> LinkError subclasses."""
    prefix = f"{target}: {action}"
    try:
        yield
    except LinkError:
        raise
    except (BleakDeviceNotFoundError, BleakNotFoundError) as exc:
        raise DeviceNotFound(f"{prefix}: not found ({exc}); is it powered, in range, and not connected to "
                             "another central (the vendor app)?") from exc
    except BleakDBusError as exc:
        name = exc.dbus_error
        if name in AUTH_ERRORS:
            raise PairingFailed(f"{prefix}: pairing failed: {AUTH_ERRORS[name]} ({name})") from exc
        if any(s in str(exc) for s in INSUFFICIENT_AUTH):
            raise PairingFailed(f"{prefix}: the device wants to be paired; set `pin:` for it ({exc})") from exc
        if name == "org.freedesktop.DBus.Error.ServiceUnknown":
            raise LinkError(f"{prefix}: BlueZ is not running (no org.bluez on the system D-Bus)") from exc
        if name in ("org.bluez.Error.NotConnected", "org.freedesktop.DBus.Error.UnknownObject"):
            raise LinkClosed(f"{prefix}: {exc}") from exc
        raise LinkError(f"{prefix}: {exc}") from exc
    except BleakGATTProtocolError as exc:
        if exc.code in (BleakGATTProtocolErrorCode.INSUFFICIENT_AUTHENTICATION,
                        BleakGATTProtocolErrorCode.INSUFFICIENT_ENCRYPTION):
            raise PairingFailed(f"{prefix}: the device wants to be paired; set `pin:` for it ({exc})") from exc
        raise LinkError(f"{prefix}: {exc}") from exc
    except BleakError as exc:
        if "not connected" in str(exc).lower():
            raise LinkClosed(f"{prefix}: {exc}") from exc
        raise LinkError(f"{prefix}: {exc}") from exc
    except TimeoutError as exc:
        raise LinkTimeout(f"{prefix}: timed out") from exc
    except (EOFError, BrokenPipeError, ConnectionError) as exc:
        raise LinkClosed(f"{prefix}: D-Bus connection lost ({type(exc).__name__}: {exc})") from exc
    except FileNotFoundError as exc:
        raise LinkError(f"{prefix}: no system D-Bus ({exc}); is dbus running? In a container mount "
                        "/run/dbus") from exc
    except DBusError as exc:
        raise LinkError(f"{prefix}: D-Bus error {exc.type}: {exc.text}") from exc


class BleLink(QueueLink):
    kind = "ble"

    def __init__(self, address: str, spec: BleSpec, *, adapter: str | None = None, pin: str | None = None,
                 name: str | None = None, scan_timeout: float = 10.0, connect_timeout: float = 45.0,
                 services_wait: float = 4.0, io_timeout: float = 10.0, connect_attempts: int = 3,
                 log: logging.Logger | None = None) -> None:
        super().__init__()
        self.address = address
        self.spec = spec
        self.adapter = adapter
        self.pin = pin
        self.name = name or address
        self.scan_timeout = scan_timeout
        self.connect_timeout = connect_timeout
        self.services_wait = services_wait
        self.io_timeout = io_timeout
        self.connect_attempts = connect_attempts
        self.log = log or globals()["log"]
        self.client: BleakClient | None = None
        self.device: BLEDevice | None = None
        self.notify_char: BleakGATTCharacteristic | None = None
        self.tx_char: BleakGATTCharacteristic | None = None  # the stream's write characteristic
        self.write_response = spec.write_with_response
        self.table: list[Char] = []  # the service's characteristics, for the CharLink methods
        self.notifying: dict[int, str] = {}  # handle -> uuid subscribed through start_notify
        self._by_handle: dict[int, BleakGATTCharacteristic] = {}
        self.connect_seconds: float | None = None
        self.paired_now = False
        self._from_cache = False
        self._service = normalize_uuid_str(spec.service)

    def __repr__(self) -> str:
        return f"BleLink({self.address!r}, adapter={self.adapter!r})"

    # -- connection ---------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self.client is not None:
            raise LinkError(f"{self.name}: link entered twice")
        self._open_stream()
        self.notifying = {}
        started = time.monotonic()
        try:
            with mapped(self.name, "connect"):
                async with asyncio.timeout(self.connect_timeout):
                    if self.adapter and is_mac(self.adapter):
                        self.adapter = await adapter_name(self.adapter)
                    device = await self._find()
                    async with adapter_lock(adapter_of(device) or self.adapter):
                        self.client = await self._connect(device)
                    await self._ensure_services()
                    if self.pin:
                        await self._pair()
                    self._resolve_characteristics()
                    assert self.client is not None and self.notify_char is not None
                    if not isinstance(self.spec, GattCharsSpec):
                        await self.client.start_notify(self.notify_char, self._on_notify)
        except BaseException:
            await self._teardown()
            raise
        self.connect_seconds = time.monotonic() - started
        self.log.debug("%s connected in %.2f s (notify handle %s, write handle %s, %s)", self.name,
                       self.connect_seconds, self.notify_char.handle, self.tx_char and self.tx_char.handle,
                       "with response" if self.write_response else "without response")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._teardown()

    async def _teardown(self) -> None:
        client, self.client = self.client, None
        self._closed = self._closed or "closing"  # our own disconnect is not the device's
        try:
            if client is not None and client.is_connected:
                try:
                    async with asyncio.timeout(5):
                        await client.disconnect()
                except (BleakError, TimeoutError, EOFError, OSError, DBusError) as exc:
                    self.log.debug("%s: disconnect: %s", self.name, exc)
        finally:
            self._lost("closed by us")

    async def _find(self) -> BLEDevice:
        """A BLEDevice on our adapter. Without scanning when BlueZ knows it (the device found last time, or
        a MAC BlueZ has seen), else by scanning for the MAC or the advertised name."""
        known = self.device or _resolved.get((self.adapter, self.address))
        if known is None and is_mac(self.address):
            known = await (get_device_by_adapter(self.address, self.adapter) if self.adapter
                           else get_device(self.address))
        if known is not None:
            hci = adapter_of(known)
            fresh = await get_device_by_adapter(known.address, hci) if hci else None
            if fresh is not None:
                self.rssi = (fresh.details.get("props") or {}).get("RSSI", self.rssi)
                self.device = _resolved[(self.adapter, self.address)] = fresh
                self._from_cache = True
                return fresh
        return await self._scan()

    async def _scan(self) -> BLEDevice:
        def match(device: BLEDevice, adv: AdvertisementData) -> bool:
            if is_mac(self.address):
                return device.address.upper() == self.address.upper()
            return self.address in (adv.local_name, device.name)

        found: list[AdvertisementData] = []

        def remember(device: BLEDevice, adv: AdvertisementData) -> bool:
            if match(device, adv):
                found.append(adv)
                return True
            return False

        kwargs: dict[str, Any] = {"bluez": {"adapter": self.adapter}} if self.adapter else {}
        device = await BleakScanner.find_device_by_filter(remember, timeout=self.scan_timeout, **kwargs)
        if device is None:
            where = f" on {self.adapter}" if self.adapter else ""
            raise DeviceNotFound(f"{self.name}: no advertisement from {self.address!r}{where} within "
                                 f"{self.scan_timeout:.0f} s; is it powered, in range, and not connected to "
                                 "another central (the vendor app)?")
        if found:
            self.rssi = found[-1].rssi
        self.device = _resolved[(self.adapter, self.address)] = device
        self._from_cache = False
        return device

    async def _connect(self, device: BLEDevice) -> BleakClient:
        try:
            return await establish_connection(BleakClient, device, self.name, self._on_disconnect,
                                              max_attempts=self.connect_attempts)
        except (BleakNotFoundError, BleakDeviceNotFoundError):
            if not self._from_cache:
                raise
            # BlueZ forgot the device (it drops unseen ones after a while): scan once and try again.
            self.device = None
            _resolved.pop((self.adapter, self.address), None)
            return await establish_connection(BleakClient, await self._scan(), self.name, self._on_disconnect,
                                              max_attempts=self.connect_attempts)

    def _has_service(self) -> bool:
        assert self.client is not None
        return self.client.services.get_service(self._service) is not None

    async def _ensure_services(self) -> None:
        """The JK 19.x empty-GATT workaround: wait for the service, re-reading BlueZ's table, then reconnect once."""
        assert self.client is not None
        deadline = time.monotonic() + self.services_wait
        while not self._has_service():
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.5)
            await self._reread_services()
        else:
            return
        self.log.info("%s: no GATT service %s after %.1f s (have %s); reconnecting once", self.name,
                      self._service, self.services_wait, [s.uuid for s in self.client.services])
        stale, self.client = self.client, None  # its disconnect callback is not a lost link
        await stale.disconnect()
        device = await self._find()
        async with adapter_lock(adapter_of(device) or self.adapter):
            self.client = await self._connect(device)
        if not self._has_service():
            raise LinkError(f"{self.name}: the device shows no GATT service {self._service} (have "
                            f"{[s.uuid for s in self.client.services]}). JK firmware 19.x does this at times, "
                            f"or BlueZ holds a stale cache: try `bluetoothctl remove {self.address}`")

    async def _reread_services(self) -> None:
        """Ask BlueZ again for the GATT table of the live connection (bleak has no public call for it)."""
        assert self.client is not None
        backend: Any = getattr(self.client, "_backend", None)
        if backend is None or not hasattr(backend, "_get_services") or not self.client.is_connected:
            return
        previous = backend.services
        backend.services = None
        try:
            await backend._get_services()
        except BleakError as exc:
            backend.services = previous
            self.log.debug("%s: re-reading services: %s", self.name, exc)

    async def _pair(self) -> None:
        from .bluez_agent import AgentError, PinAgent

        assert self.client is not None and self.pin is not None
        try:
            async with PinAgent(self.client.address, self.pin) as agent:
                await self.client.pair()
        except AgentError as exc:
            raise PairingFailed(f"{self.name}: cannot register a pairing agent with BlueZ: {exc}") from exc
        self.paired_now = True
        if agent.asked == 0:
            self.log.info("%s: paired (the device asked for no PIN)", self.name)
        else:
            self.log.info("%s: paired with the configured PIN", self.name)

    def _resolve_characteristics(self) -> None:
        assert self.client is not None
        by_handle: dict[int, BleakGATTCharacteristic] = {}
        table = []
        for service in self.client.services:
            for c in service.characteristics:
                by_handle[c.handle] = c
                table.append(Char(c.uuid, c.handle, frozenset(c.properties), service.uuid))
        choice = choose(table, self.spec, self.name)
        self.table, self._by_handle = table, by_handle
        self.notify_char, self.tx_char = by_handle[choice.notify.handle], by_handle[choice.write.handle]
        self.write_response = choice.write_response

    # -- callbacks -----------------------------------------------------------------------------------

    def _on_notify(self, _char: BleakGATTCharacteristic, data: bytearray) -> None:
        self._deliver(bytes(data))

    def _on_tagged(self, char: BleakGATTCharacteristic, data: bytearray) -> None:
        self._deliver(char_tag(char.uuid) + bytes(data))

    def _on_disconnect(self, client: BleakClient) -> None:
        if client is self.client and self._closed is None:
            self.log.debug("%s: disconnected", self.name)
            self._lost("the device disconnected")

    # -- I/O -------------------------------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        if self._closed is not None:
            raise LinkClosed(self._closed)
        client, char = self.client, self.tx_char
        if client is None or char is None:
            raise LinkClosed(f"{self.name}: not connected")
        step = len(data) if self.write_response else max(20, char.max_write_without_response_size)
        with mapped(self.name, "write"):
            async with asyncio.timeout(self.io_timeout):
                for i in range(0, len(data), step or 1):
                    await client.write_gatt_char(char, data[i:i + step], response=self.write_response)

    # -- CharLink --------------------------------------------------------------------------------------

    def _char(self, uuid: str, wanted: frozenset[str]) -> tuple[BleakClient, BleakGATTCharacteristic]:
        if self._closed is not None:
            raise LinkClosed(self._closed)
        client = self.client
        if client is None:
            raise LinkClosed(f"{self.name}: not connected")
        return client, self._by_handle[find_char(self.table, self.spec.service, uuid, wanted, self.name).handle]

    async def read_char(self, uuid: str) -> bytes:
        client, char = self._char(uuid, READ_PROPS)
        with mapped(self.name, f"read {short(char.uuid)}"):
            async with asyncio.timeout(self.io_timeout):
                return bytes(await client.read_gatt_char(char))

    async def write_char(self, uuid: str, data: bytes, *, response: bool = False) -> None:
        client, char = self._char(uuid, WRITE_PROPS)
        if ("write" if response else "write-without-response") not in char.properties:
            response = not response  # the only mode this characteristic offers
        with mapped(self.name, f"write {short(char.uuid)}"):
            async with asyncio.timeout(self.io_timeout):
                await client.write_gatt_char(char, data, response=response)

    async def start_notify(self, uuid: str) -> None:
        client, char = self._char(uuid, NOTIFY_PROPS)
        if char.handle in self.notifying:
            return
        if char is self.notify_char and not isinstance(self.spec, GattCharsSpec):
            raise LinkError(f"{self.name}: {short(char.uuid)} is this link's stream characteristic (already "
                            "subscribed, untagged)")
        with mapped(self.name, f"subscribe {short(char.uuid)}"):
            async with asyncio.timeout(self.io_timeout):
                await client.start_notify(char, self._on_tagged)
        self.notifying[char.handle] = char.uuid


async def scan(timeout: float = 5.0, adapter: str | None = None) -> list[tuple[BLEDevice, AdvertisementData]]:
    """Everything advertising within `timeout` seconds (for `bmsbus scan`)."""
    kwargs: dict[str, Any] = {"bluez": {"adapter": adapter}} if adapter else {}
    with mapped(adapter or "default adapter", "scan"):
        found = await BleakScanner.discover(timeout=timeout, return_adv=True, **kwargs)
    return sorted(found.values(), key=lambda da: -(da[1].rssi or -127))
