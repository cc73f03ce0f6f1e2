"""Daly BLE "Modbus" protocol (D2, modules named "DL-..."): sans-I/O codec. protocols.md §5.

Modbus RTU with responder address 0xD2 (framing in ..modbus_rtu). The status block is 62 registers
from 0x0000 (80 on the newer "blue series", which adds the balance bitmask, balance current and MOS
temperature); 9 registers from 0x3E give those three on 62-register devices. Registers are u16 BE;
data byte offset = 2 x register.

Current: `(raw - 30000) * 0.1 A`, raw > 30000 = charging (captures with status 0x2F = 2 "discharging"
carry raw < 30000), i.e. already + = charging.

The "p81" variant (ESS-DL-BMS: requests start 0x81, replies 0x51) shares the framing but not the
register map: its codec is p81.py. The D2 decoders reject its replies with UnsupportedFrame; `describe`
(`bmsbus decode daly2`) hands them to p81.describe, so one stream may hold both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from ...codec import DeviceInfo, Frame, Reading, UnsupportedFrame, UsageError, ascii_field
from .. import modbus_rtu
from ..decode_util import decode_stream, device_info_dict
from ..fields import Field, FieldTable, bits_set
from . import p81
from .alarms import failure_alarms

ADDRESS: Final = 0xD2
P81_REPLY: Final = p81.REPLY_ADDRESS  # replies of the 0x81 variant (p81.py)

STATUS_REGISTERS: Final = 62
STATUS_REGISTERS_LONG: Final = 80
EXTENSION_START: Final = 0x3E  # balance bitmask 0x3E/0x3F, balance current 0x40, MOS temperature 0x42
EXTENSION_COUNT: Final = 9
VERSION_START: Final = 0xA9
VERSION_COUNT: Final = 32
SETTINGS_START: Final = 0x80
SETTINGS_COUNT: Final = 41
PASSWORD_START: Final = 0xC9

REG_RATED_CAPACITY: Final = 0x80
REG_CHARGE_MOS: Final = 0xA5
REG_DISCHARGE_MOS: Final = 0xA6
REG_BALANCER: Final = 0xCF
SWITCH_REGISTERS: Final[Mapping[str, int]] = {
    "charge": REG_CHARGE_MOS, "discharge": REG_DISCHARGE_MOS, "balance": REG_BALANCER,
}

MAX_CELLS: Final = 32
MAX_TEMPS: Final = 8
TEMPERATURE_BIAS: Final = 40
CURRENT_ZERO: Final = 30000
ABSENT_RAW: Final = frozenset({0x0000, 0xFFFF})
STATE_NAMES: Final[Mapping[int, str]] = {0: "idle", 1: "charging", 2: "discharging"}
BALANCER_NAMES: Final[Mapping[int, str]] = {0: "off", 1: "passive", 2: "active"}


def _r(register: int) -> int:
    return 2 * register


STATUS_FIELDS: Final = FieldTable((
    Field("voltage", _r(0x28), 2, scale=0.1),
    Field("current", _r(0x29), 2, scale=0.1, bias=CURRENT_ZERO),
    Field("soc", _r(0x2A), 2, scale=0.1),
    Field("charge", _r(0x30), 2, scale=0.1),
    Field("cycles", _r(0x33), 2),
))

STATUS_DETAILS: Final = FieldTable((
    Field("max_cell_voltage", _r(0x2B), 2, scale=0.001),
    Field("min_cell_voltage", _r(0x2C), 2, scale=0.001),
    Field("max_temperature", _r(0x2D), 2, bias=TEMPERATURE_BIAS),
    Field("min_temperature", _r(0x2E), 2, bias=TEMPERATURE_BIAS),
    Field("status", _r(0x2F), 2),
    Field("cell_count", _r(0x31), 2),
    Field("temperature_count", _r(0x32), 2),
    Field("balancer_state", _r(0x34), 2),
    Field("average_cell_voltage", _r(0x37), 2, scale=0.001),
    Field("delta_cell_voltage", _r(0x38), 2, scale=0.001),
    Field("power_raw", _r(0x39), 2),
))

SETTINGS_FIELDS: Final = FieldTable((
    Field("design_capacity", 0, 2, scale=0.1),
))

SETTINGS_DETAILS: Final = FieldTable((
    Field("cell_reference_voltage", _r(0x81 - SETTINGS_START), 2, scale=0.001),
    Field("battery_type", _r(0x89 - SETTINGS_START), 2),
    Field("soc_setting", _r(0xA7 - SETTINGS_START), 2, scale=0.1),
))

ALARM_OFFSET: Final = _r(0x3A)  # 8 bytes, 0x3A..0x3D
# Data bytes of 0x3A..0x3C in the order of the A5 0x98 failure bytes 0..5 (low byte, then high byte).
ALARM_GROUP_ORDER: Final = (1, 0, 3, 2, 5, 4)


# --- request builders ---------------------------------------------------------------------------------

def read_request(register: int, count: int) -> bytes:
    return modbus_rtu.read_request(ADDRESS, register, count)


def status_request(count: int = STATUS_REGISTERS) -> bytes:
    return read_request(0, count)


def switch_request(name: str, on: bool) -> bytes:
    try:
        register = SWITCH_REGISTERS[name]
    except KeyError:
        raise UsageError(f"Daly D2 has no switch {name!r}") from None
    return modbus_rtu.write_single_request(ADDRESS, register, 1 if on else 0)


def new_assembler() -> modbus_rtu.ModbusRtuAssembler:
    return modbus_rtu.ModbusRtuAssembler({ADDRESS, P81_REPLY})


# --- decoders -----------------------------------------------------------------------------------------

def _reg(data: bytes, register: int) -> int:
    return int.from_bytes(data[_r(register) : _r(register) + 2], "big")


def _check(frame: Frame) -> None:
    if frame.address == P81_REPLY:
        raise UnsupportedFrame("a Daly p81 reply (0x51, ESS-DL-BMS) is not a D2 frame; decode it with p81.py")
    if (code := modbus_rtu.exception_code(frame)) is not None:
        raise UnsupportedFrame(f"Daly D2 Modbus exception {code:#04x} to function {int(frame.kind) & 0x7F:#04x}")


def _data(frame: Frame) -> bytes:
    _check(frame)
    return modbus_rtu.registers(frame)


def decode_status(frame: Frame) -> Reading:
    """The status block (62 or 80 registers from 0x0000)."""
    data = _data(frame)
    if len(data) not in (2 * STATUS_REGISTERS, 2 * STATUS_REGISTERS_LONG):
        raise UnsupportedFrame(f"Daly D2 status block of {len(data)} bytes")
    out: Reading = dict(STATUS_FIELDS.decode(data))
    cells = min(_reg(data, 0x31), MAX_CELLS)
    temps = min(_reg(data, 0x32), MAX_TEMPS)
    if cells:
        out["cell_voltages"] = [_reg(data, i) / 1000 for i in range(cells)]
    if temps:
        out["temperatures"] = [float(_reg(data, 0x20 + i) - TEMPERATURE_BIAS) for i in range(temps)]
    power = _reg(data, 0x39)  # unsigned W; the sign is the current's
    out["power"] = float(-power if out["current"] < 0 else power)
    out["switches"] = {"charge": bool(_reg(data, 0x35)), "discharge": bool(_reg(data, 0x36))}
    alarm_bytes = data[ALARM_OFFSET : ALARM_OFFSET + 8]
    out["problem_code"] = int.from_bytes(alarm_bytes, "big")
    out["alarms"] = failure_alarms(bytes(alarm_bytes[i] for i in ALARM_GROUP_ORDER))
    if not 0 <= out["soc"] <= 100:
        del out["soc"]
    if len(data) == 2 * STATUS_REGISTERS_LONG:
        out.update(_extension(data[_r(EXTENSION_START) :], cells))
    return out


def _extension(data: bytes, cells: int | None) -> Reading:
    """Registers 0x3E.. (balance bitmask, balance current, MOS temperature) from a block starting at 0x3E."""
    out: Reading = {}
    mask = _reg(data, 0) | _reg(data, 1) << 16
    width = MAX_CELLS if cells is None else cells
    out["balancing"] = bits_set(mask, width)
    out["balance_current"] = round((_reg(data, 2) - CURRENT_ZERO) * 0.001, 6)
    mos = _reg(data, 0x42 - EXTENSION_START)
    if mos not in ABSENT_RAW:
        out["mos_temperature"] = float(mos - TEMPERATURE_BIAS)
    return out


def decode_extension(frame: Frame, cells: int | None = None) -> Reading:
    """The 9 registers from 0x3E that 62-register devices answer separately. 0x0000/0xFFFF MOS
    temperature = not available."""
    data = _data(frame)
    if len(data) != 2 * EXTENSION_COUNT:
        raise UnsupportedFrame(f"Daly D2 block of {len(data)} bytes is not the 0x3E extension")
    return _extension(data, cells)


def _slot(data: bytes, start: int, size: int = 16) -> str:
    return ascii_field(data[start : start + size])


def decode_version(frame: Frame) -> DeviceInfo:
    """32 registers from 0xA9: NUL-terminated strings at data offsets 0, 16 and 32. Sources disagree on the
    layout (protocols.md §5.3): Daly's sheet puts hardware at 32 (then 16 is empty); aiobmsble's device
    puts hardware at 16 and a date at 32 (digits: production date, text: model)."""
    data = _data(frame)
    if len(data) != 2 * VERSION_COUNT:
        raise UnsupportedFrame(f"Daly D2 block of {len(data)} bytes is not the version block")
    first, second, third = _slot(data, 0), _slot(data, 16), _slot(data, 32, 32)
    info = DeviceInfo(manufacturer="Daly", sw_version=first or None)
    if second:
        info.hw_version = second
        if third.isdigit():
            info.extra["production_date"] = third
        elif third:
            info.model = third
    else:
        info.hw_version = third or None
    return info


def register_value(frame: Frame) -> int:
    """A one-register read reply."""
    data = _data(frame)
    if len(data) != 2:
        raise UnsupportedFrame(f"expected one register, got {len(data)} bytes")
    return int.from_bytes(data, "big")


def decode_rated_capacity(frame: Frame) -> Reading:
    return {"design_capacity": round(register_value(frame) * 0.1, 6)}


def write_echo(frame: Frame) -> tuple[int, int]:
    """(register, value) of a single-write echo."""
    _check(frame)
    if frame.kind != modbus_rtu.WRITE_SINGLE:
        raise UnsupportedFrame(f"Modbus function {frame.kind:#04x} is not a write echo")
    return int.from_bytes(frame.raw[2:4], "big"), int.from_bytes(frame.raw[4:6], "big")


# --- `bmsbus decode` ------------------------------------------------------------------------------------

def describe(frame: Frame) -> dict[str, Any]:
    """One reply as a JSON-able dict. A read reply does not say which register it starts at, so the
    block is told by its size: 124/160 status, 18 the 0x3E extension, 64 version, 82 settings from 0x80,
    6 password, 2 a single register."""
    if frame.address == P81_REPLY:
        return p81.describe(frame)
    _check(frame)  # rejects exception replies
    out: dict[str, Any] = {"frame_type": f"{frame.kind:#04x}", "address": frame.address}
    if frame.kind == modbus_rtu.WRITE_SINGLE:
        register, value = write_echo(frame)
        return {**out, "write_echo": True, "register": register, "value": value}
    data = modbus_rtu.registers(frame)
    n = len(data)
    if n in (2 * STATUS_REGISTERS, 2 * STATUS_REGISTERS_LONG):
        details = STATUS_DETAILS.decode(data)
        details["status_name"] = STATE_NAMES.get(int(details["status"]), "unknown")
        details["balancer_name"] = BALANCER_NAMES.get(int(details["balancer_state"]), "unknown")
        return {**out, "block": f"status_{n // 2}", **details, **decode_status(frame)}
    if n == 2 * EXTENSION_COUNT:
        return {**out, "block": "extension_0x3e", **decode_extension(frame)}
    if n == 2 * VERSION_COUNT:
        return {**out, "block": "version", **device_info_dict(decode_version(frame))}
    if n == 2 * SETTINGS_COUNT:
        switches = {name: bool(_reg(data, reg - SETTINGS_START)) for name, reg in
                    (("charge", REG_CHARGE_MOS), ("discharge", REG_DISCHARGE_MOS))}
        return {**out, "block": "settings", **SETTINGS_FIELDS.decode(data), **SETTINGS_DETAILS.decode(data),
                "switches": switches}
    if n == 6:
        return {**out, "block": "password", "password": ascii_field(data)}
    if n == 2:
        return {**out, "block": "register", "value": int.from_bytes(data, "big")}
    return {**out, "block": "unknown", "registers": [int.from_bytes(data[i : i + 2], "big") for i in range(0, n, 2)]}


def decode_chunks(chunks: Iterable[bytes]) -> list[dict[str, Any]]:
    return decode_stream(chunks, new_assembler(), describe)
