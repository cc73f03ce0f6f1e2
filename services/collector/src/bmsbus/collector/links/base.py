"""The Link interface (httpx-transport style): `async with link`, `send(bytes)`, `receive()`.

Every backend maps its own exceptions into LinkError -> LinkTimeout / LinkClosed / DeviceNotFound,
so drivers and the supervisor catch one hierarchy whatever the transport is.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, Self


class LinkError(Exception):
    """The link to a BMS failed. The supervisor backs off and reconnects."""


class LinkTimeout(LinkError):
    pass


class LinkClosed(LinkError):
    pass


class DeviceNotFound(LinkError):
    pass


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
