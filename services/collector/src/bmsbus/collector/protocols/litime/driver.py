"""LiTime / Redodo driver: one fixed request, one 105-byte reply."""

from __future__ import annotations

from typing import ClassVar

from ...codec import DeviceInfo, Reading
from ...driver import Driver
from . import codec


class LiTimeDriver(Driver):
    """Read-only (neither anchor implements writes). The heater state is a read-only switch state."""

    protocol: ClassVar[str] = "litime"
    quantities: ClassVar[frozenset[str]] = frozenset({
        "voltage", "current", "soc", "soh", "charge", "capacity", "cycles", "cycle_charge", "cell_voltages",
        "temperatures", "mos_temperature", "switches", "problem_code"})
    switches: ClassVar[tuple[str, ...]] = ()

    def new_assembler(self) -> codec.LiTimeAssembler:
        return codec.LiTimeAssembler()

    async def open(self) -> DeviceInfo:
        return DeviceInfo(manufacturer="LiTime / Redodo", model="Bluetooth battery")

    async def read(self) -> Reading:
        frame = await self.transact(codec.REQUEST, lambda f: f.kind == codec.KIND_STATUS)
        return codec.decode_status(frame)
