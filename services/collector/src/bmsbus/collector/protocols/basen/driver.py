"""Basen drivers: BLE (status, general info, cell blocks) and RS485 (one INFO request)."""

from __future__ import annotations

from typing import ClassVar

from ...codec import DeviceInfo, Frame, Reading, UnsupportedFrame, merge
from ...driver import Driver
from . import ble, uart


class BasenBleDriver(Driver):
    """Read-only. Status every read; general info (capacities, cycles) and cell blocks too. The second cell
    block (cells 13-24) is asked for only when the first is full."""

    protocol: ClassVar[str] = "basen"
    quantities: ClassVar[frozenset[str]] = frozenset({
        "voltage", "current", "soc", "charge", "capacity", "design_capacity", "cycles", "cell_voltages",
        "temperatures", "switches", "problem_code"})
    switches: ClassVar[tuple[str, ...]] = ()

    def new_assembler(self) -> ble.BasenAssembler:
        return ble.BasenAssembler()

    async def _ask(self, request: bytes, frame_type: int) -> Frame:
        return await self.transact(request, lambda f: f.kind == frame_type and f.raw[3] != 1)

    async def open(self) -> DeviceInfo:
        return DeviceInfo(manufacturer="Basen")

    async def read(self) -> Reading:
        status = ble.decode_status(await self._ask(ble.REQUEST_STATUS, ble.T_STATUS))
        general = ble.decode_general(await self._ask(ble.REQUEST_GENERAL, ble.T_GENERAL))
        cells = ble.decode_cells(await self._ask(ble.REQUEST_CELLS_1, ble.T_CELLS_1))
        if len(cells) == ble.CELLS_PER_BLOCK:
            cells.update(ble.decode_cells(await self._ask(ble.REQUEST_CELLS_2, ble.T_CELLS_2)))
        return merge(status, general, {"cell_voltages": ble.cell_list(cells)})


class BasenUartDriver(Driver):
    """Read-only. Option `address` (default 1): the RS485 bus address. An echo of our own request (len 0)
    and a 1-byte error reply are skipped / reported."""

    protocol: ClassVar[str] = "basen_uart"
    quantities: ClassVar[frozenset[str]] = frozenset({
        "voltage", "current", "soc", "soh", "charge", "cycles", "cell_voltages", "balancing", "temperatures",
        "mos_temperature", "switches", "alarms", "problem_code"})
    switches: ClassVar[tuple[str, ...]] = ()

    @property
    def address(self) -> int:
        return int(self.options.options.get("address", uart.DEFAULT_ADDRESS))

    def new_assembler(self) -> uart.BasenUartAssembler:
        return uart.BasenUartAssembler()

    async def open(self) -> DeviceInfo:
        return DeviceInfo(manufacturer="Basen")

    async def read(self) -> Reading:
        frame = await self.transact(uart.build_request(uart.CMD_INFO, self.address),
                                    lambda f: f.kind == uart.CMD_INFO and f.address == self.address and f.raw[3] > 0)
        if frame.raw[3] == 1:
            raise UnsupportedFrame(f"Basen INFO answered with error code {frame.raw[4]:#04x}")
        return uart.decode_info(frame)
