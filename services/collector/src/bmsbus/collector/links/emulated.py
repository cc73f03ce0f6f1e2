"""A link to an in-process emulator: the `simulated` device type, demos and tests.

The emulator is sans-I/O (bytes in, bytes out); this link gives it a transport's shape: our writes
reach `emulator.receive()`, its answers come back split into `mtu`-sized chunks like BLE
notifications, and `emulator.tick()` runs every `tick_period` for devices that stream on their own.
`emulator.faults.disconnect` makes the device unreachable: connecting raises DeviceNotFound and an open
link is closed (LinkClosed) at its next write or tick.
"""

from __future__ import annotations

import asyncio
import time
from typing import Self

from ..emulation.base import Emulator
from .base import DeviceNotFound, LinkClosed, QueueLink


class EmulatedLink(QueueLink):
    kind = "emulated"

    def __init__(self, emulator: Emulator, *, mtu: int | None = 20, tick_period: float = 1.0,
                 reply_delay: float = 0.0) -> None:
        super().__init__()
        self.emulator = emulator
        self.mtu = mtu
        self.tick_period = tick_period
        self.reply_delay = reply_delay
        self._ticker: asyncio.Task[None] | None = None
        self.rssi = -60

    def _gone(self) -> bool:
        """True if the emulated device has dropped off (fault `disconnect`); closes the link once."""
        faults = getattr(self.emulator, "faults", None)
        if faults is None or not faults.disconnect:
            return False
        if self._closed is None:
            self._lost("device dropped the link")
        return True

    async def __aenter__(self) -> Self:
        faults = getattr(self.emulator, "faults", None)
        if faults is not None and faults.disconnect:
            raise DeviceNotFound("emulated device is not reachable")
        self._closed = None
        self._ticker = asyncio.get_running_loop().create_task(self._tick_forever(), name="emulator-tick")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            try:
                await self._ticker
            except asyncio.CancelledError:
                pass
            self._ticker = None
        self._lost("closed by us")

    def _emit(self, frames: list[bytes]) -> None:
        for frame in frames:
            step = self.mtu or len(frame) or 1
            for i in range(0, len(frame), step):
                self._deliver(frame[i : i + step])

    async def send(self, data: bytes) -> None:
        if self._closed is not None or self._gone():
            raise LinkClosed(self._closed or "closed")
        replies = self.emulator.receive(data)
        if self.reply_delay:
            await asyncio.sleep(self.reply_delay)
        self._emit(replies)

    async def _tick_forever(self) -> None:
        while not self._gone():
            self._emit(self.emulator.tick(time.time()))
            await asyncio.sleep(self.tick_period)
