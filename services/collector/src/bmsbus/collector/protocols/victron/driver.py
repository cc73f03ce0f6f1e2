"""Victron SmartShunt driver: characteristic reads, notifications and the 10 s keep-alive."""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

from ...codec import DeviceInfo, Frame, Reading
from ...driver import Driver
from ...links.base import CharLink, LinkError
from . import codec


IN_BAND_KINDS: frozenset[str] = frozenset({"emulated"})  # links that understand the tagged in-band form


class VictronDriver(Driver):
    """SmartShunt over BLE GATT. Needs PIN pairing first (`requires_pairing`; the BlueZ link pairs with the
    device config's `pin` at connect; without one the first GATT write or read is a PairingFailed that says
    to set it; ESPHome proxies cannot pair with a PIN at all).

    open(): subscribe to every value characteristic (CharLink), write the keep-alive, read every value once.
    read(): keep-alive when due; the notifications that came in since the last poll go into the value
    cache; values older than `max_age` (not notified recently) are read again. `background()` is optional:
    run next to the polling it consumes notifications and keeps the keep-alive going between polls longer
    than 10 s.
    Options: `capacity_ah` (battery capacity: turns consumed Ah into `charge`), `keepalive_ms` (20000),
    `max_age` (s, 10).
    """

    protocol: ClassVar[str] = "victron"
    quantities: ClassVar[frozenset[str]] = frozenset({"voltage", "current", "power", "soc", "charge", "capacity"})
    switches: ClassVar[tuple[str, ...]] = ()
    requires_pairing: ClassVar[bool] = True
    characteristics: ClassVar[tuple[str, ...]] = tuple(c.uuid for c in codec.VALUES)
    keepalive_interval: ClassVar[float] = codec.KEEPALIVE_INTERVAL

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        opts = self.options.options
        self.capacity_ah: float | None = float(opts["capacity_ah"]) if opts.get("capacity_ah") else None
        self.keepalive_value = int(opts.get("keepalive_ms", codec.KEEPALIVE_MS)).to_bytes(2, "little")
        self.max_age = float(opts.get("max_age", self.keepalive_interval))
        self.values: dict[str, Any] = {}
        self.updated: dict[int, float] = {}  # prefix -> monotonic time of the last value
        self._keepalive_at = -float("inf")
        self._background = False

    def new_assembler(self) -> codec.TaggedAssembler:
        return codec.TaggedAssembler()

    @property
    def char_link(self) -> CharLink | None:
        return self.link if isinstance(self.link, CharLink) else None

    # --- values ---------------------------------------------------------------------------------------

    def _store(self, prefix: int, value: bytes) -> None:
        spec = codec.spec_of(prefix)
        decoded = codec.decode_value(prefix, value)
        if decoded:
            self.values.update(decoded)
        else:
            self.values.pop(spec.key, None)  # N/A: absent, never a stale value
        self.updated[prefix] = time.monotonic()

    def _absorb(self, frame: Frame) -> None:
        if frame.kind != codec.KEEPALIVE.prefix:
            self._store(int(frame.kind), frame.raw[codec.TAG_LEN :])

    async def _read_value(self, spec: codec.CharSpec) -> None:
        link = self.char_link
        if link is not None:
            self._store(spec.prefix, await link.read_char(spec.uuid))
            return

        def accept(frame: Frame) -> bool:
            self._absorb(frame)  # notifications that were queued are values too
            return frame.kind == spec.prefix

        await self.transact(codec.tag(spec), accept, flush=False)

    async def keepalive(self) -> None:
        link = self.char_link
        if link is not None:
            await link.write_char(codec.KEEPALIVE.uuid, self.keepalive_value, response=False)
        else:
            await self.link.send(codec.tag(codec.KEEPALIVE, self.keepalive_value))
        self._keepalive_at = time.monotonic()

    async def _keepalive_if_due(self) -> None:
        if time.monotonic() - self._keepalive_at >= self.keepalive_interval:
            await self.keepalive()

    # --- Driver ---------------------------------------------------------------------------------------

    async def open(self) -> DeviceInfo:
        link = self.char_link
        if link is None and self.link.kind not in IN_BAND_KINDS:
            # A byte link would write our tags into the keep-alive characteristic: refuse instead.
            raise LinkError(f"victron needs GATT characteristic access (CharLink); a {self.link.kind!r} link "
                            "does not provide it")
        if link is not None:
            for uuid in self.characteristics:
                await link.start_notify(uuid)
        await self.keepalive()
        for spec in codec.VALUES:
            await self._read_value(spec)
        return DeviceInfo(manufacturer="Victron Energy", model="SmartShunt")

    async def _absorb_pending(self) -> None:
        """Every notification already queued goes into the value cache; never waits for more."""
        try:
            async with asyncio.timeout(0):  # fires at the first wait, i.e. when the queue is empty
                while True:
                    self._absorb(await self.next_frame())
        except TimeoutError:
            pass

    async def read(self) -> Reading:
        await self._keepalive_if_due()
        if not self._background and self.char_link is not None:
            await self._absorb_pending()
        now = time.monotonic()
        for spec in codec.VALUES:
            if now - self.updated.get(spec.prefix, -float("inf")) > self.max_age:
                await self._read_value(spec)
        return codec.to_reading(self.values, self.capacity_ah)

    async def background(self) -> None:
        """Keep-alive every 10 s and, on a CharLink, notifications into the value cache. Runs until
        cancelled or the link fails."""
        self._background = True
        try:
            while True:
                await self._keepalive_if_due()
                wait = max(0.0, self._keepalive_at + self.keepalive_interval - time.monotonic())
                if self.char_link is None:
                    await asyncio.sleep(wait)
                    continue
                try:
                    async with asyncio.timeout(wait):
                        while True:
                            self._absorb(await self.next_frame())
                except TimeoutError:
                    pass
        except LinkError:
            self.log.debug("keep-alive stopped: link gone")
        finally:
            self._background = False
