"""PACE driver: analog request, then status request (switch states, flags and the current's sign)."""

from __future__ import annotations

from typing import ClassVar

from ...codec import DeviceInfo, Frame, Reading, merge
from ...driver import Driver
from . import codec


class PaceDriver(Driver):
    """Read-only (no write commands are documented in protocols.md §15). Option `address` (default 1): the
    pack address on the bus. Replies are framed by CR, so the serial link must deliver bytes as they come
    (no line reader waiting for LF)."""

    protocol: ClassVar[str] = "pace_uart"
    quantities: ClassVar[frozenset[str]] = frozenset({
        "voltage", "current", "soc", "charge", "capacity", "design_capacity", "cycles", "cell_voltages",
        "temperatures", "mos_temperature", "balancing", "switches", "problem_code"})
    switches: ClassVar[tuple[str, ...]] = ()

    @property
    def address(self) -> int:
        return int(self.options.options.get("address", codec.DEFAULT_ADDRESS))

    def new_assembler(self) -> codec.PaceAssembler:
        return codec.PaceAssembler()

    def _reply(self, frame: Frame) -> bool:
        """A reply from our pack (not an echo of our request on a half-duplex bus)."""
        return frame.address == self.address and frame.kind not in (codec.CMD_ANALOG, codec.CMD_STATUS)

    async def open(self) -> DeviceInfo:
        return DeviceInfo(manufacturer="PACE")

    async def read(self) -> Reading:
        analog = codec.decode_analog(await self.transact(codec.build_request(codec.CMD_ANALOG, self.address),
                                                         self._reply))
        status = codec.decode_status(await self.transact(codec.build_request(codec.CMD_STATUS, self.address),
                                                         self._reply))
        analog["current"] = codec.apply_status_sign(analog["current"], status["system"])
        return merge(analog, codec.status_reading(status))
