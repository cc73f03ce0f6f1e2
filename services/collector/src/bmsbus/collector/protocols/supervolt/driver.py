"""Supervolt / E&J driver: realtime request, then the capacity request unless the reply carried it."""

from __future__ import annotations

from typing import ClassVar

from ...codec import DeviceInfo, Reading, merge
from ...driver import Driver
from . import codec


class SupervoltDriver(Driver):
    """Read-only: the protocol has no write command. The MOS states (working-state bits 0x2000 / 0x1000)
    are reported as read-only switch states; protection bits become `alarms` and `problem_code`.

    Options: `verify_checksum` (default true; false for `libattU*` devices, which send no checksum).
    """

    protocol: ClassVar[str] = "supervolt"
    quantities: ClassVar[frozenset[str]] = frozenset({
        "voltage", "current", "soc", "charge", "capacity", "design_capacity", "cycles", "cell_voltages",
        "temperatures", "balancing", "switches", "alarms", "problem_code"})
    switches: ClassVar[tuple[str, ...]] = ()

    def new_assembler(self) -> codec.SupervoltAssembler:
        return codec.SupervoltAssembler(verify_checksum=bool(self.options.options.get("verify_checksum", True)))

    async def open(self) -> DeviceInfo:
        return DeviceInfo(manufacturer="E&J Technology", model="Supervolt / E&J smart BMS")

    async def read(self) -> Reading:
        frame = await self.transact(codec.REQUEST_REALTIME, lambda f: codec.is_reply(f, codec.CMD_REALTIME))
        reading = codec.decode_realtime(frame)
        if codec.has_capacity(frame):
            return reading
        cap = await self.transact(codec.REQUEST_CAPACITY, lambda f: codec.is_reply(f, codec.CMD_CAPACITY))
        return merge(reading, codec.decode_capacity(cap))
