"""The "noname" Modbus BMS over the Nordic UART service (batmon #131): sans-I/O codec. protocols.md §12.

Modbus RTU (shared framing in ..modbus_rtu), slave 0x01, function 0x03, registers BE:
- 0x231C x 4: cell count, temperature count (2 more registers of unknown meaning);
- 0xD000 x 38: 32 cell mV (0xEE49 = empty slot), max/min mV, max/min index, delta mV, pack V x 0.01;
- 0xD026 x 25: temperature (raw - 400) / 10 °C, charge A x 0.1 (data 24), discharge A x 0.1 (26), SoC (28),
  SoH (30), remaining / full / design Ah x 0.1 (32 / 34 / 36), cycles (38). current = charge - discharge.

Confidence is low (one user's captures); the register map is data below so corrections are one-line.
Pure: stdlib and ..codec/..fields/..modbus_rtu only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from ...codec import Frame, Reading, UnsupportedFrame
from .. import modbus_rtu
from ..decode_util import decode_stream
from ..fields import Field, FieldTable

SLAVE: Final = 0x01
REG_INFO: Final = 0x231C
REG_CELLS: Final = 0xD000
REG_CAPACITY: Final = 0xD026
COUNTS: Final = {REG_INFO: 4, REG_CELLS: 38, REG_CAPACITY: 25}
BLOCK_BY_SIZE: Final = {2 * n: reg for reg, n in COUNTS.items()}  # reply byte count -> block

MAX_CELLS: Final = 32
EMPTY_CELL: Final = 0xEE49
TEMPERATURE_BIAS: Final = 400  # raw - 400, then / 10


def build_read(register: int, slave: int = SLAVE) -> bytes:
    return modbus_rtu.read_request(slave, register, COUNTS[register])


REQUEST_INFO: Final = build_read(REG_INFO)  # 01 03 23 1C 00 04 8E 4B
REQUEST_CELLS: Final = build_read(REG_CELLS)  # 01 03 D0 00 00 26 FC D0
REQUEST_CAPACITY: Final = build_read(REG_CAPACITY)  # 01 03 D0 26 00 19 5D 0B


def new_assembler(slave: int = SLAVE) -> modbus_rtu.ModbusRtuAssembler:
    return modbus_rtu.ModbusRtuAssembler((slave,))


INFO_FIELDS: Final = FieldTable((Field("cell_count", 0, 2), Field("temperature_count", 2, 2)))
CELL: Final = Field("cell", 0, 2)  # at + 2n
CELLS_FIELDS: Final = FieldTable((Field("voltage", 74, 2, scale=0.01),))
CAPACITY_RAW: Final = FieldTable((
    Field("temperature_raw", 0, 2),
    Field("charge_current", 24, 2, scale=0.1),
    Field("discharge_current", 26, 2, scale=0.1),
))
CAPACITY_FIELDS: Final = FieldTable((
    Field("soc", 28, 2),
    Field("soh", 30, 2),
    Field("charge", 32, 2, scale=0.1),
    Field("capacity", 34, 2, scale=0.1),
    Field("design_capacity", 36, 2, scale=0.1),
    Field("cycles", 38, 2),
))


def decode_info(data: bytes) -> tuple[int, int]:
    """(cell count, temperature count)."""
    v = INFO_FIELDS.decode(data)
    return int(v["cell_count"]), int(v["temperature_count"])


def decode_cells(data: bytes, cell_count: int = 0) -> Reading:
    """Cell block -> voltages; without a known count, empty slots (0xEE49 or 0) are left out."""
    v = CELLS_FIELDS.decode(data)  # also checks the block is long enough
    mv = [CELL.raw(data, "big", 2 * i) for i in range(MAX_CELLS)]
    if 0 < cell_count <= MAX_CELLS:
        mv = mv[:cell_count]
    else:
        mv = [x for x in mv if x not in (EMPTY_CELL, 0)]
    return {"voltage": v["voltage"], "cell_voltages": [x / 1000 for x in mv]}


def decode_capacity(data: bytes) -> Reading:
    raw = CAPACITY_RAW.decode(data)
    r: Reading = dict(CAPACITY_FIELDS.decode(data))
    r["current"] = round(raw["charge_current"] - raw["discharge_current"], 1)
    if raw["temperature_raw"]:  # 0 = no sensor; only the first sensor's register is known
        r["temperatures"] = [round((int(raw["temperature_raw"]) - TEMPERATURE_BIAS) / 10, 1)]
    return r


def decode_block(register: int, data: bytes, cell_count: int = 0) -> Reading | dict[str, Any]:
    if register == REG_INFO:
        cells, temps = decode_info(data)
        return {"cell_count": cells, "temperature_count": temps}
    if register == REG_CELLS:
        return decode_cells(data, cell_count)
    if register == REG_CAPACITY:
        return decode_capacity(data)
    raise UnsupportedFrame(f"noname Modbus register block {register:#06x}")


def decode_frame(frame: Frame) -> dict[str, Any]:
    """A reply whose block is known from its byte count (the request is not in the reply)."""
    exc = modbus_rtu.exception_code(frame)
    if exc is not None:
        return {"frame_type": frame.kind, "exception": exc}
    data = modbus_rtu.registers(frame)
    register = BLOCK_BY_SIZE.get(len(data))
    if register is None:
        raise UnsupportedFrame(f"noname Modbus reply of {len(data)} data bytes matches no known block")
    return {"frame_type": frame.kind, "register": register, **decode_block(register, data)}


def decode(chunks: Iterable[bytes]) -> list[dict[str, Any]]:
    """`bmsbus decode noname_modbus HEX...`: one dict per reply, `{"error": ...}` for bad bytes."""
    return decode_stream(chunks, new_assembler(), decode_frame)
