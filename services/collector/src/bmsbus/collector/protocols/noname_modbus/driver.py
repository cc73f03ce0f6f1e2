"""noname Modbus driver: three register reads per sample (counts, cells, capacity)."""

from __future__ import annotations

from typing import ClassVar

from ...codec import CodecError, DeviceInfo, Frame, Reading, merge
from ...driver import Driver
from .. import modbus_rtu
from . import codec


class ModbusException(CodecError):
    """The BMS answered a read with a Modbus exception."""


class NonameModbusDriver(Driver):
    """Read-only. Option `slave` (default 1): the Modbus address."""

    protocol: ClassVar[str] = "noname_modbus"
    quantities: ClassVar[frozenset[str]] = frozenset({
        "voltage", "current", "soc", "soh", "charge", "capacity", "design_capacity", "cycles", "cell_voltages",
        "temperatures"})
    switches: ClassVar[tuple[str, ...]] = ()

    @property
    def slave(self) -> int:
        return int(self.options.options.get("slave", codec.SLAVE))

    def new_assembler(self) -> modbus_rtu.ModbusRtuAssembler:
        return codec.new_assembler(self.slave)

    async def _read_block(self, register: int) -> bytes:
        frame: Frame = await self.transact(
            codec.build_read(register, self.slave),
            lambda f: f.kind in (modbus_rtu.READ_HOLDING, modbus_rtu.READ_HOLDING | 0x80))
        exc = modbus_rtu.exception_code(frame)
        if exc is not None:
            raise ModbusException(f"register {register:#06x}: Modbus exception {exc}")
        return modbus_rtu.registers(frame)

    async def open(self) -> DeviceInfo:
        return DeviceInfo(manufacturer="unknown (noname Modbus BMS)")

    async def read(self) -> Reading:
        cell_count, _ = codec.decode_info(await self._read_block(codec.REG_INFO))
        cells = codec.decode_cells(await self._read_block(codec.REG_CELLS), cell_count)
        capacity = codec.decode_capacity(await self._read_block(codec.REG_CAPACITY))
        return merge(cells, capacity)
