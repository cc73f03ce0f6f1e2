"""The Link interface (httpx-transport style): `async with link`, `send(bytes)`, `receive()`.

Every backend maps its own exceptions into LinkError -> LinkTimeout / LinkClosed / DeviceNotFound /
PairingFailed, so drivers and the supervisor catch one hierarchy whatever the transport is.

`CharLink` extends a Link with characteristic-level GATT access for devices that are not a byte stream
(the Victron SmartShunt: one characteristic per value). The BLE backends (BlueZ, ESPHome proxy) implement it.
"""

from __future__ import annotations

import asyncio
import re
from typing import Protocol, Self, runtime_checkable

MAC_RE = re.compile(r"^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$")


def is_mac(address: str) -> bool:
    """A Bluetooth address (AA:BB:CC:DD:EE:FF), as opposed to an advertised name."""
    return bool(MAC_RE.match(address))


class LinkError(Exception):
    """The link to a BMS failed. The supervisor backs off and reconnects."""


class LinkTimeout(LinkError):
    pass


class LinkClosed(LinkError):
    pass


class DeviceNotFound(LinkError):
    pass


class PairingFailed(LinkError):
    """The device wants a bond and pairing with the configured PIN failed (or no PIN is configured, or the
    transport cannot pair with a PIN at all, like an ESPHome proxy)."""


class Link(Protocol):
    kind: str  # "ble", "esphome", "serial", "emulated"
    rssi: int | None

    async def __aenter__(self) -> Self: ...
    async def __aexit__(self, *exc: object) -> None: ...
    async def send(self, data: bytes) -> None: ...
    async def receive(self) -> bytes:
        """The next chunk the device sent, in order. Raises LinkClosed when the link is gone."""
        ...

    def discard_pending(self) -> None:
        """Drop chunks received but not yet read (stale answers before a new request)."""
        ...


@runtime_checkable
class CharLink(Link, Protocol):
    """A Link with characteristic-level GATT access, for devices used characteristic by characteristic.

    - `read_char(uuid) -> bytes`: a GATT read of one characteristic of the protocol's service.
    - `write_char(uuid, data, response=False)`: a GATT write (the other mode where the characteristic
      offers only that one).
    - `start_notify(uuid)`: subscribe to one more characteristic. Its notifications arrive through the
      ordinary `receive()` *tagged*: the 4-byte big-endian prefix of the 128-bit UUID, then the value
      (`gatt.char_tag`), so `Driver.next_frame()` and a codec assembler work unchanged.

    With a `gatt.GattCharsSpec` the link subscribes to nothing by itself at connect; with an ordinary
    BleSpec its stream characteristic is subscribed (untagged) as for any byte protocol. UUIDs may be
    given in 16-bit, 32-bit or 128-bit form. Errors are the LinkError hierarchy; a characteristic the
    device does not have is a plain LinkError naming what it has.
    """

    async def read_char(self, uuid: str) -> bytes: ...
    async def write_char(self, uuid: str, data: bytes, *, response: bool = False) -> None: ...
    async def start_notify(self, uuid: str) -> None: ...


class QueueLink:
    """Base for backends that are handed chunks by a callback (BLE notify, serial protocol, proxy).

    The queue is bounded: a device that floods us loses its oldest chunks, which the codec's
    resynchronisation copes with, rather than the collector growing without bound.
    """

    kind = "queue"
    MAX_PENDING_CHUNKS = 1024

    def __init__(self) -> None:
        self.rssi: int | None = None
        self._chunks: asyncio.Queue[bytes | None] = asyncio.Queue(self.MAX_PENDING_CHUNKS)
        self.dropped_chunks = 0
        self._closed: str | None = None

    def _open_stream(self) -> None:
        """A fresh, open chunk stream for a new connection (nothing of the last one is read after it)."""
        self._chunks = asyncio.Queue(self.MAX_PENDING_CHUNKS)
        self._closed = None

    def _deliver(self, chunk: bytes) -> None:
        """Called by the backend for every chunk received (from the event loop thread)."""
        if self._chunks.full():
            self._chunks.get_nowait()
            self.dropped_chunks += 1
        self._chunks.put_nowait(bytes(chunk))

    def _lost(self, reason: str) -> None:
        """Called by the backend when the connection is gone."""
        self._closed = reason
        if self._chunks.full():
            self._chunks.get_nowait()
        self._chunks.put_nowait(None)

    async def receive(self) -> bytes:
        if self._closed is not None and self._chunks.empty():
            raise LinkClosed(self._closed)
        chunk = await self._chunks.get()
        if chunk is None:
            raise LinkClosed(self._closed or "closed")
        return chunk

    def discard_pending(self) -> None:
        while not self._chunks.empty():
            if self._chunks.get_nowait() is None:
                self._chunks.put_nowait(None)
                return
