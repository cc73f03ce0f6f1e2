"""Drivers: the thin I/O glue between one Link and one sans-I/O codec.

A driver knows the conversation (which request, which answer to wait for, in what order) and nothing
about the transport. The codec does the bytes; the link moves them; the supervisor (service.py) owns
timing, backoff and publishing. A family module declares its protocols as ProtocolEntry values.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from bmsbus.shared.models import BmsSettingSpec

from .codec import Assembler, CodecError, DeviceInfo, Frame, Reading, UsageError
from .emulation.base import Emulator, PackState
from .links.base import Link


@dataclass(frozen=True, slots=True)
class BleSpec:
    service: str
    notify: str
    write: str
    write_with_response: bool = False


@dataclass(frozen=True, slots=True)
class SerialSpec:
    baudrate: int
    bytesize: int = 8
    parity: str = "N"
    stopbits: int = 1


@dataclass(slots=True)
class DriverOptions:
    request_timeout: float = 8.0
    options: dict[str, Any] = field(default_factory=dict)  # protocol-specific (e.g. bus address)


class Driver(ABC):
    """One conversation with one BMS over one link."""

    protocol: ClassVar[str]
    # Catalog keys this driver can report and switches it can write; consumers derive from these.
    quantities: ClassVar[frozenset[str]] = frozenset()
    switches: ClassVar[tuple[str, ...]] = ()

    def __init__(self, link: Link, options: DriverOptions | None = None,
                 log: logging.Logger | None = None) -> None:
        self.link = link
        self.options = options or DriverOptions()
        self.log = log or logging.getLogger(f"bmsbus.collector.{self.protocol}")
        self.assembler = self.new_assembler()
        self.codec_errors = 0
        self.on_chunk: Callable[[bytes], None] | None = None  # raw capture hook

    @abstractmethod
    def new_assembler(self) -> Assembler: ...

    async def open(self) -> DeviceInfo:
        """Handshake after the link is up; returns what the device says about itself."""
        return DeviceInfo()

    @abstractmethod
    async def read(self) -> Reading:
        """One sample's worth of values, canonical keys."""

    def writable_switches(self) -> tuple[str, ...]:
        """Switches this particular device can write (may depend on what open() learned)."""
        return self.switches

    async def set_switch(self, name: str, on: bool) -> None:
        raise UsageError(f"{self.protocol} cannot set switch {name!r}")

    def setting_specs(self) -> tuple[BmsSettingSpec, ...]:
        """The settings `write_setting` takes on this device, with unit, range and step, as the bus carries
        them (`Meta.setting_specs`): declared here once, the HA numbers and the docs follow."""
        return ()

    def writable_settings(self) -> tuple[str, ...]:
        """Names of `setting_specs()` (what Meta.settings carries)."""
        return tuple(s.name for s in self.setting_specs())

    def setting_values(self) -> dict[str, float]:
        """Current values of the writable settings as last read from the BMS (absent: not read yet)."""
        return {}

    async def write_setting(self, name: str, value: float) -> None:
        """Write one setting (SI units) and confirm it by read-back; UsageError if it is not writable here."""
        raise UsageError(f"{self.protocol} has no writable settings")

    # --- helpers for subclasses -------------------------------------------------------------

    async def next_frame(self) -> Frame:
        """The next valid frame from the link. Bad bytes are counted and logged, never decoded."""
        while True:
            try:
                frame = self.assembler.next_frame()
            except CodecError as err:
                self.codec_errors += 1
                self.log.debug("dropped bad bytes: %s", err)
                continue
            if frame is not None:
                return frame
            chunk = await self.link.receive()
            if self.on_chunk is not None:
                self.on_chunk(chunk)
            self.assembler.feed(chunk)

    async def transact(self, request: bytes | None, accept: Callable[[Frame], bool],
                       timeout: float | None = None, *, flush: bool = True) -> Frame:
        """Send `request` (if any) and wait for the first frame `accept` takes; other frames are dropped.
        `flush` discards stale chunks and half-assembled bytes first (request/response protocols)."""
        if flush:
            self.link.discard_pending()
            self.assembler = self.new_assembler()
        if request:
            await self.link.send(request)
        async with asyncio.timeout(timeout or self.options.request_timeout):
            while True:
                frame = await self.next_frame()
                if accept(frame):
                    return frame


@dataclass(frozen=True, slots=True)
class ProtocolEntry:
    """One device type a user can configure (`type: <name>`)."""

    name: str
    family: str
    description: str
    driver: type[Driver]
    emulator: Callable[[PackState], Emulator] | None = None
    ble: BleSpec | None = None
    serial: SerialSpec | None = None
    # `bmsbus decode NAME HEX...`: received chunks in order -> JSON-able decoded results.
    decode: Callable[[Iterable[bytes]], list[dict[str, Any]]] | None = None
